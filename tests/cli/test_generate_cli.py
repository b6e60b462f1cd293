"""``vidcli generate`` end to end: records → mp4 files + records, errors, resume, editing, the ReaDe chain."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.cli.helpers import invoke, read_jsonl, write_jsonl
from tests.diffusion.test_generate import PROMPTS, SETTINGS, gen_kit  # noqa: F401  (fixtures)
from tests.train.test_revise import BALL, SQUARES
from vidcli.media import load_video, probe_video

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

FAST = ["--steps", "2", "--num-frames", "5", "--height", "32", "--width", "32", "--seed", "3", "-q"]
TA = {"dim": "TA", "key": "objects", "question": "Is there a woman waving?",
      "reference": {"answer": "Yes", "explanation": "She waves."}}


def generate(kit, *args, model: str = "wan"):
    return invoke(["generate", "--model", str(kit[model]), *FAST, *args])


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [ln for ln in result.stderr.strip().splitlines() if not ln.startswith("Loading ")
               and "stopped after" not in ln]
    return line


def test_help_says_where_defaults_come_from():
    result = invoke(["generate", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for wanted in ("--steps INTEGER RANGE", "default: 30", "the pipeline's: Wan 5.0",
                   "vidcli.json recorded for training", "default: Wan 16, CogVideoX 8", "--batch-size", "default: 1;",
                   "--shard I/N", "--resume",
                   "OUT-stem.videos/", "Examples:", "vidcli generate --model runs/revise triplets.jsonl"):
        assert wanted in text, wanted
    assert "generate" in invoke(["--help"]).output


def test_records_become_mp4s_and_records_that_point_at_them(gen_kit, tmp_path):
    from vidcli.diffusion.generate import generate_videos, load_video_model, to_uint8

    records = [{"id": "car", "prompt": PROMPTS["car"], "keep": 1},
               {"id": "dog", "output": {"prompt": PROMPTS["dog"], "think": "t", "format_ok": True}},
               {"id": "odd/name", "caption": "a caption from decompose"}]
    (tmp_path / "in").mkdir()
    source = write_jsonl(tmp_path / "in" / "prompts.jsonl", records)
    out = tmp_path / "out" / "gen.jsonl"
    result = generate(gen_kit, str(source), "-o", str(out), "--batch-size", "2", "--fps", "8")
    assert result.exit_code == 0, result.stderr
    written = read_jsonl(out)
    assert [r["id"] for r in written] == ["car", "dog", "odd/name"]
    assert written[0]["keep"] == 1 and written[0]["prompt"] == PROMPTS["car"]
    assert written[1]["output"]["think"] == "t" and written[1]["output"]["prompt"] == PROMPTS["dog"]
    assert written[0]["output"]["generation"] == {
        "model": str(gen_kit["wan"]), "mode": "t2v", "seed": 3, "steps": 2, "guidance": 5.0, "num_frames": 5,
        "height": 32, "width": 32, "fps": 8.0, "negative_prompt": None}
    paths = [r["output"]["video"] for r in written]
    assert paths[:2] == ["gen.videos/car.mp4", "gen.videos/dog.mp4"]
    assert paths[2].startswith("gen.videos/odd-name-") and paths[2].endswith(".mp4")  # no folder from the id
    for path in paths:
        info = probe_video(out.parent / path)
        assert (info.num_frames, info.width, info.height) == (5, 32, 32) and info.fps == pytest.approx(8)
    assert not list((out.parent / "gen.videos").glob(".*"))  # no temporary files left
    # The mp4 holds the library's frames (up to the codec's loss).
    model = load_video_model(gen_kit["wan"], device="cpu")
    frames = to_uint8(generate_videos(model, [PROMPTS["car"]], ["car"], SETTINGS)[0]).astype(float)
    decoded = load_video(out.parent / paths[0]).frames.astype(float)
    assert decoded.shape == frames.shape and np.abs(decoded - frames).mean() < 12


def test_stdout_puts_videos_in_the_working_folder(gen_kit, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(["generate", "--model", str(gen_kit["wan"]), *FAST, "-"],
                    input=json.dumps({"id": "cat", "prompt": "a cat on a piano"}) + "\n")
    assert result.exit_code == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["output"]["video"] == "videos/cat.mp4" and (tmp_path / "videos" / "cat.mp4").is_file()


def test_bad_records_are_located_and_prompt_field_picks_the_text(gen_kit, tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", [
        {"id": "ok", "meta": {"text": "a boat at sea"}, "prompt": "ignored"},
        {"id": "none", "instruction": "no prompt here"},
        {"id": "empty", "prompt": "  "}])
    fail = generate(gen_kit, str(source), "-o", str(tmp_path / "a.jsonl"))
    assert one_line_error(fail) == (f"vidcli generate: error: {source}:2: id=none: generate: no text to generate "
                                    "from: missing field 'output.prompt' or 'prompt' or 'caption' "
                                    "(choose one with --prompt-field)")
    assert [r["id"] for r in read_jsonl(tmp_path / "a.jsonl.partial")] == ["ok"]  # what was done is kept
    assert not (tmp_path / "a.jsonl").exists() and not (tmp_path / "a.videos").exists()
    assert [p.name for p in (tmp_path / "a.videos.partial").iterdir()] == ["ok.mp4"]
    skip = generate(gen_kit, str(source), "-o", str(tmp_path / "b.jsonl"), "--on-error", "skip",
                    "--prompt-field", "meta.text")
    assert skip.exit_code == 0, skip.stderr
    assert [r["id"] for r in read_jsonl(tmp_path / "b.jsonl")] == ["ok"]
    rejects = read_jsonl(tmp_path / "b.jsonl.rejects.jsonl")
    assert [(r["id"], r["errors"][0]["message"]) for r in rejects] == [
        ("none", "no text to generate from: missing field 'meta.text' (choose one with --prompt-field)"),
        ("empty", "no text to generate from: missing field 'meta.text' (choose one with --prompt-field)")]
    usage = generate(gen_kit, str(source), "--height", "40")
    assert usage.exit_code == 2 and "--height 40 must be a positive multiple of 16" in usage.stderr
    assert generate(gen_kit, str(source), "--device", "gpu").exit_code == 2
    nowhere = invoke(["generate", "--model", str(tmp_path / "nope"), str(source)])
    assert one_line_error(nowhere) == f"vidcli generate: error: {tmp_path / 'nope'}: model folder not found"


def test_resume_keeps_finished_videos_and_replaces_a_torn_one(gen_kit, tmp_path):
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": k, "prompt": v} for k, v in PROMPTS.items()])
    out = tmp_path / "gen.jsonl"
    assert generate(gen_kit, str(source), "-o", str(out)).exit_code == 0
    full = read_jsonl(out)
    # As if killed after the first record and halfway through writing the second video.
    out.write_text(json.dumps(full[0]) + "\n" + json.dumps(full[1])[:20], encoding="utf-8")
    videos = tmp_path / "gen.videos"
    kept = (videos / "car.mp4").stat().st_mtime_ns
    (videos / "dog.mp4").write_bytes(b"not a video")
    result = generate(gen_kit, str(source), "-o", str(out), "--resume")
    assert result.exit_code == 0, result.stderr
    assert read_jsonl(out) == full
    assert (videos / "car.mp4").stat().st_mtime_ns == kept  # done: not generated again
    assert probe_video(videos / "dog.mp4").num_frames == 5


def test_an_editor_edits_source_clips(gen_kit, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(gen_kit["triplets"].parent, folder)
    missing = {"id": "nosource", "instruction": "make it rain"}
    source = write_jsonl(folder / "triplets.jsonl", [BALL, missing, SQUARES])
    out = tmp_path / "edited.jsonl"
    result = generate(gen_kit, str(source), "-o", str(out), "--batch-size", "2", "--on-error", "skip",
                      model="editor")
    assert result.exit_code == 0, result.stderr
    written = read_jsonl(out)
    assert [r["id"] for r in written] == [BALL["id"], SQUARES["id"]]
    for record in written:
        assert record["output"]["generation"]["mode"] == "edit" and record["source"]
        assert probe_video(tmp_path / record["output"]["video"]).num_frames == 5
    (reject,) = read_jsonl(str(out) + ".rejects.jsonl")
    assert reject["errors"][0]["message"] == "missing field 'source' ({video, start, end} in seconds)"


def test_interpret_then_generate_then_score(gen_kit, tmp_path):
    requests = write_jsonl(tmp_path / "requests.jsonl", [
        {"id": "wave", "instruction": "a woman waves in a park", "questions": [TA]}])
    interpreted, generated, scored = (tmp_path / n for n in ("interpreted.jsonl", "generated.jsonl", "scored.jsonl"))
    step1 = invoke(["interpret", "--model", str(gen_kit["vlm"]), "--input", str(requests), "-o", str(interpreted),
                    "--max-new-tokens", "6", "-q"])
    assert step1.exit_code == 0, step1.stderr
    step2 = generate(gen_kit, str(interpreted), "-o", str(generated))
    assert step2.exit_code == 0, step2.stderr
    step3 = invoke(["score", "--metric", "vqa", "--vlm", f"hf:{gen_kit['vlm']}", "--frames", "2", "--device", "cpu",
                    str(generated), "-o", str(scored), "-q"])
    assert step3.exit_code == 0, step3.stderr
    (record,) = read_jsonl(scored)
    assert record["output"]["prompt"] == read_jsonl(interpreted)[0]["output"]["prompt"]
    assert record["output"]["video"] == "generated.videos/wave.mp4"
    assert 0 < record["scores"]["vqa_TA"] < 1 and record["scores"]["vqa"] == record["scores"]["vqa_TA"]


def test_shards_split_the_records_between_them(gen_kit, tmp_path):
    from vidcli.shard import Shard

    ids = ["a", "b", "c", "d"]
    source = write_jsonl(tmp_path / "p.jsonl", [{"id": i, "prompt": f"scene {i}"} for i in ids])
    for index in (0, 1):
        result = generate(gen_kit, str(source), "-o", str(tmp_path / f"part{index}.jsonl"), "--shard", f"{index}/2")
        assert result.exit_code == 0, result.stderr
        written = [r["id"] for r in read_jsonl(tmp_path / f"part{index}.jsonl")]
        assert written == [i for i in ids if Shard(index, 2).owns(i)]
        assert sorted(p.name for p in (tmp_path / f"part{index}.videos").iterdir()) == [f"{i}.mp4" for i in written]
