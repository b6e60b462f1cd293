"""``--shard I/N``: which records a shard owns, and how the stream and --merge use that."""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter

import click
import pytest

from tests.cli.helpers import invoke, read_jsonl, write_jsonl
from vidcli.commands.make_cot import generated_path_for
from vidcli.errors import InputError
from vidcli.shard import Shard, ShardParam, check_merge, read_shard_outputs
from vidcli.stream import Outcome, rejects_path_for, run_records

IDS = [f"clip-{i:05d}" for i in range(3000)]


def test_every_id_has_exactly_one_owner_and_shards_are_balanced():
    for count in (1, 2, 3, 7):
        shards = [Shard(i, count) for i in range(count)]
        owners = [[s.index for s in shards if s.owns(rid)] for rid in IDS]
        assert all(len(o) == 1 for o in owners)  # disjoint and covering
        sizes = Counter(o[0] for o in owners)
        expected = len(IDS) / count
        assert all(abs(sizes[i] - expected) < 0.1 * expected for i in range(count)), sizes


def test_owner_is_sha256_of_the_id_modulo_n():
    # Hand-computed: the first 8 bytes of SHA-256 as a big-endian integer, modulo N.
    for rid in ("ball", "squares", "cut", "été"):
        value = int.from_bytes(hashlib.sha256(rid.encode("utf-8")).digest()[:8], "big")
        assert [Shard(i, 5).owns(rid) for i in range(5)] == [value % 5 == i for i in range(5)]
    # Stable: a fixed id keeps its fixed owner (a change here would re-split every dataset).
    assert [i for i in range(4) if Shard(i, 4).owns("ball")] == [
        int(hashlib.sha256(b"ball").hexdigest()[:16], 16) % 4]


def test_lines_without_a_usable_id_are_owned_by_file_and_line():
    for bad_id in (None, 5, ""):
        owners = [i for i in range(3) if Shard(i, 3).owns(bad_id, "in.jsonl", 7)]
        assert owners == [i for i in range(3) if Shard(i, 3).owns_key("in.jsonl:7")] and len(owners) == 1


@pytest.mark.parametrize("text", ["0/1", "2/3", "7/8"])
def test_parse_accepts_i_of_n(text):
    shard = Shard.parse(text)
    assert str(shard) == text and 0 <= shard.index < shard.count


@pytest.mark.parametrize("text", ["3/3", "-1/3", "1/0", "a/b", "1", "", "1/2/3", "0/-2"])
def test_parse_rejects_everything_else(text):
    with pytest.raises(ValueError, match=r"expected I/N with 0 <= I < N \(e\.g\. 0/4\), got"):
        Shard.parse(text)
    with pytest.raises(click.BadParameter):
        ShardParam().convert(text, None, None)


@pytest.mark.parametrize("command", [
    ["decompose", "--llm", "openai:m"], ["make-cot", "--llm", "openai:m"],
    ["mine-triplets", "--mode", "rave", "--llm", "openai:m"], ["interpret", "--model", "m", "--input", "x.jsonl"],
    ["score", "--metric", "format"],
])
def test_bad_shard_is_a_usage_error_naming_the_value(command):
    result = invoke([*command, "--shard", "3/3", "in.jsonl"])
    assert result.exit_code == 2
    assert "Invalid value for '--shard'" in result.stderr and "got '3/3'" in result.stderr
    assert "Traceback" not in result.stderr
    # The job array's environment variable works too (and is checked the same way).
    result = invoke([*command, "in.jsonl"], env={"VIDCLI_SHARD": "4/2"})
    assert result.exit_code == 2 and "got '4/2'" in result.stderr


def echo(batch):
    return [Outcome.fail("input", "text must be a string") if not isinstance(s.record.get("text"), str)
            else Outcome.ok({**s.record, "seen": True}) for s in batch]


def test_stream_splits_records_and_reports_each_bad_line_once(tmp_path, caplog):
    lines = [{"id": f"r{i}", "text": str(i)} for i in range(30)]
    lines += ["{not json", "[1, 2]", '{"id": 5}', {"id": "r3", "text": "duplicate"}, {"id": "nt", "text": 1},
              {"text": "no id: a content hash is its id"}]
    inp = str(write_jsonl(tmp_path / "in.jsonl", lines))
    whole = tmp_path / "whole.jsonl"
    run_records([inp], str(whole), echo, command="t", batch_size=4, on_error="skip", progress=False)
    written, rejected, took = [], [], 0
    for i in range(3):
        out = tmp_path / f"part{i}.jsonl"
        with caplog.at_level(logging.INFO, logger="vidcli"):
            caplog.clear()
            stats = run_records([inp], str(out), echo, command="t", batch_size=4, on_error="skip", progress=False,
                                shard=Shard(i, 3))
        assert stats.read + stats.other_shards == len(lines)
        assert f"shard {i}/3: took {stats.read} record(s); {stats.other_shards} belong to other shards" in caplog.text
        took += stats.read
        written += read_jsonl(out)
        rejected += read_jsonl(str(out) + ".rejects.jsonl") if stats.rejected else []
    assert took == len(lines)

    def canonical(records):
        return Counter(json.dumps(r, sort_keys=True) for r in records)

    assert canonical(written) == canonical(read_jsonl(whole)) and len(written) == 31
    # Five bad lines (bad JSON, not an object, bad id, duplicate id, bad field), each rejected by one shard only.
    assert canonical(rejected) == canonical(read_jsonl(str(whole) + ".rejects.jsonl")) and len(rejected) == 5


def test_side_files_of_stdout_runs_are_named_per_shard():
    assert rejects_path_for("-", "score", Shard(1, 3)) == "vidcli-score.shard-1-of-3.rejects.jsonl"
    assert rejects_path_for("-", "score") == "vidcli-score.rejects.jsonl"
    assert rejects_path_for("out.jsonl", "score", Shard(1, 3)) == "out.jsonl.rejects.jsonl"
    assert generated_path_for("-", Shard(2, 4)) == "vidcli-make-cot.shard-2-of-4.generated.jsonl"
    assert generated_path_for("cot.jsonl", Shard(2, 4)) == "cot.jsonl.generated.jsonl"


def test_read_shard_outputs_refuses_repeats_and_rejects(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": "1"}, {"id": "2"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"id": "3"}])
    assert [r["id"] for r in read_shard_outputs([str(b), str(a)])] == ["3", "1", "2"]
    with pytest.raises(InputError) as info:
        read_shard_outputs([str(a), str(b), str(a)])
    assert str(info.value) == (f"{a}:1: id=1: id already read at {a}:1: a shard output (or its "
                               ".generated.jsonl) given twice?")
    rejects = write_jsonl(tmp_path / "a.jsonl.rejects.jsonl",
                          [{"id": "9", "errors": [], "rejected_from": {"file": "in.jsonl", "line": 4}}])
    with pytest.raises(InputError, match="a rejected record"):
        read_shard_outputs([str(a), str(rejects)])
    with pytest.raises(InputError, match="not valid JSON"):
        read_shard_outputs([str(write_jsonl(tmp_path / "c.jsonl", ["{oops"]))])


def test_merge_runs_once_over_finished_outputs():
    check_merge(True, None, False)
    check_merge(False, Shard(0, 2), True)
    with pytest.raises(click.UsageError, match="without --shard"):
        check_merge(True, Shard(0, 2), False)
    with pytest.raises(click.UsageError, match="--resume does not apply"):
        check_merge(True, None, True)
