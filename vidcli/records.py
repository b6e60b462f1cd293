"""Record fields and small helpers for reading them.

Records are JSON objects, one per line. A command adds the fields it owns and passes
every other field through untouched, so stages chain. The fields used across vidcli:

``id``            string; generated as a stable content hash when missing
``caption``       a plain-text video caption / generation prompt (``decompose --schema drf``)
``video``         path of a video (for ``decompose --schema drf``: the real video that
                  matches ``caption``, used for Phy/VQ reference answers)
``instruction``   the user's text request
``conditions``    list of ``{type, path}`` with type in
                  identity | image | depth | pose | camera | audio | video; an optional
                  ``caption`` describes the condition in words
``gold``          six-part caption ``{dense, main_object, background, movement, style,
                  camera}``, or a plain string before structuring
``elements``      ``decompose --schema drf``: the eight element lists (see ``DRF_KEYS``)
``questions``     list of ``{dim: TA|Phy|VQ, key, question, reference: {answer,
                  explanation} | null, ...}``; ``undesired: true`` marks a question whose
                  reference answer on the real video is not the desired verdict (the real
                  video shows the defect asked about): training towards it rewards the defect
``consistent``    ``decompose --keep-consistent``: whether every reference answer on the
                  real video is the desired one
``key_info``      ``decompose --schema reade``: ``{user, supplementary, imaginative}``,
                  each ``{objects: [{name, attributes}], actions, camera, style}``
``gold_text``     ``make-cot``: the original plain-text gold caption after it was structured
``cot``           ``make-cot``: ``{steps: {intent, nontext, alignment, supplement}, target,
                  descriptions, no_instruction}`` — ``target`` is the
                  ``<think>…</think><answer>…</answer>`` training text; ``descriptions`` holds
                  step 2's text per condition; ``no_instruction`` (records with conditions)
                  is ``{steps: {intent, alignment, supplement}, target}``, the chain written
                  for an empty instruction, which ``sft`` learns when it drops the instruction
``output``        ``interpret``: ``{think, answer: {six parts}, prompt, raw, format_ok,
                  format_problem}`` — an output that fails the format is kept, flagged
                  ``format_ok: false`` with the failed check in ``format_problem``
``output.video``  ``generate``: the generated or edited mp4 (relative to the output JSONL's folder),
                  read by ``score --metric vqa`` (generated) and ``--metric rve`` (edited)
``output.generation`` ``generate``: ``{model, mode: t2v|edit, seed, steps, guidance, num_frames,
                  height, width, fps, negative_prompt}`` — how ``output.video`` was made
``prompt``        plain generation prompt (``generate`` reads ``output.prompt``, else ``prompt``,
                  else ``caption``)
``source``        triplets: ``{video, start, end}`` (seconds); also ``target``, ``instruction``,
                  ``reasoning_type``, ``subset`` (icvg | rave), ``split`` (train | test)
``completion``    a raw interpreter completion, read by ``score`` when ``output.raw`` is absent
``scores``        ``score``: ``{metric: value}`` — format/user/detail/supp/contra/reward;
                  vqa, vqa_TA/Phy/VQ and vqa.DIM.KEY; rve, rve_EA/PC/GN/GR; null where a judge failed (the reason is in
                  ``errors`` with an extra ``metric`` key) or where a metric is unavailable
``errors``        list of ``{stage, message}`` (rejects files)
``rejected_from`` rejects files: ``{file, line}`` of the input line the record came from

Media paths inside records are relative to the JSONL file's folder unless absolute.
A data command that writes its records into another folder (or to stdout, whose
folder is the working directory) makes the relative media paths it passes through
absolute (``absolutize_media``), so the next stage still finds the same files; with
``--media-root`` paths stay as they are (the next stage gets the same ``--media-root``).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from vidcli.errors import InputError

CONDITION_TYPES = ("identity", "image", "depth", "pose", "camera", "audio", "video")
CAPTION_PARTS = ("dense", "main_object", "background", "movement", "style", "camera")
DRF_KEYS = ("environment", "objects", "motion", "spatial", "color", "lighting", "text", "camera")


# Where records keep media paths: top-level fields, and fields of nested objects/lists.
MEDIA_FIELDS = ("video",)
NESTED_MEDIA_FIELDS = {"conditions": ("path",), "source": ("video", "clip"), "target": ("video", "clip"),
                       "output": ("video",)}


def _absolute(value, base_dir: str) -> str | None:
    """``value`` made absolute against ``base_dir``; None when it must stay as it is."""
    if not isinstance(value, str) or not value.strip() or os.path.isabs(value):
        return None
    joined = os.path.normpath(os.path.join(base_dir, value))
    rel = os.path.relpath(joined, base_dir)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None  # escapes its folder: left for the reader to accept (--allow-escape) or refuse
    return joined


def absolutize_media(record: dict, base_dir: str) -> None:
    """Turn the record's relative media paths into absolute ones, in place."""
    def fix(holder: dict, key: str) -> None:
        new = _absolute(holder.get(key), base_dir)
        if new is not None:
            holder[key] = new

    for key in MEDIA_FIELDS:
        fix(record, key)
    for outer, keys in NESTED_MEDIA_FIELDS.items():
        value = record.get(outer)
        for holder in (value if isinstance(value, list) else [value]):
            if isinstance(holder, dict):
                for key in keys:
                    fix(holder, key)


def content_id(record: dict) -> str:
    """A stable id from the record's content (key order does not matter)."""
    body = {k: v for k, v in record.items() if k != "id"}
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


_TYPE_NAMES = {str: "a string", list: "a list", dict: "an object", bool: "true/false"}


def require(record: dict, field: str, kind: type | tuple[type, ...] = str) -> Any:
    """Return ``record[field]``, raising InputError if it is missing or of the wrong type."""
    if field not in record or record[field] is None:
        raise InputError(f"missing field '{field}'")
    value = record[field]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool) and bool not in _as_tuple(kind)):
        want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in _as_tuple(kind))
        raise InputError(f"field '{field}' must be {want}, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise InputError(f"field '{field}' is empty")
    return value


def _as_tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def first_present(record: dict, fields: tuple[str, ...]) -> tuple[str, Any]:
    """The first of ``fields`` present in the record (as ``(name, value)``), else InputError."""
    for name in fields:
        if record.get(name) is not None:
            return name, require(record, name)
    raise InputError("missing field " + " or ".join(f"'{f}'" for f in fields))


def _hinted(message: str, hint: str | None) -> str:
    return f"{message} ({hint})" if hint else message


def text_field(record: dict, *names: str, hint: str | None = None) -> str:
    """The first of ``names`` holding non-blank text; else InputError "missing or empty 'a' or 'b' (hint)"."""
    for name in names:
        value = record.get(name)
        if isinstance(value, str) and value.strip():
            return value
    raise InputError(_hinted("missing or empty " + " or ".join(f"'{n}'" for n in names), hint))


def field_of(record: dict, name: str, kind: type | tuple[type, ...], *, hint: str | None = None) -> Any:
    """``record[name]`` when it is a ``kind`` (text: not blank); else InputError "missing field 'name' (hint)".

    ``hint`` says what the field holds or which command writes it.
    """
    value = record.get(name)
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        raise InputError(_hinted(f"missing field '{name}'", hint))
    return value


def choice_field(record: dict, name: str, choices: tuple[str, ...]) -> str | None:
    """``record[name]``, None when absent; else InputError when it is not one of ``choices``."""
    value = record.get(name)
    if value is not None and value not in choices:
        raise InputError(f"field '{name}' must be one of {', '.join(choices)}, got {value!r}")
    return value


def gold_text(gold: Any) -> str:
    """The gold caption as one text: a plain string, or the six parts in order."""
    if isinstance(gold, str):
        return gold
    if isinstance(gold, dict):
        parts = [f"{name}: {gold[name]}" for name in CAPTION_PARTS if gold.get(name)]
        if parts:
            return "\n".join(parts)
    raise InputError("field 'gold' must be a string or a six-part caption object")
