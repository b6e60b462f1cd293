"""The ``reade`` schema: (instruction, gold caption, condition descriptions) → key-info.

Key-info holds three element sets used by the ReaDe content reward (SPEC §3): U (what
the user's text asks for), S (what the non-text conditions show) and Z (the gold
caption's facts as a whole: the details it adds with the facts they complete). Each
set is ``{objects: [{name, attributes}], actions, camera, style}``. The sets may
overlap, as in the paper's own example.

S is grounded in the conditions themselves: the prompt carries a description of each
one (:mod:`vidcli.decompose.run` gets them: make-cot's step-2 text when the record has
it, else the camera trajectory's motion words and a ``--vlm`` description of each
image or video, as make-cot's step 2 would write them).
"""
from __future__ import annotations

from vidcli.errors import InputError
from vidcli.records import gold_text

GROUPS = ("user", "supplementary", "imaginative")
LISTS = ("actions", "camera", "style")


def prompt_fields(record: dict, conditions: str) -> dict[str, str]:
    """The values the reade prompt template needs, with input checks; ``conditions`` is
    the described conditions as text (:func:`vidcli.cot.steps.nontext_text`)."""
    instruction = record.get("instruction", "")
    if not isinstance(instruction, str):
        raise InputError("field 'instruction' must be a string")
    if "gold" not in record:
        raise InputError("missing field 'gold'")
    return {
        "instruction": instruction.strip() or "(empty: the user gave only non-text inputs)",
        "conditions": conditions,
        "gold": gold_text(record["gold"]),
    }


def cot_descriptions(record: dict, conditions: list[dict]) -> list[str] | None:
    """make-cot's step-2 text per condition (``cot.descriptions``), when the record has it
    for every condition; None otherwise."""
    cot = record.get("cot")
    found = cot.get("descriptions") if isinstance(cot, dict) else None
    if not isinstance(found, list) or len(found) != len(conditions) or not conditions:
        return None
    if not all(isinstance(text, str) and text.strip() for text in found):
        return None
    return [text.strip() for text in found]


def _string_list(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"{where} must be a list of strings")
    return [x.strip() for x in value if x.strip()]


def parse_key_info(value: object) -> dict:
    """Check an LLM reply is the three-group key-info object; raise ValueError."""
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object with 'user', 'supplementary' and 'imaginative'")
    missing = [g for g in GROUPS if g not in value]
    if missing:
        raise ValueError("missing group(s): " + ", ".join(missing))
    info = {}
    for group in GROUPS:
        body = value[group]
        if not isinstance(body, dict):
            raise ValueError(f"'{group}' must be an object")
        objects = body.get("objects") or []
        if not isinstance(objects, list):
            raise ValueError(f"'{group}.objects' must be a list")
        parsed_objects = []
        for j, obj in enumerate(objects):
            if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"].strip():
                raise ValueError(f"'{group}.objects[{j}]' must be an object with a 'name'")
            attributes = _string_list(obj.get("attributes"), f"'{group}.objects[{j}].attributes'")
            parsed_objects.append({"name": obj["name"].strip(), "attributes": attributes})
        info[group] = {"objects": parsed_objects,
                       **{key: _string_list(body.get(key), f"'{group}.{key}'") for key in LISTS}}
    return info


def count_elements(group: dict) -> int:
    """Elements of one group as the coverage reward counts them: each object, each attribute, each phrase."""
    return sum(1 + len(o["attributes"]) for o in group["objects"]) + sum(len(group[k]) for k in LISTS)
