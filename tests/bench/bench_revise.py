"""Step time of revise-tune with the self-reflective loss vs plain flow matching, and the trigger rate.

Runs the ReViSE recipe on the tiny Wan pipeline and tiny Qwen2.5-VL, side by side from the
same seed and triplets (two clips of the example videos):

- ``uso``: L_FM + λ·L_reason, the critic called when t ≤ σ_max (0.5 by default);
- ``sft``: L_FM only (no decode, no critic).

Each optimiser step here holds one triplet (``--grad-accum 1``) so the step time shows
the cost of a gated step directly; the first step of each run is a warm-up and is not
timed. The measured trigger rate (share of uso steps with t ≤ σ_max) is printed next to
its expectation P(t ≤ σ) = σ / (s − (s−1)·σ) for the shifted sampler
t = s·u / (1 + (s−1)·u): 25% at s = 3 (the paper's figure), 50% for uniform t (s = 1).
The amortised uso/sft ratio is ≈ 1 + rate × (cost of decode + two critic passes) / (cost
of a flow-matching step).

Usage: ``python tests/bench/bench_revise.py [--steps 40] [--t-shift 3] [--sigma-max 0.5]
[--size 32] [--frames 5] [--frames-critic 3]``.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TRIPLETS = [
    {"id": "ball", "instruction": "show where the ball will be a moment later",
     "source": {"video": "ball.mp4", "start": 0.0, "end": 1.5},
     "target": {"video": "ball.mp4", "start": 1.5, "end": 3.0}},
    {"id": "squares", "instruction": "make the scene feel calmer",
     "source": {"video": "squares.mp4", "start": 0.0, "end": 1.0},
     "target": {"video": "squares.mp4", "start": 1.0, "end": 2.0}},
]


def run(objective: str, args, paths: dict, records: Path, out: Path) -> dict:
    """``args.steps`` optimiser steps of one objective; step times and gating decisions."""
    from vidcli.train.core import OptimConfig, RunConfig
    from vidcli.train.revise import ReviseConfig, ReviseRecipe

    optim = OptimConfig(lr=3e-6, weight_decay=1e-4, warmup_steps=0, schedule="constant", max_grad_norm=0.1)
    run_config = RunConfig(output_dir=out, seed=0, max_steps=args.steps + 1, batch_size=1, grad_accum=1,
                           save_every=0, mixed_precision="no", optim=optim)
    config = ReviseConfig(model=str(paths["wan"]), vlm=str(paths["vlm"]), inputs=[str(records)], run=run_config,
                          objective=objective, sigma_max=args.sigma_max, t_shift=args.t_shift,
                          frames_critic=args.frames_critic, height=args.size, width=args.size, frames=args.frames)
    recipe = ReviseRecipe(config)
    recipe.setup()
    times, gated = [], []
    device = recipe.adapter.device
    for i in range(args.steps + 1):
        start = time.perf_counter()
        (entry,) = recipe.optimise()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first step builds caches (clip latents, kernels)
            times.append(time.perf_counter() - start)
            gated.append(entry["gated"])
    recipe.cleanup()
    return {"times": times, "gated": gated}


def main(argv: list[str] | None = None) -> int:
    from vidcli.testing import ensure_tiny_models
    from vidcli.train.revise import trigger_probability

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--t-shift", type=float, default=3.0)
    parser.add_argument("--sigma-max", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--frames-critic", type=int, default=3)
    args = parser.parse_args(argv)

    import json

    paths = ensure_tiny_models(["wan", "vlm"])
    work = Path(tempfile.mkdtemp(prefix="bench-revise-"))
    try:
        for name in ("ball.mp4", "squares.mp4"):
            shutil.copy(ROOT / "examples" / "media" / name, work / name)
        records = work / "triplets.jsonl"
        records.write_text("".join(json.dumps(t) + "\n" for t in TRIPLETS), encoding="utf-8")
        results = {objective: run(objective, args, paths, records, work / objective) for objective in ("uso", "sft")}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    uso, sft = results["uso"], results["sft"]
    rate = sum(uso["gated"]) / len(uso["gated"])
    expected = trigger_probability(args.sigma_max, args.t_shift)
    mean_uso, mean_sft = statistics.mean(uso["times"]), statistics.mean(sft["times"])
    on = [t for t, g in zip(uso["times"], uso["gated"]) if g]
    off = [t for t, g in zip(uso["times"], uso["gated"]) if not g]
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}; {args.steps} timed steps each; "
          f"{args.frames} frames of {args.size}x{args.size}, F={args.frames_critic}")
    print(f"{'run':<26}{'mean s/step':>12}{'median':>10}")
    print(f"{'sft (L_FM only)':<26}{mean_sft:>12.4f}{statistics.median(sft['times']):>10.4f}")
    print(f"{'uso (sigma_max gating)':<26}{mean_uso:>12.4f}{statistics.median(uso['times']):>10.4f}")
    if on:
        print(f"{'  uso gated steps':<26}{statistics.mean(on):>12.4f}")
    if off:
        print(f"{'  uso ungated steps':<26}{statistics.mean(off):>12.4f}")
    print(f"amortised uso/sft: {mean_uso / mean_sft:.2f}x")
    print(f"trigger rate: measured {rate:.1%} ({sum(uso['gated'])}/{len(uso['gated'])}), expected {expected:.1%} "
          f"(sigma_max={args.sigma_max}, t-shift={args.t_shift})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
