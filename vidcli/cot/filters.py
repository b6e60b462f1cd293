"""The filter pass of make-cot: exclude evaluation overlaps, de-duplicate, balance.

They need the whole generated set at once, so make-cot first streams its records into
a generated file and then :func:`filter_file` reads that file and writes the final
output atomically. The filters run in this order:

1. **exclude** — drop a record whose instruction overlaps an evaluation set: the same
   normalised text (:func:`normalise`), or, with an embedder, cosine similarity at or
   above the threshold with any evaluation instruction;
2. **dedup** — among near-identical instructions (same normalised text, or cosine at or
   above the threshold) keep the first;
3. **balance** — down-sample the groups of ``balance_by`` that are balanced to the size
   of the smallest of them, with a seeded RNG. For ``condition_type`` a record's group
   is its full set of condition types ("depth", "camera+identity"), and text-only
   records are not a group to balance: they are kept, or all dropped
   (``text_only="drop"``), so one text-only record cannot cut every condition type to
   one record. ``balance_groups`` names the groups to balance (default: every group
   but text-only); records of other groups pass untouched.

Exclusion comes before de-duplication: the other way round, a record that duplicates an
evaluation-set item could remove its twin and then be removed itself, losing both.

"First" means first in id order (ties keep file order), and balancing samples from
each group in id order too: the result depends on which records there are, not on the
order they reach the filters, so ``make-cot --merge`` over the outputs of ``--shard``
runs, concatenated in any order, keeps what one unsharded run keeps. Kept records are
written in the order they were read. A ``--shard`` run applies only ``exclude`` (it
looks at one record at a time) and leaves the other two to ``--merge``.

The embedder measures topical closeness, not meaning (see :mod:`vidcli.backends.embed`):
at 0.95 it catches rewordings and near copies, not paraphrases in other words.
"""
from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass, field

from vidcli.cot.steps import TEXT_ONLY, condition_types
from vidcli.errors import InputError
from vidcli.jsonl import RecordWriter, read_sources

log = logging.getLogger("vidcli")

CONDITION_TYPE = "condition_type"
MISSING_GROUP = "(missing)"
_NOT_WORD = re.compile(r"[^\w]+")


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: the exact-match form."""
    return " ".join(_NOT_WORD.sub(" ", text.casefold()).split())


def read_instructions(path: str, field_name: str = "instruction") -> list[str]:
    """The instructions of an evaluation set (a JSONL file of records with ``field_name``)."""
    texts = []
    for src in read_sources([path]):
        if src.error is not None:
            raise src.error
        value = src.record.get(field_name)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"--exclude record has no '{field_name}' text", file=src.file, line=src.line,
                             record_id=src.id)
        texts.append(value)
    return texts


def overlapping(texts: list[str], reference: list[str], embedder=None, threshold: float = 0.95) -> list[bool]:
    """For each text: does it overlap any reference text (see the module docstring)?"""
    known = {normalise(t) for t in reference}
    hits = [normalise(t) in known for t in texts]
    if embedder is not None and texts and reference:
        best = embedder.similarity(texts, reference).max(dim=1).values.tolist()
        hits = [hit or score >= threshold for hit, score in zip(hits, best)]
    return hits


def deduplicate(texts: list[str], embedder=None, threshold: float = 0.95) -> list[int]:
    """Indices of the texts to keep: the first of each group of near-identical ones."""
    seen: set[str] = set()
    first = []
    for i, text in enumerate(texts):
        key = normalise(text)
        if key not in seen:
            seen.add(key)
            first.append(i)
    if embedder is None or len(first) < 2:
        return first
    kept = embedder.near_duplicates([texts[i] for i in first], threshold=threshold)
    return [first[k] for k in kept]


def group_of(record: dict, field_name: str) -> str:
    """The balancing group of a record: the value at ``field_name`` (dots reach into
    objects), or, for ``condition_type`` when the record has no such field, its set of
    condition types (:func:`~vidcli.cot.steps.condition_types`)."""
    if field_name == CONDITION_TYPE and CONDITION_TYPE not in record:
        return condition_types(record)
    value: object = record
    for key in field_name.split("."):
        if not isinstance(value, dict) or key not in value:
            return MISSING_GROUP
        value = value[key]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def balance(groups: list[str], seed: int = 0, only: set[str] | None = None) -> list[int]:
    """Indices to keep (in input order) so every balanced group has the smallest one's
    size. ``only`` names the balanced groups (default: all); the others are kept whole."""
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    balanced = [name for name in sorted(members) if only is None or name in only]
    kept = [i for name in members if name not in balanced for i in members[name]]
    if balanced:
        size = min(len(members[name]) for name in balanced)
        rng = random.Random(seed)
        # Sorted group names: the same seed picks the same records whatever order groups appear in.
        kept += [i for name in balanced for i in rng.sample(members[name], size)]
        log.info("--balance-by: %s to %d record(s) each (smallest: %s)", ", ".join(balanced), size,
                 min(balanced, key=lambda name: len(members[name])))
    return sorted(kept)


@dataclass
class FilterOptions:
    dedup_threshold: float = 0.95
    exclude: list[str] = field(default_factory=list)  # instructions of the evaluation sets
    balance_by: str | None = None
    balance_groups: list[str] | None = None  # None: every group (but text-only for condition_type)
    text_only: str = "keep"  # with balance_by condition_type: keep | drop records without conditions
    seed: int = 0
    instruction_field: str = "instruction"
    dedup: bool = True  # off in --shard runs: duplicates may sit in different shards

    def __post_init__(self) -> None:
        if self.text_only not in ("keep", "drop"):
            raise ValueError(f"text_only must be keep or drop, got {self.text_only!r}")


@dataclass
class FilterReport:
    read: int = 0
    excluded: int = 0
    duplicates: int = 0
    unbalanced: int = 0
    written: int = 0

    def summary(self) -> str:
        return (f"{self.read} generated; removed {self.excluded} overlapping --exclude, "
                f"{self.duplicates} near-duplicate, {self.unbalanced} by --balance-by; {self.written} written")


def filter_records(records: list[dict], opts: FilterOptions, embedder=None) -> tuple[list[dict], FilterReport]:
    """Apply the filters in order; returns the kept records (in input order) and the counts."""
    report = FilterReport(read=len(records))
    position = {id(r): i for i, r in enumerate(records)}
    records = sorted(records, key=lambda r: str(r.get("id", "")))  # stable: ties keep file order

    def texts(rs: list[dict]) -> list[str]:
        return [str(r.get(opts.instruction_field) or "") for r in rs]

    if opts.exclude:
        hits = overlapping(texts(records), opts.exclude, embedder, opts.dedup_threshold)
        report.excluded = sum(hits)
        records = [r for r, hit in zip(records, hits) if not hit]
    if opts.dedup:
        kept = deduplicate(texts(records), embedder, opts.dedup_threshold)
        report.duplicates = len(records) - len(kept)
        records = [records[i] for i in kept]
    if opts.balance_by:
        before = len(records)
        groups = [group_of(r, opts.balance_by) for r in records]
        only = set(opts.balance_groups) if opts.balance_groups is not None else None
        if opts.balance_by == CONDITION_TYPE:
            if opts.text_only == "drop":
                records = [r for r, g in zip(records, groups) if g != TEXT_ONLY]
                groups = [g for g in groups if g != TEXT_ONLY]
            if only is None:
                only = set(groups) - {TEXT_ONLY}
        kept = balance(groups, opts.seed, only)
        records = [records[i] for i in kept]
        report.unbalanced = before - len(records)
    report.written = len(records)
    return sorted(records, key=lambda r: position[id(r)]), report


def filter_file(generated: str, output: str, opts: FilterOptions, embedder=None, provenance=None) -> FilterReport:
    """Read the generated records, filter them, write ``output`` (atomically, or stdout)."""
    records = []
    for src in read_sources([generated]):
        if src.error is not None:
            raise src.error
        records.append(src.record)
    return write_filtered(records, output, opts, embedder, provenance)


def write_filtered(records: list[dict], output: str, opts: FilterOptions, embedder=None,
                   provenance=None) -> FilterReport:
    """Filter ``records`` and write the kept ones to ``output`` (atomically, or stdout)."""
    kept, report = filter_records(records, opts, embedder)
    with RecordWriter(output, provenance=provenance) as writer:
        for record in kept:
            writer.write(record)
    log.info("make-cot filters: %s", report.summary())
    return report
