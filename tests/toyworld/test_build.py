"""The build's cache: keyed, skipping what is done, never clearing a folder it did not write."""
from __future__ import annotations

import json

import pytest

from vidcli.toyworld.build import STAGES, build, build_key


def test_the_key_names_seed_and_size():
    keys = {build_key(seed=0, quick=True), build_key(seed=1, quick=True), build_key(seed=0, quick=False)}
    assert len(keys) == 3 and build_key(seed=0, quick=True) == build_key(seed=0, quick=True)


def test_stages_done_under_the_key_are_not_run_again(tmp_path):
    done = {"key": build_key(seed=5, quick=True), "seed": 5, "quick": True,
            "stages": {name: {"seconds": 0.0} for name, _ in STAGES}}
    (tmp_path / "build.json").write_text(json.dumps(done))
    assert build(tmp_path, seed=5, quick=True) == done
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.json"]  # nothing was written


def test_another_keys_build_is_cleared_and_an_unrelated_folder_refused(tmp_path, monkeypatch):
    from vidcli.toyworld import build as module

    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "build.json").write_text(json.dumps({"key": "old", "stages": {}}))
    (stale / "leftover.txt").write_text("from an older build")
    monkeypatch.setattr(module, "STAGES", STAGES[:1])  # only the world stage: quick to run
    report = build(stale, seed=5, quick=True)
    assert list(report["stages"]) == ["world"] and not (stale / "leftover.txt").exists()
    assert (stale / "world" / "requests.jsonl").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="holds no toy-world build"):
        build(mine, seed=5, quick=True)
    assert (mine / "notes.txt").read_text() == "keep me"
