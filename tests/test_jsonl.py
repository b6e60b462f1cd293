import io
import json
import sys

import pytest

from vidcli.errors import InputError
from vidcli.jsonl import RecordWriter, existing_ids, parse_line, read_sources, repair_torn_tail
from vidcli.records import choice_field, content_id, field_of, text_field


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_ids_are_generated_stably_and_kept_when_present(tmp_path):
    path = write(tmp_path / "in.jsonl", '{"caption": "a cat", "n": 1}\n\n{"id": "x1", "caption": "dog"}\n')
    sources = list(read_sources([path]))
    assert [s.line for s in sources] == [1, 3]  # blank line skipped, numbering kept
    assert sources[0].id == content_id({"n": 1, "caption": "a cat"})  # key order irrelevant
    assert sources[1].id == "x1"
    assert sources[0].record["n"] == 1  # other fields pass through


def test_bad_lines_carry_a_located_error(tmp_path):
    path = write(tmp_path / "in.jsonl", '{"id": "a"}\n{broken\n[1, 2]\n{"id": 7}\n{"id": "a"}\n')
    sources = list(read_sources([path]))
    errors = [str(s.error) for s in sources]
    assert errors[0] == "None"
    assert errors[1].startswith(f"{path}:2: not valid JSON")
    assert errors[2] == f"{path}:3: expected a JSON object, got list"
    assert errors[3] == f"{path}:4: field 'id' must be a non-empty string, got 7"
    assert errors[4] == f"{path}:5: id=a: duplicate id in input"


def test_missing_input_and_non_utf8_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="input file not found"):
        list(read_sources([str(tmp_path / "nope.jsonl")]))
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"id": "a"}\n{"caption": "caf\xe9"}\n')
    sources = list(read_sources([str(bad)]))
    assert sources[0].error is None
    assert str(sources[1].error) == f"{bad}:2: line is not UTF-8 text (byte 17)"


def test_writer_is_atomic_until_close(tmp_path):
    out = tmp_path / "out.jsonl"
    writer = RecordWriter(str(out))
    writer.write({"id": "a", "text": "héllo"})
    assert not out.exists() and (tmp_path / "out.jsonl.partial").exists()
    writer.close()
    assert out.read_text(encoding="utf-8") == '{"id":"a","text":"héllo"}\n'
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_resume_repairs_torn_line_and_knows_done_ids(tmp_path):
    partial = tmp_path / "out.jsonl.partial"
    partial.write_bytes(b'{"id":"a"}\n{"id":"b"}\n{"id":"c","tex')
    writer = RecordWriter(str(tmp_path / "out.jsonl"), resume=True)
    assert writer.done_ids == {"a", "b"}
    writer.write({"id": "c"})
    writer.close()
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b", "c"]


def test_resume_from_a_finished_file(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id":"a"}\n')
    with RecordWriter(str(out), resume=True) as writer:
        assert writer.done_ids == {"a"}
        writer.write({"id": "b"})
    assert out.read_text() == '{"id":"a"}\n{"id":"b"}\n'


def test_repair_torn_tail_handles_long_lines(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b'{"id":"a"}\n' + b"x" * 200_000)
    assert repair_torn_tail(path) == 200_000
    assert path.read_bytes() == b'{"id":"a"}\n'
    assert existing_ids(path) == {"a"}
    path.write_bytes(b"y" * 10)  # no complete line at all
    repair_torn_tail(path)
    assert path.read_bytes() == b""


def test_stdout_writer_refuses_resume():
    with pytest.raises(InputError, match="--resume needs an output file"):
        RecordWriter("-", resume=True)


def test_parse_line_never_raises():
    assert parse_line("null", file="f", line=1).error is not None
    assert parse_line('"s"', file="f", line=1).error is not None
    assert parse_line('{"id": ""}', file="f", line=1).error is not None


def test_record_field_validators_say_which_field_and_what_it_holds():
    record = {"caption": "  ", "target": "a fox", "cot": [], "subset": "rave", "n": 3}
    assert text_field(record, "target") == "a fox"
    assert text_field(record, "caption", "target") == "a fox"  # the first that holds text
    with pytest.raises(InputError, match=r"^missing or empty 'caption' \(the generation prompt\)$"):
        text_field(record, "caption", hint="the generation prompt")
    with pytest.raises(InputError, match=r"^missing or empty 'instruction'$"):
        text_field(record, "instruction")
    with pytest.raises(InputError, match=r"^missing or empty 'caption' or 'text' \(the text to learn\)$"):
        text_field(record, "caption", "text", hint="the text to learn")
    assert field_of(record, "n", int) == 3
    for name in ("cot", "absent"):  # of another type, or absent
        with pytest.raises(InputError, match=rf"^missing field '{name}' \(records from vidcli make-cot\)$"):
            field_of(record, name, dict, hint="records from vidcli make-cot")
    with pytest.raises(InputError, match=r"^missing field 'caption'$"):
        field_of(record, "caption", str)  # blank text counts as missing
    assert choice_field(record, "subset", ("icvg", "rave")) == "rave"
    assert choice_field(record, "absent", ("icvg", "rave")) is None
    with pytest.raises(InputError, match=r"^field 'subset' must be one of icvg, other, got 'rave'$"):
        choice_field(record, "subset", ("icvg", "other"))
