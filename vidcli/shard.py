"""``--shard I/N``: a deterministic 1/N of a dataset, chosen by record id.

A job array (SLURM ``--array=0-7``, one job per node, ...) runs the same command with
``--shard $I/8`` on the same inputs; the shards are disjoint, together they cover every
record, and no job needs to know about the others. Ownership depends only on the id
(a SHA-256 of it, modulo N), so it does not change with input order, batch size,
``--resume`` or the machine. A line that cannot be parsed has no id; it belongs to the
shard chosen by its file name and line number, so exactly one shard reports it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import click


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
        """Whether this shard processes the record (or unparsable line) given."""
        if record_id is None:
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
             "run N jobs with 0/N ... N-1/N on the same inputs and concatenate their outputs.")(func)
