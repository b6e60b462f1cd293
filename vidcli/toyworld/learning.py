"""Learning checks: a short run of a trainer on fixed toy-world inputs whose reward must rise.

The report (:mod:`vidcli.toyworld.report`) measures what each method does to held-out
data; these checks answer a narrower question fast enough for the test suite: does the
trainer, run through its real command, make its own reward rise on what it trains on, by
more than the run's own step-to-step noise? A flipped gradient sign, a zeroed advantage,
log-probabilities read at the wrong token or a detached graph each make that fail (the
breaks are recorded in docs/toyworld.md).

ReaDe's GRPO (:data:`GRPO_CHECK`): ``vidcli grpo`` from the build's SFT start point on one
fixed training request, judged by the exact toy judge, two seeds run side by side (one
core each). The measure is the trend of the mean rollout reward per step: an ordinary
least-squares slope over the steps, per seed and pooled (one slope, an intercept per
seed), with its 95% t interval. Rollouts are sampled from the policy of their step, so
the mean rollout reward per step is the policy's expected reward on the request plus
sampling noise, which the residuals of the fit measure.

Diffusion-DRF (:data:`DRF_CHECK`): ``vidcli drf-tune`` of the build's generator against the
build's critic on one fixed training caption (its world record: elements and TA
questions), two seeds side by side; the measure is the same trend, of the critic's reward
per question at each step (the rollout of each step starts from its own noise). The quick
critic barely reads the video, so the reward moves little (about 0.05 nats per question)
but its noise is smaller still; the check shows that the trainer climbs its reward, not
that the videos get better (the report's oracle measures that).

ReViSE's USO objective (:data:`REVISE_CHECK`): ``vidcli revise-tune --objective uso`` of the
build's editor against the build's critic on one fixed training triplet, each seed run
twice side by side — with the self-reflective loss weighted by ``reason_weight`` and, as
the control, weighted by 0 (the same run with flow matching alone, which still logs the
critic's margin). Every step is judged (``--sigma-max 1``) and the critic gives its verdict
first (``--critic-reasoning none``: the gradient's path is the same, only the reasoning
written without gradient before it is left out). The measure is the trend, over the steps,
of the tuned run's critic margin Δ − Δ₀ minus the control's at the same step (same draws:
same seed). The quick critic's margin barely depends on the pixels, so the weight is large
(flow matching alone also moves the margin, a little; the control removes that).

The settings were fixed by pilot runs on the quick build before the checks were written
(docs/toyworld.md, "Learning in the test suite").
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from vidcli.scoring.summary import t_quantile
from vidcli.toyworld.build import CommandFailed


@dataclass(frozen=True)
class GrpoCheck:
    request: str = "w0-00002-request"  # a training request of the seed-0 world ("show a green triangle staying still")
    steps: int = 16
    seeds: tuple[int, ...] = (0, 1)
    num_generations: int = 16
    lr: float = 3e-4
    temperature: float = 0.7
    max_tokens: int = 420
    warmup: int = 2


GRPO_CHECK = GrpoCheck()


@dataclass(frozen=True)
class DrfCheck:
    caption: str = "w0-00002"  # a training caption of the seed-0 world ("A green triangle stays still on …")
    steps: int = 16
    seeds: tuple[int, ...] = (0, 1)
    lr: float = 1e-2
    reward: str = "rich"
    dims: str = "TA"
    sampling_steps: int = 10
    k_grad: int = 4
    guidance: float = 5.0


DRF_CHECK = DrfCheck()


@dataclass(frozen=True)
class ReviseCheck:
    triplet: str = "w0-00000-colour"  # a training triplet of the seed-0 world (recolour the one object)
    steps: int = 16
    seeds: tuple[int, ...] = (0, 1)
    lr: float = 3e-4
    reason_weight: float = 1000.0
    sigma_max: float = 1.0


REVISE_CHECK = ReviseCheck()


def step_means(rollouts: Path) -> list[tuple[int, float]]:
    """(step, mean reward of the step's scored completions) from a grpo run's rollouts.jsonl."""
    from vidcli.toyworld.report import _rows

    steps: dict[int, list[float]] = {}
    for row in _rows(rollouts):
        if not row.get("masked"):
            steps.setdefault(row["step"], []).append(row["reward"])
    return [(step, sum(values) / len(values)) for step, values in sorted(steps.items())]


def trend(series: list[list[tuple[float, float]]]) -> dict:
    """Least-squares slope of y on x shared by every series, each with its own intercept.

    Returns ``slope``, its standard error ``se``, the 95% t interval ``ci95`` (degrees of
    freedom: points minus series minus one) and ``n`` (points). One series is the plain
    simple regression.
    """
    sxx = sxy = 0.0
    n = 0
    for points in series:
        mx = sum(x for x, _ in points) / len(points)
        my = sum(y for _, y in points) / len(points)
        sxx += sum((x - mx) ** 2 for x, _ in points)
        sxy += sum((x - mx) * (y - my) for x, y in points)
        n += len(points)
    df = n - len(series) - 1
    if df < 1 or sxx == 0:
        raise ValueError(f"too few points for a trend: {n} in {len(series)} series")
    slope = sxy / sxx
    residual = 0.0
    for points in series:
        mx = sum(x for x, _ in points) / len(points)
        my = sum(y for _, y in points) / len(points)
        residual += sum((y - my - slope * (x - mx)) ** 2 for x, y in points)
    se = math.sqrt(residual / df / sxx)
    half = t_quantile(0.975, df) * se
    return {"slope": slope, "se": se, "ci95": [slope - half, slope + half], "n": n}


def grpo_check(start: Path, world: Path, judge_url: str, out: Path, check: GrpoCheck = GRPO_CHECK) -> dict:
    """Run ``vidcli grpo`` once per seed, all seeds at once, on ``check.request``; the trends.

    Returns ``{"seeds": {seed: trend}, "pooled": trend, "first": [...], "last": [...]}`` where
    ``first`` / ``last`` are each seed's mean rollout reward over its first and last quarter
    of the steps.
    """
    data = one_record(world / "requests.train.jsonl", check.request, out / "request.jsonl")
    env = {"OPENAI_API_KEY": "toy", "OPENAI_BASE_URL": judge_url}
    commands = {}
    for seed in check.seeds:
        commands[seed] = ["grpo", "-q", "--model", str(start), "--judge", "openai:toy",
                          str(data), "-o", str(out / f"seed{seed}"), "--max-steps", str(check.steps),
                          "--epochs", str(check.steps), "--seed", str(seed), "--lr", str(check.lr),
                          "--temperature", str(check.temperature), "--warmup-steps", str(check.warmup),
                          "-G", str(check.num_generations), "--max-completion-tokens", str(check.max_tokens),
                          "--instruction-dropout", "0", "--grad-accum", "1", "--save-every", "0",
                          "--media-root", str(world)]
    side_by_side(commands, env)
    curves = {seed: step_means(out / f"seed{seed}" / "rollouts.jsonl") for seed in check.seeds}
    return trends(curves, check.steps)


def one_record(source: Path, ident: str, data: Path) -> Path:
    """Write the record of ``source`` whose id is ``ident`` alone into ``data`` (its folder made); returns ``data``."""
    records = [line for line in source.read_text(encoding="utf-8").splitlines() if json.loads(line)["id"] == ident]
    if len(records) != 1:
        raise ValueError(f"{source}: no record {ident!r}")
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(records[0] + "\n", encoding="utf-8")
    return data


def side_by_side(commands: dict[str | int, list[str]], env: dict[str, str]) -> None:
    """Run one ``vidcli`` command per key (a seed, or a label naming the run), all at once (one thread
    each); raise if any fails."""
    env = {"OMP_NUM_THREADS": "1", **os.environ, **env}
    running = {}
    try:
        for key, args in commands.items():
            running[key] = subprocess.Popen([sys.executable, "-m", "vidcli", *args], env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for key, process in running.items():
            _, stderr = process.communicate()
            if process.returncode != 0:
                label = f"seed {key}" if isinstance(key, int) else key
                raise CommandFailed(f"vidcli {commands[key][0]} ({label}) failed (exit {process.returncode}): "
                                    f"{stderr.strip()[-2000:]}")
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def trends(curves: dict[int, list[tuple[float, float]]], steps: int) -> dict:
    """Per seed and pooled :func:`trend` of ``curves``, and each seed's mean over its first and last quarter."""
    quarter = max(1, steps // 4)
    return {
        "seeds": {seed: trend([curve]) for seed, curve in curves.items()},
        "pooled": trend(list(curves.values())),
        "first": [sum(y for _, y in curve[:quarter]) / quarter for curve in curves.values()],
        "last": [sum(y for _, y in curve[-quarter:]) / quarter for curve in curves.values()],
        "curves": curves,
    }


def drf_check(generator: Path, critic: Path, world: Path, out: Path, check: DrfCheck = DRF_CHECK) -> dict:
    """Run ``vidcli drf-tune`` of ``generator`` against ``critic`` once per seed, all seeds at once, on
    ``check.caption`` (its world record: caption, elements and TA questions); the trends of the
    critic's reward per question (:func:`trends`)."""
    data = one_record(world / "drf.train.jsonl", check.caption, out / "caption.jsonl")
    commands = {}
    for seed in check.seeds:
        commands[seed] = ["drf-tune", "-q", "--model", str(generator), "--vlm", str(critic), str(data),
                          "-o", str(out / f"seed{seed}"), "--reward", check.reward, "--dims", check.dims,
                          "--height", "32", "--width", "32", "--frames", "9", "--frames-vlm", "9",
                          "--steps", str(check.sampling_steps), "--k-grad", str(check.k_grad),
                          "--guidance", str(check.guidance), "--max-steps", str(check.steps),
                          "--epochs", str(check.steps), "--seed", str(seed), "--lr", str(check.lr),
                          "--save-every", "0"]
    side_by_side(commands, {})
    from vidcli.toyworld.report import reward_curve  # (step, the critic's reward per question)

    return trends({seed: reward_curve(out / f"seed{seed}") for seed in check.seeds}, check.steps)


def margin_curve(run: Path) -> list[tuple[int, float]]:
    """(step, mean critic margin Δ − Δ₀ of the step's judged triplets) from a revise-tune run's steps.jsonl."""
    from vidcli.toyworld.report import _rows

    steps: dict[int, list[float]] = {}
    for row in _rows(run / "steps.jsonl"):
        if row["gated"]:
            steps.setdefault(row["step"], []).append(row["delta"] - (row["delta0"] or 0.0))
    return [(step, sum(values) / len(values)) for step, values in sorted(steps.items())]


def revise_check(editor: Path, critic: Path, world: Path, out: Path, check: ReviseCheck = REVISE_CHECK) -> dict:
    """Run ``vidcli revise-tune --objective uso`` of ``editor`` against ``critic`` on ``check.triplet``, per
    seed with the self-reflective loss weighted by ``check.reason_weight`` and by 0 (the control), all at
    once; the trends of the tuned run's margin minus the control's (:func:`trends`), and both margin
    curves (``tuned``, ``control``)."""
    data = one_record(world / "triplets.train.jsonl", check.triplet, out / "triplet.jsonl")
    runs = {(seed, weight): out / f"seed{seed}-weight{weight:g}" for seed in check.seeds
            for weight in (check.reason_weight, 0.0)}
    commands = {}
    for (seed, weight), run in runs.items():
        commands[f"seed {seed}, --reason-weight {weight:g}"] = [
            "revise-tune", "-q", str(data), "--model", str(editor), "--vlm", str(critic), "-o", str(run),
            "--objective", "uso", "--reason-weight", str(weight), "--sigma-max", str(check.sigma_max),
            "--critic-reasoning", "none", "--media-root", str(world), "--height", "32", "--width", "32",
            "--frames", "9", "--frames-critic", "8", "--cfg-drop", "0", "--lr", str(check.lr),
            "--schedule", "constant", "--warmup-steps", "1", "--max-grad-norm", "1.0", "--batch-size", "1",
            "--grad-accum", "1", "--max-steps", str(check.steps), "--epochs", str(check.steps),
            "--save-every", "0", "--seed", str(seed)]
    side_by_side(commands, {})
    margins = {key: dict(margin_curve(run)) for key, run in runs.items()}
    curves = {}
    for seed in check.seeds:
        tuned, control = margins[seed, check.reason_weight], margins[seed, 0.0]
        curves[seed] = [(step, tuned[step] - control[step]) for step in sorted(tuned) if step in control]
    result = trends(curves, check.steps)
    result["tuned"] = {seed: sorted(margins[seed, check.reason_weight].items()) for seed in check.seeds}
    result["control"] = {seed: sorted(margins[seed, 0.0].items()) for seed in check.seeds}
    return result
