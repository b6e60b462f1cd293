"""Interpreter requests in, output records out.

**In.** A request record (``instruction`` and ``conditions``, see :mod:`vidcli.records`)
becomes a two-message conversation: the system prompt (``prompts/interpreter_system.txt``)
and one user message. The user message lists the conditions in :data:`CONDITION_ORDER`
(the record's own order kept within a type), each after a short label, and ends with the
request line::

    Identity image 1: <image>
    Identity image 2: <image>
    Reference image: <image>
    Source video: <video>
    Depth video: <video>
    Pose video: <video>
    Camera trajectory: <|camera_pad|>
    Audio: <audio>
    Request: make her wave

A camera trajectory is one :data:`CAMERA_PLACEHOLDER` in a text part. The interpreter
expands it to the camera encoder's token count and swaps in the encoder's output; where
there is no camera encoder (a model without one, or an OpenAI-compatible server) it is
replaced by the trajectory's deterministic motion description
(:func:`vidcli.camera_motion.describe_motion`), e.g. "moderate dolly in, slight pan left".

**Out.** :func:`output_record` turns a model's raw text into the record's ``output``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidcli.errors import InputError
from vidcli.records import CAPTION_PARTS, CONDITION_TYPES, content_id

if TYPE_CHECKING:  # pragma: no cover - typing only
    from vidcli.camera import Trajectory

CONDITION_ORDER = ("identity", "image", "video", "depth", "pose", "camera", "audio")
CAMERA_PLACEHOLDER = "<|camera_pad|>"
AUDIO_RATE = 16000
NO_INSTRUCTION = "(no text; infer the intended video from the inputs above)"
_LABELS = {"identity": "Identity image", "image": "Reference image", "video": "Source video",
           "depth": "Depth video", "pose": "Pose video", "camera": "Camera trajectory", "audio": "Audio"}
_VIDEO_TYPES = ("video", "depth", "pose")


@dataclass
class Request:
    """One interpreter request with its media loaded (see the module docstring for the layout).

    ``conversation`` is ``[system, user]`` in the vidcli chat format; ``cameras`` holds one
    trajectory per camera condition, in the order their placeholders appear;
    ``condition_types`` / ``condition_paths`` list the conditions in message order.
    """

    id: str
    instruction: str
    conversation: list[dict]
    cameras: list["Trajectory"]
    condition_types: list[str]
    condition_paths: list[str] = field(default_factory=list)


def _conditions(record: dict) -> list[dict]:
    conditions = record.get("conditions")
    if conditions is None:
        return []
    if not isinstance(conditions, list):
        raise InputError("field 'conditions' must be a list")
    for i, cond in enumerate(conditions):
        if not isinstance(cond, dict) or cond.get("type") not in CONDITION_TYPES:
            raise InputError(f"conditions[{i}] must be an object whose 'type' is one of {', '.join(CONDITION_TYPES)}")
        path = cond.get("path")
        if not isinstance(path, str) or not path.strip():
            raise InputError(f"conditions[{i}] ({cond['type']}) needs a 'path' to its file")
    # Stable: the record's order is kept within a type.
    return sorted(conditions, key=lambda c: CONDITION_ORDER.index(c["type"]))


def _instruction(record: dict) -> str:
    value = record.get("instruction")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"field 'instruction' must be a string, got {type(value).__name__}")
    if CAMERA_PLACEHOLDER in value:
        raise InputError(f"field 'instruction' contains the reserved token {CAMERA_PLACEHOLDER}")
    return value.strip()


def _media_part(kind: str, path: Path, video_frames: int) -> dict | "Trajectory":
    from vidcli.camera import load_trajectory
    from vidcli.media import load_audio, load_image, load_video, video_frames_as_pil

    if kind in ("identity", "image"):
        return {"type": "image", "image": load_image(path)}
    if kind in _VIDEO_TYPES:
        clip = load_video(path, num_frames=video_frames)
        # The rate at which the kept frames sample the clip: Qwen-VL models date frames with it.
        fps = len(clip.frames) / max(clip.duration_s, 1e-6)
        return {"type": "video", "video": video_frames_as_pil(clip), "fps": fps,
                "timestamps": [float(t) for t in clip.timestamps]}
    if kind == "camera":
        return load_trajectory(path)
    return {"type": "audio", "audio": load_audio(path, sr=AUDIO_RATE), "sampling_rate": AUDIO_RATE}


def request_from_record(
    record: dict,
    base_dir: Path,
    *,
    media_root: str | Path | None = None,
    allow_escape: bool = False,
    video_frames: int = 16,
    drop_instruction: bool = False,
) -> Request:
    """Load a request record's media and build its conversation.

    Media paths resolve against ``base_dir`` (the JSONL file's folder) or ``media_root``.
    ``video_frames`` frames are sampled evenly over each video (source, depth, pose).
    ``drop_instruction`` replaces the instruction with the empty request line (SFT's
    instruction dropout); it is ignored for a record without conditions, which would
    be left with nothing. Raises :class:`InputError` (bad fields, nothing to interpret)
    or :class:`MediaError` (a missing or unreadable file), with the record id set.
    """
    from vidcli.media_access import MediaAccess
    from vidcli.prompts import render

    rid = record.get("id") if isinstance(record.get("id"), str) else content_id(record)
    try:
        instruction = _instruction(record)
        conditions = _conditions(record)
        if not instruction and not conditions:
            raise InputError("nothing to interpret: no 'instruction' text and no 'conditions'")
        if drop_instruction and conditions:
            instruction = ""
        access = MediaAccess(media_root, allow_escape)
        parts: list[dict] = []
        cameras = []
        counts = {kind: sum(c["type"] == kind for c in conditions) for kind in CONDITION_ORDER}
        seen = dict.fromkeys(CONDITION_ORDER, 0)
        for cond in conditions:
            kind = cond["type"]
            path = access.media_path(cond["path"], base_dir)  # a path leaving the media folder is a media problem
            seen[kind] += 1
            label = _LABELS[kind] + (f" {seen[kind]}" if counts[kind] > 1 else "")
            prefix = "\n" if parts else ""
            media = _media_part(kind, path, video_frames)
            if kind == "camera":
                cameras.append(media)
                parts.append({"type": "text", "text": f"{prefix}{label}: {CAMERA_PLACEHOLDER}"})
            else:
                parts += [{"type": "text", "text": f"{prefix}{label}:"}, media]
        system, user = render("interpreter_system", instruction=instruction or NO_INSTRUCTION)
        parts.append({"type": "text", "text": ("\n" if parts else "") + user["content"]})
    except InputError as exc:
        raise exc.located(record_id=rid) from None
    return Request(
        id=rid, instruction=instruction, conversation=[system, {"role": "user", "content": parts}],
        cameras=cameras, condition_types=[c["type"] for c in conditions],
        condition_paths=[c["path"] for c in conditions],
    )


def expand_cameras(conversation: list[dict], replacements: list[str]) -> list[dict]:
    """A copy of ``conversation`` whose n-th camera placeholder becomes ``replacements[n]``."""
    pending = list(replacements)
    out = []
    for message in conversation:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "text" and CAMERA_PLACEHOLDER in part["text"]:
                    pieces = part["text"].split(CAMERA_PLACEHOLDER)
                    text = pieces[0]
                    for piece in pieces[1:]:
                        if not pending:
                            raise ValueError("more camera placeholders than trajectories")
                        text += pending.pop(0) + piece
                    part = {**part, "text": text}
                parts.append(part)
            message = {**message, "content": parts}
        out.append(message)
    if pending:
        raise ValueError("more trajectories than camera placeholders")
    return out


def camera_descriptions(request: Request) -> list[str]:
    """Each camera condition in words (what stands in for the camera tokens)."""
    from vidcli.camera_motion import describe_motion

    return [describe_motion(traj) for traj in request.cameras]


def audio_problem(request: Request, model: str) -> str | None:
    """The error for a request with audio sent to ``model``, which cannot hear; None without audio."""
    for kind, path in zip(request.condition_types, request.condition_paths):
        if kind == "audio":
            return (f"the audio condition ({path}) needs a model that takes audio input; {model} "
                    "takes text, images and video only (use a Qwen2.5-Omni model for audio)")
    return None


def server_conversation(request: Request, model: str) -> list[dict]:
    """The request for an OpenAI-compatible server: cameras as their motion descriptions
    (a server has no camera encoder). Audio cannot be sent: InputError naming it and ``model``."""
    problem = audio_problem(request, model)
    if problem:
        raise InputError(problem, record_id=request.id)
    return expand_cameras(request.conversation, camera_descriptions(request))


# ------------------------------------------------------------------------ output


def output_record(raw: str, style: str = "dense") -> dict[str, Any]:
    """The ``output`` field for a model's raw text.

    ``{think, answer: {six parts}, prompt, raw, format_ok, format_problem}``. ``prompt``
    is :func:`~vidcli.interpreter.format.generator_prompt` of the answer in ``style``
    when the answer holds all six parts. Otherwise it is the raw answer text: the
    ``<answer>`` block's text when there is one, else the raw text without a think
    block. ``format_ok`` is SPEC §1's check (think and answer); ``format_problem`` says
    which check failed and why ("think: …; answer: …"), or is None.
    """
    from vidcli.interpreter.format import THINK_CLOSE, generator_prompt, parse_output

    parsed = parse_output(raw)
    parts = parsed.caption.parts if parsed.caption is not None else {}
    answer = {name: parts.get(name, "") for name in CAPTION_PARTS}
    if parsed.answer_ok:
        prompt = generator_prompt(answer, style)
    elif parsed.answer is not None and parsed.answer.strip():
        prompt = parsed.answer
    else:
        prompt = raw.split(THINK_CLOSE)[-1].strip() or raw.strip()
    problems = [f"{name}: {problem}" for name, problem in
                (("think", parsed.think_problem), ("answer", parsed.answer_problem)) if problem]
    return {"think": parsed.think, "answer": answer, "prompt": prompt, "raw": raw,
            "format_ok": not problems, "format_problem": "; ".join(problems) or None}
