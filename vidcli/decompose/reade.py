"""The ``reade`` schema: (instruction, gold caption, condition captions) → key-info.

Key-info holds three element sets used by the ReaDe content reward: U (what the
user's text asks for), S (what the non-text conditions contribute) and Z (plausible
details the gold caption adds). Each set is
``{objects: [{name, attributes}], actions, camera, style}``.
"""
from __future__ import annotations

from vidcli.errors import InputError
from vidcli.records import CONDITION_TYPES, gold_text

GROUPS = ("user", "supplementary", "imaginative")
LISTS = ("actions", "camera", "style")

_CONDITION_WORDS = {
    "identity": "reference image of an identity",
    "image": "reference image",
    "depth": "depth video",
    "pose": "human-pose video",
    "camera": "camera trajectory",
    "audio": "audio clip",
    "video": "source video",
}


def describe_conditions(record: dict) -> str:
    """The record's conditions as lines for the prompt; checks their shape."""
    conditions = record.get("conditions") or []
    if not isinstance(conditions, list):
        raise InputError("field 'conditions' must be a list")
    lines = []
    for i, cond in enumerate(conditions):
        if not isinstance(cond, dict) or cond.get("type") not in CONDITION_TYPES:
            raise InputError(f"conditions[{i}] must be an object whose 'type' is one of "
                             + ", ".join(CONDITION_TYPES))
        caption = cond.get("caption")
        label = _CONDITION_WORDS[cond["type"]]
        lines.append(f"- {label}: {caption}" if isinstance(caption, str) and caption.strip()
                     else f"- {label} (no description given)")
    return "\n".join(lines) if lines else "(none)"


def prompt_fields(record: dict) -> dict[str, str]:
    """The values the reade prompt template needs, with input checks."""
    instruction = record.get("instruction", "")
    if not isinstance(instruction, str):
        raise InputError("field 'instruction' must be a string")
    if "gold" not in record:
        raise InputError("missing field 'gold'")
    return {
        "instruction": instruction.strip() or "(empty: the user gave only non-text inputs)",
        "conditions": describe_conditions(record),
        "gold": gold_text(record["gold"]),
    }


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
            parsed_objects.append({"name": obj["name"].strip(),
                                   "attributes": _string_list(obj.get("attributes"), f"'{group}.objects[{j}].attributes'")})
        info[group] = {"objects": parsed_objects,
                       **{key: _string_list(body.get(key), f"'{group}.{key}'") for key in LISTS}}
    return info


def count_elements(group: dict) -> int:
    """Elements of one group as the coverage reward counts them: each object, each attribute, each phrase."""
    return sum(1 + len(o["attributes"]) for o in group["objects"]) + sum(len(group[k]) for k in LISTS)
