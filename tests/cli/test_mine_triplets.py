"""`vidcli mine-triplets` end to end on synthetic films, against a scripted OpenAI-compatible server.

The scripted VLM captions a clip the way a perfect captioner would: it finds which film
and which moment the frames it received come from (nearest rendered frame) and answers
that scene's ground-truth caption. The scripted LLM answers from the prompt's text.
"""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.cli.helpers import invoke, read_jsonl, write_jsonl
from vidcli.media import load_video
from vidcli.mining.synthetic import make_film, render_film
from vidcli.testing.server import ScriptedServer

FILM = dict(duration_s=20.0)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rave_examples.jsonl"


def user_content(body: dict) -> list[dict]:
    content = body["messages"][-1]["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def user_text(body: dict) -> str:
    return " ".join(p["text"] for p in user_content(body) if p["type"] == "text")


def first_image(body: dict) -> np.ndarray:
    from PIL import Image

    url = next(p["image_url"]["url"] for p in user_content(body) if p["type"] == "image_url")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"), dtype=float)


def scene_at(film, start: float, end: float) -> str:
    middle = (start + end) / 2
    return next(s for (a, b), s in zip(film.shots, film.scenes) if a <= middle < b)


def quoted(text: str, label: str) -> str:
    return re.search(label + r': """(.*?)"""', text).group(1)


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    """Two films on disk with their rendered frames: {name: (film, frames)}."""
    folder = tmp_path_factory.mktemp("films")
    out = {}
    for seed in (0, 1):
        film = make_film(folder / f"film{seed}.mp4", seed=seed, **FILM)
        out[f"film{seed}"] = (film, render_film(seed=seed, **FILM)[0])
    return out


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    from vidcli.testing import ensure_tiny_models

    return ensure_tiny_models("siglip", root=tmp_path_factory.mktemp("tiny"))["siglip"]


def caption_of(films: dict, body: dict) -> tuple[str, str]:
    """(film name, caption): the film whose frame at the first timestamp looks like the first image."""
    text = user_text(body)
    stamps = [float(t) for t in re.search(r"t = ([^\]]*) s\]", text).group(1).split(",")]
    image = first_image(body)
    name = min(films, key=lambda n: np.abs(films[n][1][round(stamps[0] * films[n][0].fps)] - image).mean())
    film = films[name][0]
    return name, f"In {name}, " + film.captions[scene_at(film, stamps[0], stamps[-1])]


def teacher(films: dict, bad: str | None = None):
    """Answers captions (frames) and instructions (text). ``bad``: 'first' → an
    illegal reasoning type on the first try; 'film1' → never JSON for film1's pairs."""

    def answer(body: dict) -> str:
        text = user_text(body)
        if "Caption the shot" in text:
            return json.dumps({"caption": caption_of(films, body)[1]})
        first = body["messages"][1]["content"] if body["messages"][0]["role"] == "system" else text
        source, target = quoted(first, "Source shot"), quoted(first, "Target shot")
        types = re.search(r"from: ([a-z, ]+)\.", first).group(1).split(", ")
        retry = len(body["messages"]) > 2
        if bad == "film1" and source.startswith("In film1"):
            return "I would rather not answer in JSON."
        if bad == "first" and not retry:
            return json.dumps({"reasoning_type": "camera", "instruction": "not allowed"})
        return json.dumps({"reasoning_type": types[-1], "instruction": f"From <{source}> reason to <{target}>"})

    return answer


def mine(server, args, env=None):
    return invoke(["mine-triplets", "--mode", "icvg", "--llm", "openai:m", "--vlm", "openai:v",
                   "--base-url", server.base_url, "--concurrency", "4", *args], env=env)


def test_icvg_end_to_end(films, siglip, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x01 this is not a video" * 50)
    inp = write_jsonl(tmp_path / "films.jsonl", [
        {"id": "f0", "video": str(films["film0"][0].path), "note": "kept"},
        {"id": "bad", "video": "broken.mp4"},
        {"id": "f1", "video": str(films["film1"][0].path)},
    ])
    out, report = tmp_path / "icvg.jsonl", tmp_path / "report.json"
    args = ["--embedder", f"hf:{siglip}", "--holdout", "0.5", "--seed", "1", "--export-clips",
            str(tmp_path / "clips"), "--report", str(report), "--on-error", "skip", str(inp), "-o", str(out)]
    with ScriptedServer(teacher(films)) as server:
        result = mine(server, args)
        assert result.exit_code == 0, result.stderr
        asked = server.count
        first = out.read_text()
        rejects = read_jsonl(str(out) + ".rejects.jsonl")
        # --resume: every good video is done (the bad one fails again before any request),
        # so nothing is asked and the output is rebuilt the same.
        again = mine(server, [*args, "--resume", "-q"])
        assert again.exit_code == 0, again.stderr
        assert server.count == asked and out.read_text() == first
        # A fresh run (no --resume) mines again, but every caption and instruction is a cache hit.
        fresh = mine(server, [*args, "-q"])
        assert fresh.exit_code == 0, fresh.stderr
        assert server.count == asked and out.read_text() == first

    # The undecodable video is that record's error, with file, line and id; the others are mined.
    (reject,) = rejects
    assert reject["id"] == "bad" and reject["rejected_from"] == {"file": str(inp), "line": 2}
    assert reject["errors"][0]["stage"] == "media" and "broken.mp4" in reject["errors"][0]["message"]
    assert f"{inp}:2: id=bad:" in result.stderr

    triplets = read_jsonl(out)
    summary = json.loads(report.read_text())
    by_video = {v["id"]: v for v in summary["videos"]}
    assert set(by_video) == {"f0", "f1"} and summary["triplets"] == len(triplets) > 0
    paths = {str(films[n][0].path): n for n in films}
    for t in triplets:
        src, tgt = t["source"], t["target"]
        film = films[paths[src["video"]]][0]
        assert tgt["video"] == src["video"] and src["end"] <= tgt["start"]
        # Times in seconds, on the film's true cuts.
        assert (src["start"], src["end"]) in film.shots and (tgt["start"], tgt["end"]) in film.shots
        for side in (src, tgt):  # each clip got the caption of its own scene
            assert side["caption"] == f"In {paths[src['video']]}, " + film.captions[scene_at(film, side["start"], side["end"])]
        assert t["instruction"] == f"From <{src['caption']}> reason to <{tgt['caption']}>"
        assert t["reasoning_type"] == "commonsense" and t["subset"] == "icvg"
        mining = by_video[t["video_id"]]
        assert t["scores"]["threshold"] == mining["threshold"] and t["scores"]["floor"] == mining["floor"]
    for vid, mining in by_video.items():
        assert mining["threshold"] is not None and f"threshold {mining['threshold']:.4f}" in result.stderr
        assert mining["pairs"] == sum(t["video_id"] == vid for t in triplets)

    # Hold-out: whole videos on one side, both sides used.
    splits = {vid: {t["split"] for t in triplets if t["video_id"] == vid} for vid in by_video}
    assert all(len(s) == 1 for s in splits.values()) and {*splits["f0"], *splits["f1"]} == {"train", "test"}
    assert summary["test"] == sum(t["split"] == "test" for t in triplets)
    assert summary["test_fraction"] == pytest.approx(summary["test"] / len(triplets)) and summary["holdout"] == 0.5
    assert f"in the test split ({summary['test_fraction']:.3f} of them for --holdout 0.5" in result.stderr

    # The pairs are exactly those of the library pipeline on the same clips and captions.
    from vidcli.backends.embed import Embedder
    from vidcli.mining.embed import ClipEmbedder
    from vidcli.mining.pairs import mine_pairs
    from vidcli.mining.shots import Clip, clips_from_shots, detect_shots

    text = Embedder()
    for name, (film, _) in films.items():
        clips = [Clip(c.video, c.start, c.end, f"In {name}, " + film.captions[scene_at(film, c.start, c.end)])
                 for c in clips_from_shots(str(film.path), detect_shots(film.path), min_duration=1.0)]
        expected, (rep,) = mine_pairs(clips, ClipEmbedder(siglip).embed_clips(clips),
                                      text.embed([c.caption for c in clips]).numpy())
        got = [t for t in triplets if t["source"]["video"] == str(film.path)]
        assert [(t["source"]["start"], t["target"]["start"]) for t in got] == \
            [(t["source"]["start"], t["target"]["start"]) for t in expected]
        for g, e in zip(got, expected):
            assert g["scores"] == pytest.approx(e["scores"], abs=1e-5)
        assert by_video[f"f{name[-1]}"]["threshold"] == pytest.approx(rep.threshold, abs=1e-6)

    # Exported clips: real files with the clip's duration and pixels.
    for t in triplets:
        for side in ("source", "target"):
            part = t[side]
            clip = load_video(part["clip"])
            assert len(clip.frames) / clip.fps == pytest.approx(part["end"] - part["start"], abs=1e-6)
            original = load_video(part["video"], start=part["start"], end=part["end"], max_frames=1000)
            assert np.abs(clip.frames.astype(float) - original.frames.astype(float)).mean() < 6


def test_bad_instruction_json_is_retried_then_recorded(films, siglip, tmp_path):
    out = tmp_path / "icvg.jsonl"
    args = ["--embedder", f"hf:{siglip}", "--video", str(films["film0"][0].path), "--video",
            str(films["film1"][0].path), "--types", "causal,emotional", "--attempts", "2",
            "--on-error", "skip", "-q", "-o", str(out)]
    with ScriptedServer(teacher(films, bad="film1")) as server:
        assert mine(server, args).exit_code == 0
        llm = [r.body for r in server.requests if r.body["model"] == "m"]
    (reject,) = read_jsonl(str(out) + ".rejects.jsonl")
    assert reject["video"] == str(films["film1"][0].path)
    assert reject["errors"][0]["stage"] == "instruction" and "after 2 attempts" in reject["errors"][0]["message"]
    triplets = read_jsonl(out)
    assert triplets and {t["source"]["video"] for t in triplets} == {str(films["film0"][0].path)}
    assert {t["reasoning_type"] for t in triplets} == {"emotional"}
    # --types reached the prompt; film1's pairs were each asked twice (once corrected).
    assert all("from: causal, emotional." in user_text(b) or "from: causal, emotional." in b["messages"][1]["content"]
               for b in llm)
    film1 = [b for b in llm if "In film1" in b["messages"][1]["content"]]
    assert film1 and sum(len(b["messages"]) > 2 for b in film1) == len(film1) / 2

    # An illegal reasoning type is retried with the reason, and then accepted.
    out2 = tmp_path / "icvg2.jsonl"
    with ScriptedServer(teacher(films, bad="first")) as server:
        assert mine(server, [*args[:-2], "--no-cache", "-o", str(out2)]).exit_code == 0
        corrections = [b["messages"][-1]["content"] for b in (r.body for r in server.requests)
                       if b["model"] == "m" and len(b["messages"]) > 2]
    assert corrections and all("reasoning_type must be one of causal, emotional" in c for c in corrections)
    assert {t["source"]["video"] for t in read_jsonl(out2)} == {str(films[n][0].path) for n in films}


def test_rave_rewrites_literal_instructions(films, tmp_path):
    film0, film1 = (str(films[n][0].path) for n in ("film0", "film1"))
    inp = write_jsonl(tmp_path / "edits.jsonl", [
        {"id": "boat", "source": {"video": film0, "start": 1.0, "end": 3.0}, "target": {"video": film1},
         "instruction": "Remove the boat."},
        {"id": "rain", "source": {"video": film1, "caption": "a dry street"},
         "target": {"video": film0, "caption": "a wet street"}, "instruction": "make the street wet"},
        {"id": "gone", "source": {"video": "missing.mp4"}, "target": {"video": film0}, "instruction": "x"},
    ])

    def answer(body):
        text = body["messages"][-1]["content"] if len(body["messages"]) > 2 else user_text(body)
        first = body["messages"][1]["content"]
        assert '- [physical] literal: "melt the snowman"' in first  # the examples reach the prompt
        assert "[temporal]" not in first  # --types keeps only the chosen types' examples
        literal = re.search(r'cue:\n"""(.*?)"""', first).group(1)
        if literal == "Remove the boat." and len(body["messages"]) == 2:
            return json.dumps({"reasoning_type": "semantic", "instruction": "Please remove the boat now."})
        assert "cannot be used" not in text or "repeats the literal command" in text
        return json.dumps({"reasoning_type": "physical" if literal == "make the street wet" else "semantic",
                           "instruction": f"implicit cue for <{literal.replace(' ', '')}>"})

    out = tmp_path / "rave.jsonl"
    with ScriptedServer(answer) as server:
        result = invoke(["mine-triplets", "--mode", "rave", "--llm", "openai:m", "--base-url", server.base_url,
                         "--examples", str(EXAMPLES), "--types", "spatial,physical,semantic", "--holdout", "0.5",
                         "--on-error", "skip", "-q", str(inp), "-o", str(out)])
        assert result.exit_code == 0, result.stderr
        rain_prompt = next(user_text(r.body) for r in server.requests if "make the street wet" in user_text(r.body))
        boat = [r.body["messages"] for r in server.requests if "Remove the boat." in r.body["messages"][1]["content"]]
    # The reply that repeated the literal command was re-asked with the reason.
    assert [len(m) for m in boat] == [2, 4] and "repeats the literal command" in boat[1][-1]["content"]
    assert "Before the edit the video shows: a dry street" in rain_prompt
    records = {r["id"]: r for r in read_jsonl(out)}
    assert set(records) == {"boat", "rain"}, [r["errors"] for r in read_jsonl(str(out) + ".rejects.jsonl")]
    boat, rain = records["boat"], records["rain"]
    assert boat["instruction"] == "implicit cue for <Removetheboat.>" and boat["literal_instruction"] == "Remove the boat."
    assert boat["reasoning_type"] == "semantic" and rain["reasoning_type"] == "physical"
    assert {boat["subset"], rain["subset"]} == {"rave"} and {boat["split"], rain["split"]} == {"train", "test"}
    assert (boat["source"]["start"], boat["source"]["end"]) == (1.0, 3.0)
    # A side without times is its whole video.
    assert (boat["target"]["start"], boat["target"]["end"]) == (0.0, films["film1"][0].duration_s)
    assert rain["source"]["caption"] == "a dry street"
    (reject,) = read_jsonl(str(out) + ".rejects.jsonl")
    assert reject["id"] == "gone" and "missing.mp4" in reject["errors"][0]["message"]

    # Without --on-error skip the missing video stops the run: status 1, file:line and id named.
    with ScriptedServer(answer) as server:
        failed = invoke(["mine-triplets", "--mode", "rave", "--llm", "openai:m", "--base-url", server.base_url,
                         "--examples", str(EXAMPLES), "--types", "spatial,physical,semantic", "-q", str(inp),
                         "-o", str(tmp_path / "stop.jsonl")])
    assert failed.exit_code == 1 and f"{inp}:3: id=gone: media:" in failed.stderr
    assert "stopped after 2 record(s) written" in failed.stderr
