"""Decompose a batch of records with an LLM (and a VLM for DRF reference answers and
for describing ReaDe conditions).

Each batch makes one call to ``generate_json`` per model role, so an OpenAI-compatible
backend runs the whole batch concurrently and a local model runs it batched.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from vidcli.backends.base import ChatModel, Sampling
from vidcli.backends.jsonreply import generate_json
from vidcli.decompose import drf, reade
from vidcli.errors import InputError, MediaError
from vidcli.jsonl import Source
from vidcli.prompts import render
from vidcli.records import first_present
from vidcli.stream import Outcome

log = logging.getLogger("vidcli")


@dataclass
class DecomposeOptions:
    schema: str = "drf"
    caption_fields: tuple[str, ...] = ("caption", "prompt")
    video_field: str = "video"
    frames: int = 10
    keep_consistent: bool = False
    attempts: int = 3
    llm_sampling: Sampling = Sampling(temperature=0.0, max_tokens=1024)
    vlm_sampling: Sampling = Sampling(temperature=0.0, max_tokens=256)
    media_root: str | None = None
    allow_escape: bool = False


def decompose_batch(sources: list[Source], llm: ChatModel, vlm: ChatModel | None,
                    opts: DecomposeOptions) -> list[Outcome]:
    """One Outcome per source, in order."""
    if opts.schema == "reade":
        return _reade_batch(sources, llm, vlm, opts)
    return _drf_batch(sources, llm, vlm, opts)


def _reade_batch(sources: list[Source], llm: ChatModel, vlm: ChatModel | None,
                 opts: DecomposeOptions) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(sources)
    described = _describe_conditions(sources, vlm, opts, outcomes)
    convs, where = [], []
    for i, text in described.items():
        try:
            convs.append(render("decompose_reade", **reade.prompt_fields(sources[i].record, text)))
            where.append(i)
        except InputError as exc:
            outcomes[i] = Outcome.fail("input", exc.message)
    results = generate_json(llm, convs, opts.llm_sampling, validate=reade.parse_key_info, attempts=opts.attempts)
    for i, res in zip(where, results):
        if res.error:
            outcomes[i] = Outcome.fail("llm", res.error)
        else:
            outcomes[i] = Outcome.ok({**sources[i].record, "key_info": reade.parse_key_info(res.value)})
    return outcomes


def _describe_conditions(sources: list[Source], vlm: ChatModel | None, opts: DecomposeOptions,
                         outcomes: list[Outcome | None]) -> dict[int, str]:
    """Each record's conditions described, as the text of make-cot's step 2, by record index.

    A record with make-cot's ``cot.descriptions`` uses them; otherwise every condition
    is planned as make-cot plans it (camera: the trajectory's motion words; audio or a
    condition given in words only: its caption; images and videos: the VLM, with the
    same prompts), and the VLM descriptions of the whole batch go out in one call. A
    condition that cannot be described fails its record (``outcomes``), never silently.
    """
    from vidcli.cot import steps

    works: dict[int, list[steps.ConditionWork]] = {}
    for i, src in enumerate(sources):
        try:
            conditions = steps.conditions_of(src.record)
            given = reade.cot_descriptions(src.record, conditions)
            if given is not None:
                works[i] = [steps.ConditionWork(label, text=text)
                            for label, text in zip(steps.condition_labels(conditions), given)]
                continue
            ctx = steps.MediaContext(src.base_dir, media_root=opts.media_root, allow_escape=opts.allow_escape,
                                     vlm_spec=vlm.spec if vlm is not None else None, frames=opts.frames)
            works[i] = steps.plan_conditions(conditions, ctx)
        except MediaError as exc:
            outcomes[i] = Outcome.fail("media", str(exc))
        except InputError as exc:
            outcomes[i] = Outcome.fail("nontext", exc.message)
    asked = [(i, k) for i, found in works.items() for k, work in enumerate(found) if work.request is not None]
    if asked:
        replies = generate_json(vlm, [works[i][k].request for i, k in asked], opts.llm_sampling,
                                validate=steps.text_field("description"), attempts=opts.attempts)
        for (i, k), reply in zip(asked, replies):
            if reply.error and outcomes[i] is None:
                outcomes[i] = Outcome.fail("nontext", f"conditions[{k}]: {reply.error}")
            elif not reply.error:
                works[i][k].text = reply.value["description"].strip()
    return {i: steps.nontext_text(found) for i, found in works.items() if outcomes[i] is None}


def _drf_batch(sources: list[Source], llm: ChatModel, vlm: ChatModel | None,
               opts: DecomposeOptions) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(sources)
    convs, where = [], []
    for i, src in enumerate(sources):
        try:
            _, caption = first_present(src.record, opts.caption_fields)
            convs.append(render("decompose_drf", caption=caption))
            where.append(i)
        except InputError as exc:
            outcomes[i] = Outcome.fail("input", exc.message)
    results = generate_json(llm, convs, opts.llm_sampling, validate=drf.parse_elements, attempts=opts.attempts)

    records: dict[int, dict] = {}
    for i, res in zip(where, results):
        if res.error:
            outcomes[i] = Outcome.fail("llm", res.error)
            continue
        elements = drf.parse_elements(res.value)
        caption = first_present(sources[i].record, opts.caption_fields)[1]
        questions = drf.ta_questions(elements) + [drf.phy_question(caption), drf.vq_question()]
        records[i] = {**sources[i].record, "elements": elements, "questions": questions}

    if vlm is not None:
        _add_vlm_references(sources, records, outcomes, vlm, opts)
    elif opts.keep_consistent:
        raise InputError("--keep-consistent needs --vlm to check the real videos")

    for i, record in records.items():
        if outcomes[i] is not None:
            continue
        if opts.keep_consistent and not record.get("consistent"):
            outcomes[i] = Outcome.drop("a reference answer on the real video is not the desired one")
        else:
            outcomes[i] = Outcome.ok(record)
    return outcomes


def _video_frames(src: Source, opts: DecomposeOptions) -> tuple[list, float]:
    """The record's real video as ``opts.frames`` PIL frames and their sampling rate."""
    from vidcli.media import load_video, video_frames_as_pil
    from vidcli.media_access import MediaAccess

    value = src.record.get(opts.video_field)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"field '{opts.video_field}' must be a video path")
    path = MediaAccess(opts.media_root, opts.allow_escape).path(value, src.base_dir)
    clip = load_video(path, num_frames=opts.frames)
    return video_frames_as_pil(clip), len(clip.frames) / max(clip.duration_s, 1e-6)


def _add_vlm_references(sources, records, outcomes, vlm, opts) -> None:
    """Ask the VLM each Phy/VQ question (and TA too with --keep-consistent) about the real video."""
    convs, asked = [], []  # asked: (record index, question index)
    for i, record in records.items():
        if record.get(opts.video_field) is None:
            if opts.keep_consistent:
                outcomes[i] = Outcome.fail("input", f"--keep-consistent needs a real video in field '{opts.video_field}'")
            continue
        try:
            frames, fps = _video_frames(sources[i], opts)
        except InputError as exc:
            outcomes[i] = Outcome.fail("media", str(exc))
            continue
        caption = first_present(record, opts.caption_fields)[1]
        for q, question in enumerate(record["questions"]):
            if question["dim"] == "TA" and not opts.keep_consistent:
                continue
            content = [{"type": "video", "video": frames, "fps": fps},
                       {"type": "text", "text": drf.reference_prompt(question, caption)}]
            convs.append([{"role": "user", "content": content}])
            asked.append((i, q))

    # One generate_json call per dimension, so each has its own reply check.
    results: dict[tuple[int, int], object] = {}
    for dim in ("TA", "Phy", "VQ"):
        picked = [k for k, (i, q) in enumerate(asked) if records[i]["questions"][q]["dim"] == dim]
        if not picked:
            continue
        replies = generate_json(vlm, [convs[k] for k in picked], opts.vlm_sampling, attempts=opts.attempts,
                                validate=lambda value, _dim=dim: drf.parse_verdict(value, _dim))
        results.update({asked[k]: reply for k, reply in zip(picked, replies)})
    checks: dict[int, list[bool]] = {}
    for (i, q) in asked:
        res = results[(i, q)]
        if outcomes[i] is not None:
            continue
        question = records[i]["questions"][q]
        if res.error:
            outcomes[i] = Outcome.fail("vlm", f"{question['dim']} question: {res.error}")
            continue
        verdict = drf.parse_verdict(res.value, question["dim"])
        if question["dim"] == "TA":
            question["check"] = verdict
        else:
            question["reference"] = verdict
            if verdict["answer"] != drf.DESIRED[question["dim"]]:
                question["undesired"] = True  # see vidcli.records: a target that teaches the defect
        checks.setdefault(i, []).append(verdict["answer"] == drf.DESIRED[question["dim"]])
    if opts.keep_consistent:
        for i, ok in checks.items():
            records[i]["consistent"] = all(ok)

