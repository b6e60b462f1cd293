"""The three papers' recipes run end to end with TINY=1 (tiny models, offline teacher).

Each recipe runs once from scratch and once more: the second run must skip every
stage (outputs complete) and leave the results untouched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run_recipe(name: str, out: Path, kit_cache: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "TINY": "1", "OUT": str(out), "PYTHON": sys.executable,
           "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
           # the session's tiny-model kit (built once); replies are cached there too
           "XDG_CACHE_HOME": str(kit_cache), "OMP_NUM_THREADS": "1"}
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run(["bash", str(REPO / "recipes" / f"{name}.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _check(result: subprocess.CompletedProcess, name: str) -> None:
    assert result.returncode == 0, f"{name}.sh failed:\n{result.stderr[-4000:]}"


@pytest.fixture
def kit_cache(tiny_models) -> Path:
    return Path(tiny_models["llm"]).parents[3]


def _snapshot(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and "teacher" not in p.name}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", ["reade", "drf", "revise"])
def test_recipe_runs_tiny_end_to_end_and_skips_finished_stages(name, tmp_path, kit_cache):
    out = tmp_path / "run"
    result = _run_recipe(name, out, kit_cache, tmp_path)
    _check(result, name)
    summary = json.loads((out / "summary.json").read_text())
    scored = _records(out / "scored.jsonl")
    assert scored and all("scores" in r for r in scored)

    if name == "reade":
        for stage in ("camera", "sft", "grpo"):
            assert json.loads((out / stage / "vidcli.json").read_text())["final"] is True
        assert all({"think", "answer", "prompt", "raw"} <= set(r["output"]) for r in scored)
        assert {"format", "user", "detail", "supp", "reward"} <= set(scored[0]["scores"])
        rollouts = _records(out / "grpo" / "rollouts.jsonl")
        assert rollouts and all("reward" in r for r in rollouts)
    if name in ("drf", "revise"):
        videos = [Path(r["output"]["video"]) for r in scored]
        for video in videos:
            assert (out / video if not video.is_absolute() else video).is_file()
    if name == "drf":
        assert json.loads((out / "tuned" / "vidcli.json").read_text())["command"] == "drf-tune"
        assert all(r["scores"]["vqa"] is not None for r in scored)
    if name == "revise":
        assert json.loads((out / "editor" / "vidcli.json").read_text())["command"] == "revise-tune"
        assert all(r["scores"]["rve"] is not None for r in scored)
        assert all(r["output"]["generation"]["mode"] == "edit" for r in scored)
    assert summary  # written by the score stage

    before = _snapshot(out)
    again = _run_recipe(name, out, kit_cache, tmp_path)
    _check(again, name)
    assert "->" not in "".join(line for line in again.stderr.splitlines(True) if line.startswith(f"[{name}]")), \
        again.stderr  # every stage reported "done already"
    assert _snapshot(out) == before


def test_stage_is_done_only_on_proof_of_completion(tmp_path):
    """A stage stopped by a bad line is not "done": fixed and rerun, it resumes and
    completes; rerun again, it is skipped; with a changed input, it runs afresh."""
    from tests.cli.helpers import read_jsonl, write_jsonl
    from tests.cli.test_decompose import BALL_ELEMENTS
    from vidcli.testing.server import ScriptedServer, reply

    good = [{"id": f"r{i}", "caption": f"caption {i}"} for i in range(6)]
    data = write_jsonl(tmp_path / "in.jsonl", [*good[:3], "{not json", *good[3:]])
    out = tmp_path / "out" / "dec.jsonl"
    script = f"""
set -euo pipefail
RECIPE=test; source "{REPO}/recipes/lib.sh"
stage decompose "{out}" vidcli decompose --llm openai:m --concurrency 1 -q "{data}"
"""
    env = {**os.environ, "PYTHON": sys.executable,
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    with ScriptedServer(default=reply(json.dumps(BALL_ELEMENTS))) as server:
        env["OPENAI_BASE_URL"], env["XDG_CACHE_HOME"] = server.base_url, str(tmp_path / "cache")

        def run():
            return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300)

        first = run()
        assert first.returncode == 1 and "in.jsonl:4" in first.stderr
        assert not out.exists() and len(read_jsonl(str(out) + ".partial")) == 6  # the batch's good ones
        fixed = {"id": "r9", "caption": "caption 9"}
        write_jsonl(data, [*good[:3], fixed, *good[3:]])  # the user fixes the line and reruns, as the README says
        second = run()
        assert second.returncode == 0, second.stderr
        assert sorted(r["id"] for r in read_jsonl(out)) == [r["id"] for r in [*good, fixed]]
        asked = server.count
        third = run()
        assert "done already" in third.stderr and server.count == asked
        write_jsonl(data, [*good, {"id": "r6", "caption": "caption 6"}])  # a changed input is not done
        fourth = run()
        assert fourth.returncode == 0 and "done already" not in fourth.stderr, fourth.stderr
        assert sorted(r["id"] for r in read_jsonl(out)) == [f"r{i}" for i in range(7)]  # afresh: r9 is gone
