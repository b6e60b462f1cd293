"""The ``drf`` schema: a caption → eight element lists → TA / Phy / VQ questions.

TA questions get reference answers built from the elements ("Yes" + a short
explanation). Phy and VQ reference answers come from a VLM asked about the real video
that matches the caption; the stored question text is the comparison form that
``drf-tune`` asks about a generated video next to that real video, while the reference
query uses the single-video form of the same question (asking a video to be compared
with itself would tell us nothing).
"""
from __future__ import annotations

from functools import cache

from vidcli.prompts import render_text
from vidcli.records import DRF_KEYS

MAX_EXPLANATION_WORDS = 50
DESIRED = {"TA": "Yes", "Phy": "No", "VQ": "No"}

# How each element key is named in questions, and how its reference explanation opens.
_ASPECT = {
    "environment": ("setting", "The setting matches"),
    "objects": ("subjects", "The required subjects appear"),
    "motion": ("motion", "The motion matches"),
    "spatial": ("spatial layout", "The layout matches"),
    "color": ("colours", "The colours match"),
    "lighting": ("lighting", "The lighting matches"),
    "text": ("visible text", "The required text is visible"),
    "camera": ("camera work", "The camera work matches"),
}
PHY_ASPECTS = ("liquid_flow", "deformation", "material", "motion", "interpenetration")


def parse_elements(value: object) -> dict[str, list[str]]:
    """Check an LLM reply has the eight keys, each a list of phrases; raise ValueError."""
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object with the eight element keys")
    missing = [k for k in DRF_KEYS if k not in value]
    if missing:
        raise ValueError("missing key(s): " + ", ".join(missing))
    elements: dict[str, list[str]] = {}
    for key in DRF_KEYS:
        items = value[key]
        if isinstance(items, str):  # a lone phrase instead of a one-item list
            items = [items] if items.strip() else []
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise ValueError(f"key '{key}' must be a list of strings")
        elements[key] = [x.strip() for x in items if x.strip()]
    return elements


def truncate_words(text: str, limit: int = MAX_EXPLANATION_WORDS) -> str:
    words = text.split()
    return text.strip() if len(words) <= limit else " ".join(words[:limit])


def ta_questions(elements: dict[str, list[str]]) -> list[dict]:
    """One yes/no question per non-empty key, with its reference answer."""
    questions = []
    for key in DRF_KEYS:
        phrases = elements.get(key) or []
        if not phrases:
            continue
        aspect, opening = _ASPECT[key]
        condition = "; ".join(phrases)
        questions.append({
            "dim": "TA",
            "key": key,
            "question": render_text("question_ta", aspect=aspect, condition=condition),
            "reference": {
                "answer": "Yes",
                "explanation": truncate_words(f"{opening}: {condition}."),
                "source": "elements",
            },
        })
    return questions


@cache
def _fixed_text(name: str) -> str:
    return render_text(name)


def phy_question(caption: str) -> dict:
    """The Phy question about a video generated from ``caption`` (it names the caption, as the paper's does)."""
    return {"dim": "Phy", "key": "physics", "question": render_text("question_phy", caption=caption), "reference": None}


def vq_question() -> dict:
    return {"dim": "VQ", "key": "quality", "question": _fixed_text("question_vq"), "reference": None}


def reference_prompt(question: dict, caption: str) -> str:
    """The text asked about the real video (matching ``caption``) alone, for a question's reference answer."""
    if question["dim"] == "Phy":
        return render_text("question_phy_single", caption=caption)
    if question["dim"] == "VQ":
        return _fixed_text("question_vq_single")
    return question["question"]


def undesired_questions(record: dict) -> list[dict]:
    """The record's questions whose reference answer is not the desired verdict (TA Yes, Phy and VQ No)."""
    return [q for q in record.get("questions") or [] if isinstance(q, dict) and isinstance(q.get("reference"), dict)
            and q["reference"].get("answer") not in (None, DESIRED.get(q.get("dim")))]


def _yes_no(value: object, where: str) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, str) and value.strip().lower().rstrip(".") in ("yes", "no"):
        return value.strip().rstrip(".").capitalize()
    raise ValueError(f"{where} must be \"Yes\" or \"No\"")


def parse_verdict(value: object, dim: str) -> dict:
    """Check a VLM verdict reply for a question of dimension ``dim``; raise ValueError."""
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object with 'answer' and 'explanation'")
    answer = _yes_no(value.get("answer"), "'answer'")
    explanation = value.get("explanation")
    if not isinstance(explanation, str) or not explanation.strip():
        raise ValueError("'explanation' must be a non-empty string")
    verdict = {"answer": answer, "explanation": truncate_words(explanation), "source": "vlm"}
    if dim == "Phy":
        aspects = value.get("aspects")
        if not isinstance(aspects, dict):
            raise ValueError("'aspects' must be an object with the five aspects")
        verdict["aspects"] = {a: _yes_no(aspects.get(a), f"aspect '{a}'") for a in PHY_ASPECTS}
    if dim == "VQ":
        issue = value.get("issue", "none")
        verdict["issue"] = issue if isinstance(issue, str) and issue.strip() else "none"
    return verdict
