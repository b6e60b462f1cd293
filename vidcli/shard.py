"""``--shard I/N``: a deterministic 1/N of a dataset, chosen by record id.

A job array (SLURM ``--array=0-7``, one job per node, ...) runs the same command with
``--shard $I/8`` on the same inputs; the shards are disjoint, together they cover every
record, and no job needs to know about the others. Ownership depends only on the id
(a SHA-256 of it, modulo N), so it does not change with input order, batch size,
``--resume`` or the machine. A line that cannot be parsed has no id; it belongs to the
shard chosen by its file name and line number, so exactly one shard reports it.

Steps that need the whole set (make-cot's de-duplication and balancing, mine-triplets'
hold-out split, score's summary) cannot be split by id: those commands also take
``--merge``, which reads the shard outputs (:func:`read_shard_outputs`), runs only the
whole-set steps and writes what one unsharded run would have written.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

import click

from vidcli.errors import InputError


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"I/N"`` with 0 <= I < N; raises ValueError with a readable message."""
        left, sep, right = text.partition("/")
        try:
            index, count = int(left), int(right)
        except ValueError:
            index = count = -1
        if not sep or count < 1 or not 0 <= index < count:
            raise ValueError(f"expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
        return cls(index, count)

    def owns_key(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def owns(self, record_id: str | None, file: str = "", line: int = 0) -> bool:
        """Whether this shard processes the record (or unparsable line) given.

        An id that is not a non-empty string is an input error of its line, so the line
        (not the bad id) decides, as for a line with no id."""
        if not isinstance(record_id, str) or not record_id:
            return self.owns_key(f"{file}:{line}")
        return self.owns_key(record_id)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class ShardParam(click.ParamType):
    name = "I/N"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, Shard):
            return value
        try:
            return Shard.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def shard_option(func):
    """``--shard I/N`` for data commands (the value reaches the command as ``shard``)."""
    return click.option(
        "--shard", "shard", type=ShardParam(), default=None, envvar="VIDCLI_SHARD", show_envvar=True,
        help="Process only shard I of N (0-based), chosen by a hash of each record's id: "
             "run N jobs with 0/N ... N-1/N on the same inputs, then concatenate their outputs (or "
             "combine them with --merge, where the command has it).")(func)


def merge_option(help_text: str):
    """``--merge`` for commands with whole-set steps (the value reaches the command as ``merge``)."""
    return click.option("--merge", "merge", is_flag=True, help=help_text)


def check_merge(merge: bool, shard: Shard | None, resume: bool) -> None:
    """Usage errors of ``--merge``: it runs once over finished shard outputs."""
    if merge and shard is not None:
        raise click.UsageError("--merge combines the outputs of the --shard runs: give it without --shard")
    if merge and resume:
        raise click.UsageError("--merge rewrites OUT from finished shard outputs: --resume does not apply")


def read_shard_outputs(paths: Iterable[str]) -> list[dict]:
    """Every record of the given shard outputs, in order, for a ``--merge`` step.

    An id seen twice means the same records were given twice -- most often a glob such as
    ``cot*.jsonl`` that also caught ``cot.3.jsonl.generated.jsonl`` -- and a record from a
    rejects file failed its stage: both are input errors, not records to merge.
    """
    from vidcli.jsonl import read_sources

    where: dict[str, str] = {}
    records = []
    for src in read_sources(paths):
        if src.error is not None:
            if isinstance(src.id, str) and src.id in where:
                raise InputError(f"id already read at {where[src.id]}: a shard output (or its "
                                 ".generated.jsonl) given twice?", file=src.file, line=src.line, record_id=src.id)
            raise src.error
        if "rejected_from" in src.record:
            raise InputError("a rejected record (from a .rejects.jsonl file), not a shard output",
                             file=src.file, line=src.line, record_id=src.id)
        where[src.id] = f"{src.file}:{src.line}"
        records.append(src.record)
    return records
