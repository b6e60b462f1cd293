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
    assert rejects[0]["id"] == "2"
    assert rejects[0]["errors"] == [{"stage": "input", "message": "field 'text' must be a string"}]
    assert rejects[1]["raw"] == "{bad" and rejects[1]["rejected_from"]["line"] == 3
    assert (stats.written, stats.rejected, stats.dropped) == (2, 2, 1)


def test_fail_stops_with_located_message_and_keeps_what_was_done(tmp_path, inputs):
    out = tmp_path / "out.jsonl"
    with pytest.raises(StreamFailed) as info:
        run_records([inputs], str(out), upper, command="t", batch_size=1, progress=False)
    assert str(info.value) == f"{inputs}:2: id=2: input: field 'text' must be a string"
    # What was done waits in OUT.partial; the final name appears only for a complete run.
    assert not out.exists() and info.value.partial == str(out) + ".partial"
    assert [r["id"] for r in lines(str(out) + ".partial")] == ["1"]
    # Resuming with skip finishes the job without redoing record 1.
    seen = []

    def spy(batch):
        seen.extend(s.id for s in batch)
        return upper(batch)

    run_records([inputs], str(out), spy, command="t", resume=True, on_error="skip", progress=False)
    assert "1" not in seen
    assert [r["id"] for r in lines(out)] == ["1", "4"]
    assert not (tmp_path / "out.jsonl.partial").exists()


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


# --- what a stage leaves behind when it stops early (DESIGN.md §2) -------------------------

def _good_input(tmp_path, n=3):
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "text": f"t{i}"}) + "\n" for i in range(n)))
    return str(path)


class Boom(Exception):
    pass


@pytest.mark.parametrize("stop", ["record fails", "exception", "ctrl-c", "backend unavailable"])
def test_an_early_stop_keeps_the_earlier_output_and_leaves_a_partial(tmp_path, stop):
    from vidcli.errors import BackendUnavailable

    inp = _good_input(tmp_path)
    out = tmp_path / "out.jsonl"
    run_records([inp], str(out), upper, command="t", progress=False)
    before = out.read_bytes()
    calls = []

    def stops_on_second_batch(batch):
        calls.append(1)
        if len(calls) == 2:
            if stop == "record fails":
                return [Outcome.fail("t", "broken")]
            raise {"exception": Boom("bug"), "ctrl-c": KeyboardInterrupt(),
                   "backend unavailable": BackendUnavailable("http://h/v1: HTTP 401")}[stop]
        return upper(batch)

    expected = StreamFailed if stop in ("record fails", "backend unavailable") else (
        Boom if stop == "exception" else KeyboardInterrupt)
    with pytest.raises(expected):
        run_records([inp], str(out), stops_on_second_batch, command="t", batch_size=1, progress=False)
    assert out.read_bytes() == before  # the earlier complete output is untouched
    assert [r["id"] for r in lines(str(out) + ".partial")] == ["0"]
    # The completion record still describes the earlier, complete output.
    assert json.loads((tmp_path / "out.jsonl.vidcli.json").read_text())["complete"] is True


def test_a_completed_run_publishes_its_sidecar_with_counts(tmp_path, inputs):
    out = tmp_path / "out.jsonl"
    run_records([inputs], str(out), upper, command="t", on_error="skip", progress=False, settings={"x": 1})
    side = json.loads((tmp_path / "out.jsonl.vidcli.json").read_text())
    assert side["complete"] is True and side["command"] == "t"
    assert side["settings"] == {"x": 1, "shard": None}
    assert side["counts"] == {"records": 2, "rejected": 2, "dropped": 1}
    assert list(side["inputs"]) == [str((tmp_path / "in.jsonl").resolve())]
    assert not (tmp_path / "out.jsonl.partial").exists()
    assert not (tmp_path / "out.jsonl.partial.vidcli.json").exists()



def _partial_run(tmp_path, **kw):
    inp = _good_input(tmp_path)
    out = tmp_path / "out.jsonl"
    seen = []

    def fails_second(batch):
        seen.append(batch[0].id)
        return upper(batch) if len(seen) == 1 else [Outcome.fail("t", "broken")]

    with pytest.raises(StreamFailed):
        run_records([inp], str(out), fails_second, command="t", batch_size=1, progress=False, **kw)
    return inp, out


@pytest.mark.parametrize("change, message", [
    (dict(command="other"), "written by `vidcli t`, not `vidcli other`"),
    (dict(settings={"temperature": 1.0}), '--temperature 0.0 then, 1.0 now'),
    (dict(other_input=True), "was not an input of that run"),
])
def test_resume_refuses_another_runs_output(tmp_path, change, message):
    from vidcli.errors import InputError

    inp, out = _partial_run(tmp_path, settings={"temperature": 0.0})
    if change.get("other_input"):
        other = tmp_path / "other.jsonl"
        other.write_text('{"id":"9","text":"x"}\n')
        inp = str(other)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_records([inp], str(out), upper, command=change.get("command", "t"), resume=True, progress=False,
                    settings=change.get("settings", {"temperature": 0.0}))
    assert (tmp_path / "out.jsonl.partial").exists()  # refused: nothing touched


def test_resume_after_fixing_the_input_in_place_continues_with_a_warning(tmp_path, caplog):
    inp, out = _partial_run(tmp_path)
    with open(inp, "a") as handle:
        handle.write('{"id":"9","text":"late"}\n')
    with caplog.at_level(logging.WARNING, logger="vidcli"):
        run_records([inp], str(out), upper, command="t", resume=True, progress=False)
    assert "changed since out.jsonl.partial was started" in caplog.text
    assert [r["id"] for r in lines(out)] == ["0", "1", "2", "9"]


def test_resume_without_a_sidecar_is_refused(tmp_path):
    from vidcli.errors import InputError

    inp = _good_input(tmp_path)
    (tmp_path / "out.jsonl.partial").write_text('{"id":"0"}\n')
    with pytest.raises(InputError, match="cannot tell which run wrote it"):
        run_records([inp], str(tmp_path / "out.jsonl"), upper, command="t", resume=True, progress=False)


def test_a_missing_input_fails_before_anything_is_written(tmp_path):
    from vidcli.errors import InputError

    out = tmp_path / "out.jsonl"
    out.write_text('{"id":"old"}\n')
    with pytest.raises(InputError, match="input file not found"):
        run_records([str(tmp_path / "typo.jsonl")], str(out), upper, command="t", progress=False)
    assert out.read_text() == '{"id":"old"}\n' and not (tmp_path / "out.jsonl.partial").exists()


def test_resumed_rejects_are_retried_not_duplicated(tmp_path):
    inp = _good_input(tmp_path)
    out = tmp_path / "out.jsonl"
    run_records([inp], str(out), lambda b: [Outcome.fail("t", "no")] * len(b), command="t", on_error="skip",
                progress=False)
    assert len(lines(str(out) + ".rejects.jsonl")) == 3
    run_records([inp], str(out), upper, command="t", resume=True, on_error="skip", progress=False)
    assert len(lines(out)) == 3 and not (tmp_path / "out.jsonl.rejects.jsonl").exists()


def test_companion_folder_is_published_with_the_records(tmp_path):
    inp = _good_input(tmp_path, n=2)
    out = tmp_path / "out.jsonl"
    folder = tmp_path / "out.videos"

    def writes_files(batch):
        for src in batch:
            (tmp_path / "out.videos.partial").mkdir(exist_ok=True)
            (tmp_path / "out.videos.partial" / f"{src.id}.mp4").write_text(src.id)
        return upper(batch) if batch[0].id == "0" else [Outcome.fail("t", "broken")]

    with pytest.raises(StreamFailed):
        run_records([inp], str(out), writes_files, command="t", batch_size=1, progress=False, folder=str(folder))
    assert not folder.exists() and (tmp_path / "out.videos.partial" / "0.mp4").exists()
    run_records([inp], str(out), upper, command="t", resume=True, progress=False, folder=str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["0.mp4", "1.mp4"]
    assert not (tmp_path / "out.videos.partial").exists()


def test_stage_state_says_what_a_recipe_should_do(tmp_path):
    from vidcli.provenance import stage_state

    inp = _good_input(tmp_path)
    out = tmp_path / "out.jsonl"
    assert stage_state(out)[0] == "fresh"
    with pytest.raises(StreamFailed):
        run_records([inp], str(out), lambda b: [Outcome.fail("t", "no")], command="t", progress=False)
    assert stage_state(out)[0] == "resume"
    run_records([inp], str(out), upper, command="t", resume=True, progress=False)
    assert stage_state(out) == ("done", "complete")
    with open(inp, "a") as handle:
        handle.write('{"id":"new","text":"x"}\n')
    assert stage_state(out) == ("fresh", f"its input {inp} changed since it was written")
    run = tmp_path / "run"
    run.mkdir()
    assert stage_state(run)[0] == "resume"  # no final model yet
    (run / "vidcli.json").write_text(json.dumps({"final": True, "inputs": {inp: {"sha256": "0" * 64}}}))
    assert stage_state(run)[0] == "stale"
