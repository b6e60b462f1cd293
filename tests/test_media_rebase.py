"""Relative media paths keep pointing at the same files when a stage writes elsewhere."""
from __future__ import annotations

import json
import os

from vidcli.records import absolutize_media
from vidcli.stream import Outcome, run_records


def _record():
    return {"id": "r", "video": "media/a.mp4", "caption": "media/not-a-path.mp4",
            "conditions": [{"type": "depth", "path": "media/d.mp4"}, {"type": "camera", "path": "/abs/c.txt"}],
            "source": {"video": "clips/s.mp4", "start": 1.0}, "target": {"video": "../up.mp4"},
            "output": {"prompt": "p", "video": "gen/r.mp4"}}


def test_absolutize_media_touches_only_relative_media_paths(tmp_path):
    record = _record()
    absolutize_media(record, str(tmp_path))
    assert record["video"] == str(tmp_path / "media/a.mp4")
    assert record["caption"] == "media/not-a-path.mp4"  # not a media field
    assert record["conditions"][0]["path"] == str(tmp_path / "media/d.mp4")
    assert record["conditions"][1]["path"] == "/abs/c.txt"
    assert record["source"] == {"video": str(tmp_path / "clips/s.mp4"), "start": 1.0}
    assert record["target"]["video"] == "../up.mp4"  # escapes: the reader decides (--allow-escape)
    assert record["output"]["video"] == str(tmp_path / "gen/r.mp4")


def _run(inputs, output, **kwargs):
    return run_records(inputs, output, lambda batch: [Outcome.ok(s.record) for s in batch],
                       command="test", progress=False, **kwargs)


def test_stream_rebases_only_when_the_output_folder_differs(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.jsonl").write_text(json.dumps(_record()) + "\n")
    _run([str(data / "in.jsonl")], str(data / "same.jsonl"))
    assert json.loads((data / "same.jsonl").read_text()) == _record()

    (tmp_path / "out").mkdir()
    _run([str(data / "in.jsonl")], str(tmp_path / "out" / "moved.jsonl"))
    moved = json.loads((tmp_path / "out" / "moved.jsonl").read_text())
    assert moved["video"] == str(data / "media/a.mp4")
    assert moved["conditions"][0]["path"] == str(data / "media/d.mp4")

    _run([str(data / "in.jsonl")], str(tmp_path / "out" / "rooted.jsonl"), media_root=str(tmp_path))
    assert json.loads((tmp_path / "out" / "rooted.jsonl").read_text()) == _record()

    monkeypatch.chdir(data)  # stdout's folder is the working directory: same folder, nothing changes
    _run(["in.jsonl"], str(data / "again.jsonl"))
    assert json.loads((data / "again.jsonl").read_text())["video"] == "media/a.mp4"
    assert os.path.isabs(moved["source"]["video"])
