"""Running the CLI in tests: in-process (fast) or as a real subprocess (exit codes, signals)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from click.testing import CliRunner

from vidcli.cli import cli


def invoke(args: list[str], input: str | None = None, env: dict | None = None):
    """Run ``vidcli ARGS`` in this process; returns click's Result (stdout/stderr apart)."""
    return CliRunner().invoke(cli, args, input=input, env=env, catch_exceptions=False)


def run_cli(args: list[str], *, env: dict | None = None, input: str | None = None, timeout: float = 120):
    """Run ``python -m vidcli ARGS`` as a subprocess, exactly as a shell would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "vidcli", *args], capture_output=True, text=True,
                          env=full_env, input=input, timeout=timeout)


def kill_when(args: list[str], ready: Callable[[], bool], *, env: dict | None = None, timeout: float = 120) -> None:
    """Run ``python -m vidcli ARGS`` and SIGKILL it as soon as ``ready()`` holds (the kill-and-resume
    tests: a checkpoint saved, some records written). Fails if the run ends first or ``ready()``
    does not come within ``timeout`` seconds."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "vidcli", *args], env=full_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, f"not ready within {timeout} s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def close_records(ours, theirs, rel: float = 1e-4) -> None:
    """The same structure and values, floats to ``rel`` (absolute 1e-6 near 0)."""
    import pytest

    if isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=rel, abs=1e-6)
    elif isinstance(theirs, dict):
        assert ours.keys() == theirs.keys()
        for key in theirs:
            close_records(ours[key], theirs[key], rel)
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            close_records(a, b, rel)
    else:
        assert ours == theirs


def share_of_update(tuned: dict, reference: dict, base: dict) -> float:
    """How far ``tuned`` lies from ``reference`` (weights by name), as a share of how far ``reference``
    moved from ``base`` (sums of absolute differences); the reference must have moved."""
    moved = sum(float((reference[k] - base[k]).abs().sum()) for k in reference)
    assert moved > 0
    return sum(float((tuned[k] - reference[k]).abs().sum()) for k in reference) / moved
