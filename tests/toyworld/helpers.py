"""Helpers shared by the toy world's tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def assert_workers_end_with_their_parent(script: Path, *args: str, start_timeout: float = 120) -> None:
    """Run ``script`` (which starts spawned worker processes), wait until a worker is into its work,
    SIGKILL the script (no chance to stop its workers) and assert every worker ends on its own."""
    import psutil

    parent = subprocess.Popen([sys.executable, str(script), *args])
    workers = []
    try:
        deadline = time.monotonic() + start_timeout
        while not workers:
            assert parent.poll() is None and time.monotonic() < deadline, "the run ended or never started its worker"
            workers = [p for p in psutil.Process(parent.pid).children(recursive=True)
                       if "spawn_main" in " ".join(p.cmdline())]
            time.sleep(0.5)
        time.sleep(3)  # the worker is into its work
        assert all(w.is_running() for w in workers)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        gone, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, f"orphaned worker processes still running: {[w.pid for w in alive]}"
    finally:
        if parent.poll() is None:
            parent.kill()
        for w in workers:
            if w.is_running():
                w.kill()


def assert_sigterm_ends_commands(code: str, args: list[str], pids: Path, count: int,
                                 message: str = "terminated: finished stages and runs are kept") -> None:
    """Run ``python -c code *args`` (a toy-world CLI whose commands write their pid to a file in ``pids``),
    wait until ``count`` commands are running, send SIGTERM to the CLI's process alone (as `kill`, `timeout`
    or a scheduler does) and assert: exit 143, the one line starting with ``message``, no traceback, every
    command ended and reaped."""
    import pytest

    process = subprocess.Popen([sys.executable, "-c", code, *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len([p for p in pids.iterdir() if p.read_text()]) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        commands = [int(p.read_text()) for p in pids.iterdir() if p.read_text()]
        assert len(commands) >= count
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in err
    for pid in commands:
        with pytest.raises(ProcessLookupError):  # ended and reaped
            os.kill(pid, 0)
