"""The toy critic trained by a curriculum: ``python -m vidcli.toyworld critic DIR``.

The build's critic (:mod:`vidcli.toyworld.critic`) stays near chance: a language model
and a vision tower that both start from nothing get one bit per yes/no question, too
little for either to learn. Measured stage by stage (docs/toyworld.md, "The build's
models"), three things each lifted it, and this module makes them one cached run:

``text``   the language model alone learns to read and compare, with each video's
           caption written as text where the video goes: first the condition alone
           (``"Is it true that the ball is red?"``) and "copy the caption" replies, then
           every question form the rewards ask (DRF's TA questions, the vanilla
           question, both ReViSE forms) mixed with them. With the facts in its context
           the model must only learn the verdict, which on its own took tens of
           thousands of examples.
``eyes``   a fresh vision tower with 7-px patches (a config value of the architecture:
           a patch covers 4 world pixels, so the ball's and the square's corners differ
           in it; with the build's 14-px patches the two were told apart at 0.7)
           learns a loss per object: the merged tokens under each object, weighted by
           how much of each token's cell the object covers, at the first and the last
           frame group, predict its shape, colour and motion through one head shared
           by all objects; the background's tone and pattern and the camera come from
           all tokens. Fresh renders every step. It runs beside ``text`` (a second
           process): the two do not depend on each other.
``joint``  the text stage's language model with the eyes stage's tower, trained together
           on videos: every question form, the condition alone and captions, with the
           per-object loss beside so the tower keeps seeing (tower lr above the
           language model's).

The result, DIR/critic, is a Qwen2.5-VL folder like the build's (``--vlm`` of drf-tune and
revise-tune, ``score --vlm hf:DIR/critic``), measured on the build critic's held-out
questions (:func:`vidcli.toyworld.critic.evaluate`, the same 400 for the same seed) and
its calibration. DIR/critic.json holds the key and each stage's report; a stage whose
report is there under the same key is not run again (Ctrl-C keeps the finished stages).
The key hashes this module, the build's key (the world, the questions and the oracle it
uses) and the seed and size, so editing this module does not rebuild the world.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidcli.toyworld.critic_data import CAPTION_PROMPT, Clip, Item, Replies, vision_clips
from vidcli.toyworld.language import caption, scene_facts
from vidcli.toyworld.scene import COLOURS, FRAMES, MOTIONS, PATTERNS, SHAPES, SIZE, TONES, coverage

log = logging.getLogger("vidcli.toyworld")

PATCH = 7  # vision patch size in processor pixels (a 32-px frame is resized to 56 px: 4 world px)
CELLS = 4  # merged tokens per side of a frame group (56 px / (7 px × merge 2))
SHORT_QUESTION = "Is it true that {condition}?"
STATE = "critic.json"


@dataclass(frozen=True)
class Sizes:
    text_short: int  # steps of the first text phase (the condition alone and copy replies)
    text_mix: int  # steps of the second (every form)
    text_items: int  # items drawn per text phase
    eyes: int  # steps of the eyes stage
    joint: int  # steps of the joint stage
    joint_items: int  # questions and captions drawn for it
    test: int  # held-out questions (the build critic's, see module docstring)
    calib: int  # held-out scenes of the calibration check


# About 75 minutes on two cores (docs/toyworld.md): the text stage (~1.3 s a short-form step of 64, ~1.1 s
# a mixed step of 32, one core) beside the eyes stage (26 min on the other), then the joint (~0.9 s a step).
FULL = Sizes(text_short=600, text_mix=1500, text_items=12000, eyes=2500, joint=900, joint_items=6000,
             test=400, calib=32)
QUICK = Sizes(text_short=60, text_mix=80, text_items=600, eyes=60, joint=40, joint_items=300, test=80, calib=6)


# ----------------------------------------------------------------------------- the model


def build_untrained(folder: Path, *, seed: int, quick: bool) -> None:
    """The build's critic architecture and processor (same tokenizer, widths and depths) with 7-px
    vision patches, fresh weights."""
    from transformers import AutoConfig, AutoProcessor, GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from vidcli.toyworld import critic

    critic.build_untrained(folder, seed=seed, quick=quick)
    config = AutoConfig.from_pretrained(folder)
    config.vision_config.patch_size = PATCH
    generation = GenerationConfig.from_pretrained(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = generation
    model.save_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    processor.video_processor.patch_size = PATCH
    processor.image_processor.patch_size = PATCH
    processor.save_pretrained(folder)


def _optimizer(groups: list[tuple[list[tuple[str, torch.nn.Parameter]], float]], steps: int):
    """AdamW with one learning rate per list of named parameters (decay on matrices only), warm-up
    and cosine decay from the training core."""
    from vidcli.train.core import OptimConfig, build_scheduler
    from vidcli.train.optim import decay_groups

    config = OptimConfig(lr=1.0, weight_decay=0.01, warmup_steps=max(1, steps // 20), max_grad_norm=1.0)
    param_groups = []
    for named, lr in groups:
        for group in decay_groups(named, config.weight_decay):
            group.pop("names")
            param_groups.append({**group, "lr": lr})
    optimizer = torch.optim.AdamW(param_groups, betas=config.betas, eps=config.eps)
    return optimizer, build_scheduler(optimizer, config, steps), config


# ----------------------------------------------------------------------------- questions with their facts


def _plain_clip(scene) -> Clip:
    """A clip that is only its scene: the text stage reads facts, not pixels."""
    return Clip(np.zeros((1, 1, 1, 3), np.uint8), set(scene_facts(scene)), scene)


def short_item(clip: Clip, rng: np.random.Generator) -> Item:
    """A TA question's condition asked alone (the clip's own for one key, or, half the time, a changed
    scene's for the same key, as :func:`~vidcli.toyworld.critic_data.ta_item` draws them); the reply is
    the verdict word (as the vanilla form's)."""
    from vidcli.toyworld.critic_data import NO_EXPLANATION, ta_item

    ta = ta_item(clip, rng)
    refused = NO_EXPLANATION.split("{")[0]
    if ta.explanation.startswith(refused):
        condition = ta.explanation[len(refused):].rstrip(".")
    else:
        condition = ta.explanation.split(": ", 1)[1].rstrip(".")
    return Item("vanilla", [clip.frames], SHORT_QUESTION.format(condition=condition), ta.label)


def caption_item(clip: Clip) -> Item:
    return Item("caption", [clip.frames], CAPTION_PROMPT, True, explanation=caption(clip.scene))


def draw_items(rng: np.random.Generator, count: int, mix: dict[str, float], make_clip) -> list[tuple[Item, list]]:
    """About ``count`` (item, scenes of its videos) pairs with forms drawn by ``mix`` (weights over
    ``ta``, ``short``, ``vanilla``, ``revise``, ``caption``); ``make_clip(scene, rng)`` gives each clip."""
    from vidcli.toyworld.critic_data import edit_done, revise_item, ta_item, vanilla_item
    from vidcli.toyworld.editor import random_edit, wrong_edit
    from vidcli.toyworld.scene import random_scene

    names = sorted(mix)
    weights = np.asarray([mix[n] for n in names], float)
    out: list[tuple[Item, list]] = []
    while len(out) < count:
        form = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        if form == "revise":
            edit = random_edit(rng)
            source = make_clip(edit.source, None)
            wrong = rng.random() < 0.5
            scene = wrong_edit(edit, rng) if wrong else edit.target
            edited = make_clip(scene, rng)
            label = edit_done(edit, edited)
            instruction = edit.literal if rng.random() < 0.5 else edit.implicit
            style = "revise_first" if rng.random() < 0.5 else "revise_none"
            out.append((revise_item(source, edited, instruction, edit.subject, label, style), [scene, edit.source]))
            continue
        scene = random_scene(rng)
        clip = make_clip(scene, rng if form != "caption" else None)
        if form == "ta":
            item = ta_item(clip, rng)
        elif form == "vanilla":
            item = vanilla_item(clip, rng)
        elif form == "short":
            item = short_item(clip, rng)
        else:
            item = caption_item(clip)
        out.append((item, [scene]))
    return out[:count]


# ----------------------------------------------------------------------------- text stage


def context_text(scenes: list) -> str:
    """What stands in for the videos in the text stage: each one's caption."""
    if len(scenes) == 1:
        return f"The video: {caption(scenes[0])}"
    return f"The first video: {caption(scenes[0])} The second video: {caption(scenes[1])}"


def _text_rows(scorer, replies: Replies, pairs, *, upto_verdict: bool = False):
    rows, lengths, verdicts = [], [], []
    for item, scenes in pairs:
        reply, v = replies.build(item)
        if upto_verdict:
            reply = reply[:v]
        rows.append(scorer.prompt_ids([], f"{context_text(scenes)}\n{item.question}") + reply)
        lengths.append(len(reply))
        verdicts.append(v)
    return rows, lengths, verdicts


def _text_logits(scorer, rows: list[list[int]], keep: int = 0) -> torch.Tensor:
    pad = scorer.processor.tokenizer.pad_token_id
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return scorer.model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits.float()


def text_accuracy(scorer, replies: Replies, pairs, batch: int = 64) -> dict:
    """Verdict accuracy per form with the captions as text."""
    right: dict[str, list[bool]] = {}
    with torch.inference_mode():
        for start in range(0, len(pairs), batch):
            chunk = pairs[start:start + batch]
            rows, _, _ = _text_rows(scorer, replies, chunk, upto_verdict=True)
            logits = _text_logits(scorer, rows, keep=1)[:, -1]
            for b, (item, _) in enumerate(chunk):
                if item.form == "caption":
                    continue
                yes, v = replies.build(replace(item, label=True))
                no, _ = replies.build(replace(item, label=False))
                said = bool(logits[b, yes[v]] > logits[b, no[v]])
                name = "short" if item.question.startswith(SHORT_QUESTION.split("{")[0]) else item.form
                right.setdefault(name, []).append(said == item.label)
    return {k: round(float(np.mean(v)), 4) for k, v in sorted(right.items())}


TEXT_SHORT_MIX = {"short": 0.6, "caption": 0.4}
TEXT_MIX = {"ta": 0.4, "short": 0.2, "caption": 0.15, "vanilla": 0.1, "revise": 0.15}


def train_text(folder: Path, *, seed: int, sizes: Sizes) -> dict:
    """The text stage (module docstring) on the language model of the critic in ``folder``; saved there."""
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.toyworld.critic import reply_loss
    from vidcli.train.core import DataOrder, clip_and_step, set_seed

    set_seed(seed)
    scorer = VLMScorer.from_pretrained(folder)
    model = scorer.model
    replies = Replies(scorer.processor.tokenizer)
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith("model.visual.")]
    for _, p in named:
        p.requires_grad_(True)
    model.train()

    def plain(scene, rng):
        return _plain_clip(scene)

    held_out = draw_items(np.random.default_rng([seed, 30]), sizes.test, TEXT_MIX, plain)
    report: dict = {"losses": {}, "accuracy": {}}
    for phase, (mix, steps, batch) in enumerate(((TEXT_SHORT_MIX, sizes.text_short, 64),
                                                 (TEXT_MIX, sizes.text_mix, 32))):
        pairs = draw_items(np.random.default_rng([seed, 31, phase]), sizes.text_items, mix, plain)
        optimizer, scheduler, config = _optimizer([(named, 1e-3)], steps)
        order = DataOrder(len(pairs), batch, seed + phase)
        losses = []
        for step in range(steps):
            _, indices = order.micro_batch(step)
            rows, lengths, verdicts = _text_rows(scorer, replies, [pairs[i] for i in indices])
            replies_ids = [row[len(row) - n:] for row, n in zip(rows, lengths)]
            loss = reply_loss(_text_logits(scorer, rows), replies_ids, verdicts)
            loss.backward()
            clip_and_step(None, [p for _, p in named], optimizer, scheduler, config.max_grad_norm)
            losses.append(float(loss.detach()))
            if step % 100 == 0 or step == steps - 1:
                log.info("critic text phase %d step %d/%d loss %.4f", phase + 1, step + 1, steps, losses[-1])
        model.eval()
        report["losses"][f"phase{phase + 1}"] = round(float(np.mean(losses[-20:])), 4)
        report["accuracy"][f"phase{phase + 1}"] = text_accuracy(scorer, replies, held_out)
        model.train()
    model.eval()
    model.save_pretrained(folder)
    report["steps"] = {"phase1": sizes.text_short, "phase2": sizes.text_mix}
    return report


# ----------------------------------------------------------------------------- eyes stage


def view_frames(frames: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, float, np.ndarray]:
    """As :func:`vidcli.toyworld.critic_data.views` picks them (5–10 frames spread over the clip, told
    8 or 16 fps), with the indices of the picked frames."""
    count = int(rng.choice([5, 8, 9, 10]))
    index = np.floor(np.linspace(0, len(frames) - 1, count) + 0.5).astype(int)
    seconds = len(frames) / float(rng.choice([8.0, 16.0]))
    return torch.from_numpy(frames[index]).permute(0, 3, 1, 2).float() / 255, count / seconds, index


def group_frames(index: np.ndarray, temporal: int = 2) -> list[np.ndarray]:
    """The clip frames in each temporal patch group (the last frame repeated to fill the last group)."""
    padded = np.concatenate([index, np.repeat(index[-1:], -len(index) % temporal)])
    return [padded[g:g + temporal] for g in range(0, len(padded), temporal)]


def cell_weights(scene, thing, frames: np.ndarray) -> np.ndarray:
    """(CELLS × CELLS,) how much of ``thing`` lies in each merged token's cell, averaged over the clip
    frames ``frames``, summing to 1 (row-major, the merged tokens' order)."""
    step = SIZE // CELLS
    total = np.zeros((CELLS, CELLS))
    for f in frames:
        t = float(f) / (FRAMES - 1)
        cx, cy = thing.centre(t, scene.pan_offset(t))
        cover = coverage(thing.shape, cx, cy)
        total += cover.reshape(CELLS, step, CELLS, step).sum(axis=(1, 3))
    return (total / total.sum()).reshape(-1)


OBJECT_SIZES = (len(SHAPES), len(COLOURS), len(MOTIONS))
SCENE_SIZES = (len(TONES), len(PATTERNS), 3)


class EyeHeads(torch.nn.Module):
    """The eyes stage's heads: one per object (shape, colour, motion from its weighted tokens at the
    first and last frame group) and one per scene (tone, pattern, camera from the mean tokens)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.object = torch.nn.Linear(2 * hidden, sum(OBJECT_SIZES))
        self.scene = torch.nn.Linear(2 * hidden, sum(SCENE_SIZES))


def eyes_loss(scorer, heads: EyeHeads, clips: list, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Mean cross-entropy of every object's and every scene's classes on ``clips`` ((frames, scene)
    pairs), seen as the questions show them; and the share of each class read right."""
    model = scorer.model
    seen, groups = [], []
    for frames, _ in clips:
        video, fps, index = view_frames(frames, rng)
        seen.append(scorer.video_pixels(video, fps))
        groups.append(group_frames(index))
    merged = model.model.get_video_features(torch.cat([p.pixel_values for p in seen]),
                                            torch.stack([p.grid_thw for p in seen])).pooler_output
    per_cell = CELLS * CELLS
    object_rows, object_targets, scene_rows, scene_targets = [], [], [], []
    for tokens, (_, scene), frame_groups in zip(merged, clips, groups):
        first, last = tokens[:per_cell], tokens[-per_cell:]
        for thing in scene.things:
            w0 = torch.from_numpy(cell_weights(scene, thing, frame_groups[0])).float()
            w1 = torch.from_numpy(cell_weights(scene, thing, frame_groups[-1])).float()
            object_rows.append(torch.cat([w0 @ first, w1 @ last]))
            object_targets.append([SHAPES.index(thing.shape), list(COLOURS).index(thing.colour),
                                   MOTIONS.index(thing.motion)])
        scene_rows.append(torch.cat([first.mean(0), last.mean(0)]))
        scene_targets.append([list(TONES).index(scene.tone), PATTERNS.index(scene.pattern),
                              ("static", "left", "right").index(scene.camera)])
    losses, read = [], {}
    for head, rows, targets, sizes, names in (
            (heads.object, object_rows, object_targets, OBJECT_SIZES, ("shape", "colour", "motion")),
            (heads.scene, scene_rows, scene_targets, SCENE_SIZES, ("tone", "pattern", "camera"))):
        logits = head(torch.stack(rows)).split(sizes, dim=1)
        target = torch.tensor(targets)
        for k, (lg, name) in enumerate(zip(logits, names)):
            losses.append(F.cross_entropy(lg, target[:, k]))
            read[name] = float((lg.argmax(1) == target[:, k]).float().mean())
    return sum(losses) / len(losses), read


def train_eyes(folder: Path, *, seed: int, sizes: Sizes) -> dict:
    """The eyes stage (module docstring): trains the vision tower of the critic in ``folder`` and saves
    it with its heads to ``folder/eyes.pt``; the report."""
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.train.core import clip_and_step, set_seed

    set_seed(seed)
    scorer = VLMScorer.from_pretrained(folder)
    visual = scorer.model.model.visual
    visual.requires_grad_(True)
    visual.train()
    heads = EyeHeads(scorer.model.config.vision_config.out_hidden_size)
    named = list(visual.named_parameters()) + [(f"heads.{n}", p) for n, p in heads.named_parameters()]
    optimizer, scheduler, config = _optimizer([(named, 1e-3)], sizes.eyes)
    losses = []
    for step in range(sizes.eyes):
        rng = np.random.default_rng([seed, 40, step])
        loss, _ = eyes_loss(scorer, heads, vision_clips(rng, 16), rng)
        loss.backward()
        clip_and_step(None, [p for _, p in named], optimizer, scheduler, config.max_grad_norm)
        losses.append(float(loss.detach()))
        if step % 100 == 0 or step == sizes.eyes - 1:
            log.info("critic eyes step %d/%d loss %.4f", step + 1, sizes.eyes, losses[-1])
    visual.eval()
    with torch.inference_mode():
        rng = np.random.default_rng([seed, 41])
        _, read = eyes_loss(scorer, heads, vision_clips(rng, sizes.test // 2), rng)
    torch.save({"visual": visual.state_dict(), "heads": heads.state_dict()}, folder / "eyes.pt")
    return {"loss": round(float(np.mean(losses[-20:])), 4), "held_out_read": {k: round(v, 3) for k, v in read.items()},
            "steps": sizes.eyes}


# ----------------------------------------------------------------------------- joint stage


def _video_clip(scene, rng):
    """A render of ``scene`` for the joint stage: spoiled in 40% of the cases (``rng`` None: clean), with
    the facts its pixels show."""
    from vidcli.toyworld.critic_data import make_clip, random_degradation

    return make_clip(scene, random_degradation(rng) if rng is not None and rng.random() < 0.4 else None)


JOINT_MIX = {"ta": 0.3, "short": 0.15, "vanilla": 0.15, "revise": 0.2, "caption": 0.2}


def train_joint(folder: Path, text: Path, eyes: Path, *, seed: int, sizes: Sizes) -> dict:
    """The joint stage (module docstring): ``text``'s model with ``eyes``'s tower, trained on videos;
    saved to ``folder``."""
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.toyworld.critic import qa_loss
    from vidcli.train.core import DataOrder, clip_and_step, set_seed

    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(text, folder, ignore=shutil.ignore_patterns("eyes.pt"))
    set_seed(seed)
    scorer = VLMScorer.from_pretrained(folder)
    model = scorer.model
    saved = torch.load(eyes / "eyes.pt", weights_only=True)
    model.model.visual.load_state_dict(saved["visual"])
    heads = EyeHeads(model.config.vision_config.out_hidden_size)
    heads.load_state_dict(saved["heads"])
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    replies = Replies(scorer.processor.tokenizer)
    tower = [(n, p) for n, p in model.named_parameters() if n.startswith("model.visual.")]
    tower += [(f"heads.{n}", p) for n, p in heads.named_parameters()]
    language = [(n, p) for n, p in model.named_parameters() if not n.startswith("model.visual.")]
    optimizer, scheduler, config = _optimizer([(tower, 1e-3), (language, 3e-4)], sizes.joint)
    items = [item for item, _ in draw_items(np.random.default_rng([seed, 50]), sizes.joint_items, JOINT_MIX,
                                            _video_clip)]
    order = DataOrder(len(items), 16, seed)
    losses = []
    for step in range(sizes.joint):
        _, indices = order.micro_batch(step)
        rng = np.random.default_rng([seed, 51, step])
        loss = qa_loss(scorer, replies, [items[i] for i in indices], rng)
        eye_loss, _ = eyes_loss(scorer, heads, vision_clips(rng, 8), rng)
        (loss + 0.5 * eye_loss).backward()
        clip_and_step(None, [p for _, p in tower + language], optimizer, scheduler, config.max_grad_norm)
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == sizes.joint - 1:
            log.info("critic joint step %d/%d loss %.4f", step + 1, sizes.joint, losses[-1])
    model.eval()
    model.save_pretrained(folder)
    return {"loss": round(float(np.mean(losses[-20:])), 4), "steps": sizes.joint, "train_items": len(items)}


# ----------------------------------------------------------------------------- the run, cached


def curriculum_key(*, seed: int, quick: bool, sizes: Sizes) -> str:
    """This module's source, the build's key (everything the questions and the oracle are made of;
    the full build's), seed, ``quick`` (the tokenizer's corpus) and sizes."""
    from vidcli.toyworld.build import build_key

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"|build={build_key(seed=seed, quick=False)}|seed={seed}|quick={quick}|sizes={sizes}".encode())
    return h.hexdigest()[:16]


def _stage_text(folder: Path, *, seed: int, quick: bool, sizes: Sizes) -> dict:
    build_untrained(folder, seed=seed, quick=quick)
    return train_text(folder, seed=seed, sizes=sizes)


def _stage_eyes(folder: Path, *, seed: int, quick: bool, sizes: Sizes) -> dict:
    build_untrained(folder, seed=seed, quick=quick)
    return train_eyes(folder, seed=seed, sizes=sizes)


def measure(folder: Path, *, seed: int, sizes: Sizes) -> dict:
    """The build critic's measurements on this critic: held-out accuracy by form, reliability table,
    calibration against the oracle."""
    from vidcli.toyworld.critic import calibration, evaluate
    from vidcli.toyworld.critic_data import make_items

    report = evaluate(folder, make_items(np.random.default_rng([seed, 3]), sizes.test), seed=seed)
    report["calibration"] = calibration(folder, seed=seed, scenes=sizes.calib)
    return report


def train_curriculum(root: Path | str, *, seed: int = 0, quick: bool = False, sizes: Sizes | None = None,
                     threads: int = 1) -> dict:
    """Run the stages not yet done under this key into ``root``; its critic.json content.

    ``sizes`` overrides :data:`FULL` / :data:`QUICK` (tests run a few steps of each stage)."""
    from vidcli.toyworld.build import _read_json, _write_json
    from vidcli.toyworld.models import _result, _timed, _worker

    root = Path(root)
    sizes = sizes or (QUICK if quick else FULL)
    key = curriculum_key(seed=seed, quick=quick, sizes=sizes)
    state = _read_json(root / STATE)
    if root.exists() and any(root.iterdir()) and (state is None or state.get("key") != key):
        if state is None:
            raise SystemExit(f"toy critic: {root} is not empty and holds no curriculum run ({STATE}); "
                             "give an empty or new folder")
        shutil.rmtree(root)
        state = None
    root.mkdir(parents=True, exist_ok=True)
    state = state or {"key": key, "seed": seed, "quick": quick, "sizes": asdict(sizes), "stages": {}}
    _write_json(root / STATE, state)
    stages = state["stages"]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    worker = None
    try:
        if "text" not in stages or "eyes" not in stages:
            with torch.random.fork_rng(devices=[]):
                if "eyes" not in stages:
                    context = multiprocessing.get_context("spawn")
                    receive, send = context.Pipe(duplex=False)
                    eyes = partial(_stage_eyes, sizes=sizes)
                    worker = context.Process(target=_worker, args=(send, eyes, root / "eyes"),
                                             kwargs=dict(seed=seed, quick=quick, threads=threads), daemon=True)
                    worker.start()
                    send.close()
                if "text" not in stages:
                    report, seconds = _timed(partial(_stage_text, sizes=sizes), root / "text", seed=seed, quick=quick)
                    stages["text"] = {**report, "seconds": seconds}
                    _write_json(root / STATE, state)
                if worker is not None:
                    report, seconds = _result(worker, receive)
                    stages["eyes"] = {**report, "seconds": seconds}
                    _write_json(root / STATE, state)
        if "joint" not in stages:
            started = time.perf_counter()
            # Trained and measured under a partial name: DIR/critic is only ever a finished critic.
            partial_dir, final = root / "critic.partial", root / "critic"
            report = train_joint(partial_dir, root / "text", root / "eyes", seed=seed, sizes=sizes)
            report["measured"] = measure(partial_dir, seed=seed, sizes=sizes)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial_dir, final)
            report["seconds"] = round(time.perf_counter() - started, 1)
            stages["joint"] = report
            _write_json(root / STATE, state)
    finally:
        torch.set_num_threads(before)
        if worker is not None and worker.is_alive():
            worker.terminate()
            worker.join()
    return state
