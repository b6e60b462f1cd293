"""Run a record-processing function over JSONL inputs, with the error contract.

Every data command (decompose, make-cot, interpret --input, score, ...) is
``run_records(inputs, output, process_batch, ...)`` plus the function that does its
work on a batch of records. This module owns everything the user sees of the stream:
resume, order, rejects, the one-line errors and the exit status.

``process_batch`` gets a list of :class:`~vidcli.jsonl.Source` (all parsed, ids set)
and returns one :class:`Outcome` per source, in the same order.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from vidcli.errors import BackendUnavailable, InputError
from vidcli.jsonl import STDIO, RecordWriter, Source, check_inputs, partial_name, read_sources
from vidcli.provenance import Provenance, input_fingerprints
from vidcli.records import absolutize_media
from vidcli.shard import Shard

log = logging.getLogger("vidcli")


@dataclass
class Outcome:
    """What became of one record: written, dropped on purpose, or failed."""

    record: dict | None = None
    errors: list[dict] = field(default_factory=list)  # [{stage, message}]
    dropped: str | None = None  # reason, for records filtered out on purpose

    @classmethod
    def ok(cls, record: dict) -> "Outcome":
        return cls(record=record)

    @classmethod
    def fail(cls, stage: str, message: str) -> "Outcome":
        return cls(errors=[{"stage": stage, "message": message}])

    @classmethod
    def drop(cls, reason: str) -> "Outcome":
        return cls(dropped=reason)


@dataclass
class StreamStats:
    read: int = 0
    skipped_done: int = 0
    written: int = 0
    rejected: int = 0
    dropped: int = 0
    other_shards: int = 0
    failed: bool = False


class StreamFailed(Exception):
    """Raised after output is safely closed when a run stops early: a record failed under
    ``--on-error fail`` (``skippable``), or the backend cannot answer at all."""

    def __init__(self, message: str, stats: StreamStats, *, partial: str | None = None,
                 skippable: bool = True) -> None:
        super().__init__(message)
        self.stats = stats
        self.partial = partial  # where the records done so far wait for --resume
        self.skippable = skippable  # whether --on-error skip would get past it


def rejects_path_for(output: str, command: str, shard: "Shard | None" = None) -> str:
    """Default rejects file: ``OUT.rejects.jsonl``, or ``vidcli-CMD.rejects.jsonl`` for stdout
    (``vidcli-CMD.shard-I-of-N.rejects.jsonl`` with a shard, so the jobs of an array that all
    write to stdout in one folder keep apart)."""
    if output == STDIO:
        return f"vidcli-{command}{shard_suffix(shard)}.rejects.jsonl"
    return output + ".rejects.jsonl"


def shard_suffix(shard: "Shard | None") -> str:
    """``.shard-I-of-N`` for a shard's side files, ``""`` without one."""
    return "" if shard is None else f".shard-{shard.index}-of-{shard.count}"


def _batches(sources: Iterator[Source], size: int, done: set[str], stats: StreamStats,
             shard: "Shard | None" = None) -> Iterator[list[Source]]:
    batch: list[Source] = []
    for src in sources:
        if shard is not None and not shard.owns(src.id, src.file, src.line):
            stats.other_shards += 1
            continue
        stats.read += 1
        if src.error is None and src.id in done:
            stats.skipped_done += 1
            continue
        batch.append(src)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _error_line(src: Source, out: Outcome) -> str:
    message = "; ".join(f"{e['stage']}: {e['message']}" for e in out.errors)
    return str(InputError(message, file=src.file, line=src.line, record_id=src.id))


def run_records(
    inputs: Iterable[str],
    output: str,
    process_batch: Callable[[list[Source]], list[Outcome]],
    *,
    command: str,
    batch_size: int = 16,
    resume: bool = False,
    on_error: str = "fail",
    rejects: str | None = None,
    progress: bool = True,
    shard: "Shard | None" = None,
    media_root: str | None = None,
    settings: dict | None = None,
    folder: str | None = None,
) -> StreamStats:
    """Stream records from ``inputs`` through ``process_batch`` into ``output``.

    ``output`` appears only when every input record the run owns is accounted for
    (written, dropped on purpose, or in the rejects file). Anything that stops the run
    first (a failed record under ``on_error == "fail"``, a backend that cannot answer,
    Ctrl-C, a full disk) leaves ``OUT.partial`` for ``--resume`` and an earlier ``OUT``
    untouched; a failed record or an unusable backend raises :class:`StreamFailed`.
    ``settings`` (the options that change the records) and the inputs' fingerprints go
    into the sidecar that ``--resume`` checks (:mod:`vidcli.provenance`). ``folder`` is a
    companion output folder published with ``output`` (see :class:`RecordWriter`).

    With ``shard``, records owned by other shards are skipped before anything else looks
    at them (see :mod:`vidcli.shard`). Without ``media_root``, records read from another
    folder than ``output``'s get their relative media paths made absolute before
    processing, so the written records still point at the same files
    (:func:`vidcli.records.absolutize_media`).
    """
    from tqdm import tqdm

    inputs = list(inputs)
    check_inputs(inputs)
    stats = StreamStats()
    out_dir = str(Path.cwd() if output == STDIO else Path(output).resolve().parent)
    provenance = None
    if output != STDIO:
        provenance = Provenance(command, {**(settings or {}), "shard": str(shard) if shard else None},
                                input_fingerprints(inputs))
    writer = RecordWriter(output, resume=resume, provenance=provenance, folder=folder)
    for warning in writer.warnings:
        log.warning("%s", warning)
    reject_writer: RecordWriter | None = None
    rejects = rejects or rejects_path_for(output, command, shard)
    # Records rejected by an earlier run are not done: a resumed run retries them, so
    # every run starts its own rejects file (published, or the old one removed, on completion).
    partial_name(rejects).unlink(missing_ok=True)
    # disable=None: tqdm turns itself off when stderr is not a terminal.
    bar = tqdm(desc=command, unit="rec", file=sys.stderr, disable=None if progress else True, dynamic_ncols=True)
    if writer.done_ids:
        log.info("resuming: %d records already in %s", len(writer.done_ids), output)
    complete = False
    try:
        for batch in _batches(read_sources(inputs), batch_size, writer.done_ids, stats, shard):
            good = [s for s in batch if s.error is None]
            if media_root is None:
                for src in good:
                    if str(src.base_dir) != out_dir:
                        absolutize_media(src.record, str(src.base_dir))
            try:
                results = dict(zip((id(s) for s in good), process_batch(good) if good else []))
            except BackendUnavailable as exc:
                stats.failed = True
                raise StreamFailed(str(exc), stats, skippable=False) from None
            for src in batch:
                out = Outcome.fail("input", src.error.message) if src.error else results[id(src)]
                bar.update(1)
                if out.record is not None:
                    writer.write(out.record)
                    stats.written += 1
                    continue
                if out.dropped is not None:
                    stats.dropped += 1
                    log.info("%s: dropped: %s", src.id, out.dropped)
                    continue
                line = _error_line(src, out)
                if on_error == "fail":
                    stats.failed = True
                    # Finish writing the rest of this batch's completed records first.
                    for other in batch[batch.index(src) + 1:]:
                        later = results.get(id(other)) if other.error is None else None
                        if later is not None and later.record is not None:
                            writer.write(later.record)
                            stats.written += 1
                    raise StreamFailed(line, stats)
                log.warning("%s (rejected)", line)
                if reject_writer is None:
                    reject_writer = RecordWriter(rejects)
                body = src.record if src.record is not None else {"raw": src.raw.rstrip("\n")}
                reject_writer.write({**body, "errors": list(body.get("errors", [])) + out.errors,
                                     "rejected_from": {"file": src.file, "line": src.line}})
                stats.rejected += 1
        complete = True
    except StreamFailed as exc:
        exc.partial = None if output == STDIO else str(partial_name(output))
        raise
    finally:
        bar.close()
        # Rejects first: a published OUT always has its rejects file beside it.
        if reject_writer is not None:
            reject_writer.close(complete=complete)
        elif complete and rejects != STDIO:
            Path(rejects).unlink(missing_ok=True)  # an earlier run's rejects are not this run's
        writer.close(complete=complete, counts={"records": len(writer.done_ids) + writer.written,
                                                "rejected": stats.rejected, "dropped": stats.dropped})
    if shard is not None:
        log.info("shard %s: took %d record(s); %d belong to other shards", shard, stats.read, stats.other_shards)
    if stats.rejected:
        log.warning("%d record(s) rejected; see %s", stats.rejected, Path(rejects))
    return stats
