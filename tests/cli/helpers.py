"""Running the CLI in tests: in-process (fast) or as a real subprocess (exit codes, signals)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
