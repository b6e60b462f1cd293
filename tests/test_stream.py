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
    assert rejects[1]["raw"] == "{bad" and rejects[1]["rejected_from"]["line"] == 3
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


class FakeTTY:
    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_goes_to_a_terminal_stderr_only(tmp_path, monkeypatch, capsysbinary):
    good = tmp_path / "good.jsonl"
    good.write_text('{"id":"1","text":"a"}\n{"id":"2","text":"b"}\n')
    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    run_records([str(good)], "-", upper, command="t", progress=True)
    out = capsysbinary.readouterr().out.decode()
    assert [json.loads(x)["id"] for x in out.splitlines()] == ["1", "2"]  # stdout: data only
    assert "2rec" in "".join(tty.parts).replace(" ", "")  # the bar drew on stderr

    quiet = FakeTTY()
    monkeypatch.setattr("sys.stderr", quiet)
    run_records([str(good)], "-", upper, command="t", progress=False)
    assert quiet.parts == []


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path, monkeypatch):
    import io

    good = tmp_path / "good.jsonl"
    good.write_text('{"id":"1","text":"a"}\n')
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    run_records([str(good)], str(tmp_path / "o.jsonl"), upper, command="t", progress=True)
    assert pipe.getvalue() == ""
