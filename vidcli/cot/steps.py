"""The four steps of ReaDe's chain-of-thought data: prompts, reply checks, condition descriptions.

1. **intent** (LLM): what the text asks for, reasoned out when it only hints. For a
   record with conditions also the intent inferred from the conditions alone
   (:func:`inferred_intent_prompt`), which starts the chain SFT trains on when it drops
   the instruction (steps 3 and 4 then see :data:`NO_INSTRUCTION_TEXT` as the text).
2. **nontext** (VLM per condition, camera without a model): each condition in words —
   identity/reference images: who or what they show; depth and pose videos: layout and
   motion over time; camera trajectory: :func:`vidcli.camera_motion.describe_motion`, optionally
   plus the camera clauses of a VLM caption of the original video; audio: the
   condition's ``caption`` (our VLM backends read images and video only); source
   video: a VLM caption.
3. **alignment** (LLM): agreement and conflict between 1 and 2, text winning.
4. **supplement** (LLM): details the gold caption adds, nothing else.

Every model reply is JSON with one text field (six for the gold structuring), checked
here so ``generate_json`` re-asks when it is missing or empty.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vidcli.backends.base import Conversation
from vidcli.errors import InputError, MediaError
from vidcli.prompts import render, render_text
from vidcli.records import CAPTION_PARTS, CONDITION_TYPES, require

log = logging.getLogger("vidcli")

STEP_KEYS = ("intent", "nontext", "alignment", "supplement")
STEP_LABELS = {
    "intent": "Step 1 - Textual intent",
    "nontext": "Step 2 - Non-textual understanding",
    "alignment": "Step 3 - Multimodal alignment",
    "supplement": "Step 4 - Supplementary completion",
}
NO_CONDITIONS = "No non-text inputs were given; the request is text only."
NO_INSTRUCTION_TEXT = "(none: the user gave no text, only the non-text inputs)"

# How each condition type is named in step 2 and in the intent prompt.
_LABEL = {"identity": "Identity", "image": "Reference image", "depth": "Depth video", "pose": "Pose video",
          "camera": "Camera trajectory", "audio": "Audio", "video": "Source video"}
# (one, several) of each condition type, as the intent prompt lists them.
_NOUN = {"identity": ("an identity reference image", "identity reference images"),
         "image": ("a reference image", "reference images"), "depth": ("a depth video", "depth videos"),
         "pose": ("a human-pose video", "human-pose videos"), "camera": ("a camera trajectory", "camera trajectories"),
         "audio": ("an audio clip", "audio clips"), "video": ("a source video", "source videos")}
_COUNT = {2: "two", 3: "three", 4: "four", 5: "five"}
_TEMPLATE = {"identity": "cot_identity", "image": "cot_identity", "depth": "cot_depth", "pose": "cot_pose",
             "video": "cot_video"}

# Words that make a clause of a video caption be about the camera. A clause without
# one ("a man crosses the street") is dropped from the camera-only caption.
_CAMERA_WORDS = re.compile(
    r"\b(camera|shot|angle|framing|pan(s|ning|ned)?|tilt(s|ing|ed)?|dolly|dollies|truck(s|ing)?|"
    r"pedestal|zoom(s|ing|ed)?|orbit(s|ing)?|track(s|ing)?|crane|handheld|static|fixed|steady|close-up|"
    r"push(es)? in|pull(s)? (back|out)|aerial|overhead|eye[- ]level|point of view|pov)\b",
    re.IGNORECASE)
_CLAUSE_BREAK = re.compile(r"[.;!?]+\s*|,\s*|\s+(?:and|while|as|but|whereas)\s+", re.IGNORECASE)


# ---------------------------------------------------------------- reply checks


def text_field(key: str) -> Callable[[object], None]:
    """A validator for replies of the form ``{key: "non-empty text"}``."""

    def check(value: object) -> None:
        if not isinstance(value, dict) or not isinstance(value.get(key), str) or not value[key].strip():
            raise ValueError(f'expected a JSON object {{"{key}": "..."}} with non-empty text')

    return check


def parse_gold_parts(value: object) -> dict[str, str]:
    """Check a six-part caption (a gold caption or the LLM's split of one); raise ValueError."""
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object with the six caption parts")
    missing = [k for k in CAPTION_PARTS if not isinstance(value.get(k), str) or not value[k].strip()]
    if missing:
        raise ValueError("missing or empty part(s): " + ", ".join(missing))
    return {k: value[k].strip() for k in CAPTION_PARTS}


# ---------------------------------------------------------------- record checks


def instruction_of(record: dict) -> str:
    """The user's text request (required, non-empty)."""
    return require(record, "instruction").strip()


def gold_of(record: dict) -> dict[str, str] | str:
    """The structured gold caption, or its text when it still needs splitting."""
    gold = require(record, "gold", (str, dict))
    if isinstance(gold, str):
        return gold.strip()
    try:
        return parse_gold_parts(gold)
    except ValueError as exc:
        raise InputError(f"field 'gold': {exc}") from None


def conditions_of(record: dict) -> list[dict]:
    """The record's conditions (none is fine), each checked for a known type and string paths."""
    conditions = record.get("conditions") or []
    if not isinstance(conditions, list):
        raise InputError("field 'conditions' must be a list")
    for i, cond in enumerate(conditions):
        if not isinstance(cond, dict) or cond.get("type") not in CONDITION_TYPES:
            raise InputError(f"conditions[{i}] must be an object whose 'type' is one of " + ", ".join(CONDITION_TYPES))
        for key in ("path", "caption", "video"):
            if cond.get(key) is not None and (not isinstance(cond[key], str) or not cond[key].strip()):
                raise InputError(f"conditions[{i}].{key} must be a non-empty string")
    return conditions


TEXT_ONLY = "text"


def condition_types(record: dict) -> str:
    """A record's condition types as one label: the set of types, sorted and joined
    with "+" ("camera+identity"; two identities are "identity"), or ``text`` when it
    has none."""
    conditions = record.get("conditions") or []
    kinds = {str(c.get("type")) for c in conditions if isinstance(c, dict)} if isinstance(conditions, list) else set()
    return "+".join(sorted(kinds)) or TEXT_ONLY


# ---------------------------------------------------------------- text-step prompts


def structure_prompt(gold: str) -> Conversation:
    """Ask the LLM to split a plain-text gold caption into the six parts."""
    return render("cot_structure", gold=gold)


def intent_prompt(instruction: str, conditions: list[dict]) -> Conversation:
    """Step 1: the text's intent; the prompt names the other inputs only by kind."""
    counts = Counter(c["type"] for c in conditions)
    nouns = [_NOUN[t][0] if n == 1 else f"{_COUNT.get(n, n)} {_NOUN[t][1]}" for t, n in counts.items()]
    inputs = "nothing else" if not nouns else ", ".join(nouns[:-1]) + (" and " if len(nouns) > 1 else "") + nouns[-1]
    return render("cot_intent", instruction=instruction, inputs=inputs)


def inferred_intent_prompt(nontext: str) -> Conversation:
    """Step 1 for an empty instruction: the intent inferred from the conditions (step 2's text) alone."""
    return render("cot_intent_inferred", nontext=nontext)


def alignment_prompt(instruction: str, intent: str, nontext: str) -> Conversation:
    """Step 3: reconcile step 1 with step 2, the text winning on conflict."""
    return render("cot_alignment", instruction=instruction, intent=intent, nontext=nontext)


def supplement_prompt(instruction: str, alignment: str, gold_rendered: str) -> Conversation:
    """Step 4: what the gold caption adds to the unified interpretation of step 3."""
    return render("cot_supplement", instruction=instruction, alignment=alignment, gold=gold_rendered)


def think_text(steps: dict[str, str]) -> str:
    """The reasoning of the target: the four steps, each on its own labelled paragraph."""
    return "\n\n".join(f"{STEP_LABELS[k]}: {steps[k].strip()}" for k in STEP_KEYS)


_INTENT_PARAGRAPH = re.compile(re.escape(STEP_LABELS["intent"]) + r": .*?\n\n(?=" + re.escape(STEP_LABELS["nontext"])
                               + ": )", re.DOTALL)


def target_without_intent(target: str) -> str | None:
    """A make-cot target with its step-1 paragraph (which quotes the request) left out,
    for records made before make-cot wrote ``cot.no_instruction``; None when the target
    does not have make-cot's labelled steps."""
    found = _INTENT_PARAGRAPH.search(target)
    if found is None:
        return None
    return target[:found.start()] + target[found.end():]


# ---------------------------------------------------------------- step 2: conditions


@dataclass
class ConditionWork:
    """One condition of a record on its way to a description.

    ``text`` is known without a model (camera path, captioned audio, a condition given
    only as a caption) or filled in from the VLM's answer to ``request``;
    ``camera_request`` asks the VLM for the camera motion of the original video, whose
    camera clauses land in ``camera_clauses``.
    """

    label: str
    text: str = ""
    request: Conversation | None = None
    camera_request: Conversation | None = None
    camera_clauses: str = ""

    @property
    def description(self) -> str:
        if self.camera_clauses:
            clauses = self.camera_clauses[0].lower() + self.camera_clauses[1:]
            return f"{self.text}; in the original video, {clauses}"
        return self.text


def camera_clauses(caption: str) -> str:
    """Only the clauses of ``caption`` that speak about the camera, joined with commas."""
    kept = [c.strip() for c in _CLAUSE_BREAK.split(caption) if c and c.strip() and _CAMERA_WORDS.search(c)]
    return ", ".join(kept)


def nontext_text(works: list[ConditionWork]) -> str:
    """Step 2 as text: one labelled line per condition."""
    if not works:
        return NO_CONDITIONS
    return "\n".join(f"- {w.label}: {w.description}" for w in works)


def condition_labels(conditions: list[dict]) -> list[str]:
    """How step 2 names each condition: its kind, numbered when the kind repeats ("Identity 2")."""
    counts = Counter(c["type"] for c in conditions)
    seen: Counter = Counter()
    labels = []
    for c in conditions:
        seen[c["type"]] += 1
        label = _LABEL[c["type"]]
        labels.append(f"{label} {seen[c['type']]}" if counts[c["type"]] > 1 else label)
    return labels


def _video_part(path: Path, frames: int) -> dict:
    from vidcli.media import load_video, video_frames_as_pil

    clip = load_video(path, num_frames=frames)
    fps = len(clip.frames) / max(clip.duration_s, 1e-6)
    return {"type": "video", "video": video_frames_as_pil(clip), "fps": fps,
            "timestamps": [float(t) for t in clip.timestamps]}


def _vlm_request(media_part: dict, prompt: str) -> Conversation:
    return [{"role": "user", "content": [media_part, {"type": "text", "text": prompt}]}]


@dataclass
class MediaContext:
    """Where media paths resolve, which VLM (if any) is there, and how to sample."""

    base_dir: Path
    media_root: str | None = None
    allow_escape: bool = False
    vlm_spec: str | None = None
    frames: int = 8
    camera_from_video: bool = False

    def resolve(self, value: str) -> Path:
        from vidcli.media_access import MediaAccess

        return MediaAccess(self.media_root, self.allow_escape).media_path(value, self.base_dir)


def plan_conditions(conditions: list[dict], ctx: MediaContext) -> list[ConditionWork]:
    """Load every condition's media and decide how each gets described.

    Raises :class:`MediaError` for a missing or unreadable file (it names the file) and
    :class:`InputError` for a condition that cannot be described with the models given.
    """
    labels = condition_labels(conditions)
    return [_plan(i, cond, label, conditions, ctx) for i, (cond, label) in enumerate(zip(conditions, labels))]


def _plan(i: int, cond: dict, label: str, conditions: list[dict], ctx: MediaContext) -> ConditionWork:
    from vidcli.camera import load_trajectory
    from vidcli.camera_motion import describe_motion
    from vidcli.media import load_image

    kind, caption, value = cond["type"], cond.get("caption"), cond.get("path")
    where = f"conditions[{i}] ({kind} {value})" if value else f"conditions[{i}] ({kind})"
    if value is None:  # a condition given in words only
        if caption is None:
            raise InputError(f"{where} has neither 'path' nor 'caption'")
        return ConditionWork(label, text=caption.strip())
    path = ctx.resolve(value)
    if kind == "camera":
        work = ConditionWork(label, text=describe_motion(load_trajectory(path)))
        video = _original_video(conditions, cond) if ctx.camera_from_video else None
        if video is not None:
            _need_vlm(ctx, where)
            part = _video_part(ctx.resolve(video), ctx.frames)
            work.camera_request = _vlm_request(part, render_text("cot_camera_video"))
        return work
    if kind == "audio":
        if not path.is_file():
            raise MediaError("file not found", file=str(path))
        if caption is None:
            model = (f"--vlm {ctx.vlm_spec} takes only images and video" if ctx.vlm_spec
                     else "none was given (--vlm takes only images and video)")
            raise InputError(f"{where}: describing audio needs an audio-capable model, and {model}; "
                             "add a 'caption' to this condition")
        return ConditionWork(label, text=caption.strip())
    _need_vlm(ctx, where)
    hint = f' The user described it as: "{caption.strip()}".' if caption else ""
    part = {"type": "image", "image": load_image(path)} if kind in ("identity", "image") \
        else _video_part(path, ctx.frames)
    return ConditionWork(label, request=_vlm_request(part, render_text(_TEMPLATE[kind], hint=hint)))


def _need_vlm(ctx: MediaContext, where: str) -> None:
    if ctx.vlm_spec is None:
        raise InputError(f"{where} needs a vision-language model to describe it: give --vlm")


def _original_video(conditions: list[dict], camera: dict) -> str | None:
    """The video a camera path was taken from: the condition's own ``video``, else the
    record's source-video condition; None when the record has neither."""
    if isinstance(camera.get("video"), str) and camera["video"].strip():
        return camera["video"]
    for cond in conditions:
        if cond["type"] == "video" and cond.get("path"):
            return cond["path"]
    log.debug("--camera-from-video: no original video for a camera condition; using the trajectory only")
    return None
