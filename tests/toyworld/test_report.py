"""The toy-world report's arithmetic: paired gains, curves from rollouts, the last line."""
from __future__ import annotations

import json
import math

import pytest

from vidcli.toyworld.report import last_line, paired_gain, plot_curves, training_curve


def test_paired_gain_is_the_mean_per_request_difference_with_a_t_interval():
    base = {"a": {"reward": 1.0}, "b": {"reward": 2.0}, "c": {"reward": 0.5}}
    runs = [{"a": {"reward": 2.0}, "b": {"reward": 2.0}, "c": {"reward": 1.5}},
            {"a": {"reward": 1.0}, "b": {"reward": 3.0}, "c": {"reward": 0.5}}]
    gain = paired_gain(base, runs, "reward")
    # per request, mean over the two runs minus base: a 0.5, b 0.5, c 0.5
    assert gain["n"] == 3 and gain["mean"] == pytest.approx(0.5) and gain["std"] == pytest.approx(0.0)
    runs[1]["c"]["reward"] = 2.5  # c: (1.5 + 2.5) / 2 - 0.5 = 1.5
    gain = paired_gain(base, runs, "reward")
    diffs = [0.5, 0.5, 1.5]
    mean = sum(diffs) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert gain["mean"] == pytest.approx(mean) and gain["std"] == pytest.approx(std)
    assert gain["half_width"] == pytest.approx(4.302652729911275 * std / math.sqrt(3))  # t(0.975, 2)


def test_paired_gain_leaves_out_requests_without_a_value_in_every_run():
    base = {"a": {"user": 0.5}, "b": {"user": None}, "c": {"user": 0.0}}
    runs = [{"a": {"user": 1.0}, "b": {"user": 1.0}, "c": {"user": 1.0}}, {"a": {"user": 1.0}, "c": {"user": None}}]
    gain = paired_gain(base, runs, "user")
    assert gain["n"] == 1 and gain["mean"] == pytest.approx(0.5) and gain["ci95"] is None


def test_training_curve_and_its_plot(tmp_path):
    rows = [{"step": 1, "reward": 1.0, "parts": {"format": 1.0}, "completion": "x\u2028y\x1cz"},
            {"step": 1, "reward": 0.0, "parts": {"format": 0.2}},
            {"step": 2, "reward": 3.0, "parts": {"format": 1.0}}, {"step": 2, "reward": 2.0, "parts": {"format": 1.0}}]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # as the trainers write it
    (tmp_path / "rollouts.jsonl").write_text(text, encoding="utf-8")
    curve = training_curve(tmp_path)
    assert curve == [(1, 0.5, 0.5), (2, 2.5, 1.0)]
    plot_curves({"run": [(0, 1.0), (30, 1.5)]}, {"run": curve}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_last_line_names_the_gain_and_its_interval():
    result = {"reade": {"gain": {"reward": {"n": 20, "mean": 0.25, "ci95": [0.05, 0.45]}}}}
    line = last_line(result)
    assert line.startswith("toyworld: ") and line.endswith("grpo +0.250 [+0.050, +0.450] (n=20)")


def test_heldout_curve_scores_each_checkpoint_before_the_end_once(tmp_path, monkeypatch):
    from dataclasses import replace

    from vidcli.toyworld import report

    run = tmp_path / "run"
    for step in (60, 30, 20):
        (run / f"checkpoint-{step}").mkdir(parents=True)
    (run / "checkpoint-30.partial").mkdir()  # not a checkpoint
    scored = []

    def fake_scores(ctx, model, out, s):
        scored.append(model)
        return {"a": {"reward": float(len(scored))}, "b": {"reward": None}}

    monkeypatch.setattr(report, "heldout_scores", fake_scores)
    settings = replace(report.READE_FULL, steps=60)
    curve = report.heldout_curve(None, run, tmp_path / "eval", settings, {"a": {"reward": 0.5}},
                                 {"a": {"reward": 3.0}, "b": {"reward": 1.0}})
    # the final model's scores are given (already measured); checkpoint-60 is the same step
    assert curve == [(0, 0.5), (20, 1.0), (30, 2.0), (60, 2.0)]
    assert scored == [run / "checkpoint-20", run / "checkpoint-30"]
