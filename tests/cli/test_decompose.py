"""`vidcli decompose` end to end against a scripted OpenAI-compatible server."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli.helpers import invoke, read_jsonl, run_cli, write_jsonl
from vidcli.testing.server import ScriptedServer, error, garbage

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BALL_ELEMENTS = {
    "environment": ["green grass under a blue sky"],
    "objects": ["a red ball"],
    "motion": ["the red ball rolls from left to right"],
    "spatial": [],
    "color": ["the ball is red", "the sky is blue"],
    "lighting": ["daylight"],
    "text": [],
    "camera": ["static wide shot"],
}
KEY_INFO = {
    "user": {"objects": [{"name": "woman", "attributes": []}], "actions": ["the woman waves"], "camera": [],
             "style": []},
    "supplementary": {"objects": [{"name": "woman", "attributes": ["short black hair", "round glasses"]}],
                      "actions": [], "camera": [], "style": []},
    "imaginative": {"objects": [{"name": "oak trees", "attributes": []}], "actions": [], "camera": [],
                    "style": ["cheerful mood"]},
}


def last_user_text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if p.get("type") == "text")


def has_images(body: dict) -> int:
    content = body["messages"][-1]["content"]
    return 0 if isinstance(content, str) else sum(p.get("type") == "image_url" for p in content)


def verdict_for(body: dict, phy_answer: str = "No") -> str:
    text = last_user_text(body)
    if "physical errors" in text:
        aspects = {a: "No" for a in ("liquid_flow", "deformation", "material", "motion", "interpenetration")}
        return json.dumps({"aspects": aspects, "answer": phy_answer, "explanation": "The ball rolls smoothly " * 30})
    if "visual-quality defect" in text:
        return json.dumps({"answer": "No", "issue": "none", "explanation": "Sharp and stable."})
    return json.dumps({"answer": "Yes", "explanation": "It matches."})


def make_server(phy_answer_for=lambda body: "No"):
    def script(body):
        if has_images(body):
            phy = phy_answer_for(body) if "physical errors" in last_user_text(body) else "No"
            return verdict_for(body, phy)
        text = last_user_text(body)
        if "List the facts in three sets" in text:
            return "Here you go:\n```json\n" + json.dumps(KEY_INFO) + "\n```"
        return "Sure! " + json.dumps(BALL_ELEMENTS) + " Hope this helps."
    return ScriptedServer(script)


@pytest.fixture
def examples(tmp_path):
    shutil.copytree(EXAMPLES / "media", tmp_path / "media")
    for name in ("captions.jsonl", "requests.jsonl"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    return tmp_path


def test_drf_schema_adds_elements_and_questions(examples):
    with make_server() as server:
        result = invoke(["decompose", "--llm", "openai:m", "--base-url", server.base_url, "-q",
                         str(examples / "captions.jsonl")])
    assert result.exit_code == 0, result.stderr
    records = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r["id"] for r in records] == ["ball", "squares", "cut"]
    ball = records[0]
    # written to stdout (the working directory), so the relative path became absolute
    assert ball["video"] == str(examples / "media" / "ball.mp4")
    assert ball["elements"] == BALL_ELEMENTS
    ta = [q for q in ball["questions"] if q["dim"] == "TA"]
    # one TA question per non-empty key, in key order
    assert [q["key"] for q in ta] == ["environment", "objects", "motion", "color", "lighting", "camera"]
    assert ta[3]["reference"] == {"answer": "Yes",
                                  "explanation": "The colours match: the ball is red; the sky is blue.",
                                  "source": "elements"}
    assert "the ball is red; the sky is blue" in ta[3]["question"]
    dims = [q["dim"] for q in ball["questions"]]
    assert dims.count("Phy") == 1 and dims.count("VQ") == 1
    # No --vlm: Phy/VQ carry no reference rather than an invented one.
    assert all(q["reference"] is None for q in ball["questions"] if q["dim"] != "TA")


def test_vlm_references_and_keep_consistent(examples):
    # With --concurrency 1 the Phy questions reach the server in record order; the third
    # (the "cut" clip) gets "Yes, a defect", so --keep-consistent must drop that record.
    phy_calls = []

    def phy(body):
        phy_calls.append(1)
        return "Yes" if len(phy_calls) == 3 else "No"

    with make_server(phy) as server:
        result = invoke(["decompose", "--llm", "openai:m", "--vlm", "openai:v", "--base-url", server.base_url,
                         "--keep-consistent", "--frames", "4", "--concurrency", "1", "-q",
                         str(examples / "captions.jsonl")])
        requests = server.requests
    assert result.exit_code == 0, result.stderr
    records = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r["id"] for r in records] == ["ball", "squares"]
    phy_q = next(q for q in records[0]["questions"] if q["dim"] == "Phy")
    assert phy_q["reference"]["answer"] == "No"
    assert len(phy_q["reference"]["explanation"].split()) == 50  # capped at 50 words
    assert phy_q["reference"]["aspects"]["motion"] == "No"
    assert all(q["check"]["answer"] == "Yes" for q in records[0]["questions"] if q["dim"] == "TA")
    assert records[0]["consistent"] is True
    vlm_requests = [r for r in requests if has_images(r.body)]
    assert vlm_requests and all(has_images(r.body) == 4 for r in vlm_requests)  # --frames 4


def test_undesired_references_are_marked_and_warned_once(examples):
    """Without --keep-consistent a real video with a defect stays, its question marked, with one warning."""
    phy_calls = []

    def phy(body):
        phy_calls.append(last_user_text(body))
        return "Yes" if len(phy_calls) in (2, 3) else "No"

    with make_server(phy) as server:
        result = invoke(["decompose", "--llm", "openai:m", "--vlm", "openai:v", "--base-url", server.base_url,
                         "--frames", "4", "--concurrency", "1", str(examples / "captions.jsonl")])
    assert result.exit_code == 0, result.stderr
    records = {r["id"]: r for r in map(json.loads, result.stdout.splitlines())}
    for rid, undesired in (("ball", False), ("squares", True), ("cut", True)):
        phy_q = next(q for q in records[rid]["questions"] if q["dim"] == "Phy")
        assert phy_q.get("undesired", False) is undesired, rid
        assert all("undesired" not in q for q in records[rid]["questions"] if q["dim"] != "Phy")
        # The Phy questions name the caption, the stored one and the one asked about the real video.
        assert records[rid]["caption"] in phy_q["question"]
    captions = [r["caption"] for r in records.values()]
    assert [sum(c in text for c in captions) for text in phy_calls] == [1, 1, 1]
    warnings = [line for line in result.stderr.splitlines() if "undesired reference answer" in line]
    assert len(warnings) == 1 and "2 record(s) (e.g. squares)" in warnings[0]


IDENTITY_SEEN = "a woman with short black hair and round glasses, seen from the front"


def reade_server() -> ScriptedServer:
    """Key-info for the LLM; for the VLM (a request with pictures) a description of what it shows."""
    def script(body):
        if has_images(body):
            assert body["model"] == "v" and "This image is a reference" in last_user_text(body)
            return json.dumps({"description": IDENTITY_SEEN})
        assert body["model"] == "m" and "List the facts in three sets" in last_user_text(body)
        return json.dumps(KEY_INFO)
    return ScriptedServer(script)


def llm_prompts(server) -> list[str]:
    return [last_user_text(r.body) for r in server.requests if r.body["model"] == "m"]


def test_reade_schema_grounds_s_in_the_conditions(examples):
    from vidcli.camera import load_trajectory
    from vidcli.camera_motion import describe_motion

    with reade_server() as server:
        result = invoke(["decompose", "--schema", "reade", "--llm", "openai:m", "--vlm", "openai:v", "--frames", "4",
                         "--concurrency", "1", "--base-url", server.base_url, "-q", str(examples / "requests.jsonl")])
        identity, camera = llm_prompts(server)
        vlm = [last_user_text(r.body) for r in server.requests if r.body["model"] == "v"]
    assert result.exit_code == 0, result.stderr
    records = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r["key_info"] for r in records] == [KEY_INFO, KEY_INFO]
    assert records[0]["gold"]["dense"].startswith("A woman")  # input untouched
    # The LLM sees what the conditions show: the VLM's description of the identity image
    # (asked as make-cot's step 2 asks, the user's caption as a hint) and the trajectory's words.
    assert f"- Identity: {IDENTITY_SEEN}" in identity and "make her wave" in identity
    assert len(vlm) == 1 and 'The user described it as: "a woman with short black hair' in vlm[0]
    motion = describe_motion(load_trajectory(examples / "media" / "camera_dolly_pan.txt"))
    assert f"- Camera trajectory: {motion}" in camera and "(no description given)" not in camera
    assert "a quiet street at dusk" in camera


def test_reade_schema_takes_make_cots_descriptions(examples):
    record = {"id": "c", "instruction": "make her wave", "gold": "A woman waves.",
              "conditions": [{"type": "identity", "path": "media/identity_a.png"},
                             {"type": "camera", "path": "media/camera_dolly_pan.txt"}],
              "cot": {"descriptions": ["a woman in a yellow raincoat", "strong dolly in, moderate pan left"]}}
    inp = write_jsonl(examples / "cot.jsonl", [record])
    with reade_server() as server:  # no --vlm: the step-2 text is there already
        result = invoke(["decompose", "--schema", "reade", "--llm", "openai:m", "--base-url", server.base_url,
                         "-q", str(inp)])
        (prompt,) = llm_prompts(server)
        assert server.count == 1
    assert result.exit_code == 0, result.stderr
    assert ("- Identity: a woman in a yellow raincoat\n- Camera trajectory: strong dolly in, moderate pan left"
            in prompt)


def test_reade_condition_without_a_description_is_a_located_error(examples):
    inp = examples / "requests.jsonl"
    with reade_server() as server:
        failed = invoke(["decompose", "--schema", "reade", "--llm", "openai:m", "--base-url", server.base_url,
                         "-q", str(inp), "-o", str(examples / "out.jsonl")])
        skipped = invoke(["decompose", "--schema", "reade", "--llm", "openai:m", "--base-url", server.base_url,
                          "-q", "--on-error", "skip", str(inp), "-o", str(examples / "skipped.jsonl")])
    assert failed.exit_code == 1
    first = failed.stderr.splitlines()[0]
    assert first == (f"vidcli decompose: error: {inp}:1: id=req-identity: nontext: conditions[0] (identity "
                     "media/identity_a.png) needs a vision-language model to describe it: give --vlm")
    assert skipped.exit_code == 0, skipped.stderr
    assert [r["id"] for r in read_jsonl(examples / "skipped.jsonl")] == ["req-camera"]  # its camera needs no model
    (reject,) = read_jsonl(examples / "skipped.jsonl.rejects.jsonl")
    assert reject["id"] == "req-identity" and reject["errors"][0]["stage"] == "nontext"


def test_invalid_json_is_retried_with_a_correction_then_rejected(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "caption": "a red ball"}])
    with ScriptedServer(default="I cannot do JSON today.") as server:
        result = invoke(["decompose", "--llm", "openai:m", "--base-url", server.base_url, "-q",
                         "--on-error", "skip", str(inp), "-o", str(tmp_path / "out.jsonl")])
        bodies = [r.body for r in server.requests]
    assert result.exit_code == 0
    assert read_jsonl(tmp_path / "out.jsonl") == []
    rejected = read_jsonl(tmp_path / "out.jsonl.rejects.jsonl")
    assert rejected[0]["id"] == "a"
    assert rejected[0]["errors"][0]["stage"] == "llm"
    assert "after 3 attempts" in rejected[0]["errors"][0]["message"]
    assert len(bodies) == 3  # bounded
    # Retries carry the bad reply and a correction, so they are different requests.
    assert len(bodies[1]["messages"]) == len(bodies[0]["messages"]) + 2
    assert bodies[1]["messages"][-2]["content"] == "I cannot do JSON today."


def test_incomplete_elements_are_an_error_not_empty_lists(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "caption": "a red ball"}])
    partial = {k: v for k, v in BALL_ELEMENTS.items() if k != "camera"}
    with ScriptedServer([json.dumps(partial), json.dumps(BALL_ELEMENTS)]) as server:
        result = invoke(["decompose", "--llm", "openai:m", "--base-url", server.base_url, "-q", str(inp)])
        correction = server.requests[1].body["messages"][-1]["content"]
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["elements"]["camera"] == ["static wide shot"]
    assert "camera" in correction


def test_transient_server_faults_lose_no_record(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "caption": f"caption {i}"} for i in range(4)])
    script = [error(429, retry_after=0), error(500), garbage(), json.dumps(BALL_ELEMENTS)]
    with ScriptedServer(script, default=json.dumps(BALL_ELEMENTS)) as server:
        result = invoke(["decompose", "--llm", "openai:m", "--base-url", server.base_url, "-q",
                         "--concurrency", "1", str(inp), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.stderr
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "out.jsonl")) == ["r0", "r1", "r2", "r3"]


BAD_INPUTS = [
    ('{"id": "a", "caption": "ok"}\n{not json\n', ":2: input: not valid JSON (Expecting property name"),
    ('{"id": "a"}\n', ":1: id=a: input: missing field 'caption' or 'prompt'"),
    ('{"id": "a", "caption": 5}\n', ":1: id=a: input: field 'caption' must be a string, got int"),
    ('{"id": 3, "caption": "x"}\n', ":1: id=3: input: field 'id' must be a non-empty string, got 3"),
    ('[1]\n', ":1: input: expected a JSON object, got list"),
]


@pytest.mark.parametrize("content,expected", BAD_INPUTS)
def test_bad_input_is_one_line_exit_1_and_no_traceback(tmp_path, content, expected):
    inp = tmp_path / "in.jsonl"
    inp.write_text(content)
    with ScriptedServer(default=json.dumps(BALL_ELEMENTS)) as server:
        proc = run_cli(["decompose", "--llm", "openai:m", "--base-url", server.base_url, "-q", str(inp),
                        "-o", str(tmp_path / "out.jsonl")])
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"vidcli decompose: error: {inp}{expected}")
    assert "stopped after" in proc.stderr.splitlines()[1]


@pytest.mark.parametrize("video,expected", [
    ("media/missing.mp4", "missing.mp4"),
    ("media/corrupt.mp4", "corrupt.mp4"),
    ("../outside.mp4", ".."),
])
def test_bad_media_is_a_located_error(examples, video, expected):
    (examples / "media" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    inp = write_jsonl(examples / "bad.jsonl", [{"id": "v", "caption": "a red ball", "video": video}])
    with make_server() as server:
        proc = run_cli(["decompose", "--llm", "openai:m", "--vlm", "openai:v", "--base-url", server.base_url,
                        "-q", str(inp)])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.splitlines()[0]
    assert "bad.jsonl:1: id=v: media: " in line and expected in line


def test_usage_errors_exit_2(tmp_path):
    assert run_cli(["decompose"]).returncode == 2  # --llm missing
    assert run_cli(["decompose", "--llm", "x", "--schema", "nope"]).returncode == 2
    captions = write_jsonl(tmp_path / "in.jsonl", [{"caption": "a ball"}])
    proc = run_cli(["decompose", "--llm", "bogus:m", str(captions)])
    assert proc.returncode == 1 and "bad backend spec 'bogus:m'" in proc.stderr and "Traceback" not in proc.stderr
    # A typo in the input path is caught before any backend is built.
    proc = run_cli(["decompose", "--llm", "bogus:m", str(tmp_path / "none.jsonl")])
    assert proc.returncode == 1 and "none.jsonl: input file not found" in proc.stderr


def test_stdin_to_stdout_pipeline(tmp_path):
    with make_server() as server:
        proc = run_cli(["decompose", "--llm", "openai:m", "--base-url", server.base_url, "-q", "-"],
                       input='{"caption": "a red ball"}\n')
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert len(record["id"]) == 16 and record["elements"] == BALL_ELEMENTS
    assert proc.stderr == ""  # -q: nothing on stderr; data only on stdout
