"""Training inputs: every record read and validated before the first step, and the
fingerprints that ``vidcli.json`` keeps of them (a resumed run must read the same inputs)."""
from __future__ import annotations

from typing import Callable

from vidcli.errors import InputError
from vidcli.provenance import file_sha256


def read_training_records(inputs: list[str], convert: Callable, *, what: str = "training records"
                          ) -> tuple[list, dict[str, dict]]:
    """Every record of ``inputs`` through ``convert``, validated before training starts.

    An InputError from a line or from ``convert`` is located at its file, line and id.
    Also returns the input fingerprints for ``vidcli.json``: a file's sha256 of its bytes,
    stdin's of its non-blank lines, and the number of records each gave.
    """
    import hashlib

    from vidcli.jsonl import read_sources

    items, stdin_hash, counts = [], hashlib.sha256(), {}
    for source in read_sources(inputs):
        try:
            if source.error is not None:
                raise source.error
            items.append(convert(source))
        except InputError as exc:
            raise exc.located(file=source.file, line=source.line, record_id=source.id) from None
        counts[source.file] = counts.get(source.file, 0) + 1
        if source.file == "<stdin>":
            stdin_hash.update(source.raw.encode("utf-8"))
    if not items:
        raise InputError(f"no {what} in " + ", ".join(inputs))
    fingerprints = {path: {"sha256": stdin_hash.hexdigest() if path == "-" else file_sha256(path),
                           "records": counts.get("<stdin>" if path == "-" else path, 0)}
                    for path in dict.fromkeys(inputs)}
    return items, fingerprints
