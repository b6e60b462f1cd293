"""The toy world's exact judge, teacher and LLM, behind the same OpenAI-compatible interface as real ones.

Every request is recognised by the offline teacher's template matching
(:func:`vidcli.testing.teacher.identify`); where the toy world knows the truth the
answer is exact, everywhere else the offline teacher's rule answers:

- ``judge_element``: "yes" exactly when every fact the element states
  (:func:`~vidcli.toyworld.language.read_facts`) is stated by the caption; an element
  that states no fact of the world ("background", a style phrase) is judged by its words;
- ``judge_coverage_number``: the fraction of checklist items that pass that test;
- ``judge_contradiction``: whether the caption states two facts that cannot both hold;
- ``decompose_drf``: the eight element lists of the facts the caption states, in the
  world's phrasing (equal to :func:`~vidcli.toyworld.language.drf_elements` of the scene
  for a world caption);
- ``decompose_reade``: U, S and Z as the world writes them
  (:func:`~vidcli.toyworld.world.key_info`): the facts of the text, of the condition
  descriptions, and of the gold caption with its style;
- ``cot_intent``, ``cot_alignment``, ``cot_supplement``: short steps that state the
  request's facts, the camera path's agreement, and exactly the gold facts not yet said;
- ``question_ta``: the pixel oracle's verdict on the video's frames for the question's facts.

    python -m vidcli.toyworld judge [--port 0] [--url-file FILE]

serves until SIGTERM/SIGINT (any model name: ``--judge openai:toy --base-url URL``).
"""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np

from vidcli.testing.server import Action, ScriptedServer, error
from vidcli.testing.teacher import UnknownTemplate, identify
from vidcli.testing.teacher_reading import Request
from vidcli.testing.teacher_replies import REPLIES
from vidcli.toyworld.language import (
    Fact,
    elements_of,
    in_order,
    key_info_group,
    read_facts,
    self_contradictory,
    states_style,
)

_WORD = re.compile(r"[a-z]+")
_PREFIX = re.compile(r"^\s*[a-z_ ]+:\s*")


def supported(caption: str, element: str) -> bool:
    """Whether ``caption`` states ``element`` (module docstring). Without a fact of the world,
    the world's style is judged as such, anything else by its words after any "kind:" prefix
    (key-info writes "style: …", and a caption need not say "style")."""
    wanted = read_facts(element)
    if wanted:
        return wanted <= read_facts(caption)
    if states_style(element):
        return states_style(caption)
    asked = set(_WORD.findall(_PREFIX.sub("", element.lower())))
    return bool(asked) and asked <= set(_WORD.findall(caption.lower()))


def facts_phrase(facts: list[Fact]) -> str:
    return "; ".join(f.phrase() for f in facts)


def _element(r: Request) -> str:
    return "yes" if supported(r.get("caption"), r.get("element")) else "no"


def _coverage_number(r: Request) -> str:
    items = [line[2:] for line in r.get("elements").splitlines() if line.startswith("- ")]
    covered = sum(supported(r.get("caption"), item) for item in items)
    return f"{covered / len(items):.4f}" if items else "1.0"


def _contradiction(r: Request) -> str:
    return "yes" if self_contradictory(r.get("caption")) else "no"


def _drf(r: Request) -> str:
    text = r.get("caption")
    return json.dumps(elements_of(in_order(read_facts(text), text)))


def _reade(r: Request) -> str:
    instruction, conditions, gold = r.get("instruction"), r.get("conditions"), r.get("gold")
    return json.dumps({"user": key_info_group(read_facts(instruction), instruction),
                       "supplementary": key_info_group(read_facts(conditions), conditions),
                       "imaginative": key_info_group(read_facts(gold), gold, style=states_style(gold))})


def _intent(r: Request) -> str:
    instruction = r.get("instruction")
    said = in_order(read_facts(instruction), instruction)
    return json.dumps({"intent": f"The user wants a new video where {facts_phrase(said) or 'a simple scene'}."})


def _alignment(r: Request) -> str:
    nontext = r.get("nontext")
    pans = read_facts(nontext)
    if not pans:
        return json.dumps({"alignment": "Only the text counts; nothing conflicts."})
    return json.dumps({"alignment": f"The camera path agrees with the text: {facts_phrase(sorted(pans))}."})


def _supplement(r: Request) -> str:
    gold = r.get("gold")
    said = read_facts(f"{r.get('instruction')}. {r.get('alignment')}")
    missing = [f for f in in_order(read_facts(gold), gold) if f not in said]
    if not missing:
        return json.dumps({"supplement": "Nothing is missing."})
    return json.dumps({"supplement": f"I add: {facts_phrase(missing)}."})


def frames_of(content: object) -> np.ndarray | None:
    """The first video of a message as (T, H, W, 3) uint8 frames at their sent size."""
    from PIL import Image

    pictures = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
                pictures.append(np.asarray(image.convert("RGB")))
    return np.stack(pictures) if pictures else None


def _question_ta(r: Request) -> str:
    from vidcli.toyworld.oracle import check, read_video

    frames = frames_of(r.content)
    asked = read_facts(r.get("condition"))
    if frames is None or not asked:
        return REPLIES["question_ta"](r)
    reading = read_video(frames)
    missed = [f for f in sorted(asked) if not check(f, reading)]
    if missed:
        return json.dumps({"answer": "No", "explanation": f"The video does not show that {facts_phrase(missed)}."})
    return json.dumps({"answer": "Yes", "explanation": f"The video shows that {facts_phrase(sorted(asked))}."})


EXACT = {"judge_element": _element, "judge_coverage_number": _coverage_number,
         "judge_contradiction": _contradiction, "decompose_drf": _drf, "decompose_reade": _reade,
         "cot_intent": _intent, "cot_alignment": _alignment, "cot_supplement": _supplement,
         "question_ta": _question_ta}


def judge_reply(body: dict) -> Action | str:
    """The toy judge's answer to one chat-completions request body (HTTP 400 when unknown)."""
    try:
        name, request = identify(body)
    except UnknownTemplate as exc:
        return error(400, str(exc).replace("offline teacher", "toy judge"))
    rule = EXACT.get(name) or REPLIES.get(name)
    if rule is None:
        return error(400, f"toy judge: no reply rule for prompt template {name!r}")
    return rule(request)


def judge_server(host: str = "127.0.0.1", port: int = 0) -> ScriptedServer:
    """The toy judge as a (not yet started) server; any model name is accepted."""
    return ScriptedServer(judge_reply, model="toy", host=host, port=port)
