"""Interpreter requests: conditions → one chat message in a fixed order, and model text → output record."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from vidcli.camera import load_trajectory
from vidcli.camera_motion import describe_motion
from vidcli.errors import InputError, MediaError
from vidcli.interpreter.format import build_target, generator_prompt
from vidcli.interpreter.messages import (
    CAMERA_PLACEHOLDER,
    CONDITION_ORDER,
    NO_INSTRUCTION,
    expand_cameras,
    output_record,
    request_from_record,
    server_conversation,
)
from vidcli.media import load_audio, load_image, load_video, video_frames_as_pil
from vidcli.prompts import render

MEDIA = Path(__file__).resolve().parents[2] / "examples" / "media"
PARTS = {
    "dense": "A woman in a yellow raincoat waves in a sunny park.",
    "main_object": "A woman with short black hair and round glasses.",
    "background": "A green park with oak trees, afternoon sun.",
    "movement": "She raises her right hand and waves twice.",
    "style": "Natural colours, cheerful",
    "camera": "Medium shot at eye level, static camera.",
}

# Every condition type, deliberately out of order (two identities, in this order: b then a).
SCRAMBLED = [
    {"type": "audio", "path": "tone.wav"},
    {"type": "camera", "path": "camera_dolly_pan.txt"},
    {"type": "identity", "path": "identity_b.png"},
    {"type": "pose", "path": "pose.mp4"},
    {"type": "identity", "path": "identity_a.png"},
    {"type": "image", "path": "identity_a.png"},
    {"type": "depth", "path": "depth.mp4"},
    {"type": "video", "path": "ball.mp4"},
]


def user_parts(request) -> list[dict]:
    return request.conversation[1]["content"]


def layout(request) -> list[str]:
    """Text parts verbatim, media parts as <type>."""
    return [p["text"] if p["type"] == "text" else f"<{p['type']}>" for p in user_parts(request)]


def test_conditions_follow_the_fixed_order_with_labels():
    request = request_from_record({"id": "r1", "instruction": "  make her wave  ", "conditions": SCRAMBLED},
                                  MEDIA, video_frames=4)
    assert CONDITION_ORDER == ("identity", "image", "video", "depth", "pose", "camera", "audio")
    assert layout(request) == [
        "Identity image 1:", "<image>", "\nIdentity image 2:", "<image>", "\nReference image:", "<image>",
        "\nSource video:", "<video>", "\nDepth video:", "<video>", "\nPose video:", "<video>",
        f"\nCamera trajectory: {CAMERA_PLACEHOLDER}", "\nAudio:", "<audio>", "\nRequest: make her wave",
    ]
    assert request.id == "r1" and request.instruction == "make her wave"
    assert request.condition_types == ["identity", "identity", "image", "video", "depth", "pose", "camera", "audio"]
    assert request.condition_paths == ["identity_b.png", "identity_a.png", "identity_a.png", "ball.mp4",
                                       "depth.mp4", "pose.mp4", "camera_dolly_pan.txt", "tone.wav"]
    system, _ = render("interpreter_system", instruction="x")
    assert request.conversation[0] == system
    assert "<think>" in system["content"] and "<answer>" in system["content"]


def test_media_are_loaded_as_the_loaders_give_them():
    request = request_from_record({"instruction": "go", "conditions": SCRAMBLED}, MEDIA, video_frames=4)
    parts = [p for p in user_parts(request) if p["type"] != "text"]
    first_identity = np.asarray(parts[0]["image"])
    assert np.array_equal(first_identity, np.asarray(load_image(MEDIA / "identity_b.png")))  # record order kept
    clip = load_video(MEDIA / "ball.mp4", num_frames=4)
    video = parts[3]
    assert len(video["video"]) == 4 and video["fps"] == pytest.approx(4 / 3.0)  # 4 frames over a 3 s clip
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(video["video"], video_frames_as_pil(clip)))
    assert video["timestamps"] == pytest.approx(clip.timestamps.tolist())
    audio = parts[-1]
    assert audio["sampling_rate"] == 16000 and np.array_equal(audio["audio"], load_audio(MEDIA / "tone.wav"))
    (camera,) = request.cameras
    expected = load_trajectory(MEDIA / "camera_dolly_pan.txt")
    assert np.array_equal(camera.c2w, expected.c2w) and np.array_equal(camera.timestamps, expected.timestamps)
    # A record without an id gets the stable content hash, as the record reader gives it.
    assert request.id == request_from_record({"instruction": "go", "conditions": SCRAMBLED}, MEDIA, video_frames=4).id


def test_instruction_dropout_and_condition_only_requests():
    record = {"id": "d", "instruction": "make her wave", "conditions": [{"type": "identity", "path": "identity_a.png"}]}
    dropped = request_from_record(record, MEDIA, drop_instruction=True)
    assert dropped.instruction == "" and layout(dropped)[-1] == f"\nRequest: {NO_INSTRUCTION}"
    text_only = request_from_record({"id": "t", "instruction": "a red car"}, MEDIA, drop_instruction=True)
    assert text_only.instruction == "a red car" and layout(text_only) == ["Request: a red car"]
    no_text = request_from_record({"id": "n", "conditions": record["conditions"]}, MEDIA)
    assert layout(no_text) == ["Identity image:", "<image>", f"\nRequest: {NO_INSTRUCTION}"]


def test_media_root_and_escape_rules(tmp_path):
    shutil.copy(MEDIA / "identity_a.png", tmp_path / "face.png")
    record = {"id": "m", "instruction": "x", "conditions": [{"type": "image", "path": "face.png"}]}
    assert request_from_record(record, MEDIA, media_root=tmp_path).condition_types == ["image"]
    (tmp_path / "records").mkdir()
    escaping = {"id": "e", "instruction": "x", "conditions": [{"type": "image", "path": "../face.png"}]}
    with pytest.raises(MediaError, match=r"leaves .* through '\.\.'") as err:
        request_from_record(escaping, tmp_path / "records")
    assert err.value.record_id == "e"
    assert request_from_record(escaping, tmp_path / "records", allow_escape=True).condition_types == ["image"]


@pytest.mark.parametrize("record, error, message", [
    ({"instruction": "x", "conditions": [{"type": "image", "path": "missing.png"}]}, MediaError, "file not found"),
    ({"instruction": "x", "conditions": [{"type": "camera", "path": "ball.mp4"}]}, MediaError, "cannot read camera"),
    ({"instruction": "x", "conditions": [{"type": "video", "path": "tone.wav"}]}, MediaError,
     "no video stream"),
    ({"instruction": "", "conditions": []}, InputError, "nothing to interpret"),
    ({"instruction": 3}, InputError, "'instruction' must be a string"),
    ({"instruction": "x", "conditions": {"type": "image"}}, InputError, "'conditions' must be a list"),
    ({"instruction": "x", "conditions": [{"type": "smell", "path": "a"}]}, InputError, "'type' is one of"),
    ({"instruction": "x", "conditions": [{"type": "depth"}]}, InputError, r"conditions\[0\] \(depth\) needs a 'path'"),
    ({"instruction": f"a {CAMERA_PLACEHOLDER} b"}, InputError, "reserved token"),
])
def test_bad_records_are_one_line_errors_with_the_record_id(record, error, message):
    with pytest.raises(error, match=message) as err:
        request_from_record({"id": "bad", **record}, MEDIA)
    assert err.value.record_id == "bad" and "\n" not in str(err.value)


def test_malformed_camera_file_names_its_line(tmp_path):
    lines = (MEDIA / "camera_dolly_pan.txt").read_text().splitlines()
    (tmp_path / "cam.txt").write_text("\n".join(lines[:3] + ["1 2 3"] + lines[3:]) + "\n")
    record = {"id": "c", "instruction": "x", "conditions": [{"type": "camera", "path": "cam.txt"}]}
    with pytest.raises(MediaError) as err:
        request_from_record(record, tmp_path)
    assert str(err.value) == f"{tmp_path / 'cam.txt'}:4: id=c: expected 19 numbers per frame, got 3"


def test_camera_placeholders_expand_in_order():
    conversation = [{"role": "system", "content": "s"},
                    {"role": "user", "content": [{"type": "text", "text": f"A: {CAMERA_PLACEHOLDER}"},
                                                 {"type": "text", "text": f"B: {CAMERA_PLACEHOLDER}."}]}]
    out = expand_cameras(conversation, ["one", "two"])
    assert [p["text"] for p in out[1]["content"]] == ["A: one", "B: two."]
    assert conversation[1]["content"][0]["text"] == f"A: {CAMERA_PLACEHOLDER}"  # the input is left alone
    with pytest.raises(ValueError, match="more trajectories"):
        expand_cameras(conversation, ["one", "two", "three"])
    with pytest.raises(ValueError, match="more camera placeholders"):
        expand_cameras(conversation, ["one"])


def test_server_conversation_describes_cameras_and_refuses_audio():
    record = {"id": "s", "instruction": "a street", "conditions": [
        {"type": "camera", "path": "camera_dolly_pan.txt"}, {"type": "camera", "path": "camera_orbit.json"}]}
    conversation = server_conversation(request_from_record(record, MEDIA), "openai:gpt-x")
    texts = [p["text"] for p in conversation[1]["content"]]
    assert texts == [
        f"Camera trajectory 1: {describe_motion(load_trajectory(MEDIA / 'camera_dolly_pan.txt'))}",
        f"\nCamera trajectory 2: {describe_motion(load_trajectory(MEDIA / 'camera_orbit.json'))}",
        "\nRequest: a street"]
    assert texts[0] == "Camera trajectory 1: strong dolly in, moderate pan left"
    heard = request_from_record({"id": "h", "instruction": "x", "conditions": [{"type": "audio", "path": "tone.wav"}]},
                                MEDIA)
    with pytest.raises(InputError) as err:
        server_conversation(heard, "openai:gpt-x")
    assert str(err.value) == ("id=h: the audio condition (tone.wav) needs a model that takes audio input; "
                              "openai:gpt-x takes text, images and video only (use a Qwen2.5-Omni model for audio)")


@pytest.mark.parametrize("style", ["dense", "structured", "full"])
def test_output_record_of_a_well_formed_answer(style):
    raw = build_target("She wants a wave; the image shows her face.", PARTS)
    out = output_record(raw, style)
    assert out == {"think": "She wants a wave; the image shows her face.", "answer": PARTS,
                   "prompt": generator_prompt(PARTS, style), "raw": raw, "format_ok": True, "format_problem": None}
    if style == "dense":
        assert out["prompt"] == PARTS["dense"]


def test_output_record_keeps_malformed_answers_with_the_reason():
    answer_only = build_target("x", PARTS).split("</think>\n", 1)[1]
    out = output_record(answer_only)
    assert out["format_ok"] is False and out["format_problem"] == "think: no <think> block"
    assert out["think"] is None and out["answer"] == PARTS and out["prompt"] == PARTS["dense"]

    partial = "<think>hm</think><answer>1. Dense caption: a cat\n2. Style caption: noir</answer>"
    out = output_record(partial)
    assert out["format_problem"] == ("answer: caption parts missing: main_object, background, movement, camera")
    assert out["prompt"] == "1. Dense caption: a cat\n2. Style caption: noir"  # the raw answer text
    assert out["answer"] == {"dense": "a cat", "main_object": "", "background": "", "movement": "",
                             "style": "noir", "camera": ""}

    out = output_record("  just a caption of a cat  ")
    assert out["prompt"] == "just a caption of a cat" and out["raw"] == "  just a caption of a cat  "
    assert out["format_problem"] == "think: no <think> block; answer: no <answer> block"
    assert output_record("<think>plan</think> a cat on a mat")["prompt"] == "a cat on a mat"
