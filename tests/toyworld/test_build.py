"""The build's cache: keyed, skipping what is done, never clearing a folder it did not write."""
from __future__ import annotations

import json

import pytest

from vidcli.toyworld.build import STAGES, build, build_key


def test_the_key_names_seed_and_size():
    keys = {build_key(seed=0, quick=True), build_key(seed=1, quick=True), build_key(seed=0, quick=False)}
    assert len(keys) == 3 and build_key(seed=0, quick=True) == build_key(seed=0, quick=True)


def test_stages_done_under_the_key_are_not_run_again(tmp_path):
    done = {"key": build_key(seed=5, quick=True), "seed": 5, "quick": True,
            "stages": {name: {"seconds": 0.0} for name, _ in STAGES}}
    (tmp_path / "build.json").write_text(json.dumps(done))
    assert build(tmp_path, seed=5, quick=True) == done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.json"]  # nothing was written


def test_another_keys_build_is_cleared_and_an_unrelated_folder_refused(tmp_path, monkeypatch):
    from vidcli.toyworld import build as module

    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "build.json").write_text(json.dumps({"key": "old", "stages": {}}))
    (stale / "leftover.txt").write_text("from an older build")
    monkeypatch.setattr(module, "STAGES", STAGES[:1])  # only the world stage: quick to run
    report = build(stale, seed=5, quick=True)
    assert list(report["stages"]) == ["world"] and not (stale / "leftover.txt").exists()
    assert (stale / "world" / "requests.jsonl").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="holds no toy-world build"):
        build(mine, seed=5, quick=True)
    assert (mine / "notes.txt").read_text() == "keep me"


def _stages(monkeypatch, **runs):
    """The build's stages, each replaced by ``runs[name]`` (a function of the context), in the build's order."""
    from vidcli.toyworld import build as module

    monkeypatch.setattr(module, "STAGES", [(name, runs[name]) for name, _ in STAGES if name in runs])


def test_the_oracle_cot_and_interpreter_stages_run_beside_the_models(tmp_path, monkeypatch):
    import threading
    import time

    from vidcli.toyworld.build import BESIDE

    seen: list[tuple[str, str, float]] = []

    def stage(name, seconds):
        def run(ctx):
            seen.append((name, threading.current_thread().name, time.monotonic()))
            time.sleep(seconds)
            seen.append((name + " end", threading.current_thread().name, time.monotonic()))
            return {"ran": name}
        return run

    _stages(monkeypatch, world=stage("world", 0.05), oracle=stage("oracle", 0.3), cot=stage("cot", 0.3),
            interpreter=stage("interpreter", 0.3), models=stage("models", 1.0))
    report = build(tmp_path / "w", seed=5, quick=True)
    assert BESIDE == {"oracle", "cot", "interpreter"}
    assert {name: r["ran"] for name, r in report["stages"].items()} == {n: n for n in
                                                                        ("world", "oracle", "cot", "interpreter",
                                                                         "models")}
    at = {name: t for name, _, t in seen}
    lanes = {name: lane for name, lane, _ in seen}
    assert at["world end"] <= at["oracle"] and at["world end"] <= at["models"]  # both lanes wait for the world
    assert at["oracle end"] <= at["cot"] and at["cot end"] <= at["interpreter"]  # the second lane in order
    assert at["oracle"] < at["models end"] and at["interpreter end"] < at["models end"]  # beside the models
    assert lanes["models"] == lanes["world"] != lanes["cot"]
    saved = json.loads((tmp_path / "w" / "build.json").read_text())
    assert set(saved["stages"]) == set(report["stages"])


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_a_failure_beside_the_models_stops_them_at_once_and_is_raised(tmp_path, monkeypatch, sigint):
    """Also when SIGINT is ignored, as in a job started in the background by a script."""
    import signal
    import time

    from vidcli.toyworld.build import CommandFailed

    if sigint == "ignored":
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopped = []

    def models(ctx):
        try:
            for _ in range(600):
                time.sleep(0.05)
        except BaseException:
            stopped.append(True)
            raise
        return {}

    def cot(ctx):
        time.sleep(0.2)
        raise CommandFailed("vidcli make-cot failed (exit 1): error: requests.jsonl line 3: no instruction")

    _stages(monkeypatch, world=lambda ctx: {}, cot=cot, models=models)
    start = time.monotonic()
    try:
        with pytest.raises(CommandFailed, match="line 3: no instruction"):
            build(tmp_path / "w", seed=5, quick=True)
    finally:
        if sigint == "ignored":
            signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - start < 10 and stopped == [True]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # the build's own handler is gone
    saved = json.loads((tmp_path / "w" / "build.json").read_text())
    assert list(saved["stages"]) == ["world"]  # neither stopped stage is recorded: both run again next time


def test_a_failure_of_the_models_ends_the_command_running_beside_them(tmp_path, monkeypatch):
    import os
    import sys
    import time

    from vidcli.toyworld.build import _run

    started = []

    def interpreter(ctx):
        started.append(ctx)
        _run(ctx, "a long command", [sys.executable, "-c", "import time; time.sleep(120)"])
        return {}

    def models(ctx):
        while not ctx.running:  # the command beside has started
            time.sleep(0.05)
        started.append(next(iter(ctx.running)).pid)
        raise RuntimeError("the critic's weights are not finite")

    _stages(monkeypatch, world=lambda ctx: {}, interpreter=interpreter, models=models)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="not finite"):
        build(tmp_path / "w", seed=5, quick=True)
    assert time.monotonic() - start < 30
    pid = started[1]
    with pytest.raises(ProcessLookupError):  # ended and reaped
        os.kill(pid, 0)
    assert not started[0].running and started[0].stop.is_set()
    assert list(json.loads((tmp_path / "w" / "build.json").read_text())["stages"]) == ["world"]


def test_the_commands_beside_the_models_run_at_the_lowest_priority(tmp_path, monkeypatch):
    """They should take the core the models stage leaves idle, not share the busy ones: SCHED_IDLE."""
    import os
    import sys

    from vidcli.toyworld.build import _run

    policy = {}

    def measure(name):
        def run(ctx):
            out = _run(ctx, name, [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"])
            policy[name] = int(out)
            return {}
        return run

    _stages(monkeypatch, world=measure("world"), cot=measure("cot"), models=measure("models"))
    build(tmp_path / "w", seed=5, quick=True)
    mine = os.sched_getscheduler(0)
    assert policy == {"world": mine, "cot": os.SCHED_IDLE, "models": mine}


# A build whose second lane runs a long command and whose models stage waits, driven through the CLI in a
# process of its own, so that a signal can be sent to it alone (as `kill`, `timeout` or a scheduler does).
_LONG_BUILD = """
import sys, time
from pathlib import Path
from vidcli.toyworld import build as module
from vidcli.toyworld.__main__ import main

flag = Path(sys.argv[2])

def cot(ctx):
    module._run(ctx, "a long command", [sys.executable, "-c",
                f"import os, time; open({str(flag)!r}, 'w').write(str(os.getpid())); time.sleep(120)"])
    return {}

def models(ctx):
    time.sleep(120)
    return {}

module.STAGES = [("world", lambda ctx: {}), ("cot", cot), ("models", models)]
sys.exit(main(["build", sys.argv[1], "--quick", "--seed", "5"]))
"""


def test_sigterm_ends_the_build_and_the_commands_it_started(tmp_path):
    """SIGTERM to the build's process alone: it ends the command running beside the models (none is left
    behind to write into the build), says so in one line, exits 143, and records neither stopped stage."""
    from tests.toyworld.helpers import assert_sigterm_ends_commands

    pids = tmp_path / "pids"
    pids.mkdir()
    assert_sigterm_ends_commands(_LONG_BUILD, [str(tmp_path / "w"), str(pids / "cot")], pids, 1)
    assert list(json.loads((tmp_path / "w" / "build.json").read_text())["stages"]) == ["world"]
