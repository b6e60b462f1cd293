"""How the oracle reads the background of generated held-out videos: among the captions that ask for a plain
(or a striped) background, how many videos it reads so; and how many pans it reads wrong.

    python pattern_readings.py EVAL_FOLDER...   # folders with a `vidcli generate` generated.jsonl and its videos
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":
    from vidcli.media import load_video
    from vidcli.toyworld.language import read_facts
    from vidcli.toyworld.oracle import read_video

    for folder in map(Path, sys.argv[1:]):
        rows = [json.loads(line) for line in (folder / "generated.jsonl").read_text().splitlines()]
        asked_and_read = {"plain": [0, 0], "striped": [0, 0]}
        pan_wrong = 0
        for row in rows:
            facts = read_facts(row["caption"])
            pattern = {f.value for f in facts if f.kind == "background"}
            camera = {f.value for f in facts if f.kind == "camera"}
            reading = read_video(load_video(folder / row["output"]["video"]).frames)
            for kind, counts in asked_and_read.items():
                if kind in pattern:
                    counts[0] += 1
                    counts[1] += reading.pattern == kind
            pan_wrong += bool(camera) and reading.camera not in camera
        print(folder, {k: f"{read} of {asked} read as asked" for k, (asked, read) in asked_and_read.items()},
              f"camera read wrong: {pan_wrong} of {len(rows)}")
