"""The toy critic: a small Qwen2.5-VL trained to answer the questions vidcli's rewards ask.

The questions, the clips they are asked about and the data of both training stages are
:mod:`vidcli.toyworld.critic_data`'s.

Training has two stages. Yes/no verdicts carry one bit per example, too little for a
model that starts from random weights to learn to see: the vision tower first learns the
clips' facts through a linear probe (:func:`train_vision`), then the whole model learns
the questions, balanced between true and false, mixed with captions
(:data:`~vidcli.toyworld.critic_data.CAPTION_PROMPT` → the scene's caption: every fact in
words), while the probe's loss stays in the objective so the tower keeps learning. Frames reach the model through
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
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vidcli.toyworld.critic_data import (
    FORMS,
    NO_EXPLANATION,
    TARGETS,
    Clip,
    Item,
    Replies,
    caption_items,
    make_items,
    revise_item,
    scene_targets,
    ta_condition,
    vanilla_item,
    views,
    vision_clips,
)
from vidcli.toyworld.language import caption, drf_elements, scene_facts
from vidcli.toyworld.scene import Degradation, degrade

log = logging.getLogger("vidcli.toyworld")

VERDICT_WEIGHT = 4.0  # the verdict token's weight in the loss, against 1 for every other reply token


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
                      NO_EXPLANATION.format(condition=ta_condition(q))]
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

    from vidcli.testing.tokenizers import QWEN_SPECIAL_TOKENS, VLM_CHAT_TEMPLATE, chat_generation_config, padded_vocab

    tok = train_tokenizer(corpus(np.random.default_rng([seed, 1]), scenes=100 if quick else 300))
    ids = dict(zip(QWEN_SPECIAL_TOKENS, tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS)))
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    hidden, heads = 128, 4
    head_dim = hidden // heads
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=padded_vocab(len(tok)), hidden_size=hidden, intermediate_size=256,
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
    model.generation_config = chat_generation_config(tok)
    # A 32×32 frame becomes 56×56: 4×4 patches of 14 px, one 2×2 merged block per quarter of the frame.
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112), tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=56 * 56 * 2, min_frames=2,
                                              max_frames=16, cap_pixels_per_frame=True),
        chat_template=VLM_CHAT_TEMPLATE)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


# ----------------------------------------------------------------------------- vision stage


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
    from vidcli.train.core import DataOrder, OptimConfig, build_optimizer, build_scheduler, clip_and_step, set_seed

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
        clip_and_step(None, [p for _, p in named], optimizer, scheduler, optim.max_grad_norm)
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            log.info("critic vision step %d/%d loss %.4f", step + 1, steps, losses[-1])
    model.eval()
    model.save_pretrained(folder)
    return losses, probe


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
    rows, lengths, verdicts = _rows(scorer, replies, items, rng)
    logits = scorer.model(**scorer.batch_inputs(rows)).logits.float()
    return reply_loss(logits, [ids[-n:] for (_, ids), n in zip(rows, lengths)], verdicts)


def reply_loss(logits: torch.Tensor, replies: list[list[int]], verdicts: list[int]) -> torch.Tensor:
    """Mean next-token cross-entropy of each row's reply ids (left-padded rows: every reply ends at the
    last position), the verdict token (its index in the reply; −1: none) weighted by VERDICT_WEIGHT."""
    import torch.nn.functional as F

    width = logits.shape[1]
    total, weight = logits.new_zeros(()), 0.0
    for b, (ids, v) in enumerate(zip(replies, verdicts)):
        n = len(ids)
        ce = F.cross_entropy(logits[b, width - n - 1:width - 1], torch.tensor(ids), reduction="none")
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
    from vidcli.train.core import DataOrder, OptimConfig, build_optimizer, build_scheduler, clip_and_step, set_seed

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
        clip_and_step(None, [p for _, p in named], optimizer, scheduler, optim.max_grad_norm)
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
