"""Does a critic's pixel gradient point at the captions' facts? ``python -m vidcli.toyworld gradient-check``.

DRF's update is the critic's gradient with respect to the frames, carried back through the last
denoising steps and the VAE into the DiT. This check leaves the generator out: it moves the build
generator's videos of held-out captions straight along that gradient (signed steps on the frames,
the rich TA reward ``drf-tune`` reads) and lets the pixel oracle read each video before and after.
A critic whose gradient adds the captions' facts raises the oracle's adherence; any other raises only
its own reward. Every critic measured so far is of the second kind — its steps add texture (the share
of videos with a visual defect rises) and rework the background and the camera's pan (the per-kind
figures; where traced, a plain background the steps' added variation makes the oracle read as striped,
and a pan read on those stripes), and blurred (``--blur``) so that they add no texture they still lose
adherence — and DRF against each lost adherence (docs/toyworld.md, "A critic that stays right on the
tuned videos, and its pixel gradient"): a few minutes here before a DRF run says whether the run can learn.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np

STEPS = 15
STEP = 2 / 255  # per step, on frames in [0, 1]
FPS = 16.0  # the rate drf-tune tells the critic: 9 of 9 frames at the toy generator's 16 fps


def smoothed(grad, sigma: float):
    """Each frame's gradient ((T, C, H, W) tensor) blurred over its pixels by a Gaussian of ``sigma`` pixels,
    truncated at ceil(3σ) and mirrored at the edges (the edge pixel not repeated); ``sigma`` 0: as it is."""
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return grad
    radius = math.ceil(3 * sigma)
    t, c, h, w = grad.shape
    if radius >= min(h, w):
        raise ValueError(f"a blur of {sigma:g} px reaches {radius} px, more than a {h}x{w} frame can mirror")
    offsets = torch.arange(-radius, radius + 1, dtype=grad.dtype)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    g = grad.reshape(t * c, 1, h, w)
    g = F.conv2d(F.pad(g, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    g = F.conv2d(F.pad(g, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return g.reshape(t, c, h, w)


def ascend(scorer, frames: np.ndarray, questions: list[dict], *, steps: int = STEPS, step: float = STEP,
           fps: float = FPS, blur: float = 0.0) -> tuple[np.ndarray, float, float, float]:
    """``frames`` ((T, H, W, 3) uint8) moved by ``steps`` signed steps of ``step`` along the gradient of the
    critic's (a :class:`~vidcli.rewards.vlm.VLMScorer`) rich reward for ``questions``: the moved frames (uint8),
    L_VQA before and after, and the largest change of any pixel (in [0, 1] units)."""
    import torch

    from vidcli.rewards.vlm import vqa_loss

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
    start = x.clone()
    before = None
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        loss = vqa_loss(scorer, x, questions, fps=fps)
        before = float(loss.detach()) if before is None else before
        (grad,) = torch.autograd.grad(loss, x)
        x = (x - step * smoothed(grad, blur).sign()).clamp(0, 1)
    with torch.no_grad():
        after = float(vqa_loss(scorer, x, questions, fps=fps))
    if before is None:
        before = after
    moved = (x.detach().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return moved, before, after, float((x.detach() - start).abs().max())


def pixel_ascent(critic: Path | str, videos: list[tuple[str, list[dict], np.ndarray]], *, steps: int = STEPS,
                 step: float = STEP, fps: float = FPS, blur: float = 0.0) -> dict:
    """Move each ``(caption, TA questions with reference answers, frames (T, H, W, 3) uint8)`` by ``steps``
    signed steps of ``step`` along the gradient of the critic's rich reward (−L_VQA; a negative ``step``
    goes against it) and read it with the oracle before and after. ``blur`` (pixels): each step's gradient
    is first blurred over each frame (:func:`smoothed`), so that the steps can add no texture finer than it.

    Returns the mean reward, oracle adherence and share of defect-free videos (:func:`oracle.clean`) before and
    after, the adherence change with its t interval over videos, the adherence per fact kind (object, colour,
    motion, background, ...: which facts the steps add or lose; over the videos whose captions state that kind),
    and each video's figures."""
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.scoring.summary import describe
    from vidcli.toyworld.language import KINDS, read_facts
    from vidcli.toyworld.oracle import clean, fact_adherence, read_video

    scorer = VLMScorer.from_pretrained(critic)
    rows = []
    for caption, questions, frames in videos:
        moved, before, after, largest = ascend(scorer, frames, questions, steps=steps, step=step, fps=fps, blur=blur)
        facts = read_facts(caption)
        start_reading, end_reading = fact_adherence(facts, read_video(frames)), fact_adherence(facts, read_video(moved))
        rows.append({"caption": caption, "reward_before": -before, "reward_after": -after,
                     "adherence_before": start_reading["score"], "adherence_after": end_reading["score"],
                     "by_kind_before": start_reading["by_kind"], "by_kind_after": end_reading["by_kind"],
                     "clean_before": float(clean(frames)), "clean_after": float(clean(moved)),
                     "largest_change": largest})

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    def by_kind(kind: str) -> dict:
        mine = [r for r in rows if kind in r["by_kind_before"]]
        return {"videos": len(mine), "before": float(np.mean([r["by_kind_before"][kind] for r in mine])),
                "after": float(np.mean([r["by_kind_after"][kind] for r in mine]))}

    return {"critic": str(critic), "videos": len(rows), "steps": steps, "step": step, "blur": blur,
            "reward": {"before": mean("reward_before"), "after": mean("reward_after")},
            "adherence": {"before": mean("adherence_before"), "after": mean("adherence_after"),
                          "change": describe([r["adherence_after"] - r["adherence_before"] for r in rows]),
                          "by_kind": {kind: by_kind(kind) for kind in KINDS if any(kind in r["by_kind_before"]
                                                                                  for r in rows)}},
            "clean": {"before": mean("clean_before"), "after": mean("clean_after")}, "per_video": rows}


def gradient_check(critic: Path | str | None = None, *, seed: int = 0, quick: bool = False, count: int = 32,
                   steps: int = STEPS, step: float = STEP, blur: float = 0.0) -> dict:
    """:func:`pixel_ascent` of ``critic`` (default: the build's) on the build generator's videos (``vidcli
    generate``, 20 steps, guidance 5, seed 0: as the report makes them) of the first ``count`` held-out captions,
    each with its record's TA questions."""
    from vidcli.toyworld.build import ensure_world
    from vidcli.toyworld.report import ReportContext, _generate, _rows

    root, _ = ensure_world(seed=seed, quick=quick)
    ctx = ReportContext(root, seed, quick, None)
    records = _rows(ctx.world / "drf.test.jsonl")[:count]
    questions = {r["id"]: [q for q in r["questions"] if q["dim"] == "TA"] for r in records}
    with tempfile.TemporaryDirectory(prefix="vidcli-gradient-") as tmp:
        prompts = Path(tmp) / "captions.jsonl"
        prompts.write_text("".join(json.dumps({"id": r["id"], "caption": r["caption"]}) + "\n" for r in records),
                           encoding="utf-8")
        videos = [(record["caption"], questions[record["id"]], frames)
                  for record, frames in _generate(ctx, root / "generator", prompts, Path(tmp) / "generated.jsonl",
                                                  20, 5.0)]
    return pixel_ascent(critic or root / "critic", videos, steps=steps, step=step, blur=blur)


def summary_line(result: dict) -> str:
    change = result["adherence"]["change"]
    low, high = change["ci95"] or (change["mean"], change["mean"])
    return (f"gradient-check: reward {result['reward']['before']:.2f} -> {result['reward']['after']:.2f}, "
            f"oracle adherence {result['adherence']['before']:.3f} -> {result['adherence']['after']:.3f} "
            f"({change['mean']:+.3f} [{low:+.3f}, {high:+.3f}]), defect-free videos "
            f"{result['clean']['before']:.2f} -> {result['clean']['after']:.2f}"
            + (f", gradient blurred {result['blur']:g} px" if result.get("blur") else "") + f" (n={result['videos']})")
