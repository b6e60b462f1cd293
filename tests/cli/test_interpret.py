"""`vidcli interpret` end to end: tiny local models, and a scripted OpenAI-compatible server."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli.helpers import invoke, read_jsonl, run_cli, write_jsonl
from vidcli.camera import load_trajectory
from vidcli.camera_motion import describe_motion
from vidcli.interpreter.camera_encoder import CameraEncoderConfig
from vidcli.interpreter.format import build_target, generator_prompt
from vidcli.interpreter.messages import output_record, request_from_record
from vidcli.interpreter.model import Interpreter
from vidcli.testing import ensure_tiny_models
from vidcli.testing.server import ScriptedServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MEDIA = Path(__file__).resolve().parents[2] / "examples" / "media"
FAST = ["--max-new-tokens", "6", "--frames", "4"]
PARTS = {"dense": "A woman waves in a sunny park.", "main_object": "A woman in a yellow raincoat.",
         "background": "A park with oak trees.", "movement": "She waves twice.", "style": "Cheerful, natural.",
         "camera": "Medium shot, slow dolly in."}
ANSWER = build_target("She asks for a wave; the image shows who.", PARTS)


@pytest.fixture(scope="module")
def tiny():
    return ensure_tiny_models(["vlm", "omni"])


@pytest.fixture(scope="module")
def camera_ckpt(tiny, tmp_path_factory):
    """A vidcli checkpoint: the tiny VLM plus a small camera encoder in camera_encoder/."""
    import torch

    torch.manual_seed(0)
    small = CameraEncoderConfig(hidden_size=32, depth=1, num_heads=2, image_size=(32, 48), out_hidden_size=64)
    folder = tmp_path_factory.mktemp("ckpt") / "camera-interpreter"
    Interpreter.from_pretrained(str(tiny["vlm"]), device="cpu", with_camera=True,
                                camera_config=small).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def library(camera_ckpt):
    """The same checkpoint through the library, to check what the command prints."""
    return Interpreter.from_pretrained(str(camera_ckpt), device="cpu")


def expected_output(interpreter, conditions: list[dict], text: str = "make it move", style: str = "dense") -> dict:
    record = {"instruction": text, "conditions": conditions}
    request = request_from_record(record, MEDIA, video_frames=4)
    return output_record(interpreter.generate([request], max_new_tokens=6)[0], style)


def stderr_lines(result) -> list[str]:
    """stderr without transformers' weight-loading bar (on here: it was imported before the command ran)."""
    return [line for line in result.stderr.strip().splitlines() if not line.startswith("Loading weights")]


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("flag, kind, file", [
    ("--identity", "identity", "identity_a.png"), ("--image", "image", "identity_b.png"),
    ("--video", "video", "ball.mp4"), ("--depth", "depth", "depth.mp4"), ("--pose", "pose", "pose.mp4"),
    ("--camera", "camera", "camera_dolly_pan.txt"),
])
def test_each_condition_type_through_interpret(camera_ckpt, library, flag, kind, file):
    result = invoke(["interpret", "--model", str(camera_ckpt), "--text", "make it move", flag, str(MEDIA / file),
                     "--json", *FAST])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out == expected_output(library, [{"type": kind, "path": file}])
    # A random tiny model never writes the format: kept, flagged, its raw text as the prompt.
    assert out["format_ok"] is False and out["prompt"] == out["raw"].strip()
    assert "does not follow the answer format" in result.stderr


def test_flags_mode_prints_only_the_prompt(camera_ckpt, library):
    args = ["interpret", "--model", str(camera_ckpt), "--text", "make them wave", "--identity",
            str(MEDIA / "identity_a.png"), "--identity", str(MEDIA / "identity_b.png"), "--camera",
            str(MEDIA / "camera_orbit.json"), *FAST]
    result = invoke(args)
    assert result.exit_code == 0, result.stderr
    expected = expected_output(library, [{"type": "identity", "path": "identity_a.png"},
                                         {"type": "identity", "path": "identity_b.png"},
                                         {"type": "camera", "path": "camera_orbit.json"}], "make them wave")
    assert result.stdout == expected["prompt"] + "\n"
    assert stderr_lines(result) == [
        f"vidcli interpret: warning: the output does not follow the answer format ({expected['format_problem']}); "
        "printing the raw answer text"]


def test_audio_needs_a_model_that_hears(tiny, camera_ckpt):
    wav = str(MEDIA / "tone.wav")
    line = one_line_error(invoke(["interpret", "--model", str(camera_ckpt), "--text", "a song", "--audio", wav, *FAST]))
    assert line == (f"vidcli interpret: error: the audio condition ({wav}) needs a model that takes audio input; "
                    f"{camera_ckpt} (qwen2_5_vl) takes text, images and video only "
                    "(use a Qwen2.5-Omni model for audio)")
    result = invoke(["interpret", "--model", str(tiny["omni"]), "--text", "a song", "--audio", wav, "--json", *FAST])
    assert result.exit_code == 0, result.stderr
    omni = Interpreter.from_pretrained(str(tiny["omni"]), device="cpu")
    assert json.loads(result.stdout) == expected_output(omni, [{"type": "audio", "path": "tone.wav"}], "a song")


REQUESTS = [
    {"id": "r1", "instruction": "make her wave", "conditions": [{"type": "identity", "path": "identity_a.png"}],
     "gold": "kept as it is"},
    {"id": "r2", "instruction": "add a kite", "conditions": [{"type": "video", "path": "ball.mp4"},
                                                             {"type": "camera", "path": "camera_dolly_pan.txt"}]},
    {"id": "r3", "conditions": [{"type": "pose", "path": "pose.mp4"}, {"type": "depth", "path": "depth.mp4"}]},
    {"id": "r4", "instruction": "a quiet street at dusk"},
    {"id": "r5", "instruction": "orbit the statue", "conditions": [{"type": "camera", "path": "camera_orbit.json"},
                                                                   {"type": "image", "path": "identity_b.png"}]},
]


def test_records_batched_equal_one_at_a_time(camera_ckpt, library, tmp_path):
    source = write_jsonl(tmp_path / "requests.jsonl", REQUESTS)
    outputs = {}
    for size in (5, 2, 1):
        out = tmp_path / f"out{size}.jsonl"
        result = invoke(["interpret", "--model", str(camera_ckpt), "--input", str(source), "-o", str(out),
                         "--media-root", str(MEDIA), "--batch-size", str(size), "-q", *FAST])
        assert result.exit_code == 0, result.stderr
        outputs[size] = read_jsonl(out)
    assert outputs[5] == outputs[2] == outputs[1]
    for record, written in zip(REQUESTS, outputs[1]):
        assert {k: v for k, v in written.items() if k != "output"} == record  # nothing else touched
        request = request_from_record(record, MEDIA, video_frames=4)
        assert written["output"] == output_record(library.generate([request], max_new_tokens=6)[0])


def test_bad_records_are_rejected_or_stop_the_run(camera_ckpt, tmp_path):
    (tmp_path / "broken_cam.txt").write_text("0 0.9 1.35 0.5 0.5 0 0 1 0 0\n")
    for name in ("identity_a.png", "ball.mp4"):
        (tmp_path / name).symlink_to(MEDIA / name)
    records = [REQUESTS[0],
               {"id": "gone", "instruction": "x", "conditions": [{"type": "image", "path": "missing.png"}]},
               {"id": "badcam", "instruction": "x", "conditions": [{"type": "camera", "path": "broken_cam.txt"}]},
               {"id": "ok2", "instruction": "a ball", "conditions": [{"type": "video", "path": "ball.mp4"}]}]
    source = write_jsonl(tmp_path / "requests.jsonl", records)
    out = tmp_path / "out.jsonl"
    skip = invoke(["interpret", "--model", str(camera_ckpt), "--input", str(source), "-o", str(out),
                   "--on-error", "skip", "--batch-size", "4", *FAST])
    assert skip.exit_code == 0, skip.stderr
    assert [r["id"] for r in read_jsonl(out)] == ["r1", "ok2"]
    rejects = read_jsonl(str(out) + ".rejects.jsonl")
    assert [(r["id"], r["errors"]) for r in rejects] == [
        ("gone", [{"stage": "interpret", "message": f"{tmp_path / 'missing.png'}: file not found"}]),
        ("badcam", [{"stage": "interpret", "message": f"{tmp_path / 'broken_cam.txt'}:1: expected 19 numbers "
                                                      "per frame, got 10"}])]
    fail = invoke(["interpret", "--model", str(camera_ckpt), "--input", str(source), "-o", str(out), *FAST])
    assert fail.exit_code == 1 and "Traceback" not in fail.stderr
    assert (f"vidcli interpret: error: {source}:2: id=gone: interpret: {tmp_path / 'missing.png'}: file not found"
            in fail.stderr.splitlines())
    # The batch's finished records are written before the run stops.
    assert [r["id"] for r in read_jsonl(out)] == ["r1", "ok2"]


def test_bad_inputs_in_flags_mode_are_one_line_errors(camera_ckpt, tmp_path):
    model = ["interpret", "--model", str(camera_ckpt), "--text", "x", *FAST]
    missing = tmp_path / "nope.mp4"
    assert one_line_error(invoke([*model, "--video", str(missing)])) == \
        f"vidcli interpret: error: {missing}: file not found"
    bad_camera = tmp_path / "cam.json"
    bad_camera.write_text('{"frames": [{"intrinsics": [0.9, 1.3, 0.5, 0.5]}]}')
    assert one_line_error(invoke([*model, "--camera", str(bad_camera)])) == \
        f"vidcli interpret: error: {bad_camera}: frame 0: give exactly one of 'c2w' or 'w2c'"
    line = one_line_error(invoke([*model, "--identity", str(MEDIA / "identity_a.png"), "--max-prompt-tokens", "40"]))
    assert line.startswith("vidcli interpret: error: the prompt is ") and line.endswith(
        " tokens long, over the limit of 40 (--max-prompt-tokens)")
    # The same as a real process: exit status 1 and no traceback.
    process = run_cli([*model, "--pose", str(missing)], timeout=120)
    assert process.returncode == 1 and process.stderr.strip() == f"vidcli interpret: error: {missing}: file not found"


def test_server_backend_gets_images_and_camera_words(tmp_path):
    with ScriptedServer(default=ANSWER) as server:
        base = ["interpret", "--backend", "openai:scripted", "--base-url", server.base_url, "--text", "make her wave",
                "--identity", str(MEDIA / "identity_a.png"), "--camera", str(MEDIA / "camera_dolly_pan.txt")]
        result = invoke(base)
        assert result.exit_code == 0, result.stderr
        assert result.stdout == PARTS["dense"] + "\n" and result.stderr == ""
        full = invoke([*base, "--prompt-style", "full", "--no-cache"])
        assert full.stdout == generator_prompt(PARTS, "full") + "\n"
        as_json = json.loads(invoke([*base, "--json"]).stdout)
        assert as_json == output_record(ANSWER) and as_json["format_ok"] is True
        assert server.count == 2  # the third answer came from the reply cache
        content = server.requests[0].body["messages"][1]["content"]
        assert sum(p["type"] == "image_url" for p in content) == 1
        motion = describe_motion(load_trajectory(MEDIA / "camera_dolly_pan.txt"))
        assert {"type": "text", "text": f"\nCamera trajectory: {motion}"} in content
        audio = invoke([*base, "--audio", str(MEDIA / "tone.wav")])
        assert one_line_error(audio) == (f"vidcli interpret: error: the audio condition ({MEDIA / 'tone.wav'}) needs "
                                         "a model that takes audio input; openai:scripted takes text, images and "
                                         "video only (use a Qwen2.5-Omni model for audio)")

        source = write_jsonl(tmp_path / "requests.jsonl", REQUESTS[3:])
        out = tmp_path / "out.jsonl"
        args = ["interpret", "--backend", "openai:scripted", "--base-url", server.base_url, "--no-cache",
                "--media-root", str(MEDIA), "--input", str(source), "-o", str(out)]
        assert invoke(args).exit_code == 0
        assert [r["output"] for r in read_jsonl(out)] == [output_record(ANSWER)] * 2
        before = server.count
        assert invoke([*args, "--resume"]).exit_code == 0 and server.count == before  # all done already


@pytest.mark.parametrize("args, message", [
    (["--text", "x"], "give exactly one of --model PATH or --backend openai:MODEL"),
    (["--model", "m", "--backend", "openai:x", "--text", "x"], "give exactly one of --model"),
    (["--backend", "hf:m", "--text", "x"], "--backend takes openai:MODEL"),
    (["--model", "m"], "nothing to interpret"),
    (["--model", "m", "--text", "x", "--input", "-"], "either --input records or --text"),
    (["--model", "m", "--text", "x", "-o", "out.jsonl"], "-o/--resume apply to --input"),
])
def test_usage_errors(args, message):
    result = invoke(["interpret", *args])
    assert result.exit_code == 2 and message in result.stderr


def test_help_ends_with_examples():
    result = invoke(["interpret", "--help"])
    assert result.exit_code == 0
    tail = result.stdout.rstrip().splitlines()
    examples = [i for i, line in enumerate(tail) if line.strip() == "Examples:"]
    assert examples and all("vidcli interpret" in line for line in tail[examples[-1] + 1:] if
                            not line.strip().startswith("#"))
    assert "interpret" in invoke(["--help"]).stdout
