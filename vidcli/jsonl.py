"""Reading and writing JSONL record streams.

Reading: every line becomes a :class:`Source` that knows its file and line number, so
any later error can name both. A line that is not a JSON object is not skipped silently:
it becomes a Source carrying an :class:`InputError`, and the caller decides (fail or
reject).

Writing: :class:`RecordWriter` never lets a later stage read half a record. Output goes
to ``OUT.partial`` one complete line at a time (flushed) and is renamed to ``OUT`` only
when the run completed every record it owns. A run that stops early (an error, Ctrl-C,
a kill) leaves ``OUT.partial`` and any earlier ``OUT`` untouched; ``--resume`` picks the
partial file up, cuts a torn last line and skips the ids already there.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

from vidcli.errors import InputError
from vidcli.provenance import Provenance, check_resumable, sidecar_path
from vidcli.records import content_id

STDIO = "-"


@dataclass
class Source:
    """One input line: the parsed record (or the error that stopped parsing it)."""

    file: str
    line: int
    record: dict | None
    raw: str
    error: InputError | None = None

    @property
    def id(self) -> str | None:
        return self.record.get("id") if self.record else None

    @property
    def base_dir(self) -> Path:
        """Folder that relative media paths in this record are resolved against."""
        return Path.cwd() if self.file == "<stdin>" else Path(self.file).resolve().parent


def _open_input(path: str) -> IO[bytes]:
    if path == STDIO:
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError("input file not found", file=path) from None
    except IsADirectoryError:
        raise InputError("input is a directory, not a JSONL file", file=path) from None
    except OSError as exc:
        raise InputError(f"cannot open input: {exc.strerror}", file=path) from None


def parse_line(text: str, *, file: str, line: int) -> Source:
    """Parse one JSONL line into a Source; never raises for bad content."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        err = InputError(f"not valid JSON ({exc.msg} at column {exc.colno})", file=file, line=line)
        return Source(file, line, None, text, err)
    if not isinstance(value, dict):
        err = InputError(f"expected a JSON object, got {type(value).__name__}", file=file, line=line)
        return Source(file, line, None, text, err)
    rid = value.get("id")
    if rid is None:
        value = {"id": content_id(value), **value}
    elif not isinstance(rid, str) or not rid:
        err = InputError(f"field 'id' must be a non-empty string, got {json.dumps(rid)}", file=file, line=line)
        return Source(file, line, value, text, err)
    return Source(file, line, value, text)


def read_sources(paths: Iterable[str]) -> Iterator[Source]:
    """Yield every non-blank line of the given JSONL files ('-' = stdin), in order.

    Duplicate ids across the inputs are an input error (resume and joins rely on them).
    """
    seen: set[str] = set()
    for path in paths:
        name = "<stdin>" if path == STDIO else path
        handle = _open_input(path)
        try:
            lineno = 0
            # Bytes, decoded line by line, so an encoding error names its own line.
            for raw in handle:
                lineno += 1
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    err = InputError(f"line is not UTF-8 text (byte {exc.start + 1})", file=name, line=lineno)
                    yield Source(name, lineno, None, raw.decode("utf-8", "replace"), err)
                    continue
                if not text.strip():
                    continue
                src = parse_line(text, file=name, line=lineno)
                if src.error is None:
                    if src.id in seen:
                        src.error = InputError("duplicate id in input", file=name, line=lineno, record_id=src.id)
                    else:
                        seen.add(src.id)
                yield src
        finally:
            if path != STDIO:
                handle.close()


def dumps(record: dict) -> str:
    """One record as one JSON line (no newline), UTF-8 kept readable."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def repair_torn_tail(path: Path) -> int:
    """Cut an incomplete last line (no trailing newline) from ``path``; return bytes cut."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return 0
        # Walk back to the last newline in blocks.
        pos, block = size, 65536
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            handle.seek(start)
            chunk = handle.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        handle.truncate(keep)
        return size - keep


def existing_ids(path: Path) -> set[str]:
    """Ids of the complete records in an output file (torn tail ignored)."""
    ids: set[str] = set()
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict) and isinstance(value.get("id"), str):
                ids.add(value["id"])
    return ids


def check_inputs(paths: Iterable[str]) -> None:
    """Every input file exists and is a readable file (stdin aside), before any work."""
    for path in paths:
        if path == STDIO:
            continue
        target = Path(path)
        if not target.exists():
            raise InputError("input file not found", file=path)
        if target.is_dir():
            raise InputError("input is a directory, not a JSONL file", file=path)
        if not os.access(target, os.R_OK):
            raise InputError("input file is not readable (permission denied)", file=path)


def check_output(path: str, *, folder: bool = False) -> None:
    """``path`` can be written: not a directory (or, with ``folder``, not a file), and its
    nearest existing parent folder writable. Checked before any work, so a typo costs nothing."""
    if path == STDIO:
        return
    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        raise InputError("output folder is an existing file", file=path)
    if not folder and target.is_dir():
        raise InputError("-o names a directory; give a file name such as OUT.jsonl", file=path)
    parent = target.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write here: folder {parent} is not writable", file=path)


def partial_name(path: str | Path) -> Path:
    """Where an output lives until its run completes: ``OUT.partial``."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def _publish_folder(partial: Path, final: Path) -> None:
    """Put a completed folder in place of an earlier one (kept aside until the rename is done)."""
    aside = final.with_name(final.name + ".old")
    if aside.exists():
        shutil.rmtree(aside)
    if final.exists():
        os.replace(final, aside)
    os.replace(partial, final)
    if aside.exists():
        shutil.rmtree(aside)


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a folder as hard links where the file system allows (no data copied)."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link)


@dataclass
class RecordWriter:
    """Writes records to a file (atomically, see module doc) or to stdout ('-').

    ``close(complete=True)`` publishes ``OUT.partial`` as ``OUT``; ``close(complete=False)``
    (an error, Ctrl-C) leaves ``OUT.partial`` for ``--resume`` and any earlier ``OUT`` as
    it was. With ``provenance``, the sidecar ``OUT.partial.vidcli.json`` says which run
    writes the file (see :mod:`vidcli.provenance`), ``--resume`` checks it, and it becomes
    ``OUT.vidcli.json`` on completion. ``folder`` is a companion output folder (generate's
    videos) handled the same way: written as ``FOLDER.partial`` (:attr:`folder_now`) and
    renamed, before the records, on completion.
    """

    path: str
    resume: bool = False
    provenance: "Provenance | None" = None
    folder: str | None = None
    done_ids: set[str] = field(default_factory=set)
    written: int = 0
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.path == STDIO:
            if self.resume:
                raise InputError("--resume needs an output file (-o FILE), not stdout")
            self._handle: IO[bytes] = sys.stdout.buffer
            self.folder_now = Path(self.folder) if self.folder else None
            return
        check_output(self.path)
        final = Path(self.path)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._final = final
        self._partial = partial_name(final)
        self.folder_now = partial_name(self.folder) if self.folder else None
        if self.resume:
            self._open_for_resume()
        else:
            if self.folder_now is not None and self.folder_now.exists():
                shutil.rmtree(self.folder_now)
            sidecar_path(self._partial).unlink(missing_ok=True)
            self._handle = open(self._partial, "wb")
        if self.provenance is not None:
            self.provenance.write(sidecar_path(self._partial))

    def _open_for_resume(self) -> None:
        from_final = not self._partial.exists() and self._final.exists()
        if self.provenance is not None:
            source = self._final if from_final else self._partial
            if source.exists():
                self.warnings = check_resumable(source, sidecar_path(source), self.provenance)
        if from_final:
            # Continue from a copy: the complete OUT stays until this run completes too.
            shutil.copyfile(self._final, self._partial)
            if self.folder_now is not None and Path(self.folder).is_dir() and not self.folder_now.exists():
                _link_tree(Path(self.folder), self.folder_now)
        if self._partial.exists():
            repair_torn_tail(self._partial)
            self.done_ids = existing_ids(self._partial)
        self._handle = open(self._partial, "ab")

    def write(self, record: dict) -> None:
        # One write call per line, then flush: a kill leaves at most one torn line.
        self._handle.write((dumps(record) + "\n").encode("utf-8"))
        self._handle.flush()
        self.written += 1

    def close(self, complete: bool = True, counts: dict | None = None) -> None:
        """Finish. ``complete``: publish ``OUT.partial`` (and the folder) under the final
        names; otherwise leave them for ``--resume``. ``counts`` go into the sidecar."""
        if self.path == STDIO:
            self._handle.flush()
            return
        if self._handle.closed:
            return
        try:
            self._handle.flush()
            if complete:
                os.fsync(self._handle.fileno())  # on disk before it carries the final name
        finally:
            self._handle.close()
        if not complete:
            return
        if self.folder_now is not None and self.folder_now.exists():
            _publish_folder(self.folder_now, Path(self.folder))
        final_sidecar = sidecar_path(self._final)
        final_sidecar.unlink(missing_ok=True)  # no stale completion record beside the new data
        os.replace(self._partial, self._final)
        if self.provenance is not None:
            self.provenance.write(final_sidecar, complete=True, counts=counts)
            sidecar_path(self._partial).unlink(missing_ok=True)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(complete=exc_type is None)
