"""The record stage of ``vidcli generate``: a batch of records → videos on disk → records that name them.

Each video is written as ``VIDEOS_DIR/<id>.mp4`` (:func:`video_name`), and the record
gets ``output.video`` (relative to the output's folder when inside it:
:func:`record_path`) and ``output.generation``.
"""
from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

from vidcli.errors import InputError


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def video_name(record_id: str) -> str:
    """A file name for a record's video: the id itself when it is a safe name, else a slug and a hash."""
    if _SAFE_NAME.match(record_id):
        return record_id + ".mp4"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", record_id).strip("-.")[:60] or "record"
    return f"{slug}-{hashlib.sha256(record_id.encode('utf-8')).hexdigest()[:10]}.mp4"


def default_videos_dir(output: str) -> Path:
    """``<OUT stem>.videos/`` beside the output, or ``./videos`` when writing to stdout."""
    if output == "-":
        return Path("videos")
    out = Path(output)
    return out.with_name(out.stem + ".videos")


def record_path(video: Path, output: str) -> str:
    """The path a record holds: relative to the output's folder when the video is inside it, else absolute."""
    folder = (Path.cwd() if output == "-" else Path(output).resolve().parent).resolve()
    video = video.resolve()
    return video.relative_to(folder).as_posix() if video.is_relative_to(folder) else str(video)


def record_text(record: dict, fields: tuple[str, ...]) -> str:
    """The text to generate from: the first of ``fields`` (dotted) the record has."""
    from vidcli.scoring.vqa import field_value

    for name in fields:
        value = field_value(record, name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"field '{name}' must be a non-empty string")
        return value
    named = " or ".join(f"'{f}'" for f in fields)
    raise InputError(f"no text to generate from: missing field {named} (choose one with --prompt-field)")


def generate_batch(sources, model, settings, fields, videos_dir: Path, output: str, access,
                    write_dir: Path | None = None, progress: bool = False) -> list:
    """Stream stage: validate each record, sample the good ones in one call, write mp4s, then records.

    Videos are written into ``write_dir`` (``VIDEOS.partial`` until the run completes) and
    named in the records by their place in ``videos_dir``, where they are once it has."""
    from tqdm import tqdm

    from vidcli.diffusion.edit import edit_videos, source_latents
    from vidcli.diffusion.editor import read_clip
    from vidcli.diffusion.generate import generate_videos, generation_record, to_uint8
    from vidcli.media import write_video
    from vidcli.stream import Outcome

    outcomes: list = [None] * len(sources)
    ready, texts, clips = [], [], []
    for i, src in enumerate(sources):
        try:
            if not isinstance(src.record.get("output", {}), dict):
                raise InputError("field 'output' must be an object (generate adds 'video' to it)")
            text = record_text(src.record, fields)
            if model.mode == "edit":
                clips.append(source_latents(model, read_clip(src.record, "source", src.base_dir, access), settings))
            texts.append(text)
            ready.append(i)
        except InputError as exc:
            outcomes[i] = Outcome.fail("generate", exc.message)
    if not ready:
        return outcomes
    ids = [sources[i].id for i in ready]
    # Denoising steps of this batch on a terminal: a video takes minutes at real sizes.
    label = ids[0] if len(ids) == 1 else f"{ids[0]} +{len(ids) - 1}"
    with tqdm(total=settings.steps, desc=label, unit="step", file=sys.stderr, leave=False,
              disable=None if progress else True, dynamic_ncols=True) as bar:
        if model.mode == "edit":
            videos = edit_videos(model, texts, clips, ids, settings, on_step=bar.update)
        else:
            videos = generate_videos(model, texts, ids, settings, on_step=bar.update)
    write_dir = write_dir or videos_dir
    write_dir.mkdir(parents=True, exist_ok=True)
    generation = generation_record(model, settings)
    for i, frames in zip(ready, videos):
        record = sources[i].record
        name = video_name(record["id"])
        write_video(write_dir / name, to_uint8(frames), settings.fps)
        output_field = {**record.get("output", {}), "video": record_path(videos_dir / name, output),
                        "generation": generation}
        outcomes[i] = Outcome.ok({**record, "output": output_field})
    return outcomes
