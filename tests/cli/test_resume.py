"""A run killed with SIGKILL mid-stream, resumed with --resume, ends with every id once."""
from __future__ import annotations

import json

from tests.cli.helpers import kill_when, read_jsonl, run_cli, write_jsonl
from tests.cli.test_decompose import BALL_ELEMENTS
from vidcli.testing.server import ScriptedServer, reply


def test_sigkill_then_resume_writes_every_id_exactly_once(tmp_path):
    ids = [f"r{i:02d}" for i in range(40)]
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "caption": f"caption {i}"} for i in ids])
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    with ScriptedServer(default=reply(json.dumps(BALL_ELEMENTS), delay_ms=60)) as server:
        args = ["decompose", "--llm", "openai:m", "--base-url", server.base_url, "--concurrency", "1",
                "-q", str(inp), "-o", str(out)]
        kill_when(args, lambda: partial.exists() and partial.read_bytes().count(b"\n") >= 16, timeout=60)
        assert not out.exists()  # the final name never holds an incomplete run
        done_before = partial.read_bytes().count(b"\n")
        assert 16 <= done_before < 40
        with open(partial, "ab") as handle:  # what a kill in the middle of a write leaves
            handle.write(b'{"id":"r99","elements":{"envir')
        requests_before = server.count
        resumed = run_cli([*args, "--resume"])
        assert resumed.returncode == 0, resumed.stderr
        assert server.count - requests_before == 40 - done_before  # done ids are not redone
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == ids
    assert len(records) == 40 and not partial.exists()
