"""`score --metric vqa`: desired-verdict probabilities from the tiny Qwen2.5-VL, checked against its own forward."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.cli.helpers import invoke, read_jsonl, write_jsonl
from vidcli.media import load_video, write_video
from vidcli.rewards.vlm import VERDICT_PREFIX
from vidcli.scoring.vqa import VideoInputs, load_vlm, score_record

FRAMES = 6
TA_MOTION = {"dim": "TA", "key": "motion", "question": "Look at the video. Does the ball roll to the left?",
             "reference": {"answer": "Yes", "explanation": "It rolls left."}}
TA_COLOR = {"dim": "TA", "key": "color", "question": "Look at the video. Is the ball red?",
            "reference": {"answer": "Yes", "explanation": "The ball is red."}}
PHY = {"dim": "Phy", "key": "physics", "question": "The first video was generated. Any physical errors?",
       "reference": None}
VQ = {"dim": "VQ", "key": "quality", "question": "Compared with the second video, is the first one blurry?",
      "reference": {"answer": "No", "issue": "none", "explanation": "Sharp."}}


def moving_square(seed: int, n: int = 12) -> np.ndarray:
    """(n, 56, 84, 3) frames: 84x56 needs no resizing in the tiny model's processor."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, 56, 84, 3), dtype=np.uint8)
    frames[:] = rng.integers(0, 255, size=3, dtype=np.uint8)
    for t in range(n):
        frames[t, 20:36, 4 + 5 * t: 20 + 5 * t] = rng.integers(0, 255, size=3, dtype=np.uint8)
    return frames


@pytest.fixture(scope="module")
def vlm_path():
    from vidcli.testing import ensure_tiny_models

    return ensure_tiny_models(["vlm"])["vlm"]


@pytest.fixture(scope="module")
def scorer(vlm_path):
    return load_vlm(f"hf:{vlm_path}", device="cpu")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    write_video(folder / "gen.mp4", moving_square(1), fps=8)
    write_video(folder / "real.mp4", moving_square(2, 16), fps=8)
    return folder


def expected_probability(scorer, videos: list[np.ndarray], fps: list[float], question: str, verdict: str) -> float:
    """p(verdict) from one plain forward over the processor's own inputs (prompt + reply prefix + verdict)."""
    processor = scorer.processor
    content = [{"type": "video"}] * len(videos) + [{"type": "text", "text": question}]
    conversation = [{"role": "user", "content": content}]
    answer = VERDICT_PREFIX + verdict
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False) + answer
    metadata = [{"total_num_frames": len(v), "fps": f, "frames_indices": list(range(len(v)))}
                for v, f in zip(videos, fps)]
    inputs = processor(text=[text], videos=videos, video_metadata=metadata, return_tensors="pt")
    encoded = processor.tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    ids = inputs["input_ids"][0]
    assert ids[-len(encoded["input_ids"]):].tolist() == encoded["input_ids"]
    verdict_tokens = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if b > len(VERDICT_PREFIX)]
    with torch.no_grad():
        probs = torch.softmax(scorer.model(**inputs).logits[0].double(), dim=-1)
    start = len(ids) - len(encoded["input_ids"])
    return math.prod(probs[start + i - 1, ids[start + i]].item() for i in verdict_tokens)


def clip_and_fps(path) -> tuple[np.ndarray, float]:
    clip = load_video(path, num_frames=FRAMES)
    return clip.frames, len(clip.frames) / clip.duration_s


def test_each_probability_is_the_models_own_softmax_and_the_means_are_plain_means(scorer, media):
    record = {"id": "r", "questions": [TA_MOTION, TA_COLOR, PHY, VQ], "output": {"video": "gen.mp4"},
              "video": "real.mp4"}
    values = score_record(scorer, record, VideoInputs(frames=FRAMES, base_dirs=(media,)), 0)
    gen, gen_fps = clip_and_fps(media / "gen.mp4")
    real, real_fps = clip_and_fps(media / "real.mp4")
    expected = {
        "vqa.TA.motion": expected_probability(scorer, [gen], [gen_fps], TA_MOTION["question"], "Yes"),
        "vqa.TA.color": expected_probability(scorer, [gen], [gen_fps], TA_COLOR["question"], "Yes"),
        # Phy and VQ: the desired verdict is "No" (no error, no defect), asked with the reference second.
        "vqa.Phy.physics": expected_probability(scorer, [gen, real], [gen_fps, real_fps], PHY["question"], "No"),
        "vqa.VQ.quality": expected_probability(scorer, [gen, real], [gen_fps, real_fps], VQ["question"], "No"),
    }
    for key, value in expected.items():
        assert 0 < value < 1
        assert abs(values[key] - value) <= 1e-5, key
    ta = (expected["vqa.TA.motion"] + expected["vqa.TA.color"]) / 2
    assert values["vqa_TA"] == pytest.approx(ta, abs=1e-5)
    assert values["vqa_Phy"] == pytest.approx(expected["vqa.Phy.physics"], abs=1e-5)
    assert values["vqa_VQ"] == pytest.approx(expected["vqa.VQ.quality"], abs=1e-5)
    overall = (ta + expected["vqa.Phy.physics"] + expected["vqa.VQ.quality"]) / 3
    assert values["vqa"] == pytest.approx(overall, abs=1e-5)
    assert len(values) == 8


def test_ta_only_needs_no_reference_and_repeated_keys_stay_apart(scorer, media):
    twin = {**TA_MOTION, "question": "Look at the video. Does the ball move fast?"}
    record = {"id": "t", "questions": [TA_MOTION, twin], "gen": str(media / "gen.mp4")}
    values = score_record(scorer, record, VideoInputs(video_field="gen", frames=FRAMES), 0)
    assert set(values) == {"vqa.TA.motion", "vqa.TA.motion.2", "vqa_TA", "vqa_Phy", "vqa_VQ", "vqa"}
    assert values["vqa.TA.motion"] != values["vqa.TA.motion.2"]
    assert values["vqa_Phy"] is None and values["vqa_VQ"] is None  # unavailable, not zero
    assert values["vqa"] == values["vqa_TA"] == pytest.approx((values["vqa.TA.motion"] + values["vqa.TA.motion.2"]) / 2)


def test_unreadable_records_say_what_is_missing(scorer, media):
    from vidcli.errors import InputError

    videos = VideoInputs(frames=FRAMES, base_dirs=(media,))
    cases = [({"questions": [TA_MOTION]}, "missing field 'output.video' (a video path)"),
             ({"output": {"video": "gen.mp4"}},
              "missing field 'questions' (add it with: vidcli decompose --schema drf)"),
             ({"output": {"video": "gen.mp4"}, "questions": [VQ]}, "missing field 'video' (the real reference video"),
             ({"output": {"video": "gen.mp4"}, "questions": [{**VQ, "dim": "XX"}]}, "questions[0]: 'dim' must be"),
             ({"output": {"video": "../gen.mp4"}, "questions": [TA_MOTION]}, "field 'output.video': media path")]
    for record, message in cases:
        with pytest.raises(InputError) as caught:
            score_record(scorer, record, videos, 0)
        assert caught.value.message.startswith(message), caught.value.message


def test_cli_scores_summarises_by_group_and_locates_a_missing_video(vlm_path, scorer, media, tmp_path):
    rows = [{"id": "a", "group": "x", "questions": [TA_MOTION, VQ], "output": {"video": "media/gen.mp4"},
             "video": "media/real.mp4"},
            {"id": "b", "group": "x", "questions": [TA_COLOR, PHY], "output": {"video": "media/real.mp4"},
             "video": "media/gen.mp4"},
            {"id": "gone", "group": "y", "questions": [TA_MOTION], "output": {"video": "media/none.mp4"}}]
    (tmp_path / "media").symlink_to(media)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["score", "--metric", "vqa", "--vlm", f"hf:{vlm_path}", "--device", "cpu", "--frames", str(FRAMES)]
    failed = invoke([*args, "-q", str(inp), "-o", str(tmp_path / "out.jsonl")])
    assert failed.exit_code == 1, failed.stderr
    # (transformers may draw its weight-loading bar on stderr first)
    assert next(line for line in failed.stderr.splitlines() if line.startswith("vidcli score:")) == (
        f"vidcli score: error: {inp}:3: id=gone: input: field 'output.video': "
        f"{tmp_path / 'media' / 'none.mp4'}: file not found")
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl.partial")] == ["a", "b"]  # what was done is kept
    assert not (tmp_path / "out.jsonl").exists()

    summary_file = tmp_path / "s.json"
    skipped = invoke([*args, "--on-error", "skip", "--by", "group", "--summary", str(summary_file), str(inp),
                      "-o", str(tmp_path / "out.jsonl")])
    assert skipped.exit_code == 0, skipped.stderr
    a, b = read_jsonl(tmp_path / "out.jsonl")
    videos = VideoInputs(frames=FRAMES, base_dirs=(tmp_path,))
    for got, row in ((a, rows[0]), (b, rows[1])):
        assert got["scores"] == pytest.approx(score_record(scorer, row, videos, 0), abs=1e-6)
    assert a["scores"]["vqa_Phy"] is None and b["scores"]["vqa_VQ"] is None
    summary = json.loads(summary_file.read_text())
    assert list(summary["metrics"]) == ["vqa_TA", "vqa_Phy", "vqa_VQ", "vqa"]
    overall = summary["groups"]["x"]["metrics"]["vqa"]
    assert overall["n"] == 2 and overall["mean"] == pytest.approx((a["scores"]["vqa"] + b["scores"]["vqa"]) / 2)
    assert summary["metrics"]["vqa_Phy"]["unavailable"] == 1 and summary["metrics"]["vqa_Phy"]["failures"] == 0
    assert "y" not in summary["groups"]  # the rejected record is not in the output


@pytest.mark.parametrize("args,code,message", [
    ([], 2, "--metric vqa needs --vlm hf:PATH"),
    (["--vlm", "openai:gpt-4o"], 2, "needs a local model"),
])
def test_vlm_flag_errors(args, code, message):
    result = invoke(["score", "--metric", "vqa", *args, "-"], input="")
    assert result.exit_code == code and message in result.stderr
