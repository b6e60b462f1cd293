"""Summaries of scored records: count, mean, 95% confidence interval, failures; groups; a plot.

A record's ``scores`` maps metric keys to numbers or ``null``. A ``null`` is a
*failure* when the record's ``errors`` hold ``{stage: "score", metric: KEY, ...}`` for
that key, and *unavailable* — not applicable, "n/a" in the table — otherwise (R_contra
under the embedding judge, the coverage of an empty element set). Per key:

- ``n``: records with a number; ``mean``; ``std`` (sample standard deviation, n−1);
- ``ci95``: ``[mean − h, mean + h]`` with h = t_{0.975, n−1}·std/√n (Student's t; the
  values are few and their spread unknown, so not the normal 1.96). ``None`` when n < 2;
- ``failures`` and ``unavailable`` as above.

Groups (``by``) use a dotted path into the record: ``condition_type``,
``output.format_ok``, ``conditions.0.type``. A path through a list without an index
collects the values of all items (``conditions.type`` → ``"depth+identity"``, sorted
and de-duplicated); a missing value groups under ``"(missing)"``.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable

MISSING = "(missing)"
CONFIDENCE = 0.95


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t distribution with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def describe(values: list[float], *, failures: int = 0, unavailable: int = 0) -> dict:
    """n, mean, std, ci95 and half_width of ``values``, plus the given counts."""
    n = len(values)
    mean = sum(values) / n if n else None
    std = half = None
    if n >= 2:
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n)
    return {
        "n": n, "mean": mean, "std": std, "half_width": half,
        "ci95": [mean - half, mean + half] if half is not None else None,
        "failures": failures, "unavailable": unavailable,
    }


def _lookup(value: object, steps: list[str]) -> object:
    for i, step in enumerate(steps):
        if isinstance(value, list):
            if step.lstrip("-").isdigit():
                index = int(step)
                value = value[index] if -len(value) <= index < len(value) else None
            else:
                found = [_lookup(item, steps[i:]) for item in value]
                return [v for v in found if v is not None] or None
        elif isinstance(value, dict):
            value = value.get(step)
        else:
            return None
        if value is None:
            return None
    return value


def _label(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def group_value(record: dict, path: str) -> str:
    """The group label of ``record`` for a dotted ``path`` (see the module docstring)."""
    value = _lookup(record, path.split("."))
    if value is None:
        return MISSING
    if isinstance(value, list):
        flat = [v for item in value for v in (item if isinstance(item, list) else [item])]
        return "+".join(sorted({_label(v) for v in flat})) if flat else MISSING
    return _label(value)


def score_keys(records: Iterable[dict]) -> list[str]:
    """Numeric score keys in first-seen order (booleans such as ``contra_available`` are notes)."""
    keys: dict[str, None] = {}
    for record in records:
        for key, value in (record.get("scores") or {}).items():
            if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                keys.setdefault(key)
    return list(keys)


def _failed_keys(record: dict) -> set[str]:
    return {e.get("metric") for e in record.get("errors") or []
            if isinstance(e, dict) and e.get("stage") == "score"}


def _stats(records: list[dict], keys: list[str]) -> dict:
    out = {}
    for key in keys:
        values, failures, unavailable = [], 0, 0
        for record in records:
            scores = record.get("scores") or {}
            if key not in scores:
                continue
            value = scores[key]
            if value is not None:
                values.append(float(value))
            elif key in _failed_keys(record):
                failures += 1
            else:
                unavailable += 1
        out[key] = describe(values, failures=failures, unavailable=unavailable)
    return out


def summarize(records: Iterable[dict], *, keys: list[str] | None = None, by: str | None = None) -> dict:
    """``{records, metrics: {key: stats}, by, groups: {label: {records, metrics}}}``.

    ``keys`` defaults to :func:`score_keys`; groups are sorted by label.
    """
    records = list(records)
    keys = keys if keys is not None else score_keys(records)
    summary: dict = {"records": len(records), "metrics": _stats(records, keys), "by": by, "groups": {}}
    if by:
        members: dict[str, list[dict]] = {}
        for record in records:
            members.setdefault(group_value(record, by), []).append(record)
        summary["groups"] = {label: {"records": len(members[label]), "metrics": _stats(members[label], keys)}
                             for label in sorted(members)}
    return summary


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table(metrics: dict, indent: str) -> list[str]:
    rows = [("metric", "n", "mean", "95% CI", "failures", "n/a")]
    for key, s in metrics.items():
        ci = f"[{_number(s['ci95'][0])}, {_number(s['ci95'][1])}]" if s["ci95"] else "-"
        rows.append((key, str(s["n"]), _number(s["mean"]), ci, str(s["failures"]), str(s["unavailable"])))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def format_summary(summary: dict) -> str:
    """The summary as an aligned text table (overall, then one table per group)."""
    lines = [f"{summary['records']} record(s)"] + _table(summary["metrics"], "  ")
    for label, group in summary["groups"].items():
        lines.append(f"{summary['by']} = {label}: {group['records']} record(s)")
        lines += _table(group["metrics"], "  ")
    return "\n".join(lines)


def atomic_write(path: Path, write) -> None:
    """``write(handle)`` into a temporary file beside ``path`` (binary), then renamed to ``path``: a
    failure or Ctrl-C part-way leaves the earlier file whole and no temporary file behind."""
    from vidcli.train.checkpoint import apply_umask

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        apply_umask(Path(tmp))  # mkstemp makes it owner-only; a summary is as readable as any output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_summary(summary: dict, path: str | os.PathLike) -> None:
    """The summary as JSON, written to a temporary file and renamed."""
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    atomic_write(Path(path), lambda handle: handle.write(text.encode("utf-8")))


# What each score key measures, in the plot's words: (axis label, the range its values can take).
# ReaDe's reward has no fixed range (its weights are flags): its axis is left free.
SCALES: dict[str, tuple[str, tuple[float, float] | None]] = {
    "format": ("R_format (0, 0.2 or 1)", (0.0, 1.0)),
    "user": ("R_user: share of U supported", (0.0, 1.0)),
    "detail": ("R_detail: share of S supported", (0.0, 1.0)),
    "supp": ("R_supp: share of Z supported", (0.0, 1.0)),
    "contra": ("R_contra: self-contradiction (0 or 1)", (0.0, 1.0)),
    "reward": ("ReaDe reward R_format + R_content", None),
    "vqa": ("p(desired verdict), mean of TA/Phy/VQ", (0.0, 1.0)),
    "rve": ("overall judge score (0–10)", (0.0, 10.0)),
}


def metric_scale(key: str) -> tuple[str, tuple[float, float] | None]:
    """The axis label and value range of a score key (per-question vqa keys and rve criteria included)."""
    if key in SCALES:
        return SCALES[key]
    if key.startswith("vqa_") or key.startswith("vqa."):
        return f"p(desired verdict) of {key[4:]}", (0.0, 1.0)
    if key.startswith("rve_"):
        return f"{key[4:]} judge score (0–10)", (0.0, 10.0)
    return "value", None


def summary_figure(summary: dict):
    """A matplotlib Figure with one panel per metric: the mean of each group with its 95% interval.

    Each panel is titled with the metric and its y axis says what the value measures
    and spans its full range (0–1, 0–10) where there is one, so panels and runs compare
    at a glance; every mean is written beside its point; the x axis names the groups
    with their counts. A group with fewer than two values has no interval (a hollow
    point). Without groups the panels show one point, "all". matplotlib's object API on
    the Agg canvas: no global backend is switched and no display is needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = summary["groups"] or {"all": {"metrics": summary["metrics"]}}
    labels = list(groups)
    keys = list(summary["metrics"])
    if not keys:
        raise ValueError("nothing to plot: the summary has no metrics")
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(max(4.0, 0.8 * len(labels) + 2) * cols, 3.4 * rows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    for k, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, k + 1)
        stats = [groups[label]["metrics"][key] for label in labels]
        with_ci = [i for i, s in enumerate(stats) if s["mean"] is not None and s["half_width"] is not None]
        single = [i for i, s in enumerate(stats) if s["mean"] is not None and s["half_width"] is None]
        ax.errorbar(with_ci, [stats[i]["mean"] for i in with_ci], yerr=[stats[i]["half_width"] for i in with_ci],
                    fmt="o", color="C0", capsize=4)
        ax.plot(single, [stats[i]["mean"] for i in single], "o", mfc="none", color="C0")
        for i in with_ci + single:
            ax.annotate(f"{stats[i]['mean']:.3g}", (i, stats[i]["mean"]), xytext=(6, 0), textcoords="offset points",
                        va="center", fontsize=8)
        ax.set_xticks(range(len(labels)), [f"{label}\n(n={s['n']})" for label, s in zip(labels, stats)], fontsize=8)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        axis, span = metric_scale(key)
        if span is not None:
            margin = 0.05 * (span[1] - span[0])
            ax.set_ylim(span[0] - margin, span[1] + margin)
        ax.set_ylabel(axis, fontsize=8)
        ax.set_xlabel(summary["by"] or "all records", fontsize=8)
        ax.set_title(key)
        ax.grid(axis="y", alpha=0.3)
    grouping = f", by {summary['by']}" if summary["by"] else ""
    fig.suptitle(f"mean and 95% confidence interval (Student's t) over {summary['records']} record(s){grouping}; "
                 "hollow: fewer than 2 values, no interval", fontsize=9)
    return fig


def plot_summary(summary: dict, path: str | os.PathLike) -> None:
    """:func:`summary_figure` as a PNG, written to a temporary file and renamed."""
    fig = summary_figure(summary)
    atomic_write(Path(path), lambda handle: fig.savefig(handle, format="png", dpi=100))
