"""`vidcli score` end to end: scripted judge server, the offline matcher, failures, summaries."""
from __future__ import annotations

import json

import pytest

from tests.cli.helpers import invoke, read_jsonl, write_jsonl
from tests.test_reade_reward import CONTRADICTORY, GOOD, NO_ANSWER, script
from tests.test_rewards_coverage import KEY_INFO
from vidcli.testing.server import ScriptedServer, error

RECORDS = [
    {"id": "good", "conditions": [{"type": "identity", "path": "face.png"}], "key_info": KEY_INFO,
     "output": {"raw": GOOD, "prompt": "ignored"}, "completion": "ignored: output.raw comes first"},
    {"id": "bad", "conditions": [{"type": "depth", "path": "d.mp4"}], "key_info": KEY_INFO, "completion": CONTRADICTORY},
    {"id": "none", "conditions": [{"type": "depth", "path": "d.mp4"}], "key_info": KEY_INFO,
     "output": {"raw": NO_ANSWER}},
]
# Hand-computed from the scripted judge (see tests/test_reade_reward.py).
EXPECTED = {
    "good": {"format": 1.0, "user": 1.0, "detail": 0.75, "supp": 0.5, "contra": 0.0, "reward": 3.15},
    "bad": {"format": 0.2, "user": 1.0, "detail": 0.75, "supp": 0.5, "contra": 1.0, "reward": 1.65},
    "none": {"format": 0.2, "user": 0.0, "detail": 0.0, "supp": 0.0, "contra": 0.0, "reward": 0.2},
}


def llm_args(server: ScriptedServer) -> list[str]:
    return ["--judge", "openai:judge", "--base-url", server.base_url]


def test_scores_summary_groups_and_plot(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out, summary_file, plot = tmp_path / "out.jsonl", tmp_path / "summary.json", tmp_path / "by-type.png"
    with ScriptedServer(script) as server:
        result = invoke(["score", "--metric", "format,coverage", "--metric", "reward", *llm_args(server),
                         "--by", "conditions.0.type", "--summary", str(summary_file), "--plot", str(plot),
                         str(inp), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["good", "bad", "none"]
    for record in records:
        scores = record["scores"]
        assert scores.pop("contra_available") is True
        assert scores == pytest.approx(EXPECTED[record["id"]], abs=1e-9)
        assert "errors" not in record
    assert records[0]["output"] == RECORDS[0]["output"]  # input fields pass through

    summary = json.loads(summary_file.read_text())
    assert list(summary["metrics"]) == ["format", "user", "detail", "supp", "contra", "reward"]
    reward = summary["metrics"]["reward"]
    assert reward["n"] == 3 and reward["mean"] == pytest.approx(5.0 / 3)
    depth = summary["groups"]["depth"]["metrics"]["reward"]
    assert depth["n"] == 2 and depth["mean"] == pytest.approx((1.65 + 0.2) / 2)
    assert depth["half_width"] == pytest.approx(12.706204736174707 * abs(1.65 - 0.2) / 2, abs=1e-9)
    assert summary["groups"]["identity"]["metrics"]["reward"]["mean"] == pytest.approx(3.15)
    assert "conditions.0.type = depth: 2 record(s)" in result.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_empty_element_set_is_null_with_a_reason_and_left_out_of_the_mean(tmp_path):
    empty = {"objects": [], "actions": [], "camera": [], "style": []}
    text_only = {"id": "text", "key_info": {**KEY_INFO, "supplementary": empty}, "completion": GOOD}
    inp = write_jsonl(tmp_path / "in.jsonl", [RECORDS[0], text_only])
    with ScriptedServer(script) as server:
        result = invoke(["score", "--metric", "coverage,reward", *llm_args(server), "--summary",
                         str(tmp_path / "summary.json"), str(inp), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.stderr
    good, text = read_jsonl(tmp_path / "out.jsonl")
    assert text["scores"]["detail"] is None and "errors" not in text
    assert text["scores"]["not_applicable"] == {"detail": "no supplementary (S) elements: nothing in key_info to check"}
    assert text["scores"]["user"] == 1.0 and text["scores"]["reward"] == pytest.approx(1.0 + 1.0 + 1.0 + 0.8 * 0.5)
    assert "not_applicable" not in good["scores"]
    detail = json.loads((tmp_path / "summary.json").read_text())["metrics"]["detail"]
    assert (detail["n"], detail["mean"], detail["unavailable"], detail["failures"]) == (1, 0.75, 1, 0)
    header = next(line for line in result.stderr.splitlines() if line.strip().startswith("metric"))
    assert header.split()[-1] == "n/a"


def test_embed_judge_on_a_pipe_reports_contradiction_unavailable():
    lines = "".join(json.dumps(r) + "\n" for r in RECORDS)
    result = invoke(["score", "--metric", "coverage,reward", "--judge", "embed", "-"], input=lines)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    for record in records:
        scores = record["scores"]
        assert scores["contra"] is None and scores["contra_available"] is False
        fmt = EXPECTED[record["id"]]["format"]
        assert scores["reward"] == pytest.approx(fmt + scores["user"] + scores["detail"] + 0.8 * scores["supp"])
    assert records[2]["scores"]["user"] == 0.0  # no answer, no content
    assert "cannot detect contradictions" in result.stderr
    contra_row = next(line for line in result.stderr.splitlines() if line.strip().startswith("contra"))
    assert contra_row.split()[1] == "0" and contra_row.split()[-1] == "3"  # n = 0, unavailable = 3


def test_judge_failure_is_recorded_and_the_run_goes_on(tmp_path):
    def failing_contra(body):
        return script(body) if "Fact:" in body["messages"][1]["content"] else error(500, "down", retry_after=0)

    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    with ScriptedServer(failing_contra) as server:
        result = invoke(["score", "--metric", "coverage,reward", *llm_args(server), "--summary",
                         str(tmp_path / "s.json"), str(inp), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.stderr
    good, bad, none = read_jsonl(tmp_path / "out.jsonl")
    assert good["scores"]["contra"] is None and good["scores"]["reward"] is None
    assert good["scores"]["user"] == 1.0
    assert [(e["stage"], e["metric"]) for e in good["errors"]] == [("score", "contra"), ("score", "reward")]
    assert "HTTP 500: down" in good["errors"][0]["message"]
    assert none["scores"]["reward"] == pytest.approx(0.2) and "errors" not in none  # nothing to ask
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["metrics"]["reward"]["failures"] == 2 and summary["metrics"]["reward"]["n"] == 1
    assert summary["metrics"]["contra"]["failures"] == 2
    assert "id=good: contra: judge call failed: HTTP 500: down" in result.stderr


def test_unreadable_records_follow_on_error(tmp_path):
    rows = [RECORDS[0], {"id": "nokey", "completion": GOOD}, {"id": "notext", "key_info": KEY_INFO},
            {"id": "badkey", "completion": GOOD, "key_info": {"user": {}}}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    with ScriptedServer(script) as server:
        failed = invoke(["score", "--metric", "reward", *llm_args(server), "-q", str(inp),
                         "-o", str(tmp_path / "out.jsonl")])
        skipped = invoke(["score", "--metric", "reward", *llm_args(server), "-q", "--on-error", "skip", str(inp),
                          "-o", str(tmp_path / "out.jsonl")])
    assert failed.exit_code == 1
    assert failed.stderr.splitlines()[0] == (
        f"vidcli score: error: {inp}:2: id=nokey: input: missing field 'key_info' "
        "(add it with: vidcli decompose --schema reade)")
    assert skipped.exit_code == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["good"]
    rejects = {r["id"]: r["errors"][0]["message"] for r in read_jsonl(tmp_path / "out.jsonl.rejects.jsonl")}
    assert rejects == {"nokey": "missing field 'key_info' (add it with: vidcli decompose --schema reade)",
                       "notext": "missing field 'output.raw' or 'completion' (the interpreter's full text)",
                       "badkey": "field 'key_info': missing group(s): supplementary, imaginative"}


def test_format_only_needs_no_judge_and_keeps_other_scores(tmp_path):
    earlier = {**RECORDS[1], "scores": {"vqa": 0.5, "format": 0.9},
               "errors": [{"stage": "score", "metric": "format", "message": "old"}, {"stage": "llm", "message": "x"}]}
    inp = write_jsonl(tmp_path / "in.jsonl", [earlier])
    # A judge spec that cannot even be built: format must not try to build one.
    result = invoke(["score", "--metric", "format", "--judge", "bogus:judge", str(inp)])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["scores"] == {"vqa": 0.5, "format": 0.2}
    assert record["errors"] == [{"stage": "llm", "message": "x"}]  # the stale format failure is gone


def test_resume_summarises_the_whole_output(tmp_path):
    out = tmp_path / "out.jsonl"
    with ScriptedServer(script) as server:
        first = invoke(["score", "--metric", "reward", *llm_args(server), "-q",
                        str(write_jsonl(tmp_path / "a.jsonl", RECORDS[:2])), "-o", str(out)])
        server.reset()
        second = invoke(["score", "--metric", "reward", *llm_args(server), "-q", "--resume", "--summary",
                         str(tmp_path / "s.json"), str(write_jsonl(tmp_path / "a.jsonl", RECORDS)), "-o", str(out)])
        assert server.count == 0  # the third record has no answer: nothing to ask
    assert first.exit_code == 0 and second.exit_code == 0, second.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["records"] == 3
    assert summary["metrics"]["reward"]["mean"] == pytest.approx(5.0 / 3)


def test_number_mode_through_the_cli(tmp_path):
    def numbers(body):
        text = body["messages"][-1]["content"]
        return "No" if "contradict" in text else "0.5" if "cheerful mood" in text else "100%"

    inp = write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
    with ScriptedServer(numbers) as server:
        result = invoke(["score", "--metric", "coverage", *llm_args(server), "--judge-mode", "number", "-q", str(inp)])
        temperatures = sorted(r.body["temperature"] for r in server.requests)
    assert result.exit_code == 0, result.stderr
    scores = json.loads(result.stdout)["scores"]
    assert (scores["user"], scores["detail"], scores["supp"], scores["contra"]) == (1.0, 1.0, 0.5, 0.0)
    assert temperatures == [0.3] * 4


@pytest.mark.parametrize("args,message", [
    (["--metric", "format,bleu"], "unknown metric(s) bleu"),
    (["--metric", "coverage", "--judge", "openai:m", "--threshold", "0.4"], "--threshold applies to the embed"),
    (["--metric", "coverage", "--judge", "embed", "--judge-mode", "number"], "--judge-mode applies to LLM judges"),
    ([], "Missing option '--metric'"),
    (["--metric", "format,coverage"], "choose a judge with --judge"),
    (["--metric", "reward"], "embed: the offline MiniLM matcher"),
    (["--metric", "rve"], "--metric rve needs a VLM judge"),
])
def test_usage_errors_exit_2(args, message):
    result = invoke(["score", *args, "-"], input="")
    assert result.exit_code == 2 and message in result.stderr
