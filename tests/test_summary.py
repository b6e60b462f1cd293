"""Summaries: t intervals against hand computation, failures vs unavailable, groups, the plot."""
from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from vidcli.scoring.summary import (
    MISSING,
    describe,
    format_summary,
    group_value,
    plot_summary,
    metric_scale,
    score_keys,
    summarize,
    summary_figure,
    t_quantile,
    write_summary,
)

T_975_3 = 3.182446305284263  # Student's t, 97.5th percentile, 3 degrees of freedom (tables)


def test_t_interval_of_one_to_four():
    stats = describe([1.0, 2.0, 3.0, 4.0])
    s = math.sqrt(((1.5**2) * 2 + (0.5**2) * 2) / 3)  # sample std = sqrt(5/3)
    half = T_975_3 * s / math.sqrt(4)
    assert stats["n"] == 4 and stats["mean"] == 2.5
    assert stats["std"] == pytest.approx(math.sqrt(5 / 3), abs=1e-12)
    assert stats["half_width"] == pytest.approx(half, abs=1e-9)
    assert stats["ci95"] == pytest.approx([2.5 - half, 2.5 + half], abs=1e-9)
    assert t_quantile(0.975, 3) == pytest.approx(T_975_3, abs=1e-9)


def test_small_samples():
    assert describe([0.4])["ci95"] is None and describe([0.4])["mean"] == 0.4
    empty = describe([], failures=2)
    assert empty["n"] == 0 and empty["mean"] is None and empty["failures"] == 2
    assert describe([0.5, 0.5])["half_width"] == 0.0


RECORDS = [
    {"id": "a", "conditions": [{"type": "depth"}], "output": {"format_ok": True},
     "scores": {"format": 1.0, "contra": None, "contra_available": False, "reward": 3.0}},
    {"id": "b", "conditions": [{"type": "depth"}, {"type": "identity"}], "output": {"format_ok": False},
     "scores": {"format": 0.2, "contra": 1.0, "contra_available": True, "reward": None},
     "errors": [{"stage": "score", "metric": "reward", "message": "not computed"}]},
    {"id": "c", "conditions": [{"type": "identity"}, {"type": "depth"}], "output": {"format_ok": True},
     "scores": {"format": 0.0, "contra": 0.0, "contra_available": True, "reward": 1.0}},
    {"id": "d", "conditions": [], "scores": {"format": 1.0}},
]


def test_failures_unavailable_and_keys():
    assert score_keys(RECORDS) == ["format", "contra", "reward"]  # the boolean note is not a metric
    summary = summarize(RECORDS)
    fmt, contra, reward = (summary["metrics"][k] for k in ("format", "contra", "reward"))
    assert summary["records"] == 4
    assert fmt["n"] == 4 and fmt["mean"] == pytest.approx(2.2 / 4)
    assert (contra["n"], contra["failures"], contra["unavailable"]) == (2, 0, 1)
    assert (reward["n"], reward["failures"], reward["unavailable"]) == (2, 1, 0)
    assert reward["mean"] == 2.0


def test_group_values_from_dotted_paths():
    a, b, c, d = RECORDS
    assert group_value(a, "conditions.0.type") == "depth"
    assert group_value(b, "conditions.type") == "depth+identity"
    assert group_value(c, "conditions.type") == group_value(b, "conditions.type")  # order does not matter
    assert group_value(d, "conditions.type") == MISSING
    assert group_value(a, "output.format_ok") == "true"
    assert group_value(d, "output.format_ok") == MISSING
    assert group_value(a, "conditions.5.type") == MISSING
    assert group_value({"x": {"y": 3}}, "x.y") == "3"


def test_grouped_summary_and_text():
    summary = summarize(RECORDS, keys=["format", "reward"], by="conditions.type")
    assert list(summary["groups"]) == [MISSING, "depth", "depth+identity"]
    both = summary["groups"]["depth+identity"]
    assert both["records"] == 2 and both["metrics"]["format"]["mean"] == pytest.approx(0.1)
    assert both["metrics"]["format"]["half_width"] == pytest.approx(12.706204736174707 * math.sqrt(0.02) / math.sqrt(2))
    assert both["metrics"]["reward"]["failures"] == 1
    text = format_summary(summary)
    assert "4 record(s)" in text and "conditions.type = depth+identity: 2 record(s)" in text
    format_row = next(line for line in text.splitlines() if line.strip().startswith("format"))
    assert format_row.split()[1:3] == ["4", "0.5500"]


def test_summary_file_and_plot(tmp_path):
    summary = summarize(RECORDS, keys=["format", "contra", "reward"], by="conditions.type")
    write_summary(summary, tmp_path / "out" / "summary.json")
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    plot_summary(summary, tmp_path / "plot.png")
    data = (tmp_path / "plot.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with Image.open(tmp_path / "plot.png") as image:
        image.verify()
    # Without groups: one point per metric panel.
    plot_summary(summarize(RECORDS, keys=["format"]), tmp_path / "single.png")
    with Image.open(tmp_path / "single.png") as image:
        assert image.format == "PNG" and image.size[0] > 100
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_plot_panels_say_what_they_measure_with_ranges_means_and_intervals():
    from matplotlib.colors import to_rgba

    summary = summarize(RECORDS, keys=["format", "contra", "reward"], by="conditions.type")
    fig = summary_figure(summary)
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert list(panels) == ["format", "contra", "reward"]
    fmt = panels["format"]
    assert fmt.get_ylabel() == "R_format (0, 0.2 or 1)" and fmt.get_ylim() == pytest.approx((-0.05, 1.05))
    assert fmt.get_xlabel() == "conditions.type"
    groups = summary["groups"]
    assert [t.get_text() for t in fmt.get_xticklabels()] == \
        [f"{label}\n(n={g['metrics']['format']['n']})" for label, g in groups.items()]
    # Each mean is written beside its point; the depth+identity group (format 0.2 and 0.0) has an interval.
    means = [g["metrics"]["format"]["mean"] for g in groups.values()]
    assert sorted(t.get_text() for t in fmt.texts) == sorted(f"{m:.3g}" for m in means)
    (bars,) = [c for c in fmt.collections if len(c.get_segments())]
    (segment,) = [seg for seg in bars.get_segments()]
    half = groups["depth+identity"]["metrics"]["format"]["half_width"]
    assert segment[:, 1] == pytest.approx([0.1 - half, 0.1 + half])
    # Groups with one value: a hollow point, no interval.
    hollow = [line for line in fmt.lines if line.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and len(hollow[0].get_xdata()) == 2  # "(missing)" and "depth": one value each
    assert panels["reward"].get_ylabel() == "ReaDe reward R_format + R_content"
    assert "95% confidence interval" in fig.get_suptitle() and "4 record(s), by conditions.type" in fig.get_suptitle()
    assert to_rgba(hollow[0].get_color()) == to_rgba("C0")


def test_scales_of_the_metrics():
    assert metric_scale("rve_EA") == ("EA judge score (0–10)", (0.0, 10.0))
    assert metric_scale("vqa.TA.objects") == ("p(desired verdict) of TA.objects", (0.0, 1.0))
    assert metric_scale("vqa_Phy") == ("p(desired verdict) of Phy", (0.0, 1.0))
    assert metric_scale("something") == ("value", None)
