"""``score --metric rve``: a VLM judge rates an edited video 0–10 on four criteria.

Triplet records (``mine-triplets``) give the source clip ``source: {video, start, end}``
(seconds; ``start`` / ``end`` may be missing for the whole video), the ``instruction``
and ``subset`` (``icvg`` | ``rave``); the edited video the model produced is read from
``output.video`` (``--video-field``). The judge (``--judge openai:MODEL`` or
``hf:PATH``) sees ``--frames`` frames of the source clip's ``[start, end)`` and as many
of the edited video (an OpenAI-compatible endpoint receives them as images), and
answers JSON with integer scores:

- ``rve_EA`` edit accuracy, ``rve_PC`` preservation consistency, ``rve_GN`` generation
  naturalness, ``rve_GR`` generation realism. PC is not asked for ICVG records
  (``subset: icvg``: the output is new content made from the source as context, so
  nothing of it is meant to be preserved); there it is ``null`` and unavailable.
- ``rve``, the record's overall score. ``geometric`` (default): the geometric mean of
  the available sub-scores. ``viescore``: √(min(EA, PC) · min(GN, GR)); without PC
  (ICVG) the semantic side is EA alone: √(EA · min(GN, GR)).

A reply that is not the JSON asked for is asked again with what was wrong (``--attempts``
rounds in all). If it still fails, every rve key is ``null`` and the reason is in the
record's ``errors``: a failure, never a guessed number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vidcli.errors import InputError
from vidcli.records import choice_field, field_of
from vidcli.scoring.vqa import field_value

if TYPE_CHECKING:  # pragma: no cover - typing only
    from vidcli.backends.base import ChatModel, Sampling
    from vidcli.scoring import MetricOutput, ScoreSetup

CRITERIA = ("EA", "PC", "GN", "GR")
KEYS = ("rve_EA", "rve_PC", "rve_GN", "rve_GR", "rve")
OVERALL = ("geometric", "viescore")
SUBSETS = ("icvg", "rave")
_PRESERVATION = ("- PC (preservation consistency): is everything the instruction does not ask to change "
                 "(subjects, background, layout, colours, camera) kept as in the source clip?\n")
_SCOPES = {
    True: "Rate all four criteria.",
    False: ("This is an in-context generation task: the produced video is new content that uses the source "
            "only as context, so preservation is not rated. Rate EA, GN and GR only."),
}


@dataclass
class RveJudge:
    """The judge model and how to ask it (built once per run by the command)."""

    model: "ChatModel"
    sampling: "Sampling"
    attempts: int = 2
    overall: str = "geometric"

    def close(self) -> None:
        self.model.close()


def overall_score(scores: dict[str, float], how: str = "geometric") -> float:
    """The record's overall score from its sub-scores (PC absent for ICVG)."""
    if how == "geometric":
        values = [scores[c] for c in CRITERIA if c in scores]
        return math.prod(values) ** (1 / len(values))
    if how == "viescore":
        semantic = min(scores["EA"], scores["PC"]) if "PC" in scores else scores["EA"]
        return math.sqrt(semantic * min(scores["GN"], scores["GR"]))
    raise ValueError(f"unknown overall {how!r}; choose from {', '.join(OVERALL)}")


def _validator(criteria: tuple[str, ...]):
    def validate(value: object) -> None:
        if not isinstance(value, dict):
            raise ValueError("the reply must be a JSON object")
        for name in criteria:
            score = value.get(name)
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise ValueError(f"'{name}' must be a number from 0 to 10, got {score!r}")
            if not 0 <= score <= 10:
                raise ValueError(f"'{name}' must be from 0 to 10, got {score}")
    return validate


def _triplet(record: dict) -> tuple[dict, str, bool]:
    """The record's checked source, instruction, and whether PC applies."""
    source = field_of(record, "source", dict, hint="{video, start, end} of the source clip")
    for name in ("start", "end"):
        if source.get(name) is not None and (isinstance(source[name], bool)
                                             or not isinstance(source[name], (int, float))):
            raise InputError(f"field 'source.{name}' must be a number of seconds")
    if source.get("start") is not None and source.get("end") is not None and source["end"] <= source["start"]:
        raise InputError(f"field 'source': end ({source['end']}) must come after start ({source['start']})")
    instruction = field_of(record, "instruction", str, hint="the edit instruction")
    subset = choice_field(record, "subset", SUBSETS)
    return source, instruction, subset != "icvg"


def _video_part(clip) -> dict:
    from vidcli.media import video_frames_as_pil

    times = clip.timestamps - clip.timestamps[0]
    return {"type": "video", "video": video_frames_as_pil(clip), "fps": len(clip.frames) / max(clip.duration_s, 1e-6),
            "timestamps": [float(t) for t in times]}


def judge_conversation(source_clip, edited_clip, instruction: str, with_pc: bool) -> list[dict]:
    """The judge's conversation: both videos as frames, then the rubric (see judge_rve.txt)."""
    from vidcli.prompts import render

    criteria = [c for c in CRITERIA if with_pc or c != "PC"]
    conversation = render("judge_rve", instruction=instruction, preservation=_PRESERVATION if with_pc else "",
                          scope=_SCOPES[with_pc], reply_form=", ".join(f'"{c}": 0-10' for c in criteria))
    user = conversation[-1]
    user["content"] = [{"type": "text", "text": "Source clip:"}, _video_part(source_clip),
                       {"type": "text", "text": "Produced video:"}, _video_part(edited_clip),
                       {"type": "text", "text": user["content"]}]
    return conversation


def score_rve(records: list[dict], setup: "ScoreSetup") -> list["MetricOutput | InputError"]:
    """The rve metric over a batch: one judge round (concurrent) for all readable records."""
    from vidcli.backends.jsonreply import generate_json
    from vidcli.scoring import MetricOutput

    judge, videos = setup.rve_judge, setup.videos
    outputs: list[MetricOutput | InputError | None] = [None] * len(records)
    asked, conversations, criteria = [], [], []
    for i, record in enumerate(records):
        try:
            source, instruction, with_pc = _triplet(record)
            source_clip = videos.clip(i, source.get("video"), "source.video", start=source.get("start"),
                                      end=source.get("end"))
            edited_clip = videos.clip(i, field_value(record, videos.video_field), videos.video_field)
        except InputError as exc:
            outputs[i] = exc
            continue
        asked.append(i)
        conversations.append(judge_conversation(source_clip, edited_clip, instruction, with_pc))
        criteria.append(tuple(c for c in CRITERIA if with_pc or c != "PC"))
    results = []
    for names in dict.fromkeys(criteria):  # one validator per criteria set
        picked = [k for k, c in enumerate(criteria) if c == names]
        answers = generate_json(judge.model, [conversations[k] for k in picked], judge.sampling,
                                validate=_validator(names), attempts=judge.attempts, expect=dict)
        results += list(zip(picked, answers))
    for k, result in results:
        outputs[asked[k]] = _output(result, criteria[k], judge.overall)
    return outputs  # type: ignore[return-value]  # every slot is filled above


def _output(result, criteria: tuple[str, ...], overall: str) -> "MetricOutput":
    from vidcli.scoring import MetricOutput

    if not result.ok:
        message = f"judge answer not usable: {result.error}"
        return MetricOutput({key: None for key in KEYS}, {key: message for key in KEYS})
    scores = {c: float(result.value[c]) for c in criteria}
    values: dict[str, float | None] = {f"rve_{c}": scores.get(c) for c in CRITERIA}
    values["rve"] = overall_score(scores, overall)
    return MetricOutput(values)
