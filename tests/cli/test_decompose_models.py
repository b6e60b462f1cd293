"""`vidcli decompose` with real model backends: local hf: models and `transformers serve`.

The tiny models have random weights, so they never produce the JSON asked for: these
tests check the transport and the failure contract (bounded retries, a located reason in
the rejects file, nothing silently emptied), not the content.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli.helpers import invoke, read_jsonl, write_jsonl
from tests.cli.test_decompose import BALL_ELEMENTS, EXAMPLES
from vidcli.testing.server import ScriptedServer


def test_hf_llm_garbage_is_rejected_with_its_reason(tmp_path, tiny_models):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "caption": "a red ball rolls"},
                                              {"id": "b", "caption": "a blue cube spins"}])
    out = tmp_path / "out.jsonl"
    result = invoke(["decompose", "--llm", f"hf:{tiny_models['llm']}", "--max-tokens", "24", "--attempts", "2",
                     "--on-error", "skip", "-q", str(inp), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert read_jsonl(out) == []
    rejects = read_jsonl(str(out) + ".rejects.jsonl")
    assert [r["id"] for r in rejects] == ["a", "b"]
    assert all("after 2 attempts" in r["errors"][0]["message"] for r in rejects)


def test_hf_vlm_sees_the_real_video(tmp_path, tiny_models):
    shutil.copytree(EXAMPLES / "media", tmp_path / "media")
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "ball", "caption": "a red ball", "video": "media/ball.mp4"}])
    with ScriptedServer(default=json.dumps(BALL_ELEMENTS)) as server:
        result = invoke(["decompose", "--llm", "openai:m", "--base-url", server.base_url,
                         "--vlm", f"hf:{tiny_models['vlm']}", "--frames", "4", "--attempts", "1",
                         "--on-error", "skip", "-q", str(inp), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.stderr
    reject = read_jsonl(tmp_path / "out.jsonl.rejects.jsonl")[0]
    # The LLM stage passed; the random VLM read the video and answered non-JSON.
    assert reject["errors"][0]["stage"] == "vlm"
    assert reject["errors"][0]["message"].startswith("Phy question: reply was not valid JSON")


@pytest.mark.server
def test_decompose_against_transformers_serve(tmp_path, transformers_server):
    base_url, model_path = transformers_server
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "caption": "a red ball rolls"},
                                              {"id": "b", "caption": "a cat sleeps on a sofa"}])
    out = tmp_path / "out.jsonl"
    args = ["decompose", "--llm", f"openai:{model_path}", "--base-url", base_url,
            "--max-tokens", "16", "--attempts", "2", "--on-error", "skip", "-q", str(inp), "-o", str(out)]
    result = invoke(args)
    assert result.exit_code == 0, result.stderr
    rejects = read_jsonl(str(out) + ".rejects.jsonl")
    assert sorted(r["id"] for r in rejects) == ["a", "b"]
    # The server answered (text that is not JSON), so the failure is the JSON check's,
    # not a transport error.
    for r in rejects:
        assert r["errors"][0]["stage"] == "llm"
        assert "reply was not valid JSON after 2 attempts" in r["errors"][0]["message"]
    # A model the server cannot load is a per-record error, reported, not a crash.
    bad = invoke([*args[:2], "openai:/no/such/model", *args[3:]])
    assert bad.exit_code == 0
    assert all(r["errors"][0]["stage"] == "llm" for r in read_jsonl(str(out) + ".rejects.jsonl"))
