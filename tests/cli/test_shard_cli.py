"""``--shard I/N`` end to end: N shard runs (plus the documented --merge where a command has
whole-set steps) write the same records as one unsharded run, and ask each record once."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.cli.helpers import invoke, read_jsonl, write_jsonl
from tests.cli.test_decompose import make_server
from tests.cli.test_make_cot import GOLD, answer
from tests.test_reade_reward import CONTRADICTORY, GOOD, NO_ANSWER
from vidcli.shard import Shard
from vidcli.testing.server import ScriptedServer

N = 3
MEDIA = Path(__file__).resolve().parents[2] / "examples" / "media"
RAVE_EXAMPLES = MEDIA.parent / "rave_examples.jsonl"


def canonical(records: list[dict]) -> Counter:
    """Records as a multiset of canonical JSON lines (order is not part of the contract)."""
    return Counter(json.dumps(r, sort_keys=True) for r in records)


def run_shards(args: list[str], out: Path, server: ScriptedServer | None = None, total: int | None = None):
    """Run ``args`` as shards 0/N..N-1/N into OUT.I.jsonl; returns (paths, requests per shard)."""
    paths, asked = [], []
    for i in range(N):
        if server is not None:
            server.reset()
        path = out.with_suffix(f".{i}.jsonl")
        result = invoke([*args, "--shard", f"{i}/{N}", "-o", str(path)])
        assert result.exit_code == 0, result.stderr
        took, others = map(int, re.search(rf"shard {i}/{N}: took (\d+) record\(s\); (\d+) belong to other shards",
                                          result.stderr).groups())
        assert total is None or took + others == total
        paths.append(path)
        asked.append(server.count if server is not None else 0)
    return paths, asked


def concatenated(paths: list[Path]) -> list[dict]:
    return [r for p in paths for r in read_jsonl(p)]


def test_decompose_shards_concatenate_to_the_whole(tmp_path):
    inp = write_jsonl(tmp_path / "caps.jsonl", [{"id": f"cap{i}", "caption": f"A red ball rolls, take {i}."}
                                                for i in range(10)])
    with make_server() as server:
        args = ["decompose", "--llm", "openai:m", "--base-url", server.base_url, "--no-cache", str(inp)]
        whole = invoke([*args, "-o", str(tmp_path / "whole.jsonl")])
        assert whole.exit_code == 0, whole.stderr
        asked = server.count
        parts, per_shard = run_shards(args, tmp_path / "part", server, total=10)
    records = read_jsonl(tmp_path / "whole.jsonl")
    assert len(records) == 10 and all(r["elements"] for r in records)
    assert canonical(concatenated(parts)) == canonical(records)
    assert sum(per_shard) == asked == 10 and all(per_shard)  # each record asked once, by its own shard


def cot_rows() -> list[dict]:
    camera = [{"type": "camera", "path": str(MEDIA / "camera_dolly_pan.txt")}]
    rows = [("t1", "a snowy mountain village", []), ("t2", "A snowy mountain village!", []),  # t2 duplicates t1
            ("t3", "a lighthouse in a storm", []), ("t4", "a quiet harbour at dawn", []),
            ("c1", "a quiet street at dusk", camera), ("c2", "A quiet street, at dusk", camera),  # c2 duplicates c1
            ("c3", "a sunny beach with waves", camera),  # in the evaluation set
            ("c4", "a desert road at noon", camera), ("c5", "a forest path in fog", camera),
            ("c6", "a rooftop garden", camera)]
    return [{"id": i, "instruction": t, "conditions": c, "gold": GOLD} for i, t, c in rows]


def test_make_cot_shards_then_merge_equal_the_whole(tmp_path):
    # The c1/c2 twins fall in different shards, and shard 0 (holding c2) is merged first:
    # only an order-free "first" keeps c1 in both runs.
    assert Shard(2, N).owns("c1") and Shard(0, N).owns("c2")
    inp = write_jsonl(tmp_path / "requests.jsonl", cot_rows())
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [{"id": "e1", "instruction": "A sunny beach, with waves!"}])
    filters = ["--dedup-embedder", "none", "--exclude", str(evaluation)]
    # Text-only records are balanced here only because they are asked for (the default leaves them be).
    balance = ["--balance-by", "condition_type", "--balance-groups", "camera,text", "--seed", "4"]
    with ScriptedServer(answer) as server:
        args = ["make-cot", "--llm", "openai:m", "--base-url", server.base_url, "--no-cache", *filters]
        whole = invoke([*args, *balance, str(inp), "-o", str(tmp_path / "cot.jsonl")])
        assert whole.exit_code == 0, whole.stderr
        asked = server.count
        parts, per_shard = run_shards([*args, str(inp)], tmp_path / "part", server, total=10)
    assert "removed 1 overlapping --exclude, 2 near-duplicate, 1 by --balance-by; 6 written" in whole.stderr
    # intent, alignment, supplement per record, and again without the instruction for the 6 with a camera
    assert sum(per_shard) == asked == 3 * 10 + 3 * 6
    # Shards drop the evaluation overlap but keep duplicates and groups for the merge.
    shard_ids = sorted(r["id"] for r in concatenated(parts))
    assert shard_ids == ["c1", "c2", "c4", "c5", "c6", "t1", "t2", "t3", "t4"]
    merged = invoke(["make-cot", "--merge", *filters, *balance, *map(str, parts), "-o", str(tmp_path / "merged.jsonl")])
    assert merged.exit_code == 0, merged.stderr
    assert "removed 0 overlapping --exclude, 2 near-duplicate, 1 by --balance-by; 6 written" in merged.stderr
    expected = read_jsonl(tmp_path / "cot.jsonl")
    assert {"c1", "t1"} <= {r["id"] for r in expected} and not {"c2", "t2", "c3"} & {r["id"] for r in expected}
    assert canonical(read_jsonl(tmp_path / "merged.jsonl")) == canonical(expected)


def rave_answer(body: dict) -> str:
    literal = re.search(r'cue:\n"""(.*?)"""', body["messages"][1]["content"]).group(1)
    return json.dumps({"reasoning_type": "semantic", "instruction": f"implicit cue for <{literal.replace(' ', '')}>"})


def test_mine_triplets_rave_shards_then_merge_split_like_the_whole(tmp_path):
    videos = ["ball", "squares", "scene_cut", "depth", "pose"]
    edits = [{"id": f"e{i:02d}", "instruction": f"remove object number {i}",
              "source": {"video": str(MEDIA / f"{videos[i % 5]}.mp4"), "start": 0.0, "end": 1.0},
              "target": {"video": str(MEDIA / f"{videos[(i + 1) % 5]}.mp4"), "start": 0.5, "end": 1.5}}
             for i in range(12)]
    inp = write_jsonl(tmp_path / "edits.jsonl", edits)
    holdout = ["--holdout", "0.4", "--seed", "3"]
    with ScriptedServer(rave_answer) as server:
        args = ["mine-triplets", "--mode", "rave", "--llm", "openai:m", "--base-url", server.base_url,
                "--examples", str(RAVE_EXAMPLES), "--no-cache", str(inp)]
        whole = invoke([*args, *holdout, "-o", str(tmp_path / "rave.jsonl")])
        assert whole.exit_code == 0, whole.stderr
        asked = server.count
        parts, per_shard = run_shards(args, tmp_path / "part", server, total=12)
    assert sum(per_shard) == asked == 12
    assert {r["split"] for r in concatenated(parts)} == {"train"}  # the split waits for the merge
    merged = invoke(["mine-triplets", "--merge", *holdout, *map(str, reversed(parts)),
                     "-o", str(tmp_path / "merged.jsonl")])
    assert merged.exit_code == 0, merged.stderr
    expected = read_jsonl(tmp_path / "rave.jsonl")
    assert len(expected) == 12 and {r["split"] for r in expected} == {"train", "test"}
    assert canonical(read_jsonl(tmp_path / "merged.jsonl")) == canonical(expected)


def test_interpret_shards_concatenate_to_the_whole(tmp_path):
    from vidcli.testing import ensure_tiny_models

    model = str(ensure_tiny_models(["vlm"])["vlm"])
    inp = write_jsonl(tmp_path / "requests.jsonl", [{"id": f"r{i}", "instruction": f"a quiet street, take {i}"}
                                                    for i in range(6)])
    args = ["interpret", "--model", model, "--input", str(inp), "--max-new-tokens", "6", "--batch-size", "4"]
    whole = invoke([*args, "-o", str(tmp_path / "whole.jsonl")])
    assert whole.exit_code == 0, whole.stderr
    parts, _ = run_shards(args, tmp_path / "part", total=6)
    records = read_jsonl(tmp_path / "whole.jsonl")
    assert len(records) == 6 and all(r["output"]["raw"] for r in records)
    assert canonical(concatenated(parts)) == canonical(records)


def test_score_shards_then_merge_summarise_like_the_whole(tmp_path):
    completions = [GOOD, CONTRADICTORY, NO_ANSWER]
    kinds = ["identity", "depth"]
    inp = write_jsonl(tmp_path / "in.jsonl", [
        {"id": f"r{i}", "completion": completions[i % 3], "conditions": [{"type": kinds[i % 2], "path": "x"}]}
        for i in range(9)])
    by = ["--by", "conditions.0.type"]
    args = ["score", "--metric", "format", *by, str(inp)]
    whole = invoke([*args, "--summary", str(tmp_path / "whole.json"), "-o", str(tmp_path / "whole.jsonl")])
    assert whole.exit_code == 0, whole.stderr
    parts, _ = run_shards(args, tmp_path / "part", total=9)
    records = read_jsonl(tmp_path / "whole.jsonl")
    assert canonical(concatenated(parts)) == canonical(records)
    # --merge rescores nothing (the records say so: their scores are copied as they are).
    merged = invoke(["score", "--merge", *by, "--summary", str(tmp_path / "merged.json"), *map(str, parts),
                     "-o", str(tmp_path / "merged.jsonl")])
    assert merged.exit_code == 0, merged.stderr
    assert canonical(read_jsonl(tmp_path / "merged.jsonl")) == canonical(records)
    expected, got = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("whole", "merged"))
    assert got["records"] == expected["records"] == 9 and list(got["metrics"]) == ["format"]
    assert sorted(got["groups"]) == sorted(expected["groups"]) == kinds[::-1]
    for want, have in [(expected, got)] + [(expected["groups"][k], got["groups"][k]) for k in kinds]:
        want, have = want["metrics"]["format"], have["metrics"]["format"]
        assert have["n"] == want["n"] and have["failures"] == want["failures"]
        assert have["mean"] == pytest.approx(want["mean"], abs=1e-12)
        assert have["ci95"] == pytest.approx(want["ci95"], abs=1e-12)
    assert expected["metrics"]["format"]["mean"] == pytest.approx((1.0 + 0.2 + 0.2) / 3)


@pytest.mark.parametrize("args, message", [
    (["make-cot", "--llm", "openai:m", "--shard", "0/2", "--balance-by", "condition_type"],
     "give it to the --merge run"),
    (["make-cot", "-"], "Missing option '--llm'"),
    (["make-cot", "--merge", "--shard", "0/2"], "without --shard"),
    (["mine-triplets", "--mode", "rave", "--llm", "openai:m", "--shard", "1/2", "--holdout", "0.1"],
     "give it to the --merge run"),
    (["mine-triplets", "--merge", "--resume"], "--resume does not apply"),
    (["mine-triplets", "--merge", "--report", "r.json"], "--report belong to --shard runs"),
    (["mine-triplets", "-"], "--mode and --llm are required"),
    (["score", "-"], "Missing option '--metric'"),
    (["score", "--merge", "--shard", "0/2"], "without --shard"),
    (["interpret", "--model", "m", "--text", "hi", "--shard", "0/2"], "(and so does --shard)"),
])
def test_usage_errors_exit_2(args, message):
    result = invoke(args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_merge_refuses_a_shard_given_twice(tmp_path):
    part = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "scores": {"format": 1.0}}])
    result = invoke(["score", "--merge", str(part), str(part)])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert f"{part}:1: id=a: id already read at {part}:1" in result.stderr
