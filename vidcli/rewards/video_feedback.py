"""Generator-in-the-loop feedback for the interpreter ("ReaDe with a video generator").

With ``grpo --reward video-feedback`` each completion's reward gains a term from a frozen
text-to-video generator and a frozen VLM, both loaded once and never trained:

    R = R_ReaDe + w_video · R_video

1. **Prompt.** The completion's ``<answer>`` becomes the generator prompt exactly as
   ``vidcli interpret --prompt-style`` hands it on (dense part by default). A completion
   without an answer block gets R_video = 0 and is not rendered, as ReaDe gives it
   R_content = 0.
2. **Render.** ``steps`` denoising steps at a small size without gradient, up to ``batch``
   prompts per pipeline call. Each completion draws its noise from its own generator,
   seeded by :func:`render_seed` (run seed, the record's slot in the data stream, row): a
   batched render equals the diffusers pipeline's own output for that prompt and seed, and
   a resumed run (or the same batch split over more processes) renders the same videos.
   Only the ``vlm_frames`` frames the VLM sees (uniform over the clip, first and last
   included) are decoded.
3. **Ask.** The VLM sees those frames and is asked yes/no questions: whether the video
   carries out the user's instruction (record field ``instruction``), and one question per
   element of the key-info group U (``user``), elements as
   :func:`~vidcli.rewards.coverage.group_elements` lists them. Each answer is scored as
   p(Yes), the probability of the reply starting with "Yes" (teacher-forced, not sampled).
   **R_video is the plain mean of those probabilities**, so it lies in [0, 1] like the
   coverage parts.

Only U is asked about: U holds what the user actually requested, which is what "does the
video fulfil the request" means. S (facts from the condition media) cannot be checked
against the conditions by a VLM that never sees them, and Z (imagined details) is one
valid choice among many: asking whether the video shows the reference's imagined details
would punish other good inventions. Both stay rewarded on the text side (ρ, γ), and
leaving them out keeps the number of VLM forwards down.

A record with neither an instruction nor U elements has nothing to ask: R_video is None
(left out of the total, like any unavailable part) and nothing is rendered.

**Cost** per completion with an answer, on top of GRPO's own: ``steps`` DiT forwards
(twice that with guidance > 1), one text-encoder forward, one VAE decode of the clip, and
(1 + |U|) VLM forwards (each re-reads the ``vlm_frames`` frames through the vision
tower); per optimiser step that is ``batch_size × grad_accum × G`` completions per process.
The generator and VLM stay resident beside the policy for the whole run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidcli.decompose.reade import parse_key_info
from vidcli.diffusion import GeneratorAdapter
from vidcli.prompts import render_text
from vidcli.rewards.coverage import group_elements
from vidcli.rewards.reade import RewardResult, judged_caption
from vidcli.rewards.video_feedback_config import VideoFeedbackConfig  # noqa: F401 (named with the reward)
from vidcli.rewards.vlm import VideoPixels, VLMScorer

REWARDS = ("reade", "video-feedback")
# Reward parts this module adds beside the ReaDe parts (rollouts.jsonl, tracker scalars).
VIDEO_PARTS = ("video", "video_instruction", "video_elements")


@dataclass
class VideoScore:
    """One completion's R_video (``value``) and how it came about."""

    value: float | None
    prompt: str | None = None  # the generator prompt; None: not rendered
    seed: int | None = None
    asked: list[str] = field(default_factory=list)  # "instruction", then the U elements
    p_yes: list[float] = field(default_factory=list)

    def parts(self) -> dict[str, float | None]:
        """``video`` (R_video), ``video_instruction`` (its p(Yes)), ``video_elements`` (mean over U)."""
        probs = dict(zip(self.asked, self.p_yes))
        elements = [p for about, p in zip(self.asked, self.p_yes) if about != "instruction"]
        return {"video": self.value, "video_instruction": probs.get("instruction"),
                "video_elements": sum(elements) / len(elements) if elements else None}

    def record(self) -> dict:
        """The ``video`` entry of a rollouts.jsonl row."""
        return {"prompt": self.prompt, "seed": self.seed,
                "questions": [{"about": a, "p_yes": p} for a, p in zip(self.asked, self.p_yes)]}


def render_seed(seed: int, stream_index: int, row: int) -> int:
    """The noise seed of one completion's render: a pure function of where it is in the run
    (``stream_index``: the micro-batch's slot in the data stream; ``row``: its completion)."""
    return int(np.random.default_rng([seed, stream_index, row, 1]).integers(2 ** 63))


def video_questions(instruction: object, key_info: dict) -> list[tuple[str, str]]:
    """``(about, question)`` pairs: the instruction first (when there is one), then each U element."""
    pairs = []
    if isinstance(instruction, str) and instruction.strip():
        pairs.append(("instruction", render_text("video_feedback_instruction", instruction=instruction.strip())))
    for element in group_elements(parse_key_info(key_info)["user"]):
        pairs.append((element, render_text("video_feedback_element", element=element)))
    return pairs


def render_prompt(completion: str, style: str = "dense") -> str | None:
    """The generator prompt of a completion, as ``interpret`` builds it; None without an answer block."""
    from vidcli.interpreter.messages import output_record

    if judged_caption(completion) is None:
        return None
    return output_record(completion, style)["prompt"]


def load_generator(path: str | Path, *, device: str = "cpu", dtype: str = "float32") -> GeneratorAdapter:
    """A frozen generator adapter; a drf-tune LoRA output gets its adapter fused into the DiT."""
    from vidcli.diffusion import freeze, load_tuned_adapter

    adapter = load_tuned_adapter(path, device=device, dtype=dtype, fuse=True)
    freeze(adapter.trainable_module())
    return adapter


def yes_probabilities(scorer: VLMScorer, items: list[tuple[VideoPixels, str]], batch: int = 8) -> list[float]:
    """p(reply starts with "Yes") for each (video, question), ``batch`` rows per forward.

    Rows are left-padded so every row's answer tokens sit at the end and only their
    logits are computed; the values equal :meth:`VLMScorer.yes_logprob` row by row.
    """
    answer = scorer.processor.tokenizer("Yes", add_special_tokens=False)["input_ids"]
    out: list[float] = []
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        inputs = scorer.batch_inputs([([video], scorer.prompt_ids([video], question) + answer)
                                      for video, question in chunk])
        with torch.no_grad():
            logits = scorer.model(**inputs, logits_to_keep=len(answer) + 1).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        targets = torch.tensor(answer, device=logp.device).expand(len(chunk), -1)
        out += logp.gather(2, targets[..., None])[..., 0].sum(dim=1).exp().tolist()
    return out


class VideoFeedback:
    """R_video for batches of completions (see the module docstring)."""

    def __init__(self, adapter: GeneratorAdapter, scorer: VLMScorer, config: VideoFeedbackConfig) -> None:
        self.adapter = adapter
        self.scorer = scorer
        self.config = config

    @classmethod
    def load(cls, config: VideoFeedbackConfig, *, device: str = "cpu") -> "VideoFeedback":
        """Generator and VLM on ``device``: bfloat16 on a GPU, float32 on the CPU (the Wan VAE stays float32)."""
        from vidcli.diffusion.generate import resolve_device
        from vidcli.scoring.vqa import load_vlm

        device, dtype = resolve_device(device)
        return cls(load_generator(config.generator, device=device, dtype=dtype),
                   load_vlm(config.vlm, device=device, dtype=dtype), config)

    def render(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        """(B, vlm_frames, 3, H, W) frames in [0, 1] of each prompt rendered from its own seed."""
        from vidcli.diffusion.rollout import truncated_rollout, uniform_frame_indices

        cfg = self.config
        indices = uniform_frame_indices(cfg.frames, cfg.vlm_frames)
        videos = []
        with torch.no_grad():
            for start in range(0, len(prompts), cfg.batch):
                # One generator per row: the pipeline draws row i's noise from generator i alone.
                generators = [torch.Generator(device=self.adapter.device).manual_seed(seed)
                              for seed in seeds[start:start + cfg.batch]]
                latents = truncated_rollout(self.adapter, prompts[start:start + cfg.batch], steps=cfg.steps,
                                            guidance=cfg.guidance, k_grad=0, height=cfg.height, width=cfg.width,
                                            frames=cfg.frames, generator=generators)
                videos.append(self.adapter.decode(latents, indices).float())
        return torch.cat(videos)

    def score_many(self, completions: list[str], instructions: list[object], key_infos: list[dict],
                   seeds: list[int]) -> list[VideoScore]:
        """One :class:`VideoScore` per completion; renders and VLM questions batched over all of them."""
        cfg = self.config
        scores: list[VideoScore | None] = [None] * len(completions)
        todo = []  # (row, prompt, questions)
        for row, (text, instruction, info) in enumerate(zip(completions, instructions, key_infos, strict=True)):
            questions = video_questions(instruction, info)
            prompt = render_prompt(text, cfg.prompt_style) if questions else None
            if not questions:
                scores[row] = VideoScore(None)
            elif prompt is None:
                scores[row] = VideoScore(0.0)
            else:
                todo.append((row, prompt, questions))
        if todo:
            frames = self.render([prompt for _, prompt, _ in todo], [seeds[row] for row, _, _ in todo])
            pixels = [self.scorer.video_pixels(video, cfg.fps) for video in frames]
            items = [(pixels[j], question) for j, (_, _, questions) in enumerate(todo) for _, question in questions]
            probs = iter(yes_probabilities(self.scorer, items, cfg.batch))
            for row, prompt, questions in todo:
                p_yes = [next(probs) for _ in questions]
                scores[row] = VideoScore(sum(p_yes) / len(p_yes), prompt, seeds[row], [a for a, _ in questions], p_yes)
        return scores  # type: ignore[return-value]


def add_video_reward(result: RewardResult, score: VideoScore, weight: float) -> RewardResult:
    """The ReaDe result with w·R_video added to its total and the video parts beside the others."""
    total = result.total + (weight * score.value if score.value is not None else 0.0)
    return RewardResult(total, {**result.parts, **score.parts()}, result.contra_available, result.answer_found,
                        dict(result.errors), dict(result.not_applicable))
