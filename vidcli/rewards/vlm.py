"""Differentiable VLM rewards: decoded frames → Qwen2/2.5-VL → log-likelihoods.

The official processor works on uint8 arrays and cannot pass a gradient, so the visual
side is rebuilt here in torch, following the processor's own rules and layout:

1. size: the processor's ``smart_resize`` (sides multiples of patch × merge, pixel count
   within its min/max, and the per-frame cap when ``cap_pixels_per_frame`` is set);
2. resize with its interpolation (bicubic, antialiased, clamped to the valid range);
3. normalise with its mean and std;
4. pad to a multiple of the temporal patch by repeating the last frame and flatten into
   ``pixel_values_videos`` rows in its order (time block, merge block row and column,
   position inside the block, then channel × temporal patch × patch × patch), with the
   matching ``video_grid_thw`` row.

The only difference from the processor is that it works on uint8 pictures and we stay in
float: it resizes in two separable passes (horizontally, then vertically) and rounds and
clamps to uint8 between them and after, so bicubic overshoot it clips after the first
pass still shapes our second (two float passes with that rounding between them match
it within 1/255). Measured against ``Qwen2VLVideoProcessor`` (pixel values mapped back
to grey levels): up to 22/255 on white noise enlarged from 32×32 (20 seeds; mean 0.37),
about 1/255 on natural frames (the example videos at 96×64, 32×32 and 200×120: max
0.95–2.8 at hard edges, mean 0.2–0.3), below 1/255 where no resize is needed. The text
side is the processor's own chat template; each video placeholder is expanded to
``t·h·w / merge²`` pad tokens, as the processor does. Scores are teacher-forced
log-likelihoods of an answer text after the prompt, summed over its tokens (or over the
verdict tokens only).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vidcli.diffusion import freeze, resolve_dtype

# Asked by the vanilla reward; the reply "Yes" is scored.
VANILLA_QUESTION = "Does this video match the description: {prompt}\nAnswer with Yes or No."
# The binary reward and score vqa read a verdict after this opening of the JSON reply (see verdict_logprob).
VERDICT_PREFIX = '{"answer": "'
# Reference answers are scored up to this many tokens (L in the method's loss).
MAX_ANSWER_TOKENS = 512
# The order each dimension's question asks its JSON reply in (see the question_* prompts).
ANSWER_KEYS = {"TA": ("answer", "explanation"), "Phy": ("aspects", "answer", "explanation"),
               "VQ": ("answer", "issue", "explanation")}
_INTERPOLATION = {2: "bilinear", 3: "bicubic"}  # PIL resample codes the Qwen processors use


@dataclass
class VideoPixels:
    """One video as the model reads it: patch rows, its (t, h, w) grid and its frame rate."""

    pixel_values: torch.Tensor
    grid_thw: torch.Tensor
    fps: float


def _size_limits(vp) -> tuple[int, int]:
    size = vp.size
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    return get("shortest_edge"), get("longest_edge")


def target_size(vp, num_frames: int, height: int, width: int) -> tuple[int, int]:
    """The (height, width) the video processor ``vp`` resizes such frames to."""
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import smart_resize

    factor = vp.patch_size * vp.merge_size
    min_pixels, max_pixels = _size_limits(vp)
    if getattr(vp, "cap_pixels_per_frame", False):
        # Each frame's share of the whole video's budget, floored just above the minimum.
        total = int(vp.max_video_tokens * factor * factor * 0.9)
        max_pixels = max(min(max_pixels, total * vp.temporal_patch_size // num_frames), int(min_pixels * 1.05))
    return smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


def video_pixels(vp, frames: torch.Tensor, fps: float = 2.0) -> VideoPixels:
    """(F, 3, H, W) frames in [0, 1] → the processor's patch rows, differentiably."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (F, 3, H, W), got {tuple(frames.shape)}")
    if vp.resample not in _INTERPOLATION:
        raise ValueError(f"resample mode {vp.resample} has no torch equivalent here")
    n, _, height, width = frames.shape
    new_h, new_w = target_size(vp, n, height, width)
    x = frames.float()
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode=_INTERPOLATION[vp.resample], align_corners=False,
                          antialias=True).clamp(0, 1)
    if vp.do_normalize:
        mean = torch.tensor(vp.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(vp.image_std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    tp, p, m = vp.temporal_patch_size, vp.patch_size, vp.merge_size
    if pad := -n % tp:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
    gt, gh, gw = x.shape[0] // tp, new_h // p, new_w // p
    x = x.reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p)
    # → (t, block row, block col, row in block, col in block, channel, frame in patch, y, x)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gt * gh * gw, 3 * tp * p * p)
    return VideoPixels(x, torch.tensor([gt, gh, gw]), float(fps))


def reference_answer(question: dict) -> str:
    """A question's reference answer as the JSON reply its question asks for (keys in its order)."""
    ref = question["reference"]
    keys = ANSWER_KEYS.get(question.get("dim"), ("answer", "explanation"))
    return json.dumps({k: ref[k] for k in keys if k in ref}, ensure_ascii=False)


class VLMScorer:
    """A frozen Qwen2-VL / Qwen2.5-VL that scores answer texts about videos, with gradients to the pixels."""

    def __init__(self, model, processor) -> None:
        self.model = model
        self.processor = processor
        freeze(model)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu", dtype: str = "float32") -> "VLMScorer":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from vidcli import weights

        model = weights.load_model(AutoModelForImageTextToText, path, dtype=resolve_dtype(dtype))
        if weights.optional_files() and not weights.has_tokenizer(path):
            processor = None  # a configuration-only folder, built to be sized
        else:
            processor = AutoProcessor.from_pretrained(path)
        return cls(model.to(weights.placement(device)), processor)

    def checkpoint_activations(self) -> None:
        """Recompute each layer's activations during backward instead of keeping them from the
        forward: a query then holds only every layer's input until its gradient reaches the
        pixels (``--vlm-checkpointing``). transformers checkpoints only in training mode, which
        changes nothing else in these models (their dropout rates are 0)."""
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):  # the name since transformers 5.x
            self.model.activation_checkpointing_enable(kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.model.train()

    def video_pixels(self, frames: torch.Tensor, fps: float = 2.0) -> VideoPixels:
        """Frames (F, 3, H, W) in [0, 1] → model-ready pixels (see :func:`video_pixels`)."""
        out = video_pixels(self.processor.video_processor, frames.to(self.model.device), fps)
        out.pixel_values = out.pixel_values.to(self.model.dtype)
        return out

    def prompt_ids(self, videos: list[VideoPixels], question: str) -> list[int]:
        """Token ids of the chat prompt: the videos, then the question, then the assistant turn's opening."""
        conversation = [{"role": "user", "content": [{"type": "video"} for _ in videos]
                         + [{"type": "text", "text": question}]}]
        text = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        pad = self.processor.video_token
        pieces = text.split(pad)
        if len(pieces) != len(videos) + 1:
            raise ValueError(f"the chat template placed {len(pieces) - 1} video slots for {len(videos)} videos")
        merge = self.processor.video_processor.merge_size ** 2
        expanded = pieces[0] + "".join(pad * (int(v.grid_thw.prod()) // merge) + piece
                                       for v, piece in zip(videos, pieces[1:]))
        return self.processor.tokenizer(expanded, add_special_tokens=False)["input_ids"]

    def model_inputs(self, videos: list[VideoPixels], ids: list[int]) -> dict:
        """Everything the model's forward takes, with our differentiable pixels in it."""
        return self.batch_inputs([(videos, ids)])

    def batch_inputs(self, rows: list[tuple[list[VideoPixels], list[int]]]) -> dict:
        """Forward inputs for several (videos, token ids) rows, left-padded to one length so
        every row ends at the last position (where ``logits_to_keep`` reads)."""
        device = self.model.device
        pad = self.processor.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        width = max(len(ids) for _, ids in rows)
        padded = [[pad] * (width - len(ids)) + ids for _, ids in rows]
        videos = [v for row_videos, _ in rows for v in row_videos]
        inputs = {"input_ids": torch.tensor(padded, device=device),
                  "attention_mask": torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in rows],
                                                 device=device),
                  "pixel_values_videos": torch.cat([v.pixel_values for v in videos]),
                  "video_grid_thw": torch.stack([v.grid_thw for v in videos]).to(device)}
        names = self.processor.model_input_names
        if "second_per_grid_ts" in names:  # Qwen2.5-VL spaces temporal positions by real time
            tp = self.processor.video_processor.temporal_patch_size
            inputs["second_per_grid_ts"] = torch.tensor([tp / v.fps for v in videos], device=device)
        if "mm_token_type_ids" in names:
            inputs["mm_token_type_ids"] = torch.tensor(self.processor.create_mm_token_type_ids(padded), device=device)
        return inputs

    def answer_logprobs(self, videos: list[VideoPixels], question: str, answer: str,
                        span: tuple[int, int] | None = None, max_tokens: int = MAX_ANSWER_TOKENS) -> torch.Tensor:
        """Per-token log p of ``answer`` (its first ``max_tokens`` tokens) after the prompt, teacher-forced.

        With ``span`` (character range in ``answer``), only the tokens overlapping it
        are returned, and the answer is cut after them (later tokens cannot change them).
        """
        encoded = self.processor.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        answer_ids, offsets = encoded["input_ids"][:max_tokens], encoded["offset_mapping"][:max_tokens]
        keep = list(range(len(answer_ids)))
        if span is not None:
            keep = [i for i, (a, b) in enumerate(offsets) if a < span[1] and b > span[0]]
            if not keep:
                raise ValueError(f"no answer token covers characters {span} of {answer!r}")
            answer_ids = answer_ids[:keep[-1] + 1]
        if not answer_ids:
            raise ValueError("the answer text is empty")
        ids = self.prompt_ids(videos, question) + answer_ids
        n = len(answer_ids)
        # Logits only where answer tokens are predicted: the vocabulary projection is the big one.
        logits = self.model(**self.model_inputs(videos, ids), logits_to_keep=n + 1).logits[0, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        token_logp = logp.gather(1, torch.tensor(answer_ids, device=logp.device)[:, None])[:, 0]
        return token_logp[keep]

    def answer_logprob(self, videos: list[VideoPixels], question: str, answer: str,
                       span: tuple[int, int] | None = None) -> torch.Tensor:
        """Summed log-likelihood of ``answer`` (or of its tokens over ``span``)."""
        return self.answer_logprobs(videos, question, answer, span).sum()

    def yes_logprob(self, videos: list[VideoPixels], question: str) -> torch.Tensor:
        """log p("Yes") as the first words of the reply."""
        return self.answer_logprob(videos, question, "Yes")


def vanilla_reward(scorer: VLMScorer, frames: torch.Tensor, prompt: str, *, fps: float = 2.0) -> torch.Tensor:
    """Vanilla-DRF: R = log p(Yes | video, "does it match the prompt?")."""
    return scorer.yes_logprob([scorer.video_pixels(frames, fps)], VANILLA_QUESTION.format(prompt=prompt))


def verdict_logprob(scorer: VLMScorer, videos: list[VideoPixels], question: str, verdict: str) -> torch.Tensor:
    """log p(verdict) at the verdict position of the JSON reply, teacher-forcing ``{"answer": "`` before it.

    The opening is the same for every dimension on purpose: the Phy question asks for
    per-aspect verdicts before the overall one, and a reference answer's own aspects
    teacher-forced there would decide the verdict we want to read (its log-likelihood
    after them is nearly 0 whatever the video shows).
    """
    answer = VERDICT_PREFIX + verdict
    return scorer.answer_logprob(videos, question, answer, span=(len(VERDICT_PREFIX), len(answer)))


def vqa_loss(scorer: VLMScorer, frames: torch.Tensor, questions: list[dict], *,
             reference_frames: torch.Tensor | None = None, fps: float = 2.0,
             reference_fps: float | None = None, verdict_only: bool = False) -> torch.Tensor:
    """L_VQA = −Σ_i log p(y_i | c_i): the rich reward (whole reference answers) or, with
    ``verdict_only``, the binary ablation (each reference verdict alone, read where no
    reference aspect precedes it: :func:`verdict_logprob`).

    TA questions see (generated frames, question); Phy and VQ questions see (generated
    frames, reference frames, question), so they need ``reference_frames`` (a real video
    matched to the caption; no gradient goes to it). ``fps`` and ``reference_fps`` (default:
    ``fps``) are the rates the model is told each video's frames have.
    """
    generated = scorer.video_pixels(frames, fps)
    if not questions:
        raise ValueError("no questions to score")
    reference = None
    logliks = []
    for question in questions:
        if question.get("reference") is None:
            raise ValueError(f"question {question.get('key', '?')!r} has no reference answer")
        videos = [generated]
        if question.get("dim") in ("Phy", "VQ"):
            if reference_frames is None:
                raise ValueError(f"a {question['dim']} question needs the reference video's frames")
            if reference is None:
                with torch.no_grad():
                    reference = scorer.video_pixels(reference_frames, reference_fps or fps)
            videos.append(reference)
        if verdict_only:
            logliks.append(verdict_logprob(scorer, videos, question["question"], question["reference"]["answer"]))
        else:
            logliks.append(scorer.answer_logprob(videos, question["question"], reference_answer(question)))
    return -torch.stack(logliks).sum()
