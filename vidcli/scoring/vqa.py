"""``score --metric vqa``: how likely a VLM gives each DRF question its desired verdict.

Records come from ``decompose --schema drf`` (the ``questions`` list) with a generated
video added. Fields read (``--video-field`` / ``--reference-field`` change the paths):

- ``output.video``: the generated video being scored;
- ``video``: the real, caption-matched reference video (what ``decompose`` read for the
  reference answers), needed only when the record has Phy or VQ questions.

Each video gives ``--frames`` frames spread uniformly over it. A local Qwen2/2.5-VL
(``--vlm hf:PATH``) reads TA questions with the generated video alone and Phy / VQ
questions with (generated, reference). The verdict's probability is read at the
verdict position of the JSON reply, teacher-forcing ``{"answer": "`` before it:
p(v) = exp(Σ log p(verdict tokens)). The prefix is the same for every dimension on
purpose: the Phy question asks for per-aspect verdicts first, and forcing any aspects
there would hand the model the judgement we want to read.

Scores are the probability of the *desired* verdict, so higher is better everywhere:
p(Yes) for TA (the video fulfils the requirement), p(No) for Phy and VQ (no physical
error, no visual defect). Keys:

- ``vqa.DIM.KEY`` per question (a repeated key within a record gets ``.2``, ``.3``…);
- ``vqa_TA``, ``vqa_Phy``, ``vqa_VQ``: the mean over that dimension's questions
  (``null``, counted as unavailable, when the record has none);
- ``vqa``: the mean of the available dimension means (each dimension weighs the same,
  although TA usually has several questions and Phy / VQ one each).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from vidcli.errors import InputError, MediaError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from vidcli.media import VideoClip
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.scoring import MetricOutput, ScoreSetup

DIMENSIONS = ("TA", "Phy", "VQ")
DESIRED = {"TA": "Yes", "Phy": "No", "VQ": "No"}
KEYS = ("vqa_TA", "vqa_Phy", "vqa_VQ", "vqa")


def field_value(record: dict, path: str) -> object:
    """The value at a dotted ``path`` (``output.video``), or None when any step is missing."""
    value: object = record
    for step in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


@dataclass(frozen=True)
class VideoInputs:
    """Where the video metrics (vqa, rve) find videos, and how many frames they take.

    ``base_dirs`` holds the folder of each record of the batch being scored (its JSONL
    file's), set per batch with :meth:`for_batch`; relative paths resolve against it
    unless ``media_root`` is given.
    """

    video_field: str = "output.video"
    reference_field: str = "video"
    frames: int = 10
    media_root: Path | None = None
    allow_escape: bool = False
    base_dirs: tuple[Path, ...] = ()

    def for_batch(self, base_dirs: list[Path]) -> "VideoInputs":
        """The same settings for a batch whose records live in ``base_dirs``."""
        return replace(self, base_dirs=tuple(base_dirs))

    def clip(self, index: int, value: object, field: str, *, start: float | None = None,
             end: float | None = None) -> "VideoClip":
        """``self.frames`` frames of the video at ``value`` (the record's ``field``), from ``[start, end)``."""
        from vidcli.media import load_video
        from vidcli.media_access import MediaAccess

        if value is None:
            raise InputError(f"missing field '{field}' (a video path)")
        if not isinstance(value, str):
            raise InputError(f"field '{field}' must be a video path, got {type(value).__name__}")
        base = self.base_dirs[index] if index < len(self.base_dirs) else Path.cwd()
        try:
            path = MediaAccess(self.media_root, self.allow_escape).path(value, base)
            return load_video(path, num_frames=self.frames, start=start, end=end)
        except MediaError as exc:
            raise InputError(f"field '{field}': {exc}") from None
        except InputError as exc:
            raise InputError(f"field '{field}': {exc.message}") from None


def clip_tensor(clip: "VideoClip"):
    """(T, H, W, 3) uint8 frames → (T, 3, H, W) float in [0, 1], and their sampling rate."""
    import torch

    frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 255
    return frames, len(clip.frames) / max(clip.duration_s, 1e-6)


def record_questions(record: dict) -> list[dict]:
    """The record's checked DRF questions."""
    questions = record.get("questions")
    if questions is None:
        raise InputError("missing field 'questions' (add it with: vidcli decompose --schema drf)")
    if not isinstance(questions, list) or not questions:
        raise InputError("field 'questions' must be a non-empty list")
    for n, q in enumerate(questions):
        if not isinstance(q, dict) or q.get("dim") not in DIMENSIONS:
            raise InputError(f"questions[{n}]: 'dim' must be one of {', '.join(DIMENSIONS)}")
        if not isinstance(q.get("question"), str) or not q["question"].strip():
            raise InputError(f"questions[{n}]: 'question' must be a non-empty string")
    return questions


def verdict_probability(scorer: "VLMScorer", videos: list, question: str, verdict: str) -> float:
    """p(verdict) at the verdict position of the JSON reply (see the module docstring)."""
    from vidcli.rewards.vlm import verdict_logprob

    return math.exp(float(verdict_logprob(scorer, videos, question, verdict)))


def _question_keys(questions: list[dict]) -> list[str]:
    keys, seen = [], {}
    for q in questions:
        base = f"vqa.{q['dim']}.{q.get('key') or 'question'}"
        seen[base] = seen.get(base, 0) + 1
        keys.append(base if seen[base] == 1 else f"{base}.{seen[base]}")
    return keys


def score_record(scorer: "VLMScorer", record: dict, videos: VideoInputs, index: int) -> dict[str, float | None]:
    """Per-question, per-dimension and overall desired-verdict probabilities of one record."""
    import torch

    questions = record_questions(record)
    generated, fps = clip_tensor(videos.clip(index, field_value(record, videos.video_field), videos.video_field))
    reference = None
    if any(q["dim"] != "TA" for q in questions):
        value = field_value(record, videos.reference_field)
        if value is None:
            raise InputError(f"missing field '{videos.reference_field}' (the real reference video that "
                             "Phy and VQ questions compare against)")
        reference = clip_tensor(videos.clip(index, value, videos.reference_field))
    values: dict[str, float | None] = {}
    per_dim: dict[str, list[float]] = {dim: [] for dim in DIMENSIONS}
    with torch.inference_mode():
        first = scorer.video_pixels(generated, fps)
        second = scorer.video_pixels(*reference) if reference is not None else None
        for key, q in zip(_question_keys(questions), questions):
            context = [first] if q["dim"] == "TA" else [first, second]
            values[key] = verdict_probability(scorer, context, q["question"], DESIRED[q["dim"]])
            per_dim[q["dim"]].append(values[key])
    means = {dim: sum(v) / len(v) if v else None for dim, v in per_dim.items()}
    for dim, mean in means.items():
        values[f"vqa_{dim}"] = mean
    available = [m for m in means.values() if m is not None]
    values["vqa"] = sum(available) / len(available)
    return values


def score_vqa(records: list[dict], setup: "ScoreSetup") -> list["MetricOutput | InputError"]:
    """The vqa metric over a batch: one output per record, or the InputError that stops it."""
    from vidcli.scoring import MetricOutput

    outputs: list[MetricOutput | InputError] = []
    for i, record in enumerate(records):
        try:
            outputs.append(MetricOutput(score_record(setup.vlm, record, setup.videos, i)))
        except InputError as exc:
            outputs.append(exc)
    return outputs


def load_vlm(spec: str, *, device: str = "auto", dtype: str | None = None) -> "VLMScorer":
    """The scoring VLM named by ``hf:PATH`` (only local models expose their probabilities).

    ``device`` ``auto`` means CUDA when available; ``dtype`` defaults to bfloat16 on
    CUDA and float32 on the CPU.
    """
    import torch

    from vidcli.rewards.vlm import VLMScorer

    kind, _, path = spec.partition(":")
    if kind != "hf" or not path.strip():
        raise InputError(f"bad VLM spec {spec!r}: vqa reads token probabilities, so it needs a local "
                         "model: hf:PATH")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    try:
        return VLMScorer.from_pretrained(path, device=device, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise InputError(f"{spec}: cannot load the model: {exc}") from None
