"""The run monitor: log-line figures from a scripted clock, the summary across a resume, the bar."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import torch

from vidcli.train.core import RunConfig
from vidcli.train.monitor import GIB, RunMonitor, closing_line, duration


class FakeAccelerator:
    """What the monitor uses of an Accelerator: the device, the main-process flag and ``log``."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device) if device == "cpu" else type("Device", (), {"type": device})()
        self.is_main_process = True
        self.logged: list[tuple[int, dict]] = []

    def log(self, values: dict, step: int) -> None:
        self.logged.append((step, dict(values)))


class Clock:
    """A clock that says what the test scripts."""

    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def info_logs(caplog):
    vidcli = logging.getLogger("vidcli")
    level, vidcli.level = vidcli.level, logging.INFO
    caplog.set_level(logging.INFO, logger="vidcli")
    yield caplog
    vidcli.setLevel(level)


def monitor(tmp_path: Path, clock: Clock, *, device: str = "cpu", **kwargs) -> RunMonitor:
    run = RunConfig(tmp_path / "run", mixed_precision="no")
    return RunMonitor(FakeAccelerator(device), run, command="sft", log_every=2, clock=clock, **kwargs)


def test_duration_formats():
    assert [duration(s) for s in (0, 59.6, 61, 3600 * 2 + 5, None, float("inf"))] == \
        ["0:00", "1:00", "1:01", "2:00:05", "?", "?"]


def test_log_lines_carry_rate_samples_time_left_and_memory(tmp_path, info_logs):
    # Created at t=0, setup until 10; steps end at 12, 14 and 18 s; 8 samples per step, 5 steps.
    mon = monitor(tmp_path, Clock(0.0, 10.0, 12.0, 14.0, 18.0))
    mon.begin(total_steps=5, step=0, samples_per_step=8)
    mon.step(1, {"loss": 0.9, "lr": 1e-3})
    mon.step(2, {"loss": 0.5, "lr": 1e-3})
    mon.step(3, {"loss": 0.7, "lr": 1e-3})  # not a log step (--log-every 2)
    lines = [r.getMessage() for r in info_logs.records]
    assert lines == [
        "step 1/5 loss 0.9000 lr 0.001 | 2 s/step, 4 samples/s, 0:08 left, peak n/a (not on a GPU)",
        "step 2/5 loss 0.5000 lr 0.001 | 2 s/step, 4 samples/s, 0:06 left, peak n/a (not on a GPU)",
    ]
    # The trackers get the step's metrics and the same figures (time left and CPU memory are not scalars).
    step, values = mon.accelerator.logged[2]
    assert step == 3 and values == {"loss": 0.7, "lr": 1e-3, "perf/s_per_step": 8 / 3,
                                    "perf/samples_per_s": pytest.approx(3.0)}


def test_peak_memory_on_a_gpu(tmp_path, info_logs, monkeypatch):
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: int(1.5 * GIB))
    mon = monitor(tmp_path, Clock(0.0, 0.0, 3.0), device="cuda")
    mon.begin(total_steps=1, step=0, samples_per_step=2)
    mon.step(1, {"loss": 1.0})
    assert info_logs.records[-1].getMessage().endswith("| 3 s/step, 0.667 samples/s, 0:00 left, peak 1.50 GiB")
    assert mon.accelerator.logged[0][1]["perf/peak_memory_gib"] == 1.5


def test_summary_adds_up_sessions_and_keeps_the_best(tmp_path):
    first = monitor(tmp_path, Clock(0.0, 5.0, 7.0, 11.0, 20.0))
    first.begin(total_steps=4, step=0, samples_per_step=1)
    first.step(1, {"loss": 2.0, "reward": -2.0})
    first.step(2, {"loss": 1.0, "reward": -1.0})
    saved = first.summary(2, logs=[tmp_path / "missing.jsonl"])
    assert saved == {"steps": 2, "total_steps": 4, "wall_time_s": 20.0, "step_time_s": 6.0, "timed_steps": 2,
                     "mean_s_per_step": 3.0, "peak_memory_gib": None,
                     "final": {"loss": 1.0, "reward": -1.0},
                     "best": {"loss": {"value": 1.0, "step": 2}, "reward": {"value": -1.0, "step": 2}},
                     "output": str(tmp_path / "run"), "logs": []}  # a step log not written yet is not named

    # A resumed session: 3 s of setup, steps of 1 s; its values are worse for loss, better for reward.
    second = monitor(tmp_path, Clock(100.0, 103.0, 104.0, 105.0, 106.0))
    second.restore({"step": 2, "summary": saved})
    second.begin(total_steps=4, step=2, samples_per_step=1)
    second.step(3, {"loss": 1.5, "reward": 0.5})
    second.step(4, {"loss": 1.2, "reward": 0.2})
    log = tmp_path / "rewards.jsonl"
    log.write_text("")
    total = second.summary(4, logs=[log])
    assert total["wall_time_s"] == 26.0 and total["step_time_s"] == 8.0 and total["timed_steps"] == 4
    assert total["mean_s_per_step"] == 2.0 and total["final"] == {"loss": 1.2, "reward": 0.2}
    assert total["best"] == {"loss": {"value": 1.0, "step": 2}, "reward": {"value": 0.5, "step": 3}}
    assert total["logs"] == [str(log)]


def test_closing_line():
    summary = {"steps": 100, "total_steps": 100, "wall_time_s": 312.4, "mean_s_per_step": 3.1234,
               "peak_memory_gib": 11.2, "final": {"loss": 0.4312},
               "best": {"loss": {"value": 0.4011, "step": 87}}, "logs": ["runs/x/logs"]}
    assert closing_line("sft", summary, Path("runs/x")) == (
        "sft done: 100/100 steps in 5:12 (3.12 s/step), peak 11.20 GiB, loss 0.4312 (best 0.4011 at step 87); "
        "model in runs/x, logs in runs/x/logs")
    summary.update(peak_memory_gib=None, logs=[], mean_s_per_step=None)
    assert "(? s/step), peak n/a (not on a GPU)" in closing_line("sft", summary, Path("o"))
    assert closing_line("sft", summary, Path("o")).endswith("logs in none (--report-to none)")


def test_the_bar_shows_on_a_terminal_from_the_resumed_step(tmp_path, info_logs):
    terminal = Terminal()
    mon = monitor(tmp_path, Clock(0.0, 1.0, 3.0, 4.0), stream=terminal)
    mon.begin(total_steps=10, step=3, samples_per_step=4)
    assert " 3/10 " in terminal.getvalue()  # resumed at step 3
    mon.step(4, {"loss": 0.25, "reward": 1.5})
    mon.close()
    shown = terminal.getvalue()
    assert " 4/10 " in shown and "loss=0.25" in shown and "reward=1.5" in shown and "samples/s=2" in shown
    assert "step" in shown and ("s/step" in shown or "step/s" in shown) and "<" in shown  # tqdm's rate, time left


@pytest.mark.parametrize("case", ["not a terminal", "quiet"])
def test_no_bar_off_a_terminal_or_when_quiet(tmp_path, caplog, case):
    stream = io.StringIO() if case == "not a terminal" else Terminal()
    vidcli = logging.getLogger("vidcli")
    level = vidcli.level
    vidcli.setLevel(logging.INFO if case == "not a terminal" else logging.WARNING)  # --quiet sets WARNING
    try:
        mon = monitor(tmp_path, Clock(0.0, 1.0, 2.0), stream=stream)
        mon.begin(total_steps=2, step=0, samples_per_step=1)
        mon.step(1, {"loss": 1.0})
        mon.close()
    finally:
        vidcli.setLevel(level)
    assert mon.bar is None and stream.getvalue() == ""
