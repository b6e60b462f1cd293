"""What a training run shows: log lines and the closing summary on stderr, scalars and rollout tables in
TensorBoard and W&B (read back with TensorBoard's reader and from W&B's offline run folders), and a
resumed run continuing both."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.cli.helpers import invoke, read_jsonl
from tests.cli.test_grpo_cli import grpo_args
from tests.cli.test_sft_cli import sft_args
from tests.test_grpo import grpo_kit  # noqa: F401  (fixtures)
from tests.test_sft import sft_kit  # noqa: F401  (fixtures)
from tests.trackers import (need_trackers, offline_wandb, tensorboard_events, tensorboard_text, wandb_history,
                            wandb_run_id, wandb_runs)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

LINE = re.compile(r"vidcli: step (\d+)/(\d+) loss \d+\.\d{4} lr \S+ \| [\d.e+-]+ s/step, [\d.e+-]+ samples/s, "
                  r"\d+:\d\d left, peak n/a \(not on a GPU\)")


def loud(args: list[str]) -> list[str]:
    return [a for a in args if a != "-q"]


def test_log_lines_and_summary_without_trackers(sft_kit, tmp_path):
    out = tmp_path / "run"
    result = invoke(loud(sft_args(sft_kit, out, "--max-steps", "3", "--log-every", "2")))
    assert result.exit_code == 0, result.stderr
    # The first step, every --log-every steps and the last.
    assert [m.groups() for m in LINE.finditer(result.stderr)] == [("1", "3"), ("2", "3"), ("3", "3")]
    info = json.loads((out / "vidcli.json").read_text())
    summary = info["summary"]
    assert summary["steps"] == 3 and summary["total_steps"] == 3 and summary["timed_steps"] == 3
    assert summary["wall_time_s"] >= summary["step_time_s"] > 0 and summary["peak_memory_gib"] is None
    assert summary["mean_s_per_step"] == pytest.approx(summary["step_time_s"] / 3, abs=1e-3)
    assert summary["final"] == {"loss": pytest.approx(info["metrics"]["loss"])}
    assert summary["best"]["loss"]["step"] in (1, 2, 3) and summary["logs"] == [] and "trackers" not in info
    closing = [line for line in result.stderr.splitlines() if " done: " in line]
    assert closing == [
        f"vidcli: sft done: 3/3 steps in {closing_time(summary)} ({summary['mean_s_per_step']:.3g} s/step), "
        f"peak n/a (not on a GPU), loss {summary['final']['loss']:.4f} (best {summary['best']['loss']['value']:.4f} "
        f"at step {summary['best']['loss']['step']}); model in {out}, logs in none (--report-to none)"]
    quiet = invoke(sft_args(sft_kit, tmp_path / "quiet", "--max-steps", "1"))
    assert quiet.exit_code == 0 and "step 1/1" not in quiet.stderr and " done: " not in quiet.stderr  # -q


def closing_time(summary: dict) -> str:
    from vidcli.train.monitor import duration

    return duration(summary["wall_time_s"])


def test_sft_reports_to_both_trackers_and_a_resumed_run_continues_them(sft_kit, tmp_path):
    need_trackers()
    out = tmp_path / "run"
    args = sft_args(sft_kit, out, "--max-steps", "2", "--save-every", "1", "--report-to", "tensorboard,wandb")
    with offline_wandb(tmp_path):
        first = invoke(loud(args))
    assert first.exit_code == 0, first.stderr
    assert f"logs in {out / 'logs'}" in first.stderr
    info = json.loads((out / "vidcli.json").read_text())
    run_id = info["trackers"]["wandb"]["run_id"]
    assert info["summary"]["logs"] == [str(out / "logs")]

    events = tensorboard_events(out / "logs", "vidcli-sft-cot")
    assert [e.step for e in events.Scalars("loss")] == [1, 2]
    assert [e.step for e in events.Scalars("perf/s_per_step")] == [1, 2]
    (wandb_dir,) = wandb_runs(out / "logs")
    assert wandb_run_id(wandb_dir) == run_id and wandb_dir.name.endswith(run_id)
    history = wandb_history(wandb_dir)
    assert [row["_step"] for row in history] == [1, 2]
    assert [row["loss"] for row in history] == [e.value for e in events.Scalars("loss")]

    # As if the run had died after logging step 2 but before checkpointing it: resume from checkpoint-1.
    cut = tmp_path / "cut"
    shutil.copytree(out / "checkpoint-1", cut / "checkpoint-1")
    shutil.copytree(out / "logs", cut / "logs")
    with offline_wandb(tmp_path):
        second = invoke(loud(sft_args(sft_kit, cut, "--max-steps", "2", "--save-every", "1", "--resume",
                                      "--report-to", "tensorboard,wandb")))
    assert second.exit_code == 0, second.stderr
    resumed = json.loads((cut / "vidcli.json").read_text())
    assert resumed["trackers"]["wandb"]["run_id"] == run_id  # the same W&B run
    assert resumed["summary"]["timed_steps"] == 2  # one step before the checkpoint, one after it
    # TensorBoard drops what the first session logged after the resumed step: one value per step.
    events = tensorboard_events(cut / "logs", "vidcli-sft-cot")
    assert [e.step for e in events.Scalars("loss")] == [1, 2]
    assert events.Scalars("loss")[1].value == pytest.approx(resumed["metrics"]["loss"])
    # W&B: a second offline folder of the same run id, which `wandb sync` uploads into the same run.
    before, after = wandb_runs(cut / "logs")
    assert wandb_run_id(before) == wandb_run_id(after) == run_id
    assert [row["_step"] for row in wandb_history(after)] == [2]


def test_grpo_sends_tables_of_rollouts(grpo_kit, tmp_path):
    from tensorboard.plugins.text.text_plugin import text_array_to_html  # noqa: F401  (needs tensorboard)

    need_trackers()
    out = tmp_path / "run"
    args = grpo_args(grpo_kit, out, "--max-steps", "2", "--report-to", "tensorboard,wandb",
                     "--log-samples-every", "2", "--log-samples", "4")
    with offline_wandb(tmp_path):
        result = invoke(args)
    assert result.exit_code == 0, result.stderr
    rows = read_jsonl(out / "rollouts.jsonl")
    columns = ["prompt_id", "sample", "instruction", "completion", "reward", "format", "user", "detail", "supp",
               "contra", "advantage", "masked"]

    def expected(step: int) -> list[list]:
        mine = [r for r in rows if r["step"] == step][:4]
        return [[r["prompt_id"], r["sample"], r["instruction"], r["completion"], r["reward"],
                 *[r["parts"][p] for p in columns[5:10]], r["advantage"], r["masked"]] for r in mine]

    # Steps 1 (the first) and 2 (every 2): the first prompt's group of G = 3, then the next prompt's first.
    from tensorboard import plugin_util

    text = tensorboard_text(tensorboard_events(out / "logs", "vidcli-grpo"), "rollouts")
    assert sorted(text) == [1, 2]
    for step, markdown in text.items():
        lines = markdown.splitlines()
        assert lines[0] == "| " + " | ".join(columns) + " |" and len(lines) == 2 + 4
        for line, row in zip(lines[2:], expected(step)):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            assert cells[0] == row[0] and cells[1] == str(row[1])
            assert cells[3] == "<br>".join(row[3].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                                           .replace("|", "\\|").splitlines()).strip()
            assert float(cells[10]) == pytest.approx(row[10], rel=1e-3)
        html = plugin_util.markdown_to_safe_html(markdown)
        assert html.count("<tr>") == 5 and "<table>" in html  # TensorBoard renders it as a table

    (wandb_dir,) = wandb_runs(out / "logs")
    tables = {row["_step"]: row["rollouts/path"] for row in wandb_history(wandb_dir) if "rollouts/path" in row}
    assert sorted(tables) == [1, 2]
    for step, path in tables.items():
        table = json.loads((wandb_dir / "files" / path).read_text())
        assert table["columns"] == columns
        assert table["data"] == [[pytest.approx(v) if isinstance(v, float) else v for v in row]
                                 for row in expected(step)]
