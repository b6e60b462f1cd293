"""How much the toy-world report's evaluations gain from `vidcli generate --batch-size` and `--fold-text-padding`.

Usage: ``python tests/bench/bench_toyworld_generate.py BUILD [--count 48] [--batch 8]``, BUILD a toy-world
build folder (``python -m vidcli.toyworld build DIR``; the full one is what the report evaluates).

Runs the report's two kinds of `vidcli generate` side by side on the same records, one at a time and
``--batch`` at a time, each as its own command on one thread (as the report runs them): the generator on
the world's held-out DRF captions and the editor on its held-out triplets, 20 steps, guidance 5. Prints
each command's wall time and the ratio; a command of one record gives the start-up (imports, loading),
so that a video's own time is also printed; and how many videos came out identical to the last bit (the
noise is seeded per record; batched arithmetic rounds differently). Then the batched command again with
``--fold-text-padding`` (as the report runs it): its time beside the padded one's, the ratio, and how many
videos came out identical to the padded batch's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _records(path: Path, count: int, world: Path, edit: bool) -> list[dict]:
    rows = [json.loads(line) for line in path.open(encoding="utf-8")][:count]
    if not edit:
        return [{"id": r["id"], "caption": r["caption"]} for r in rows]
    for row in rows:  # the world's media paths are relative to the world
        for part in ("source", "target"):
            row[part] = dict(row[part], video=str(world / row[part]["video"]))
    return rows


def _generate(model: Path, records: Path, out: Path, batch: int, *extra: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vidcli", "generate", "-q", "--model", str(model), str(records),
                    "-o", str(out), "--steps", "20", "--guidance", "5", "--num-frames", "9", "--height", "32",
                    "--width", "32", "--seed", "0", "--batch-size", str(batch), *extra],
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - start


def _identical(one: Path, many: Path) -> int:
    from vidcli.media import load_video

    first = {r["id"]: r for r in map(json.loads, one.open(encoding="utf-8"))}
    same = 0
    for record in map(json.loads, many.open(encoding="utf-8")):
        a = load_video(many.parent / record["output"]["video"]).frames
        b = load_video(one.parent / first[record["id"]]["output"]["video"]).frames
        same += int((a == b).all())
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path)
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    if args.count < 2 or args.batch < 1:
        parser.error("--count must be at least 2 (one record gives the start-up) and --batch at least 1")
    world = args.build / "world"
    cases = [("generator", "drf.test.jsonl", False), ("editor", "triplets.test.jsonl", True)]
    with tempfile.TemporaryDirectory() as tmp:
        for model, split, edit in cases:
            folder = Path(tmp) / model
            folder.mkdir()
            records = folder / "records.jsonl"
            rows = _records(world / split, args.count, world, edit)
            records.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            single = folder / "single.jsonl"  # one record: the command's start-up and one video
            single.write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
            start = _generate(args.build / model, single, folder / "single-out.jsonl", 1)
            one = _generate(args.build / model, records, folder / "one.jsonl", 1)
            many = _generate(args.build / model, records, folder / "many.jsonl", args.batch)
            same = _identical(folder / "one.jsonl", folder / "many.jsonl")
            # A video's own time: the command's, less that of the one-record command, over the other videos.
            each_one, each_many = (one - start) / (len(rows) - 1), (many - start) / (len(rows) - 1)
            print(f"{model}: {len(rows)} videos, one at a time {one:.1f} s, {args.batch} at a time {many:.1f} s, "
                  f"ratio {many / one:.2f}; one record {start:.1f} s; a video's own time {each_one:.2f} s → "
                  f"{each_many:.2f} s, ratio {each_many / each_one:.2f}; identical videos {same} of {len(rows)}",
                  flush=True)
            folded = _generate(args.build / model, records, folder / "folded.jsonl", args.batch, "--fold-text-padding")
            same = _identical(folder / "many.jsonl", folder / "folded.jsonl")
            each_folded = (folded - start) / (len(rows) - 1)
            print(f"{model}: {args.batch} at a time, text padding folded {folded:.1f} s against {many:.1f} s, ratio "
                  f"{folded / many:.2f}; a video's own time {each_many:.2f} s → {each_folded:.2f} s, ratio "
                  f"{each_folded / each_many:.2f}; identical videos {same} of {len(rows)}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
