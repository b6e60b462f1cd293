"""The toy critic: a small Qwen2.5-VL trained to answer the questions vidcli's rewards ask.

The questions are the project's own, built by the code that asks them:

- ``ta``: a DRF text-alignment question (:func:`vidcli.decompose.drf.ta_questions` on the
  elements of :func:`~vidcli.toyworld.language.drf_elements`), about one video; the reply
  is the JSON the question asks for, ``{"answer": "Yes"|"No", "explanation": ...}``, and
  a true condition's reply is exactly the reference answer ``decompose`` writes (so
  ``drf-tune --reward rich`` scores what the critic learned to say);
- ``vanilla``: :data:`vidcli.rewards.vlm.VANILLA_QUESTION` about a caption; reply "Yes"/"No";
- ``revise_first`` / ``revise_none``: the ReViSE critic's question
  (:meth:`vidcli.train.revise.Critic.question`) about (edited, source) and an edit
  instruction; ``first`` replies with one short sentence about the edited object, then
  ``"\\nVerdict: Yes|No"``, ``none`` with the verdict word first.

Truth comes from the pixels the critic sees: for a clean render, the scene's own facts;
for a degraded one (:func:`~vidcli.toyworld.scene.degrade`: blur, noise, objects faded
towards the background), the facts the oracle reads from it. A statement is true when
every fact it states holds, so the critic learns the oracle's judgement, and its
p(Yes) falls as a generated-looking video loses facts.

Training has two stages. Yes/no verdicts carry one bit per example, too little for a
model that starts from random weights to learn to see: the vision tower first learns the
clips' facts through a linear probe (:func:`train_vision`), then the whole model learns
the questions, balanced between true and false, mixed with captions
(:data:`CAPTION_PROMPT` → the scene's caption: every fact in words), while the probe's
loss stays in the objective so the tower keeps learning. Frames reach the model through
:class:`vidcli.rewards.vlm.VLMScorer` — the same differentiable preprocessing, chat
template and pad expansion drf-tune, revise-tune and ``score --metric vqa`` use — with
frame counts and frame rates drawn from the ranges those commands give (5–10 frames,
7–18 fps). Training is a small question-answering stage on the training core
(:mod:`vidcli.train.core`: seeding, AdamW groups, warm-up and cosine schedule, data
order): next-token loss on the reply, with the verdict token weighted up. The saved
folder loads with ``VLMScorer.from_pretrained`` (``--vlm`` of drf-tune and revise-tune,
``score --vlm hf:PATH``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vidcli.toyworld.language import Fact, caption, drf_elements, scene_facts
from vidcli.toyworld.scene import COLOURS, MOTIONS, PATTERNS, SHAPES, TONES, Degradation, Scene, degrade, render

log = logging.getLogger("vidcli.toyworld")

FORMS = ("ta", "vanilla", "revise_first", "revise_none")
# The first stage's request: not a question any command asks, only a way to tie what the frames
# show to words before the yes/no questions (a caption holds every fact, a verdict one bit).
CAPTION_PROMPT = "Describe the video."
NO_EXPLANATION = "The video does not show this: {condition}."
VERDICT_WEIGHT = 4.0  # the verdict token's weight in the loss, against 1 for every other reply token


# ----------------------------------------------------------------------------- scene changes


def perturbed(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene with one property changed (an object's shape, colour or motion, the background's
    tone or pattern, the camera, or two objects' places swapped), so one stated fact turns false."""
    while True:
        kind = str(rng.choice(["shape", "colour", "motion", "tone", "pattern", "camera", "swap"]))
        things = list(scene.things)
        i = int(rng.integers(len(things)))
        thing = things[i]
        if kind == "shape":
            free = [s for s in SHAPES if s not in {t.shape for t in things}]
            if not free:
                continue
            things[i] = replace(thing, shape=str(rng.choice(free)))
        elif kind == "colour":
            things[i] = replace(thing, colour=str(rng.choice([c for c in COLOURS if c != thing.colour])))
        elif kind == "motion":
            things[i] = replace(thing, motion=str(rng.choice([m for m in MOTIONS if m != thing.motion])))
        elif kind == "swap":
            if len(things) < 2:
                continue
            a, b = things
            things = [replace(a, x=b.x, y=b.y), replace(b, x=a.x, y=a.y)]
        elif kind == "tone":
            return replace(scene, tone=next(t for t in TONES if t != scene.tone))
        elif kind == "pattern":
            other = next(p for p in PATTERNS if p != scene.pattern)
            return replace(scene, pattern=other, camera="static" if other == "plain" else scene.camera)
        elif kind == "camera":
            if scene.pattern != "striped":
                continue
            return replace(scene, camera=str(rng.choice([c for c in ("static", "left", "right") if c != scene.camera])))
        return replace(scene, things=tuple(things))


def random_degradation(rng: np.random.Generator) -> Degradation:
    """A generated-looking spoil: blur and noise always, a fade of the objects in a third of the cases."""
    fade = float(rng.uniform(0.3, 1.0)) if rng.random() < 1 / 3 else 0.0
    return Degradation(blur=float(rng.uniform(0.3, 1.6)), noise=float(rng.uniform(2, 30)), fade=fade,
                       seed=int(rng.integers(2 ** 31)))


@dataclass
class Clip:
    """One video the critic sees, and the facts its pixels show."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    shown: set[Fact]
    scene: Scene


def make_clip(scene: Scene, how: Degradation | None) -> Clip:
    """A render of ``scene`` (spoiled by ``how``) with what it shows: the scene's facts when clean,
    the oracle's reading when spoiled."""
    from vidcli.toyworld.oracle import read_video

    if how is None:
        return Clip(render(scene), set(scene_facts(scene)), scene)
    frames = degrade(scene, how)
    return Clip(frames, read_video(frames).facts(), scene)


# ----------------------------------------------------------------------------- questions


@dataclass
class Item:
    """One question: ``videos`` shown in order, the question text, the truth, and what the reply
    says besides the verdict (:meth:`Replies.build` writes the reply)."""

    form: str
    videos: list[np.ndarray]
    question: str
    label: bool
    reasoning: str | None = None  # revise_first: the sentence before the verdict
    explanation: str | None = None  # ta: the JSON reply's explanation


def _holds(text: str, shown: set[Fact]) -> bool:
    from vidcli.toyworld.language import read_facts

    facts = read_facts(text)
    return bool(facts) and facts <= shown


def ta_item(clip: Clip, rng: np.random.Generator) -> Item:
    """A TA question on one element key: the clip's own condition or a changed scene's."""
    from vidcli.decompose.drf import ta_questions

    own = {q["key"]: q for q in ta_questions(drf_elements(clip.scene))}
    key = str(rng.choice(sorted(own)))
    question = own[key]
    if rng.random() < 0.5:
        for _ in range(20):
            other = {q["key"]: q for q in ta_questions(drf_elements(perturbed(clip.scene, rng)))}
            if key in other and other[key]["question"] != question["question"]:
                question = other[key]
                break
    label = _holds(_condition(question), clip.shown)
    explanation = question["reference"]["explanation"] if label else NO_EXPLANATION.format(
        condition=_condition(question))
    return Item("ta", [clip.frames], question["question"], label, explanation=explanation)


def _condition(question: dict) -> str:
    """The condition a TA question asks about (its reference explanation after the opening)."""
    return question["reference"]["explanation"].split(": ", 1)[1].rstrip(".")


def vanilla_item(clip: Clip, rng: np.random.Generator) -> Item:
    from vidcli.rewards.vlm import VANILLA_QUESTION

    scene = clip.scene if rng.random() < 0.5 else perturbed(clip.scene, rng)
    text = caption(scene)
    return Item("vanilla", [clip.frames], VANILLA_QUESTION.format(prompt=text), _holds(text, clip.shown))


def edited_object_sentence(shape: str, shown: set[Fact]) -> str:
    """What the edited video shows of the edited object, in one sentence (the first-form reasoning)."""
    if Fact("object", shape, None) not in shown:
        return f"The edited video shows no {shape}."
    colour = next((f.value for f in shown if f.kind == "colour" and f.subject == shape), None)
    motion = next((f.value for f in shown if f.kind == "motion" and f.subject == shape), None)
    verb = "stays still" if motion == "still" else f"moves {motion}" if motion else "is there"
    return f"The edited video shows a {colour + ' ' if colour else ''}{shape} that {verb}."


def revise_item(source: Clip, edited: Clip, instruction: str, subject: str, label: bool, form: str) -> Item:
    from vidcli.prompts import render_text
    from vidcli.rewards.critic import CRITIC_PROMPTS, critic_checks

    reasoning = form.removeprefix("revise_")
    question = render_text(CRITIC_PROMPTS[reasoning], instruction=instruction, checks=critic_checks(None))
    sentence = edited_object_sentence(subject, edited.shown)
    return Item(form, [edited.frames, source.frames], question, label, reasoning=sentence)


# ----------------------------------------------------------------------------- token targets


class Replies:
    """Token ids of the replies, built piece by piece as the readers tokenise them: the verdict
    is the token each reward reads (``{"answer": "`` then the verdict word; the word after the
    ReViSE cue; the first word), and the position of that token in the reply is kept."""

    def __init__(self, tokenizer) -> None:
        from vidcli.rewards.critic import VERDICT_CUE
        from vidcli.rewards.vlm import VERDICT_PREFIX

        self.tok = tokenizer
        self.end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.cue = self.ids(VERDICT_CUE)
        self.prefix = VERDICT_PREFIX

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def build(self, item: Item) -> tuple[list[int], int]:
        """(reply ids, index of the verdict token in them)."""
        verdict = "Yes" if item.label else "No"
        if item.form == "ta":
            # As reference_answer writes it; the verdict's tokens follow the JSON opening.
            text = json.dumps({"answer": verdict, "explanation": item.explanation}, ensure_ascii=False)
            head = self.ids(self.prefix)
            full = self.ids(text)
            if full[:len(head)] != head:
                raise ValueError("the tokenizer joins the JSON opening with the verdict")
            return full + [self.end], len(head)
        if item.form == "vanilla":
            return self.ids(verdict) + [self.end], 0
        if item.form == "caption":
            return self.ids(item.explanation) + [self.end], -1
        if item.form == "revise_first":
            before = self.ids(item.reasoning) + self.cue
            word = self.ids(f"{self.tok.decode(self.cue)} {verdict}")[len(self.cue):]
            return before + word + [self.end], len(before)
        if item.form == "revise_none":
            return self.ids(f"{verdict}. {item.reasoning}") + [self.end], 0
        raise ValueError(f"unknown form {item.form!r}")


# ----------------------------------------------------------------------------- model


def corpus(rng: np.random.Generator, scenes: int = 300) -> list[str]:
    """Texts in the critic's domain: every question form and reply on random scenes and edits."""
    from vidcli.decompose.drf import ta_questions
    from vidcli.testing import training_corpus
    from vidcli.toyworld.editor import random_edit
    from vidcli.toyworld.scene import random_scene

    lines = list(training_corpus())
    for _ in range(scenes):
        scene = random_scene(rng)
        clip = Clip(np.zeros((1, 2, 2, 3), np.uint8), set(scene_facts(scene)), scene)
        for q in ta_questions(drf_elements(scene)):
            lines += [q["question"], json.dumps({"answer": "Yes", "explanation": q["reference"]["explanation"]}),
                      NO_EXPLANATION.format(condition=_condition(q))]
        lines.append(vanilla_item(clip, rng).question)
        edit = random_edit(rng)
        for instruction in (edit.literal, edit.implicit):
            for form in ("revise_first", "revise_none"):
                item = revise_item(clip, clip, instruction, edit.subject, True, form)
                lines += [item.question, item.reasoning + "\nVerdict: Yes", "No. " + item.reasoning]
    return lines


def train_tokenizer(texts: list[str], vocab_size: int = 1200):
    """Byte-level BPE with Qwen2's pre-tokenizer and special tokens (as the tiny kit's), learned on
    ``texts`` so that the prompts' words are single tokens."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    from vidcli.testing import QWEN_SPECIAL_TOKENS

    tok = Qwen2Tokenizer().train_new_from_iterator([texts], vocab_size=vocab_size, show_progress=False)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS], special_tokens=True)
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    return tok


def build_untrained(folder: Path, *, seed: int, quick: bool = False) -> None:
    """A fresh Qwen2.5-VL critic and its processor in ``folder`` (weights at the usual 0.02 init)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    from vidcli.testing.models import QWEN_SPECIAL_TOKENS, VLM_CHAT_TEMPLATE, _chat_generation_config, _padded_vocab

    tok = train_tokenizer(corpus(np.random.default_rng([seed, 1]), scenes=100 if quick else 300))
    ids = dict(zip(QWEN_SPECIAL_TOKENS, tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS)))
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    hidden, heads = 128, 4
    head_dim = hidden // heads
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=_padded_vocab(len(tok)), hidden_size=hidden, intermediate_size=256,
            num_hidden_layers=3, num_attention_heads=heads, num_key_value_heads=2,
            max_position_embeddings=2048, bos_token_id=eot, eos_token_id=ids["<|im_end|>"], pad_token_id=eot,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]},
        ),
        # Full attention in every block: a window would cut the 4×4 patches of a frame apart. Temporal
        # positions advance by 16 per second, so the 2-frame patch groups of 7–18 fps clips stay apart.
        vision_config=dict(depth=3, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[0, 1, 2], tokens_per_second=16),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = _chat_generation_config(tok)
    # A 32×32 frame becomes 56×56: 4×4 patches of 14 px, one 2×2 merged block per quarter of the frame.
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112), tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=56 * 56 * 2, min_frames=2,
                                              max_frames=16, cap_pixels_per_frame=True),
        chat_template=VLM_CHAT_TEMPLATE)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


# ----------------------------------------------------------------------------- data


def views(videos: list[np.ndarray], rng: np.random.Generator) -> list[tuple[torch.Tensor, float]]:
    """The frames a reward would hand the critic: 5–10 of each video, spread over the clip (the same
    indices for every video, as revise-tune takes them), (F, 3, H, W) in [0, 1], and the rate it is
    told (F frames over a clip of 9 frames at 8 or 16 fps)."""
    count = int(rng.choice([5, 8, 9, 10]))
    out = []
    for frames in videos:
        index = np.floor(np.linspace(0, len(frames) - 1, count) + 0.5).astype(int)
        seconds = len(frames) / float(rng.choice([8.0, 16.0]))
        out.append((torch.from_numpy(frames[index]).permute(0, 3, 1, 2).float() / 255, count / seconds))
    return out


def make_items(rng: np.random.Generator, count: int, *, forms: tuple[str, ...] = FORMS,
               degraded: float = 0.4) -> list[Item]:
    """About ``count`` questions over fresh scenes and edits, about half of them true.

    Rendering and reading pixels cost more than a question, so each clip serves several:
    a single-video clip gets two TA questions and two vanilla ones; an edit gives a
    correct and a failed edited clip, each asked in both ReViSE forms.
    """
    from vidcli.toyworld.editor import random_edit, wrong_edit
    from vidcli.toyworld.scene import random_scene

    single = [f for f in forms if f in ("ta", "vanilla")]
    pair = [f for f in forms if f.startswith("revise")]
    items: list[Item] = []
    while len(items) < count:
        if single:
            clip = make_clip(random_scene(rng), random_degradation(rng) if rng.random() < degraded else None)
            for form in single * 2:
                items.append((ta_item if form == "ta" else vanilla_item)(clip, rng))
        if pair:
            edit = random_edit(rng)
            source = make_clip(edit.source, None)
            for scene in (edit.target, wrong_edit(edit, rng)):
                edited = make_clip(scene, random_degradation(rng) if rng.random() < degraded else None)
                label = edit_done(edit, edited)
                for form in pair:
                    instruction = edit.literal if rng.random() < 0.5 else edit.implicit
                    items.append(revise_item(source, edited, instruction, edit.subject, label, form))
    return items[:count]


def caption_items(rng: np.random.Generator, count: int) -> list[Item]:
    """The first stage's examples: clean and lightly spoiled renders with their captions."""
    from vidcli.toyworld.scene import random_scene

    items = []
    for _ in range(count):
        scene = random_scene(rng)
        how = Degradation(blur=float(rng.uniform(0, 0.8)), noise=float(rng.uniform(0, 10)),
                          seed=int(rng.integers(2 ** 31))) if rng.random() < 0.5 else None
        frames = render(scene) if how is None else degrade(scene, how)
        items.append(Item("caption", [frames], CAPTION_PROMPT, True, explanation=caption(scene)))
    return items


# The vision stage's targets: per shape its colour and its motion (0: no such object), then the
# background's tone and pattern and the camera.
TARGETS = [(f"{shape} colour", 1 + len(COLOURS)) for shape in SHAPES] + \
    [(f"{shape} motion", 1 + len(MOTIONS)) for shape in SHAPES] + [("tone", 2), ("pattern", 2), ("camera", 3)]


def scene_targets(scene: Scene) -> list[int]:
    """Class indices of :data:`TARGETS` for ``scene``."""
    colours, motions = [], []
    for shape in SHAPES:
        thing = scene.thing(shape)
        colours.append(0 if thing is None else 1 + list(COLOURS).index(thing.colour))
        motions.append(0 if thing is None else 1 + MOTIONS.index(thing.motion))
    return colours + motions + [list(TONES).index(scene.tone), PATTERNS.index(scene.pattern),
                                ("static", "left", "right").index(scene.camera)]


def vision_clips(rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, Scene]]:
    """Clean and lightly spoiled renders with their scenes, for the vision stage."""
    from vidcli.toyworld.scene import random_scene

    clips = []
    for _ in range(count):
        scene = random_scene(rng)
        how = Degradation(blur=float(rng.uniform(0, 0.8)), noise=float(rng.uniform(0, 10)),
                          seed=int(rng.integers(2 ** 31))) if rng.random() < 0.5 else None
        clips.append((render(scene) if how is None else degrade(scene, how), scene))
    return clips


SIZES = [n for _, n in TARGETS]


def new_probe(model) -> torch.nn.Linear:
    """The vision stage's linear probe: the merged tokens of the first and last frame groups → :data:`TARGETS`."""
    return torch.nn.Linear(8 * model.config.vision_config.out_hidden_size, sum(SIZES))


def probe_loss(scorer, probe: torch.nn.Linear, clips: list, rng: np.random.Generator) -> torch.Tensor:
    """Mean cross-entropy of the probe's :data:`TARGETS` on ``clips`` ((frames, scene) pairs), seen as
    the questions show them (:func:`views`)."""
    import torch.nn.functional as F

    model = scorer.model
    pixels = [scorer.video_pixels(*views([frames], rng)[0]) for frames, _ in clips]
    merged = model.model.get_video_features(torch.cat([p.pixel_values for p in pixels]),
                                            torch.stack([p.grid_thw for p in pixels])).pooler_output
    features = torch.stack([torch.cat([m[:4], m[-4:]]).flatten() for m in merged])
    targets = torch.tensor([scene_targets(scene) for _, scene in clips])
    logits = probe(features).split(SIZES, dim=1)
    return sum(F.cross_entropy(lg, targets[:, k]) for k, lg in enumerate(logits)) / len(SIZES)


def train_vision(folder: Path, clips: list, *, seed: int, steps: int, batch_size: int = 32,
                 lr: float = 3e-3) -> tuple[list[float], torch.nn.Linear]:
    """First stage: the vision tower alone learns to tell each clip's facts apart; the losses and the probe.

    A linear probe reads the merged visual tokens of the first and last frame groups and
    predicts :data:`TARGETS`; only the vision tower and the probe train. Verdicts and even
    captions reach the vision tower through a language model that starts from nothing,
    and measured gradients there were 1000× smaller than in the language model: without
    this stage the critic learned global brightness and nothing else. The probe goes on
    into the question stage (:func:`train_critic`), where its loss keeps the tower seeing.
    """
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.train.core import DataOrder, OptimConfig, build_optimizer, build_scheduler, set_seed

    set_seed(seed)
    scorer = VLMScorer.from_pretrained(folder)
    model = scorer.model
    visual = model.model.visual
    visual.requires_grad_(True)
    visual.train()
    probe = new_probe(model)
    named = list(visual.named_parameters()) + [(f"probe.{n}", p) for n, p in probe.named_parameters()]
    optim = OptimConfig(lr=lr, weight_decay=0.01, warmup_steps=max(1, steps // 20), max_grad_norm=1.0)
    optimizer = build_optimizer(named, optim)
    scheduler = build_scheduler(optimizer, optim, steps)
    order = DataOrder(len(clips), batch_size, seed)
    losses = []
    for step in range(steps):
        _, indices = order.micro_batch(step)
        loss = probe_loss(scorer, probe, [clips[i] for i in indices], np.random.default_rng([seed, 6, step]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            log.info("critic vision step %d/%d loss %.4f", step + 1, steps, losses[-1])
    model.eval()
    model.save_pretrained(folder)
    return losses, probe


def edit_done(edit, edited: Clip) -> bool:
    """Whether the clip carries out the edit and keeps the rest (what edit_adherence scores 1)."""
    kept = [f for f in scene_facts(edit.target) if f not in edit.changed and f.kind != "relation"]
    removed = [f for f in edit.changed if f.value == "absent"]
    asked = [f for f in edit.changed if f not in removed]
    return (all(f in edited.shown for f in asked + kept)
            and all(Fact("object", f.subject, None) not in edited.shown for f in removed))


# ----------------------------------------------------------------------------- training


def _rows(scorer, replies: Replies, items: list[Item], rng: np.random.Generator, *, upto_verdict: bool = False):
    """Model rows (videos, prompt + reply ids), each reply's length and its verdict position."""
    rows, lengths, verdicts = [], [], []
    for item in items:
        videos = [scorer.video_pixels(frames, fps) for frames, fps in views(item.videos, rng)]
        reply, v = replies.build(item)
        if upto_verdict:
            reply = reply[:v]
        rows.append((videos, scorer.prompt_ids(videos, item.question) + reply))
        lengths.append(len(reply))
        verdicts.append(v)
    return rows, lengths, verdicts


def qa_loss(scorer, replies: Replies, items: list[Item], rng: np.random.Generator) -> torch.Tensor:
    """Next-token loss of the replies (left-padded rows end together), the verdict token weighted up."""
    import torch.nn.functional as F

    rows, lengths, verdicts = _rows(scorer, replies, items, rng)
    logits = scorer.model(**scorer.batch_inputs(rows)).logits.float()
    width = logits.shape[1]
    total, weight = logits.new_zeros(()), 0.0
    for b, ((_, ids), n, v) in enumerate(zip(rows, lengths, verdicts)):
        target = torch.tensor(ids[-n:])
        ce = F.cross_entropy(logits[b, width - n - 1:width - 1], target, reduction="none")
        w = torch.ones(n)
        if v >= 0:
            w[v] = VERDICT_WEIGHT
        total = total + (ce * w).sum()
        weight += float(w.sum())
    return total / weight


def verdict_margins(scorer, replies: Replies, items: list[Item], rng: np.random.Generator,
                    batch: int = 32) -> np.ndarray:
    """ℓ(Yes) − ℓ(No) at each item's verdict position (the token each reward reads)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            rows, _, _ = _rows(scorer, replies, chunk, rng, upto_verdict=True)
            logits = scorer.model(**scorer.batch_inputs(rows), logits_to_keep=1).logits[:, -1].float()
            for b, item in enumerate(chunk):
                yes, v = replies.build(replace(item, label=True))
                no, _ = replies.build(replace(item, label=False))
                out.append(float(logits[b, yes[v]] - logits[b, no[v]]))
    return np.asarray(out)


def balanced(items: list[Item], rng: np.random.Generator) -> list[Item]:
    """As many true as false questions (the surplus side thinned at random), shuffled: with a third
    of the statements true, answering "No" to everything was a minimum the training settled in."""
    yes = [it for it in items if it.label]
    no = [it for it in items if not it.label]
    n = min(len(yes), len(no))
    keep = [yes[i] for i in rng.permutation(len(yes))[:n]] + [no[i] for i in rng.permutation(len(no))[:n]]
    return [keep[i] for i in rng.permutation(len(keep))]


def train_critic(folder: Path, items: list[Item], *, seed: int, steps: int, batch_size: int = 16,
                 lr: float = 2e-3, probe: torch.nn.Linear | None = None, probe_clips: list | None = None,
                 probe_weight: float = 0.5, probe_batch: int = 8) -> list[float]:
    """Train the critic in ``folder`` on ``items`` for ``steps`` steps and save it there; the losses.

    With ``probe`` and ``probe_clips`` the vision stage's probe loss on ``probe_batch`` clips is
    added to every step (× ``probe_weight``): through the language model alone the vision tower
    gets too little gradient to keep learning."""
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.train.core import DataOrder, OptimConfig, build_optimizer, build_scheduler, set_seed

    set_seed(seed)
    scorer = VLMScorer.from_pretrained(folder)
    model = scorer.model
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    replies = Replies(scorer.processor.tokenizer)
    named = list(model.named_parameters())
    if probe is not None:
        named += [(f"probe.{n}", p) for n, p in probe.named_parameters()]
    optim = OptimConfig(lr=lr, weight_decay=0.01, warmup_steps=max(1, steps // 20), max_grad_norm=1.0)
    optimizer = build_optimizer(named, optim)
    scheduler = build_scheduler(optimizer, optim, steps)
    order = DataOrder(len(items), batch_size, seed)
    probe_order = DataOrder(len(probe_clips), probe_batch, seed + 1) if probe is not None and probe_clips else None
    losses = []
    for step in range(steps):
        _, indices = order.micro_batch(step)
        rng = np.random.default_rng([seed, 7, step])
        loss = qa_loss(scorer, replies, [items[i] for i in indices], rng)
        total = loss
        if probe_order is not None:
            _, picked = probe_order.micro_batch(step)
            total = loss + probe_weight * probe_loss(scorer, probe, [probe_clips[i] for i in picked], rng)
        total.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            log.info("critic step %d/%d loss %.4f", step + 1, steps, losses[-1])
    model.eval()
    model.save_pretrained(folder)
    return losses


# ----------------------------------------------------------------------------- measuring


def reliability(p_yes: np.ndarray, labels: np.ndarray, bins: int = 5) -> list[dict]:
    """Per p(Yes) bin: how many answers, their mean p(Yes) and the fraction that were true."""
    edges = np.linspace(0, 1, bins + 1)
    table = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (p_yes >= lo) & ((p_yes < hi) if hi < 1 else (p_yes <= hi))
        if inside.any():
            table.append({"bin": f"{lo:.1f}-{hi:.1f}", "count": int(inside.sum()),
                          "mean_p_yes": round(float(p_yes[inside].mean()), 3),
                          "fraction_true": round(float(labels[inside].mean()), 3)})
    return table


def evaluate(folder: Path, items: list[Item], *, seed: int) -> dict:
    """Held-out accuracy (overall and per form) and the reliability table of p(Yes) = σ(ℓ(Yes) − ℓ(No))."""
    from vidcli.rewards.vlm import VLMScorer

    scorer = VLMScorer.from_pretrained(folder)
    margins = verdict_margins(scorer, Replies(scorer.processor.tokenizer), items, np.random.default_rng([seed, 8]))
    p_yes = 1 / (1 + np.exp(-margins))
    labels = np.asarray([it.label for it in items], dtype=float)
    right = (p_yes > 0.5) == (labels > 0.5)
    forms = {f: round(float(right[[it.form == f for it in items]].mean()), 4)
             for f in FORMS if any(it.form == f for it in items)}
    return {"accuracy": round(float(right.mean()), 4), "by_form": forms, "count": len(items),
            "fraction_true": round(float(labels.mean()), 3), "reliability": reliability(p_yes, labels)}


def calibration(folder: Path, *, seed: int, scenes: int = 48) -> dict:
    """log p(Yes) of the vanilla question (as ``drf-tune --reward vanilla`` reads it) on degraded
    renders of held-out scenes against the oracle's caption adherence of the same pixels.

    Spread over every level of spoiling (blur, noise, fade), grouped by adherence; the rank
    correlation says whether the critic's reward rises with what the pixels show.
    """
    from scipy.stats import spearmanr

    from vidcli.rewards.vlm import VLMScorer, vanilla_reward
    from vidcli.toyworld.oracle import caption_adherence
    from vidcli.toyworld.scene import random_scene

    rng = np.random.default_rng([seed, 9])
    scorer = VLMScorer.from_pretrained(folder)
    rewards, adherence = [], []
    with torch.inference_mode():
        for n in range(scenes):
            scene = random_scene(rng)
            text = caption(scene)
            for level in (0.0, 0.35, 0.7, 1.0):
                how = Degradation(blur=0.3 + 1.2 * level, noise=2 + 28 * level, fade=level * float(rng.uniform(0.5, 1)),
                                  seed=int(rng.integers(2 ** 31)))
                frames = degrade(scene, how)
                adherence.append(caption_adherence(frames, text)["score"])
                (video, fps), = views([frames], np.random.default_rng([seed, n]))
                rewards.append(float(vanilla_reward(scorer, video, text, fps=fps)))
    rewards, adherence = np.asarray(rewards), np.asarray(adherence)
    groups = []
    for lo, hi in ((0.0, 0.5), (0.5, 0.75), (0.75, 0.999), (0.999, 1.01)):
        inside = (adherence >= lo) & (adherence < hi)
        if inside.any():
            groups.append({"adherence": f"{lo:.2f}-{min(hi, 1.0):.2f}", "count": int(inside.sum()),
                           "mean_log_p_yes": round(float(rewards[inside].mean()), 3)})
    return {"spearman": round(float(spearmanr(rewards, adherence).statistic), 3), "by_adherence": groups}


# Sizes of the build: the full ones sized for a share of the build's 20 minutes on two idle cores
# (a vision step took ~0.2 s there, a question step ~0.5 s), the quick ones for a share of its 3.
# tests/bench/bench_toyworld_models.py measures them.
QUICK = dict(clips=300, vision_steps=100, captions=80, train=300, steps=40, test=80, calib=6)
FULL = dict(clips=3000, vision_steps=1000, captions=800, train=3000, steps=400, test=400, calib=32)


def build_critic(folder: Path, *, seed: int, quick: bool) -> dict:
    """Build, train (vision, then questions and captions with the vision probe alongside) and measure
    the critic in ``folder``; the report."""
    sizes = QUICK if quick else FULL
    folder.mkdir(parents=True, exist_ok=True)
    build_untrained(folder, seed=seed, quick=quick)
    clips = vision_clips(np.random.default_rng([seed, 4]), sizes["clips"])
    vision_losses, probe = train_vision(folder, clips, seed=seed, steps=sizes["vision_steps"])
    # Captions (every fact in words) ride along with the questions (one bit each): they keep the
    # language model reading the visual tokens while it learns the verdicts.
    items = balanced(make_items(np.random.default_rng([seed, 2]), sizes["train"]), np.random.default_rng([seed, 5]))
    items += caption_items(np.random.default_rng([seed, 1]), sizes["captions"])
    items = [items[i] for i in np.random.default_rng([seed, 10]).permutation(len(items))]
    held_out = make_items(np.random.default_rng([seed, 3]), sizes["test"])
    losses = train_critic(folder, items, seed=seed, steps=sizes["steps"], lr=1e-3, probe=probe, probe_clips=clips)
    report = evaluate(folder, held_out, seed=seed)
    report["calibration"] = calibration(folder, seed=seed, scenes=sizes["calib"])
    report["losses"] = {name: round(float(np.mean(values[-10:])), 4) for name, values in
                        (("vision", vision_losses), ("questions", losses))}
    report["steps"] = {"vision": sizes["vision_steps"], "questions": sizes["steps"]}
    report["train_items"] = len(items)
    return report
