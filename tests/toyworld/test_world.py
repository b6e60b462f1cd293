"""The world's records: true to their videos, deterministic, and read unchanged by the real commands."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import invoke, read_jsonl, write_jsonl
from vidcli.media import load_video
from vidcli.rewards.coverage import group_elements
from vidcli.toyworld.language import Fact, read_facts, scene_facts
from vidcli.toyworld.oracle import edit_adherence, fact_adherence, read_video
from vidcli.toyworld.scene import Scene
from vidcli.toyworld.world import write_world


def world(toy_build) -> Path:
    return toy_build[0] / "world"


def test_videos_on_disk_show_their_records_facts(toy_build):
    root = world(toy_build)
    scenes = read_jsonl(root / "scenes.jsonl")
    assert len(scenes) == 100 and {r["split"] for r in scenes} == {"train", "test"}
    for record in scenes:
        facts = [Fact.from_dict(f) for f in record["facts"]]
        assert facts == scene_facts(Scene.from_dict(record["scene"]))
        assert read_facts(record["caption"]) == set(facts)
        reading = read_video(load_video(root / record["video"]).frames)
        assert fact_adherence(facts, reading)["score"] == 1.0, record["id"]


def test_edit_triplets_show_their_edits(toy_build):
    root = world(toy_build)
    triplets = read_jsonl(root / "triplets.jsonl")
    assert {t["edit"]["kind"] for t in triplets} == {"colour", "reverse", "remove", "add"}
    for t in triplets[:40]:
        target, changed = Scene.from_dict(t["edit"]["target_scene"]), [Fact.from_dict(f) for f in t["edit"]["changed"]]
        edited = load_video(root / t["target"]["video"]).frames
        assert edit_adherence(edited, target, changed)["score"] == 1.0, t["id"]
        source = load_video(root / t["source"]["video"]).frames
        assert edit_adherence(source, target, changed)["accuracy"] == 0.0, t["id"]
        assert t["literal_instruction"] not in t["instruction"]
        assert t["reasoning_type"] in ("semantic", "temporal", "spatial", "physical") and t["subset"] == "rave"


def test_key_info_elements_read_back_as_facts(toy_build):
    for record in read_jsonl(world(toy_build) / "requests.jsonl"):
        scene_id = record["scene_id"]
        everything = set().union(*[read_facts(e) for e in group_elements(record["key_info"]["imaginative"])])
        assert everything == read_facts(record["gold"]["dense"]), scene_id
        user = set().union(*[read_facts(e) for e in group_elements(record["key_info"]["user"])])
        assert user == read_facts(record["instruction"]) and user <= everything
        camera = [c for c in record["conditions"] if c["type"] == "camera"]
        assert bool(camera) == bool(record["key_info"]["supplementary"]["camera"])


def test_a_seed_gives_the_same_world_and_scene_i_does_not_depend_on_size(tmp_path):
    write_world(tmp_path / "a", seed=3, count=4)
    write_world(tmp_path / "b", seed=3, count=4)
    write_world(tmp_path / "c", seed=3, count=6)
    for name in ("scenes.jsonl", "requests.jsonl", "triplets.jsonl", "drf.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert read_jsonl(tmp_path / "c" / name)[:2] == read_jsonl(tmp_path / "a" / name)[:2]
    write_world(tmp_path / "d", seed=4, count=4)
    other = read_jsonl(tmp_path / "d" / "scenes.jsonl")
    assert [r["scene"] for r in other] != [r["scene"] for r in read_jsonl(tmp_path / "a" / "scenes.jsonl")]


def test_decompose_reproduces_the_worlds_elements_and_key_info(toy_build, toy_judge, tmp_path):
    root = world(toy_build)
    scenes = write_jsonl(tmp_path / "captions.jsonl",
                         [{k: r[k] for k in ("id", "caption")} for r in read_jsonl(root / "scenes.jsonl")[:20]])
    out = tmp_path / "drf.jsonl"
    result = invoke(["decompose", "--schema", "drf", "--llm", "openai:toy", "--base-url", toy_judge, str(scenes),
                     "-o", str(out)], env={"OPENAI_API_KEY": "x"})
    assert result.exit_code == 0, result.stderr
    truth = {r["id"]: r for r in read_jsonl(root / "drf.jsonl")}
    for record in read_jsonl(out):
        assert record["elements"] == truth[record["id"]]["elements"]
        ta = [q for q in record["questions"] if q["dim"] == "TA"]
        assert ta == [q for q in truth[record["id"]]["questions"] if q["dim"] == "TA"]
    # A new file elsewhere: its camera conditions point into the world's media folder.
    requests = write_jsonl(tmp_path / "requests.jsonl", [
        {"id": r["id"], "instruction": r["instruction"], "gold": r["gold"],
         "conditions": [dict(c, path=str(root / c["path"])) for c in r["conditions"]]}
        for r in read_jsonl(root / "requests.jsonl")[:20]])
    out = tmp_path / "keyinfo.jsonl"
    result = invoke(["decompose", "--schema", "reade", "--llm", "openai:toy", "--base-url", toy_judge,
                     str(requests), "-o", str(out)], env={"OPENAI_API_KEY": "x"})
    assert result.exit_code == 0, result.stderr
    truth = {r["id"]: r["key_info"] for r in read_jsonl(root / "requests.jsonl")}
    assert all(r["key_info"] == truth[r["id"]] for r in read_jsonl(out))


def test_make_cot_read_the_requests_and_kept_the_gold_answers(toy_build):
    from vidcli.interpreter.format import parse_output

    root = toy_build[0]
    requests = {r["id"]: r for r in read_jsonl(root / "world" / "requests.train.jsonl")}
    cot = read_jsonl(root / "interpreter" / "cot.jsonl")
    assert len(cot) == toy_build[1]["stages"]["cot"]["records"] > 20
    for record in cot:
        parsed = parse_output(record["cot"]["target"])
        assert parsed.caption.parts == requests[record["id"]]["gold"]
        said = read_facts(record["instruction"] + " " + record["cot"]["steps"]["alignment"])
        added = read_facts(record["cot"]["steps"]["supplement"])
        assert added | said >= read_facts(record["gold"]["dense"])
        # the supplement states only what was missing (naming an object again is no new fact)
        assert not {f for f in added & said if f.kind != "object"}


def test_score_reads_requests_with_completions_exactly(toy_build, toy_judge, tmp_path):
    from vidcli.interpreter.format import build_target

    root = world(toy_build)
    records = []
    for r in read_jsonl(root / "requests.test.jsonl")[:6]:
        gold = dict(r["gold"])
        records.append({**r, "id": r["id"] + "-gold", "completion": build_target("I follow the request.", gold)})
        gold["background"], gold["dense"] = "a plain grey wall", gold["main_object"] + "."
        records.append({**r, "id": r["id"] + "-thin", "completion": build_target("I keep it short.", gold)})
    data = write_jsonl(tmp_path / "outputs.jsonl", records)
    out = tmp_path / "scored.jsonl"
    result = invoke(["score", "--metric", "format,coverage", "--judge", "openai:toy", "--base-url", toy_judge,
                     str(data), "-o", str(out)], env={"OPENAI_API_KEY": "x"})
    assert result.exit_code == 0, result.stderr
    for record in read_jsonl(out):
        scores = record["scores"]
        assert scores["format"] == 1.0 and scores["contra"] == 0.0 and scores["user"] == 1.0
        # R_user, R_detail, R_supp cover U, S, Z (SPEC §5); S is empty (n/a) without conditions
        assert scores["detail"] == (1.0 if record["conditions"] else None)
        everything = len(group_elements(record["key_info"]["imaginative"]))
        if record["id"].endswith("-gold"):
            assert scores["supp"] == 1.0
        else:  # the background is gone: its name, tone and pattern, three elements of Z
            assert scores["supp"] == pytest.approx((everything - 3) / everything)


def test_revise_tune_reads_the_triplets(toy_build, tmp_path):
    from vidcli.testing import ensure_tiny_models
    from vidcli.train.core import OptimConfig, RunConfig
    from vidcli.train.revise import ReviseConfig, load_triplets

    root = world(toy_build)
    paths = ensure_tiny_models(["wan", "vlm"])
    config = ReviseConfig(run=RunConfig(output_dir=tmp_path / "out", optim=OptimConfig()), model=str(paths["wan"]),
                          vlm=str(paths["vlm"]), inputs=[str(root / "triplets.train.jsonl")], height=32, width=32,
                          frames=9)
    triplets, _ = load_triplets(config)
    expected = read_jsonl(root / "triplets.train.jsonl")
    assert [t.id for t in triplets] == [r["id"] for r in expected]
    assert all(t.source.end == pytest.approx(9 / 8) for t in triplets)
    broken = write_jsonl(tmp_path / "broken.jsonl", [dict(expected[0], source=dict(expected[0]["source"],
                                                                                   video="media/missing.mp4"))])
    result = invoke(["revise-tune", "--objective", "sft", "--model", str(paths["wan"]), "--vlm", str(paths["vlm"]),
                     str(broken), "-o", str(tmp_path / "run"), "--height", "32", "--width", "32", "--frames", "9"])
    assert result.exit_code == 1 and "source video not found" in result.stderr
