import json
import logging

import pytest

from vidcli.jsonl import Source
from vidcli.stream import Outcome, StreamFailed, run_records


def upper(batch: list[Source]) -> list[Outcome]:
    out = []
    for src in batch:
        text = src.record.get("text")
        if not isinstance(text, str):
            out.append(Outcome.fail("input", "field 'text' must be a string"))
        elif text == "drop":
            out.append(Outcome.drop("asked to"))
        else:
            out.append(Outcome.ok({**src.record, "upper": text.upper()}))
    return out


def lines(path):
    return [json.loads(x) for x in open(path, encoding="utf-8")]


@pytest.fixture
def inputs(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id":"1","text":"a","extra":{"k":[1]}}\n{"id":"2","text":5}\n{bad\n{"id":"3","text":"drop"}\n{"id":"4","text":"d"}\n')
    return str(path)


def test_skip_writes_good_records_in_order_and_rejects_the_rest(tmp_path, inputs):
    out = str(tmp_path / "out.jsonl")
    stats = run_records([inputs], out, upper, command="t", batch_size=2, on_error="skip", progress=False)
    assert [r["id"] for r in lines(out)] == ["1", "4"]
    assert lines(out)[0] == {"id": "1", "text": "a", "extra": {"k": [1]}, "upper": "A"}
    rejects = lines(out + ".rejects.jsonl")
    assert rejects[0]["id"] == "2" and rejects[0]["errors"] == [{"stage": "input", "message": "field 'text' must be a string"}]
    assert rejects[1]["raw"] == "{bad" and rejects[1]["source"]["line"] == 3
    assert (stats.written, stats.rejected, stats.dropped) == (2, 2, 1)


def test_fail_stops_with_located_message_and_keeps_what_was_done(tmp_path, inputs):
    out = tmp_path / "out.jsonl"
    with pytest.raises(StreamFailed) as info:
        run_records([inputs], str(out), upper, command="t", batch_size=1, progress=False)
    assert str(info.value) == f"{inputs}:2: id=2: input: field 'text' must be a string"
    assert [r["id"] for r in lines(out)] == ["1"]
    # Resuming with skip finishes the job without redoing record 1.
    seen = []

    def spy(batch):
        seen.extend(s.id for s in batch)
        return upper(batch)

    run_records([inputs], str(out), spy, command="t", resume=True, on_error="skip", progress=False)
    assert "1" not in seen
    assert [r["id"] for r in lines(out)] == ["1", "4"]


def test_fresh_run_removes_stale_rejects(tmp_path, inputs):
    out = str(tmp_path / "out.jsonl")
    stale = tmp_path / "out.jsonl.rejects.jsonl"
    stale.write_text('{"id":"old"}\n')
    good = tmp_path / "good.jsonl"
    good.write_text('{"id":"1","text":"a"}\n')
    run_records([str(good)], out, upper, command="t", on_error="skip", progress=False)
    assert not stale.exists()
