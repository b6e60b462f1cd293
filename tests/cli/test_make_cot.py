"""`vidcli make-cot` end to end against a scripted OpenAI-compatible server.

The script answers every request by reading its prompt, and builds each VLM answer
from the media the request carries (an image's mean colour, a clip's frame times), so
the tests can tell that the right pixels reached the right condition.
"""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.cli.helpers import invoke, kill_when, read_jsonl, run_cli, write_jsonl
from vidcli.camera import load_trajectory
from vidcli.camera_motion import describe_motion
from vidcli.interpreter.format import parse_output, render_caption
from vidcli.media import load_image, load_video
from vidcli.records import CAPTION_PARTS
from vidcli.testing.server import ScriptedServer, reply

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FRAMES = 4
GOLD = {p: f"The {p.replace('_', ' ')} of the video." for p in CAPTION_PARTS}
CAMERA_VIDEO_REPLY = "The camera pans slowly to the left, a red ball rolls past and the shot ends on a static frame."


def user_content(body: dict) -> list[dict]:
    content = body["messages"][-1]["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def user_text(body: dict) -> str:
    return " ".join(p["text"] for p in user_content(body) if p["type"] == "text")


def images_of(body: dict) -> list:
    from PIL import Image

    urls = [p["image_url"]["url"] for p in user_content(body) if p["type"] == "image_url"]
    return [Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).convert("RGB") for u in urls]


def quoted(text: str) -> str:
    return text.split('"""')[1]


def mean_colour(image) -> str:
    return " ".join(str(round(v)) for v in np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0))


def split_gold(text: str) -> dict:
    return {p: f"({p}) {text}" for p in CAPTION_PARTS}


def answer(body: dict, bad: dict | None = None) -> str:
    """The teacher: one reply per prompt kind, derived from what the request carries."""
    text = user_text(body)
    images = images_of(body)
    if images:
        assert body["model"] == "v", "media must go to the --vlm model"
        if "This image is a reference" in text:
            return json.dumps({"description": f"a figure whose mean colour is {mean_colour(images[0])}"})
        stamps = re.search(r"t = ([^\]]*) s\]", text).group(1)
        if "Describe only how the camera moves" in text:
            return json.dumps({"camera": CAMERA_VIDEO_REPLY})
        kind = next(k for k, marker in (("depth", "from a depth video"), ("pose", "from a human-pose video"),
                                        ("source", "source video the user supplied")) if marker in text)
        return json.dumps({"description": f"{kind} clip, {len(images)} frames at t = {stamps}"})
    assert body["model"] == "m", "text steps must go to the --llm model"
    if "Rewrite it as six parts" in text:
        return "Sure:\n```json\n" + json.dumps(split_gold(quoted(text))) + "\n```"
    if "Infer the video they most likely want from the inputs alone" in text:
        described = text.split("described here:\n", 1)[1].split("\n\nInfer", 1)[0]
        return json.dumps({"intent": f"INFERRED from {described.splitlines()[0]}"})
    instruction = quoted(text)
    for key, marker in (("intent", "Work out the intent"), ("alignment", "Reconcile the two"),
                        ("supplement", "add only what is missing")):
        if marker in text:
            value = (bad or {}).get((key, instruction)) or f"{key.upper()} for '{instruction}'"
            return json.dumps({key: value})
    raise AssertionError(f"unexpected prompt: {text[:200]}")


@pytest.fixture
def examples(tmp_path):
    shutil.copytree(EXAMPLES / "media", tmp_path / "media")
    return tmp_path


def cot_records() -> list[dict]:
    def rec(rid, instruction, conditions, gold=GOLD):
        return {"id": rid, "instruction": instruction, "conditions": conditions, "gold": gold, "extra": [rid]}

    return [
        rec("identity", "make her wave at the camera in a park",
            [{"type": "identity", "path": "media/identity_a.png", "caption": "a woman in a yellow raincoat"}]),
        rec("depth", "a corridor where a figure walks toward us", [{"type": "depth", "path": "media/depth.mp4"}],
            gold="A figure walks down a long corridor toward the camera."),
        rec("pose", "a dancer spins on a stage", [{"type": "pose", "path": "media/pose.mp4"}]),
        rec("camera", "a quiet street at dusk", [{"type": "camera", "path": "media/camera_dolly_pan.txt"}]),
        rec("video", "make the ball blue", [{"type": "video", "path": "media/ball.mp4"}]),
        rec("audio", "a kettle on a stove", [{"type": "audio", "path": "media/tone.wav",
                                              "caption": "a steady high whistle"}]),
        rec("text", "a snowy mountain village", [], gold="Snow falls on a small mountain village at night."),
        rec("mixed", "two friends walk past the camera",
            [{"type": "identity", "path": "media/identity_a.png"}, {"type": "identity", "path": "media/identity_b.png"},
             {"type": "camera", "path": "media/camera_dolly_pan.txt", "video": "media/ball.mp4"}]),
    ]


def run_make_cot(server, args, *, env=None):
    return invoke(["make-cot", "--llm", "openai:m", "--vlm", "openai:v", "--base-url", server.base_url,
                   "--frames", str(FRAMES), "-q", *args], env=env)


def test_end_to_end_every_condition_type(examples):
    inp = write_jsonl(examples / "requests.jsonl", cot_records())
    out = examples / "cot.jsonl"
    args = ["--camera-from-video", "--dedup-embedder", "none", str(inp), "-o", str(out)]
    with ScriptedServer(answer) as server:
        result = run_make_cot(server, args)
        assert result.exit_code == 0, result.stderr
        requests = [r.body for r in server.requests]
        first = out.read_text()
        # A fresh rerun (no --resume) is answered from the reply cache: no request, same output.
        assert run_make_cot(server, args).exit_code == 0
        assert server.count == len(requests) and out.read_text() == first
    records = {r["id"]: r for r in read_jsonl(out)}
    assert list(records) == [r["id"] for r in cot_records()]
    assert (examples / "cot.jsonl.generated.jsonl").exists()
    trajectory = describe_motion(load_trajectory(examples / "media" / "camera_dolly_pan.txt"))

    def clip_times(name):
        clip = load_video(examples / "media" / name, num_frames=FRAMES)
        return ", ".join(f"{t:.2f}" for t in clip.timestamps)

    expected_nontext = {
        "identity": "- Identity: a figure whose mean colour is "
                    + mean_colour(load_image(examples / "media" / "identity_a.png")),
        "depth": f"- Depth video: depth clip, {FRAMES} frames at t = {clip_times('depth.mp4')}",
        "pose": f"- Pose video: pose clip, {FRAMES} frames at t = {clip_times('pose.mp4')}",
        "camera": f"- Camera trajectory: {trajectory}",  # from the file, no model
        "video": f"- Source video: source clip, {FRAMES} frames at t = {clip_times('ball.mp4')}",
        "audio": "- Audio: a steady high whistle",
        "text": "No non-text inputs were given; the request is text only.",
        "mixed": "\n".join([
            "- Identity 1: a figure whose mean colour is "
            + mean_colour(load_image(examples / "media" / "identity_a.png")),
            "- Identity 2: a figure whose mean colour is "
            + mean_colour(load_image(examples / "media" / "identity_b.png")),
            f"- Camera trajectory: {trajectory}; in the original video, "
            "the camera pans slowly to the left, the shot ends on a static frame",
        ]),
    }
    for source in cot_records():
        record = records[source["id"]]
        cot = record["cot"]
        instruction = source["instruction"]
        assert cot["steps"]["nontext"] == expected_nontext[source["id"]], source["id"]
        for key in ("intent", "alignment", "supplement"):
            assert cot["steps"][key] == f"{key.upper()} for '{instruction}'"
        parsed = parse_output(cot["target"])
        assert parsed.think_ok and parsed.answer_ok, (parsed.think_problem, parsed.answer_problem)
        for label, key in (("Step 1 - Textual intent", "intent"), ("Step 2 - Non-textual understanding", "nontext"),
                           ("Step 3 - Multimodal alignment", "alignment"),
                           ("Step 4 - Supplementary completion", "supplement")):
            assert f"{label}: {cot['steps'][key]}" in parsed.think
        assert parsed.caption.parts == record["gold"]
        assert parsed.answer == render_caption(record["gold"])
        assert record["extra"] == [source["id"]] and record["conditions"] == source["conditions"]  # kept
        assert len(cot["descriptions"]) == len(source["conditions"])
        # Beside it, the target for a dropped instruction: step 1 inferred from the conditions
        # alone (never the request's text), the other steps and the answer the same.
        if not source["conditions"]:
            assert "no_instruction" not in cot
            continue
        blind = cot["no_instruction"]
        no_text = "(none: the user gave no text, only the non-text inputs)"
        assert blind["steps"] == {"intent": f"INFERRED from {cot['steps']['nontext'].splitlines()[0]}",
                                  "alignment": f"ALIGNMENT for '{no_text}'",
                                  "supplement": f"SUPPLEMENT for '{no_text}'"}
        blind_target = parse_output(blind["target"])
        assert blind_target.think_ok and blind_target.answer == parsed.answer
        assert f"Step 2 - Non-textual understanding: {cot['steps']['nontext']}" in blind_target.think
        assert instruction not in blind["target"]
    assert records["camera"]["cot"]["descriptions"] == [trajectory]
    # Plain-text gold: split by the LLM, the original kept.
    assert records["depth"]["gold"] == split_gold("A figure walks down a long corridor toward the camera.")
    assert records["depth"]["gold_text"] == "A figure walks down a long corridor toward the camera."
    assert records["identity"]["gold"] == GOLD and "gold_text" not in records["identity"]

    vlm = [b for b in requests if b["model"] == "v"]
    # One image per identity, FRAMES frames per depth/pose/source clip and per camera-video caption.
    assert sorted(len(images_of(b)) for b in vlm) == [1, 1, 1, FRAMES, FRAMES, FRAMES, FRAMES]
    identity_prompt = next(user_text(b) for b in vlm if "a woman in a yellow raincoat" in user_text(b))
    assert "This image is a reference" in identity_prompt  # the condition's caption is a hint
    # Step 3 sees step 1 and step 2; step 4 sees step 3 and the rendered six-part gold.
    align = next(user_text(b) for b in requests
                 if "Reconcile the two" in user_text(b) and "quiet street" in user_text(b))
    assert "INTENT for 'a quiet street at dusk'" in align and trajectory in align
    supp = next(user_text(b) for b in requests if "add only what is missing" in user_text(b)
                and "quiet street" in user_text(b))
    assert "ALIGNMENT for 'a quiet street at dusk'" in supp and render_caption(GOLD) in supp
    intent = next(user_text(b) for b in requests
                  if "Work out the intent" in user_text(b) and "two friends" in user_text(b))
    assert "Besides the text they supplied: two identity reference images and a camera trajectory." in intent
    intent = next(user_text(b) for b in requests if "Work out the intent" in user_text(b) and "snowy" in user_text(b))
    assert "Besides the text they supplied: nothing else." in intent


def test_format_failures_are_rejected_with_reason(examples):
    broken_gold = {**GOLD, "style": "Natural colours.\nCamera: handheld"}
    records = [
        {"id": "tag", "instruction": "a cat on a sofa", "gold": GOLD},
        {"id": "readback", "instruction": "a dog on a beach", "gold": broken_gold},
        {"id": "fine", "instruction": "a bird on a wire", "gold": GOLD},
    ]
    inp = write_jsonl(examples / "in.jsonl", records)
    bad = {("intent", "a cat on a sofa"): "I will answer now.</think><answer>a cat</answer>"}
    with ScriptedServer(lambda body: answer(body, bad)) as server:
        result = run_make_cot(server, ["--on-error", "skip", "--dedup-embedder", "none", str(inp),
                                       "-o", str(examples / "out.jsonl")])
    assert result.exit_code == 0, result.stderr
    assert [r["id"] for r in read_jsonl(examples / "out.jsonl")] == ["fine"]
    rejects = {r["id"]: r["errors"] for r in read_jsonl(examples / "out.jsonl.rejects.jsonl")}
    assert rejects["tag"] == [{"stage": "format", "message": "the reasoning text contains the tag '</think>'"}]
    assert rejects["readback"][0]["stage"] == "format"
    # A label inside a part's text would split it on reading: the camera part is found twice.
    assert rejects["readback"][0]["message"] == "caption part given twice: camera"


def test_failed_steps_are_rejected_naming_stage_and_condition(examples):
    records = [
        {"id": "vlm", "instruction": "a figure in a corridor", "gold": GOLD,
         "conditions": [{"type": "camera", "path": "media/camera_dolly_pan.txt"},
                        {"type": "depth", "path": "media/depth.mp4"}]},
        {"id": "llm", "instruction": "a cat on a sofa", "gold": GOLD},
        {"id": "fine", "instruction": "a bird on a wire", "gold": GOLD},
    ]
    inp = write_jsonl(examples / "in.jsonl", records)

    def script(body):
        # Every message counts: a retry ends with the correction, not with the prompt.
        asked = " ".join(str(m["content"]) for m in body["messages"])
        if "from a depth video" in asked:
            return "I see a corridor."  # no JSON
        if "add only what is missing" in asked and "a cat on a sofa" in asked:
            return json.dumps({"supplement": "  "})
        return answer(body)

    with ScriptedServer(script) as server:
        result = run_make_cot(server, ["--on-error", "skip", "--attempts", "2", "--dedup-embedder", "none",
                                       str(inp), "-o", str(examples / "out.jsonl")])
        asked = [user_text(r.body) for r in server.requests]
    assert result.exit_code == 0, result.stderr
    assert [r["id"] for r in read_jsonl(examples / "out.jsonl")] == ["fine"]
    rejects = {r["id"]: r["errors"] for r in read_jsonl(examples / "out.jsonl.rejects.jsonl")}
    assert rejects["vlm"][0]["stage"] == "nontext"
    assert rejects["vlm"][0]["message"].startswith("conditions[1]: reply was not valid JSON after 2 attempts")
    assert rejects["llm"][0]["stage"] == "supplement"
    # A record whose step 2 failed is not taken through the later steps.
    assert not any("a figure in a corridor" in text for text in asked if "Work out the intent" in text)


def test_dedup_exclude_and_balance_after_generation(examples):
    identity = [{"type": "identity", "path": "media/identity_a.png"}]
    camera = [{"type": "camera", "path": "media/camera_dolly_pan.txt"}]
    rows = [("i1", "make her wave at the camera in a park", identity),
            ("i2", "make her wave at the camera in the park", identity),  # near-duplicate of i1
            ("i3", "let her read a book under a tree", identity),
            ("i4", "have her ride a bicycle along a canal", identity),
            ("c1", "a quiet street at dusk", camera),
            ("c2", "a quiet street at night", camera),  # similar words, different request: kept
            ("c3", "a sunny beach with waves", camera),  # in the evaluation set
            ("t1", "a snowy mountain village", []),
            ("t2", "a lighthouse in a storm", [])]
    inp = write_jsonl(examples / "in.jsonl", [{"id": i, "instruction": t, "conditions": c, "gold": GOLD}
                                             for i, t, c in rows])
    evaluation = write_jsonl(examples / "eval.jsonl", [{"id": "e1", "instruction": "A sunny beach, with waves!"}])
    out = examples / "out.jsonl"
    with ScriptedServer(answer) as server:
        result = invoke(["make-cot", "--llm", "openai:m", "--vlm", "openai:v", "--base-url", server.base_url,
                         "--exclude", str(evaluation), str(inp), "-o", str(out)])
        assert result.exit_code == 0, result.stderr
        assert "9 generated; removed 1 overlapping --exclude, 1 near-duplicate, 0 by --balance-by; 7 written" \
            in result.stderr
        assert [r["id"] for r in read_jsonl(out)] == ["i1", "i3", "i4", "c1", "c2", "t1", "t2"]
        requests = server.count
        # Re-filter with --resume: every id is generated already, so no model is asked again
        # (--no-cache: the reply cache must not be what spares the requests).
        result = invoke(["make-cot", "--llm", "openai:m", "--vlm", "openai:v", "--base-url", server.base_url,
                         "--no-cache",
                         "--exclude", str(evaluation), "--balance-by", "condition_type", "--seed", "5",
                         "--resume", str(inp), "-o", str(out)])
        assert result.exit_code == 0, result.stderr
        assert server.count == requests
    kept = read_jsonl(out)
    groups = [r["conditions"][0]["type"] if r["conditions"] else "text" for r in kept]
    assert sorted(groups) == ["camera", "camera", "identity", "identity", "text", "text"]
    assert {"t1", "t2"} <= {r["id"] for r in kept}  # the smallest group stays whole
    assert "removed 1 overlapping --exclude, 1 near-duplicate, 1 by --balance-by; 6 written" in result.stderr


def test_sigkill_during_generation_then_resume(tmp_path):
    # Batches of 16 records: the kill lands after the first batch is written.
    ids = [f"r{i:02d}" for i in range(24)]
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "instruction": f"scene number {i}", "gold": GOLD}
                                              for i in ids])
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.generated.jsonl.partial"
    with ScriptedServer(lambda body: reply(answer(body), delay_ms=5)) as server:
        # --no-cache: only --resume may spare the finished records a second request.
        args = ["make-cot", "--llm", "openai:m", "--base-url", server.base_url, "--concurrency", "1",
                "--no-cache", "--dedup-embedder", "none", "-q", str(inp), "-o", str(out)]
        kill_when(args, lambda: partial.exists() and partial.read_bytes().count(b"\n") >= 16, timeout=60)
        assert not out.exists()  # no filtered output from an unfinished generation
        done = {r["id"] for r in read_jsonl(partial) if r}
        assert 16 <= len(done) < 24
        with open(partial, "ab") as handle:  # a torn last line, as a kill mid-write leaves
            handle.write(b'{"id":"r99","cot":{"ste')
        before = server.count
        resumed = run_cli([*args, "--resume"])
        assert resumed.returncode == 0, resumed.stderr
        asked = {quoted(user_text(r.body)).split()[-1] for r in server.requests[before:]}
    assert asked and not asked & done  # finished records are not asked again
    assert asked | done == set(ids)
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == ids and all(parse_output(r["cot"]["target"]).answer_ok for r in records)


def test_audio_without_caption_names_condition_and_model(examples):
    inp = write_jsonl(examples / "in.jsonl", [{"id": "a", "instruction": "a kettle", "gold": GOLD,
                                               "conditions": [{"type": "audio", "path": "media/tone.wav"}]}])
    with ScriptedServer(answer) as server:
        proc = run_cli(["make-cot", "--llm", "openai:m", "--vlm", "openai:v", "--base-url", server.base_url,
                        "-q", str(inp), "-o", str(examples / "out.jsonl")])
        assert server.count == 0  # refused before any model call
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.splitlines()[0]
    assert line.startswith(f"vidcli make-cot: error: {inp}:1: id=a: nontext: conditions[0] (audio media/tone.wav): ")
    assert "audio-capable model" in line and "--vlm openai:v" in line and "'caption'" in line


@pytest.mark.parametrize("condition,stage,expected", [
    ({"type": "identity", "path": "media/missing.png"}, "media", "missing.png: file not found"),
    ({"type": "depth", "path": "../outside.mp4"}, "media", "leaves"),
    ({"type": "camera", "path": "media/identity_a.png"}, "media", "identity_a.png"),
    ({"type": "pose"}, "nontext", "conditions[0] (pose) has neither 'path' nor 'caption'"),
    ({"type": "smell", "path": "x"}, "input", "conditions[0] must be an object whose 'type' is one of"),
])
def test_bad_conditions_are_located_errors(examples, condition, stage, expected):
    inp = write_jsonl(examples / "in.jsonl", [{"id": "x", "instruction": "a scene", "gold": GOLD,
                                               "conditions": [condition]}])
    with ScriptedServer(answer) as server:
        proc = run_cli(["make-cot", "--llm", "openai:m", "--vlm", "openai:v", "--base-url", server.base_url,
                        "-q", str(inp), "-o", str(examples / "out.jsonl")])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.splitlines()[0]
    assert line.startswith(f"vidcli make-cot: error: {inp}:1: id=x: {stage}: ") and expected in line


def test_media_conditions_need_a_vlm_and_gold_is_checked(examples):
    inp = write_jsonl(examples / "in.jsonl", [
        {"id": "img", "instruction": "her", "gold": GOLD,
         "conditions": [{"type": "identity", "path": "media/identity_a.png"}]},
        {"id": "gold", "instruction": "a scene", "gold": {**GOLD, "camera": ""}},
        {"id": "ok", "instruction": "a scene", "gold": GOLD,
         "conditions": [{"type": "camera", "path": "media/camera_orbit.json"}]},
    ])
    with ScriptedServer(answer) as server:
        result = invoke(["make-cot", "--llm", "openai:m", "--base-url", server.base_url, "-q", "--on-error", "skip",
                         "--dedup-embedder", "none", str(inp), "-o", str(examples / "out.jsonl")])
    assert result.exit_code == 0, result.stderr
    rejects = {r["id"]: r["errors"][0] for r in read_jsonl(examples / "out.jsonl.rejects.jsonl")}
    assert rejects["img"]["stage"] == "nontext" and "give --vlm" in rejects["img"]["message"]
    assert rejects["gold"] == {"stage": "input", "message": "field 'gold': missing or empty part(s): camera"}
    orbit = describe_motion(load_trajectory(examples / "media" / "camera_orbit.json"))
    assert read_jsonl(examples / "out.jsonl")[0]["cot"]["steps"]["nontext"] == f"- Camera trajectory: {orbit}"


def test_usage_errors_exit_2(tmp_path):
    assert run_cli(["make-cot"]).returncode == 2  # --llm missing
    assert run_cli(["make-cot", "--llm", "openai:m", "--exclude", str(tmp_path / "nope.jsonl")]).returncode == 2
    assert run_cli(["make-cot", "--llm", "openai:m", "--dedup-threshold", "1.5"]).returncode == 2
    (tmp_path / "x.jsonl").write_text("", encoding="utf-8")  # the input exists: only the flags are wrong
    no_balance = invoke(["make-cot", "--merge", "--text-only", "drop", str(tmp_path / "x.jsonl")])
    assert no_balance.exit_code == 2 and "--balance-groups and --text-only go with --balance-by" in no_balance.stderr
    other_field = invoke(["make-cot", "--merge", "--balance-by", "meta.source", "--text-only", "drop",
                          str(tmp_path / "x.jsonl")])
    assert other_field.exit_code == 2 and "--text-only applies to --balance-by condition_type" in other_field.stderr


def test_merge_balances_the_types_asked_for_and_drops_text_only(tmp_path):
    kinds = ["identity"] * 3 + ["depth"] * 2 + ["camera"] * 3 + ["text"]
    records = [{"id": f"r{i}", "instruction": f"request {i}", "gold": GOLD,
                "conditions": [] if kind == "text" else [{"type": kind, "path": "x"}]} for i, kind in enumerate(kinds)]
    records.append({"id": "mix", "instruction": "mixed", "gold": GOLD,
                    "conditions": [{"type": "identity", "path": "a"}, {"type": "camera", "path": "c"}]})
    inp = write_jsonl(tmp_path / "part.jsonl", records)
    result = invoke(["make-cot", "--merge", "--dedup-embedder", "none", "--balance-by", "condition_type",
                     "--balance-groups", "identity,camera", "--text-only", "drop", str(inp),
                     "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.stderr
    kept = read_jsonl(tmp_path / "out.jsonl")
    groups = sorted("+".join(sorted({c["type"] for c in r["conditions"]})) or "text" for r in kept)
    assert groups == ["camera"] * 3 + ["camera+identity"] + ["depth"] * 2 + ["identity"] * 3
    assert "removed 0 overlapping --exclude, 0 near-duplicate, 1 by --balance-by; 9 written" in result.stderr


def test_stdout_output_keeps_the_generated_file_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "t", "instruction": "a lighthouse in a storm",
                                               "gold": "Waves hit a lighthouse under a stormy sky."}])
    with ScriptedServer(answer) as server:
        result = invoke(["make-cot", "--llm", "openai:m", "--base-url", server.base_url, "-q",
                         "--dedup-embedder", "none", str(inp)])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["gold"] == split_gold("Waves hit a lighthouse under a stormy sky.")
    assert read_jsonl(tmp_path / "vidcli-make-cot.generated.jsonl") == [record]


@pytest.mark.server
def test_make_cot_against_transformers_serve(tmp_path, transformers_server):
    """The real OpenAI-compatible server of transformers, serving the tiny random LLM.

    Its replies are not the JSON the steps ask for, so every record must end in the rejects
    file with the step that failed and the bounded-retry reason — transport and failure
    contract end to end, content not checked.
    """
    base_url, model_path = transformers_server
    structured = {p: f"{p} text." for p in CAPTION_PARTS}
    inp = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "plain", "instruction": "a dog on a beach", "gold": "A brown dog runs along a sunny beach."},
        {"id": "parts", "instruction": "a cat", "gold": structured},
    ])
    out = tmp_path / "cot.jsonl"
    result = invoke(["make-cot", "--llm", f"openai:{model_path}", "--base-url", base_url, "--max-tokens", "16",
                     "--attempts", "2", "--dedup-embedder", "none", "--on-error", "skip", "-q", str(inp),
                     "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert read_jsonl(out) == []
    rejects = {r["id"]: r["errors"][0] for r in read_jsonl(str(out) + ".rejects.jsonl")}
    assert set(rejects) == {"plain", "parts"}
    # A plain-text gold fails at structuring; a structured one goes on to the intent step.
    assert all("not valid JSON after 2 attempts" in e["message"] for e in rejects.values())
    assert rejects["plain"]["stage"] != rejects["parts"]["stage"]
