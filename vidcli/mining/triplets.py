"""``mine-triplets --mode icvg``: long videos → (source clip, target clip, implicit instruction).

Per input record ``{id, video}`` (SPEC §7):

1. shots (:func:`~vidcli.mining.shots.detect_shots`), kept as clips when long enough;
2. a caption per clip from the VLM (frames sampled over the clip, sent as a video part;
   the reply cache makes a rerun free);
3. clip embeddings from a SigLIP-style model and caption embeddings from the text
   embedder; :func:`~vidcli.mining.pairs.mine_pairs` picks the pairs and reports the
   per-video threshold;
4. the LLM writes one implicit instruction per pair and names its reasoning type.
   It only writes text: which clips pair up is the algorithm's decision.

One input record becomes one *video record* (the input plus ``mining`` and
``triplets``), so the triplets of a video are written, resumed and rejected together.
:func:`finish_triplets` then flattens those into triplet records, marks the hold-out
split over the whole set and optionally cuts the clips to files.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from vidcli.backends.base import ChatModel, Conversation, Sampling
from vidcli.backends.jsonreply import generate_json
from vidcli.errors import InputError, MediaError
from vidcli.jsonl import Source
from vidcli.mining.pairs import PairOptions, VideoReport
from vidcli.mining.shots import DEFAULT_DETECTOR, Clip
from vidcli.prompts import render, render_text
from vidcli.records import require
from vidcli.stream import Outcome

if TYPE_CHECKING:  # pragma: no cover - typing only
    from vidcli.backends.embed import Embedder
    from vidcli.mining.embed import ClipEmbedder

log = logging.getLogger("vidcli")

ICVG_TYPES = ("camera", "causal", "emotional", "commonsense")
ICVG_NOTES = {
    "camera": "camera: the change is one of viewpoint, framing or camera motion; the instruction gives a "
              "reason to look differently (to reveal, follow, isolate or step back from something).",
    "causal": "causal: the target follows from an event or action that the instruction sets going.",
    "emotional": "emotional: the target expresses a mood or feeling that the instruction evokes.",
    "commonsense": "commonsense: everyday knowledge about people, places or time makes the target the "
                   "natural next picture.",
}


@dataclass
class IcvgOptions:
    """Knobs of the icvg pipeline; ``chunk`` bounds how many clips' frames are in memory at once."""

    detector: str = DEFAULT_DETECTOR
    shot_threshold: float | None = None
    min_shot_s: float = 0.5
    min_clip_s: float = 1.0
    caption_frames: int = 8
    pairs: PairOptions = field(default_factory=PairOptions)
    types: tuple[str, ...] = ICVG_TYPES
    attempts: int = 3
    llm_sampling: Sampling = Sampling(temperature=0.0, max_tokens=512)
    vlm_sampling: Sampling = Sampling(temperature=0.0, max_tokens=256)
    chunk: int = 32
    media_root: str | None = None
    allow_escape: bool = False


@dataclass
class IcvgModels:
    """The four models of the icvg pipeline."""

    vlm: ChatModel
    llm: ChatModel
    clip_embedder: "ClipEmbedder"
    text_embedder: "Embedder"


# ------------------------------------------------------------------ shared helpers


def type_notes(types: Sequence[str], notes: dict[str, str]) -> str:
    """One line per allowed type, so the model knows what each name means."""
    return "\n".join(f"- {notes[t]}" for t in types)


def instruction_validator(types: Sequence[str], literal: str | None = None) -> Callable[[object], None]:
    """A reply check for ``{reasoning_type, instruction}``; ``literal`` must not be repeated."""

    def check(value: object) -> None:
        if not isinstance(value, dict):
            raise ValueError('expected a JSON object {"reasoning_type": "...", "instruction": "..."}')
        kind, text = value.get("reasoning_type"), value.get("instruction")
        if kind not in types:
            raise ValueError(f"reasoning_type must be one of {', '.join(types)}, got {kind!r}")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("instruction must be non-empty text")
        if literal is not None and _plain(literal) in _plain(text):
            raise ValueError("the instruction repeats the literal command; it must only imply it")

    return check


def _plain(text: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def resolve_video(value: object, src: Source, media_root: str | None, allow_escape: bool) -> Path:
    """A record's video path, resolved (InputError for a bad value, MediaError for a bad file)."""
    from vidcli.media import probe_video
    from vidcli.media_access import MediaAccess

    if not isinstance(value, str) or not value.strip():
        raise InputError(f"video must be a non-empty path string, got {value!r}")
    path = MediaAccess(media_root, allow_escape).path(value, src.base_dir)
    probe_video(path)  # a missing or non-video file fails here, naming the file
    return path


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------ the icvg batch


@dataclass
class _Video:
    record: dict
    path: Path
    clips: list[Clip]
    report: VideoReport | None = None
    pairs: list[dict] = field(default_factory=list)


class _Failed(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage, self.message = stage, message


def mine_icvg_batch(sources: list[Source], models: IcvgModels, opts: IcvgOptions) -> list[Outcome]:
    """One Outcome (a video record, see the module docstring) per source, in order."""
    outcomes: list[Outcome | None] = [None] * len(sources)
    videos: dict[int, _Video] = {}
    for i, src in enumerate(sources):
        try:
            video = _shots(src, opts)
            _caption(video, models.vlm, opts)
            _pairs(video, models, opts)
            videos[i] = video
        except _Failed as exc:
            outcomes[i] = Outcome.fail(exc.stage, exc.message)
    # Instructions for every pair of the batch in one call, so they run concurrently.
    asks = [(i, k) for i, v in videos.items() for k in range(len(v.pairs))]
    convs = [_instruction_prompt(videos[i].pairs[k], opts.types) for i, k in asks]
    results = generate_json(models.llm, convs, opts.llm_sampling, attempts=opts.attempts,
                            validate=instruction_validator(opts.types)) if convs else []
    for (i, k), res in zip(asks, results):
        pair = videos[i].pairs[k]
        if res.error:
            if outcomes[i] is None:
                where = f"pair {_span(pair['source'])} -> {_span(pair['target'])}"
                outcomes[i] = Outcome.fail("instruction", f"{where}: {res.error}")
            continue
        pair.update(instruction=res.value["instruction"].strip(), reasoning_type=res.value["reasoning_type"])
    for i, video in videos.items():
        if outcomes[i] is None:
            outcomes[i] = Outcome.ok(_video_record(video))
    return outcomes  # type: ignore[return-value]  # every index is set by now


def _span(side: dict) -> str:
    return f"{side['start']:.2f}-{side['end']:.2f}s"


def _shots(src: Source, opts: IcvgOptions) -> _Video:
    from vidcli.mining.shots import clips_from_shots, detect_shots

    record = dict(src.record)
    try:
        path = resolve_video(require(record, "video"), src, opts.media_root, opts.allow_escape)
    except MediaError as exc:
        raise _Failed("media", str(exc)) from None
    except InputError as exc:
        raise _Failed("input", exc.message) from None
    try:
        shots = detect_shots(path, detector=opts.detector, threshold=opts.shot_threshold,
                             min_shot_s=opts.min_shot_s)
    except MediaError as exc:
        raise _Failed("shots", str(exc)) from None
    clips = clips_from_shots(str(path), shots, min_duration=opts.min_clip_s)
    log.info("%s: %d shots, %d long enough to mine", path, len(shots), len(clips))
    return _Video(record, path, clips)


def _caption_request(clip: Clip, frames: int) -> Conversation:
    from vidcli.media import load_video, video_frames_as_pil

    sampled = load_video(clip.video, num_frames=frames, start=clip.start, end=clip.end)
    fps = len(sampled.frames) / max(clip.duration, 1e-6)
    part = {"type": "video", "video": video_frames_as_pil(sampled), "fps": fps,
            "timestamps": [float(t) for t in sampled.timestamps]}
    return [{"role": "user", "content": [part, {"type": "text", "text": render_text("mine_caption")}]}]


def _caption(video: _Video, vlm: ChatModel, opts: IcvgOptions) -> None:
    """Replace every clip by its captioned copy, ``opts.chunk`` clips' frames at a time."""
    captioned: list[Clip] = []
    check = _text_field("caption")
    for part in _chunks(video.clips, opts.chunk):
        try:
            convs = [_caption_request(c, opts.caption_frames) for c in part]
        except MediaError as exc:
            raise _Failed("caption", str(exc)) from None
        for clip, res in zip(part, generate_json(vlm, convs, opts.vlm_sampling, validate=check,
                                                 attempts=opts.attempts)):
            if res.error:
                raise _Failed("caption", f"clip {clip.start:.2f}-{clip.end:.2f}s: {res.error}")
            captioned.append(Clip(clip.video, clip.start, clip.end, res.value["caption"].strip()))
    video.clips = captioned


def _text_field(key: str) -> Callable[[object], None]:
    def check(value: object) -> None:
        if not isinstance(value, dict) or not isinstance(value.get(key), str) or not value[key].strip():
            raise ValueError(f'expected a JSON object {{"{key}": "..."}} with non-empty text')

    return check


def _pairs(video: _Video, models: IcvgModels, opts: IcvgOptions) -> None:
    from vidcli.mining.pairs import mine_pairs

    if not video.clips:
        video.report = VideoReport(str(video.path), 0, 0, None, None)
        return
    try:
        visual = np.concatenate([models.clip_embedder.embed_clips(part) for part in _chunks(video.clips, opts.chunk)])
    except MediaError as exc:
        raise _Failed("embed", str(exc)) from None
    caption = models.text_embedder.embed([c.caption for c in video.clips]).numpy()
    video.pairs, (video.report,) = mine_pairs(video.clips, visual, caption, opts.pairs)
    r = video.report
    log.info("%s: threshold %s, floor %s, %d sub-cluster(s), %d pair(s)", video.path,
             "none" if r.threshold is None else f"{r.threshold:.4f}",
             "none" if r.floor is None else f"{r.floor:.4f}", len(r.clusters), r.pairs)


def _instruction_prompt(pair: dict, types: Sequence[str]) -> Conversation:
    return render("mine_icvg", source=pair["source"]["caption"], target=pair["target"]["caption"],
                  types=", ".join(types), type_notes=type_notes(types, ICVG_NOTES))


def _video_record(video: _Video) -> dict:
    report = asdict(video.report)
    # Sub-clusters as time spans: clip indices mean nothing outside this run.
    report["clusters"] = [[[video.clips[k].start, video.clips[k].end] for k in c] for c in report["clusters"]]
    triplets = [{**p, "video_id": video.record["id"]} for p in video.pairs]
    return {**video.record, "mining": report, "triplets": triplets}


# ------------------------------------------------------------------ finishing


@dataclass
class FinishStats:
    """What :func:`finish_triplets` wrote; ``videos`` holds each video record's ``mining`` summary."""

    triplets: int = 0
    test: int = 0
    clips_written: int = 0
    videos: list[dict] = field(default_factory=list)

    @property
    def test_fraction(self) -> float:
        """The share of the triplets in the test split (what ``--holdout`` reached)."""
        return self.test / self.triplets if self.triplets else 0.0


def finish_triplets(generated: str, output: str, *, mode: str, holdout: float = 0.0, seed: int = 0,
                    export_dir: str | None = None, provenance=None) -> FinishStats:
    """Read the generation stage's file, split and (optionally) export; write triplets to ``output``.

    ``mode`` icvg: each line is a video record whose ``triplets`` are flattened; rave: each
    line is a triplet. ``split`` is set on every triplet (all ``train`` without a
    hold-out). With ``export_dir`` each side gets ``clip``: the path of its cut mp4,
    named by triplet id (a file already there is reused, so a rerun cuts nothing).
    """
    from vidcli.jsonl import read_sources

    stats = FinishStats()
    triplets: list[dict] = []
    for src in read_sources([generated]):
        if src.error is not None:
            raise src.error
        if mode == "icvg":
            stats.videos.append({"id": src.id, **src.record.get("mining", {})})
            triplets += src.record.get("triplets", [])
        else:
            triplets.append(src.record)
    return write_triplets(triplets, output, holdout=holdout, seed=seed, export_dir=export_dir, stats=stats,
                          provenance=provenance)


def write_triplets(triplets: list[dict], output: str, *, holdout: float = 0.0, seed: int = 0,
                   export_dir: str | None = None, stats: FinishStats | None = None, provenance=None) -> FinishStats:
    """Split, export and write finished triplets (also ``mine-triplets --merge`` over shard outputs).

    The split depends only on the set of triplets (:func:`~vidcli.mining.pairs.holdout_split`
    sorts the source videos before its seeded shuffle), so shard outputs merged in any
    order are split as one unsharded run splits them; a ``split`` already there is replaced.
    """
    from vidcli.jsonl import RecordWriter
    from vidcli.mining.pairs import holdout_split

    stats = stats or FinishStats()
    triplets = holdout_split(triplets, holdout, seed=seed)
    # Clips first: a clip that fails to cut must not leave a finished-looking output.
    for t in triplets if export_dir is not None else []:
        for side in ("source", "target"):
            path = Path(export_dir) / f"{t['id']}.{side}.mp4"
            stats.clips_written += export_clip(t[side], path)
            t[side] = {**t[side], "clip": str(path)}
    with RecordWriter(output, provenance=provenance) as writer:
        for t in triplets:
            writer.write(t)
            stats.triplets += 1
            stats.test += t["split"] == "test"
    return stats


def export_clip(side: dict, path: Path) -> bool:
    """Cut ``side`` (``{video, start, end}``) to ``path`` at the video's own frame rate.

    Returns False when ``path`` already exists (written whole earlier: write_video renames
    only complete files). Odd frame sizes lose their last row/column (yuv420p needs even).
    """
    from vidcli.media import load_video, write_video

    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    clip = load_video(side["video"], start=side["start"], end=side["end"], max_frames=100_000)
    frames = clip.frames
    frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
    write_video(path, frames, clip.fps)
    return True
