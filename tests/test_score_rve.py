"""`score --metric rve`: a scripted OpenAI-compatible judge rates edited videos; parsing, overalls, failures."""
from __future__ import annotations

import base64
import io
import json
import math
import re

import numpy as np
import pytest

from tests.cli.helpers import invoke, read_jsonl, write_jsonl
from vidcli.media import write_video
from vidcli.scoring.rve import overall_score
from vidcli.testing.server import ScriptedServer

FRAMES = 4
T_975_1 = 12.706204736174707  # Student's t, 0.975 quantile, 1 degree of freedom

# Judge replies per instruction, one per round (a correction round follows an unusable reply).
REPLIES = {
    "Make the ball red.": ['{"EA": 8, "PC": 6, "GN": 7, "GR": 9, "reason": "red ball, same scene"}'],
    "Show what happens next.": ['Scores:\n```json\n{"EA": 5, "GN": 4, "GR": 9, "reason": "plausible"}\n```'],
    "Turn it into a cartoon.": ["I would say about a seven.", "Roughly seven overall, maybe eight."],
    "Slow it down.": ['{"EA": 11, "PC": 2, "GN": 3, "GR": 4}', '{"EA": 10, "PC": 2, "GN": 3, "GR": 4}'],
}
RECORDS = [
    {"id": "red", "subset": "rave", "reasoning_type": "physical", "instruction": "Make the ball red.",
     "source": {"video": "src.mp4", "start": 1.0, "end": 2.0}, "output": {"video": "edit.mp4"}},
    {"id": "next", "subset": "icvg", "reasoning_type": "temporal", "instruction": "Show what happens next.",
     "source": {"video": "src.mp4", "start": 1.0, "end": 2.0}, "output": {"video": "edit.mp4"}},
    {"id": "cartoon", "subset": "rave", "reasoning_type": "physical", "instruction": "Turn it into a cartoon.",
     "source": {"video": "src.mp4"}, "output": {"video": "edit.mp4"}},
    {"id": "slow", "subset": "rave", "reasoning_type": "temporal", "instruction": "Slow it down.",
     "source": {"video": "src.mp4", "start": 1.0, "end": 2.0}, "output": {"video": "edit.mp4"}},
]
SUBSCORES = {"red": {"EA": 8, "PC": 6, "GN": 7, "GR": 9}, "next": {"EA": 5, "GN": 4, "GR": 9},
             "slow": {"EA": 10, "PC": 2, "GN": 3, "GR": 4}}
GEOMETRIC = {"red": (8 * 6 * 7 * 9) ** (1 / 4), "next": (5 * 4 * 9) ** (1 / 3), "slow": (10 * 2 * 3 * 4) ** (1 / 4)}
VIESCORE = {"red": math.sqrt(6 * 7), "next": math.sqrt(5 * 4), "slow": math.sqrt(2 * 3)}


def user_text(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


def script(body: dict) -> str:
    instruction = re.search(r"editing model: (.*)", user_text(body["messages"][1])).group(1)
    rounds = sum(m["role"] == "assistant" for m in body["messages"])
    return REPLIES[instruction][rounds]


def images(message: dict) -> list:
    from PIL import Image

    urls = [p["image_url"]["url"] for p in message["content"] if p.get("type") == "image_url"]
    return [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB") for url in urls]


@pytest.fixture
def folder(tmp_path):
    red, blue, green = (200, 20, 20), (20, 20, 200), (20, 200, 20)
    source = np.zeros((16, 48, 64, 3), dtype=np.uint8)
    source[:8], source[8:] = red, blue  # 8 fps: red in [0, 1) s, blue in [1, 2) s
    write_video(tmp_path / "src.mp4", source, fps=8)
    write_video(tmp_path / "edit.mp4", np.full((8, 48, 64, 3), green, dtype=np.uint8), fps=8)
    return tmp_path


def run(folder, server, *extra):
    inp = write_jsonl(folder / "in.jsonl", RECORDS)
    return invoke(["score", "--metric", "rve", "--judge", "openai:judge", "--base-url", server.base_url,
                   "--frames", str(FRAMES), "--no-cache", *extra, str(inp), "-o", str(folder / "out.jsonl")])


def test_scores_failures_frames_and_grouped_summary(folder):
    summary_file = folder / "s.json"
    with ScriptedServer(script) as server:
        result = run(folder, server, "--by", "reasoning_type", "--summary", str(summary_file))
        requests = [r.body for r in server.requests]
    assert result.exit_code == 0, result.stderr
    out = {r["id"]: r for r in read_jsonl(folder / "out.jsonl")}
    assert list(out) == ["red", "next", "cartoon", "slow"]  # the unparsable one did not stop the run

    for rid, subs in SUBSCORES.items():
        scores = out[rid]["scores"]
        assert {k: scores[f"rve_{k}"] for k in subs} == subs
        assert scores["rve"] == pytest.approx(GEOMETRIC[rid], abs=1e-12)
        assert "errors" not in out[rid]
    assert out["next"]["scores"]["rve_PC"] is None  # ICVG: preservation is not rated

    failed = out["cartoon"]
    assert all(value is None for value in failed["scores"].values()) and len(failed["scores"]) == 5
    assert [e["metric"] for e in failed["errors"]] == ["rve_EA", "rve_PC", "rve_GN", "rve_GR", "rve"]
    assert all(e["stage"] == "score" and "after 2 attempts" in e["message"] for e in failed["errors"])

    # One request per record, plus one correction round each for "cartoon" and "slow".
    assert len(requests) == 6
    by_instruction = {}
    for body in requests:
        by_instruction.setdefault(re.search(r"editing model: (.*)", user_text(body["messages"][1])).group(1),
                                  []).append(body)
    retry = by_instruction["Slow it down."][1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": REPLIES["Slow it down."][0]}
    assert "could not be used" in retry[-1]["content"] and "'EA' must be from 0 to 10" in retry[-1]["content"]

    icvg_text = user_text(by_instruction["Show what happens next."][0]["messages"][1])
    rave_text = user_text(by_instruction["Make the ball red."][0]["messages"][1])
    assert "PC (preservation" not in icvg_text and '"PC"' not in icvg_text
    assert "PC (preservation" in rave_text and '"PC": 0-10' in rave_text

    # Frames sent as images: FRAMES of the source clip [1, 2) s (blue), then FRAMES of the edit (green).
    shown = images(by_instruction["Make the ball red."][0]["messages"][1])
    assert len(shown) == 2 * FRAMES
    means = [np.asarray(image, dtype=float).mean(axis=(0, 1)) for image in shown]
    assert all(m[2] > 150 and m[0] < 60 for m in means[:FRAMES])
    assert all(m[1] > 150 and m[2] < 60 for m in means[FRAMES:])
    whole = images(by_instruction["Turn it into a cartoon."][0]["messages"][1])[:FRAMES]  # no start/end: all 2 s
    reds = [np.asarray(image, dtype=float).mean(axis=(0, 1))[0] > 150 for image in whole]
    assert reds == [True, True, False, False]

    summary = json.loads(summary_file.read_text())
    assert list(summary["metrics"]) == ["rve_EA", "rve_PC", "rve_GN", "rve_GR", "rve"]
    overall = summary["metrics"]["rve"]
    assert overall["n"] == 3 and overall["failures"] == 1
    assert overall["mean"] == pytest.approx(sum(GEOMETRIC.values()) / 3)
    assert summary["metrics"]["rve_PC"]["unavailable"] == 1 and summary["metrics"]["rve_PC"]["failures"] == 1
    temporal = summary["groups"]["temporal"]["metrics"]["rve"]
    assert temporal["n"] == 2 and temporal["mean"] == pytest.approx((GEOMETRIC["next"] + GEOMETRIC["slow"]) / 2)
    assert temporal["half_width"] == pytest.approx(T_975_1 * abs(GEOMETRIC["next"] - GEOMETRIC["slow"]) / 2)
    physical = summary["groups"]["physical"]["metrics"]["rve"]
    assert physical["n"] == 1 and physical["failures"] == 1 and physical["ci95"] is None
    assert "id=cartoon: rve_EA: judge answer not usable" in result.stderr


def test_viescore_overall(folder):
    with ScriptedServer(script) as server:
        result = run(folder, server, "--overall", "viescore", "-q")
    assert result.exit_code == 0, result.stderr
    out = {r["id"]: r["scores"]["rve"] for r in read_jsonl(folder / "out.jsonl")}
    assert out == {"red": pytest.approx(VIESCORE["red"]), "next": pytest.approx(VIESCORE["next"]),
                   "cartoon": None, "slow": pytest.approx(VIESCORE["slow"])}


def test_overall_formulas():
    assert overall_score({"EA": 4, "PC": 9, "GN": 1, "GR": 2}) == pytest.approx(72 ** 0.25)
    assert overall_score({"EA": 4, "PC": 9, "GN": 1, "GR": 2}, "viescore") == pytest.approx(2.0)
    assert overall_score({"EA": 9, "GN": 4, "GR": 1}, "viescore") == pytest.approx(3.0)
    assert overall_score({"EA": 0, "PC": 9, "GN": 9, "GR": 9}) == 0.0


def test_unreadable_triplets_are_input_errors(folder):
    rows = [{"id": "nosrc", "instruction": "x", "output": {"video": "edit.mp4"}},
            {"id": "backwards", "instruction": "x", "source": {"video": "src.mp4", "start": 2, "end": 1},
             "output": {"video": "edit.mp4"}},
            {"id": "noedit", "instruction": "x", "source": {"video": "src.mp4"}},
            {"id": "subset", "instruction": "x", "subset": "other", "source": {"video": "src.mp4"},
             "output": {"video": "edit.mp4"}}]
    inp = write_jsonl(folder / "bad.jsonl", rows)
    with ScriptedServer(script) as server:
        result = invoke(["score", "--metric", "rve", "--judge", "openai:judge", "--base-url", server.base_url, "-q",
                         "--on-error", "skip", str(inp), "-o", str(folder / "out.jsonl")])
        assert server.count == 0
    assert result.exit_code == 0, result.stderr
    rejects = {r["id"]: r["errors"][0]["message"] for r in read_jsonl(folder / "out.jsonl.rejects.jsonl")}
    assert rejects == {"nosrc": "missing field 'source' ({video, start, end} of the source clip)",
                       "backwards": "field 'source': end (1) must come after start (2)",
                       "noedit": "missing field 'output.video' (a video path)",
                       "subset": "field 'subset' must be one of icvg, rave, got 'other'"}


def test_rve_needs_a_vlm_judge():
    result = invoke(["score", "--metric", "rve", "-"], input="")
    assert result.exit_code == 2 and "--metric rve needs a VLM judge" in result.stderr


def test_local_hf_judge_reads_the_frames_and_its_nonsense_is_a_recorded_failure(folder):
    # The tiny random Qwen2.5-VL answers nonsense: this checks that the video parts reach a real
    # local VLM through its processor, and that what it says is never turned into a number.
    from vidcli.testing import ensure_tiny_models

    path = ensure_tiny_models(["vlm"])["vlm"]
    inp = write_jsonl(folder / "in.jsonl", RECORDS[:1])
    result = invoke(["score", "--metric", "rve", "--judge", f"hf:{path}", "--device", "cpu", "--frames", "2",
                     "--judge-max-tokens", "8", "-q", str(inp)])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["scores"] == dict.fromkeys(["rve_EA", "rve_PC", "rve_GN", "rve_GR", "rve"])
    assert record["errors"][0]["message"].startswith("judge answer not usable: reply was not valid JSON after 2")
