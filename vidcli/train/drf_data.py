"""drf-tune training records (``decompose --schema drf``): read and validated before the first step."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vidcli.errors import InputError
from vidcli.media_access import MediaAccess
from vidcli.records import field_of, text_field
from vidcli.train.inputs import read_training_records

if TYPE_CHECKING:  # pragma: no cover - typing only
    from vidcli.train.drf import DRFConfig

log = logging.getLogger("vidcli.train")


@dataclass
class Task:
    """One training record: the generation prompt, its queries and the real video they compare with."""

    id: str
    prompt: str
    questions: list[dict]
    video: Path | None  # needed only by Phy / VQ queries


def to_task(source, config: "DRFConfig") -> Task:
    """Validate one ``decompose --schema drf`` record (:func:`load_tasks` locates its errors)."""
    record = source.record
    prompt = text_field(record, "caption", hint="the generation prompt")
    questions, video = [], None
    if config.reward != "vanilla":
        given = field_of(record, "questions", list, hint="records from vidcli decompose --schema drf")
        questions = [q for q in given if isinstance(q, dict) and q.get("dim") in config.dims]
        if not questions:
            raise InputError(f"no questions of the dimensions {','.join(config.dims)}")
        for q in questions:
            ref = q.get("reference")
            if not isinstance(q.get("question"), str) or not isinstance(ref, dict) or not ref.get("answer"):
                raise InputError(f"question {q.get('key', '?')!r} ({q['dim']}) lacks a question text "
                                 "or a reference answer")
        if any(q["dim"] in ("Phy", "VQ") for q in questions):
            access = MediaAccess(config.media_root, config.allow_escape)
            video = access.file(record.get("video"), source.base_dir, missing="reference video not found: {path}")
    return Task(str(record.get("id")), prompt, questions, video)


def load_tasks(config: "DRFConfig") -> tuple[list[Task], dict[str, dict]]:
    """All records, validated before the first step, and the input fingerprints for ``vidcli.json``.

    Warns once when some records have a reference answer that is not the desired verdict
    (their real video shows the defect asked about): the reward then pulls the generator
    towards that defect.
    """
    from vidcli.decompose.drf import undesired_questions

    tasks, fingerprints = read_training_records(config.inputs, lambda source: to_task(source, config))
    defects = [t.id for t in tasks if undesired_questions({"questions": t.questions})]
    if defects:
        log.warning("%d of %d records (e.g. %s) have a reference answer that is not the desired verdict (a Phy or "
                    "VQ 'Yes': their real video shows the defect); the reward teaches that defect. Filter them with "
                    "decompose --keep-consistent or leave the dimension out with --dims.",
                    len(defects), len(tasks), defects[0])
    return tasks, fingerprints
