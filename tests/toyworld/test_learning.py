"""The learning checks: the trend statistic against a peer, and GRPO's, DRF's and ReViSE's rewards rising in real
runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vidcli.toyworld.learning import (
    DRF_CHECK,
    GRPO_CHECK,
    REVISE_CHECK,
    drf_check,
    grpo_check,
    margin_curve,
    revise_check,
    step_means,
    trend,
)


def assert_rises(result: dict, steps: int) -> None:
    """A learning check's verdict: a point per step for each seed, the pooled slope's 95% interval above 0,
    each seed's slope positive and each seed's last quarter above its first."""
    summary = {"pooled": result["pooled"], "seeds": result["seeds"], "first": result["first"], "last": result["last"]}
    assert all(len(curve) == steps for curve in result["curves"].values()), summary
    assert result["pooled"]["ci95"][0] > 0, summary
    assert all(seed["slope"] > 0 for seed in result["seeds"].values()), summary
    assert all(last > first for first, last in zip(result["first"], result["last"])), summary


def test_trend_of_one_series_is_scipys_linear_regression():
    from scipy.stats import linregress
    from scipy.stats import t as student

    xs = [1, 2, 3, 4, 5, 6, 7]
    ys = [1.2, 1.1, 1.6, 1.5, 2.0, 1.7, 2.3]
    got = trend([list(zip(xs, ys))])
    peer = linregress(xs, ys)
    half = student.ppf(0.975, len(xs) - 2) * peer.stderr
    assert got["slope"] == pytest.approx(peer.slope, rel=1e-12)
    assert got["se"] == pytest.approx(peer.stderr, rel=1e-12)
    assert got["ci95"] == pytest.approx([peer.slope - half, peer.slope + half], rel=1e-12)


def test_pooled_trend_is_least_squares_with_an_intercept_per_series():
    a = [(1, 1.0), (2, 1.4), (3, 1.3), (4, 2.0)]
    b = [(1, 3.0), (2, 2.9), (3, 3.6), (4, 3.5), (5, 4.1)]
    got = trend([a, b])
    # The same model as a design matrix: slope, intercept of a, intercept of b.
    X = np.array([[x, 1, 0] for x, _ in a] + [[x, 0, 1] for x, _ in b], dtype=float)
    y = np.array([v for _, v in a] + [v for _, v in b])
    coef, residual, *_ = np.linalg.lstsq(X, y, rcond=None)
    df = len(y) - 3
    cov = residual[0] / df * np.linalg.inv(X.T @ X)
    assert got["slope"] == pytest.approx(coef[0], rel=1e-12)
    assert got["se"] == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-12)
    assert got["n"] == 9
    # Separate intercepts matter: pooling the points as one series gives another slope.
    assert trend([a + b])["slope"] != pytest.approx(got["slope"], rel=1e-3)


def test_trend_refuses_too_few_points():
    with pytest.raises(ValueError, match="too few points"):
        trend([[(1, 1.0), (2, 2.0)]])


def test_step_means_leave_masked_completions_out(tmp_path):
    rows = [{"step": 1, "reward": 1.0}, {"step": 1, "reward": 2.0}, {"step": 1, "reward": 9.0, "masked": True},
            {"step": 2, "reward": 0.5, "masked": False}]
    path = tmp_path / "rollouts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert step_means(path) == [(1, 1.5), (2, 0.5)]


@pytest.mark.slow
def test_grpo_raises_its_own_reward_beyond_its_noise(toy_build, toy_judge, tmp_path):
    """`vidcli grpo` on one fixed request, two seeds: the rollout reward per step rises, the pooled
    slope's 95% interval above 0 and every seed's slope positive. Fails when the gradient's sign is
    flipped, the advantages are zeroed, the log-probabilities are read one token off, or the graph is
    detached (docs/toyworld.md, "Learning in the test suite")."""
    root = toy_build[0]
    result = grpo_check(root / "interpreter" / "sft", root / "world", toy_judge, tmp_path)
    assert_rises(result, GRPO_CHECK.steps)


@pytest.mark.slow
def test_drf_raises_its_own_reward_beyond_its_noise(toy_build, tmp_path):
    """`vidcli drf-tune` on one fixed caption against the quick critic, two seeds: the critic's reward per
    question rises step over step, the pooled slope's 95% interval above 0. Fails when the gradient's
    sign is flipped, the reward's gradient is zeroed or the decoded frames are cut from the graph
    (docs/toyworld.md, "Learning in the test suite")."""
    root = toy_build[0]
    result = drf_check(root / "generator", root / "critic", root / "world", tmp_path)
    assert_rises(result, DRF_CHECK.steps)


def test_margin_curve_averages_the_judged_triplets_of_each_step(tmp_path):
    rows = [{"step": 1, "gated": True, "delta": 0.5, "delta0": 0.25}, {"step": 1, "gated": False, "delta": None},
            {"step": 1, "gated": True, "delta": 1.0, "delta0": 0.0}, {"step": 2, "gated": True, "delta": -1.0,
                                                                      "delta0": None},
            {"step": 3, "gated": False, "delta": None}]
    (tmp_path / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert margin_curve(tmp_path) == [(1, 0.625), (2, -1.0)]


@pytest.mark.slow
def test_revise_uso_raises_its_critic_margin_beyond_flow_matching_alone(toy_build, tmp_path):
    """`vidcli revise-tune --objective uso` on one fixed triplet against the quick critic, two seeds, each
    beside the same run with the self-reflective loss weighted 0: the tuned run's critic margin minus the
    control's rises step over step, the pooled slope's 95% interval above 0. Fails when the loss's sign is
    flipped, its weight is zeroed or x0-hat is cut from the graph (docs/toyworld.md, "Learning in the test
    suite")."""
    root = toy_build[0]
    result = revise_check(root / "editor", root / "critic", root / "world", tmp_path)
    assert_rises(result, REVISE_CHECK.steps)
