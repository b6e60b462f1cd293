"""SFT training records: reading, validating and fingerprinting them (formats in :mod:`vidcli.train.sft`).

Every record is checked before the first step — fields for its stage, condition types,
and that each media file exists — so a typo never stops a run hours in. Media are
decoded later, batch by batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vidcli.errors import InputError, MediaError
from vidcli.jsonl import Source
from vidcli.media_access import MediaAccess
from vidcli.records import CONDITION_TYPES, field_of, text_field
from vidcli.train.inputs import read_training_records

if TYPE_CHECKING:  # pragma: no cover - typing only
    from vidcli.train.sft import SFTConfig

CAMERA_PROMPT = "Describe the camera motion of this trajectory."
DENSE_CONDITIONS = ("depth", "pose")


@dataclass
class Example:
    """One training record: where it came from, its assistant text and its prompt budget.

    ``dropped_target`` is the assistant text to learn when instruction dropout hides the
    instruction (records with conditions, stage cot): make-cot's
    ``cot.no_instruction.target``, or, for records made before make-cot wrote it, the
    target with its step-1 paragraph (which quotes the request) left out. None when the
    record cannot have its instruction dropped: no conditions, or a target without
    make-cot's labelled steps (its instruction is then always kept).
    """

    source: Source
    target: str
    prompt_limit: int
    dropped_target: str | None = None


def _check_conditions(source: Source, config: SFTConfig) -> list[dict]:
    """Condition types and media files checked up front, so a run never dies at step 900 on a typo."""
    conditions = source.record.get("conditions") or []
    if not isinstance(conditions, list):
        raise InputError("field 'conditions' must be a list")
    access = MediaAccess(config.media_root, config.allow_escape)
    for i, cond in enumerate(conditions):
        if not isinstance(cond, dict) or cond.get("type") not in CONDITION_TYPES:
            raise InputError(f"conditions[{i}] must be an object with 'type' in {', '.join(CONDITION_TYPES)}")
        try:
            path = access.path(cond.get("path"), source.base_dir)
        except InputError as exc:
            raise MediaError(f"conditions[{i}]: {exc.message}") from None
        if not path.is_file():
            raise MediaError(f"conditions[{i}] ({cond['type']}): file not found: {path}")
    return conditions


def to_example(source: Source, config: SFTConfig) -> Example:
    """Validate one record for the stage; InputError located at its file, line and id."""
    try:
        if source.error is not None:
            raise source.error
        record = source.record
        conditions = _check_conditions(source, config)
        if config.stage == "camera":
            if not conditions or any(c["type"] != "camera" for c in conditions):
                raise InputError("a camera-stage record needs 'conditions' of type camera only")
            target = text_field(record, "target", "caption", hint="the text to learn")
        else:
            cot = field_of(record, "cot", dict, hint="records from vidcli make-cot")
            target = text_field(cot, "target", hint="the text to learn")
            dropped = _dropped_target(cot, target) if conditions else None
        dense = any(c["type"] in DENSE_CONDITIONS for c in conditions)
        limit = config.max_prompt_tokens_dense if dense else config.max_prompt_tokens
    except InputError as exc:
        raise exc.located(file=source.file, line=source.line, record_id=source.id) from None
    return Example(source, target, limit, dropped if config.stage == "cot" else None)


def _dropped_target(cot: dict, target: str) -> str | None:
    """The target for a dropped instruction (see :class:`Example`)."""
    from vidcli.cot.steps import target_without_intent

    blind = cot.get("no_instruction")
    if blind is not None:
        if not isinstance(blind, dict) or not isinstance(blind.get("target"), str) or not blind["target"].strip():
            raise InputError("field 'cot.no_instruction' must be an object with a non-empty 'target'")
        return blind["target"]
    return target_without_intent(target)


def load_examples(config: SFTConfig) -> tuple[list[Example], dict[str, dict]]:
    """All training records, validated, and the input fingerprints for ``vidcli.json``."""
    return read_training_records(config.inputs, lambda source: to_example(source, config))
