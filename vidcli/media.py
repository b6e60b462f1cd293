"""Reading and writing media: videos, images, audio, and media paths inside records.

Videos are sampled by *timestamp*, never by frame index, because decoders disagree on
frame indices (edit lists, dropped frames). Every video is first scanned with PyAV,
which only demuxes packets: it tells us which frames exist and when they are shown,
without trusting the frame count in the header. Frames are then decoded with decord
when decord's own frame index agrees with that scan, and with PyAV otherwise, so
decord is never asked for a frame that is not there (it can spin forever on such
requests, holding the GIL). A frame that fails to decode ends the usable video: we
sample again from what comes before it and log a warning.

**Rotation.** Phone footage is often stored sideways with a display matrix that says how
to turn it. Every path here returns the picture as displayed: :func:`probe_video`
reports the displayed size and the rotation, frames come out turned (``np.rot90``), and
``size=`` resizes the displayed picture. Such videos are decoded with PyAV: decord turns
±90° itself but returns four-channel garbage at 180° and whenever it resizes.

Every problem with a file becomes a one-line :class:`MediaError` naming the path.
Heavy imports (PyAV, decord, PIL) happen inside the functions.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from vidcli.errors import MediaError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from PIL import Image

log = logging.getLogger(__name__)


@dataclass
class VideoInfo:
    """What a scan found: ``num_frames`` counts frames that really exist in the stream;
    ``duration_s`` runs from the first frame to the end of the last one; ``width`` and
    ``height`` are the displayed size, after turning the stored picture by ``rotation``
    degrees counter-clockwise (0, 90, 180 or 270, from the stream's display matrix)."""

    path: Path
    duration_s: float
    fps: float
    num_frames: int
    width: int
    height: int
    rotation: int = 0


@dataclass
class VideoClip:
    """Sampled frames (T, H, W, 3) uint8 RGB and the time (s) at which each is shown."""

    frames: np.ndarray
    timestamps: np.ndarray
    fps: float
    duration_s: float


@dataclass
class _Scan:
    info: VideoInfo
    pts: np.ndarray  # int64, display order, in the stream's time base
    seconds: np.ndarray  # float64, from the first frame
    keyframes: np.ndarray  # sorted pts of keyframes

    def cut(self, n: int) -> "_Scan":
        """The same video restricted to its first ``n`` frames."""
        step = _frame_interval(self.seconds, self.info.fps)
        info = replace(self.info, num_frames=n, duration_s=float(self.seconds[n - 1] + step))
        return replace(self, info=info, pts=self.pts[:n], seconds=self.seconds[:n])


# ------------------------------------------------------------------------------ paths


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError("file not found", file=str(p))
    if not p.is_file():
        raise MediaError("not a regular file", file=str(p))
    if not os.access(p, os.R_OK):
        raise MediaError("file is not readable", file=str(p))
    if p.stat().st_size == 0:
        raise MediaError("file is empty", file=str(p))
    return p


def _open_container(p: Path):
    """A PyAV input container, or a MediaError saying why the file cannot be opened."""
    import av

    try:
        return av.open(str(p), metadata_errors="ignore")
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise MediaError(f"not a readable media file ({reason})", file=str(p)) from None


# ------------------------------------------------------------------------------ video


def _frame_interval(seconds: np.ndarray, fps: float) -> float:
    return float(np.median(np.diff(seconds))) if len(seconds) > 1 else 1.0 / fps


def _scan(path: str | Path) -> _Scan:
    """Demux (no decoding) the first video stream and list the frames it really holds."""
    import av

    p = _check_file(path)
    with _open_container(p) as container:
        if not container.streams.video:
            raise MediaError("no video stream", file=str(p))
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:
            raise MediaError("video stream has no frame size", file=str(p))
        pts, keys = [], []
        try:
            for packet in container.demux(stream):
                # Empty packets flush the demuxer; discarded ones (edit lists) are never shown.
                t = packet.pts if packet.pts is not None else packet.dts
                if packet.size == 0 or packet.is_discard or t is None:
                    continue
                pts.append(t)
                if packet.is_keyframe:
                    keys.append(t)
        except av.FFmpegError as exc:
            log.warning("%s: stream ends early (%s); using the %d frames before", p, exc, len(pts))
        time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
    if not pts:
        raise MediaError("video stream holds no frames", file=str(p))
    order = np.unique(np.asarray(pts, dtype=np.int64))
    seconds = (order - order[0]).astype(np.float64) * float(time_base)
    fps = float(rate) if rate else 1.0 / _frame_interval(seconds, 1.0)
    duration = float(seconds[-1] + _frame_interval(seconds, fps))
    rotation = _rotation(p)
    if rotation in (90, 270):
        width, height = height, width
    info = VideoInfo(p, duration, fps, len(order), width, height, rotation)
    return _Scan(info, order, seconds, np.unique(np.asarray(keys, dtype=np.int64)))


def _rotation(p: Path) -> int:
    """How many degrees counter-clockwise the stored picture is turned for display (0, 90, 180, 270).

    Read from the first decoded frame's display matrix (PyAV does not expose the stream's
    own); a video whose first frame does not decode is taken as upright, and its decoding
    problem is met where the frames are read.
    """
    import av

    with _open_container(p) as container:
        try:
            frame = next(container.decode(video=0), None)
        except av.FFmpegError:
            return 0
    if frame is None:  # no picture to turn
        return 0
    degrees = frame.rotation or 0  # the display matrix's angle (PyAV >= 13)
    return int(round(degrees / 90)) % 4 * 90


def _displayed(picture: np.ndarray, rotation: int) -> np.ndarray:
    """A decoded (H, W, 3) picture turned the way it is displayed."""
    return np.ascontiguousarray(np.rot90(picture, rotation // 90)) if rotation else picture


def _coded_size(size: tuple[int, int], rotation: int) -> tuple[int, int]:
    """The (width, height) to scale the stored picture to, so that turned it is ``size``."""
    return (size[1], size[0]) if rotation in (90, 270) else size


def probe_video(path: str | Path) -> VideoInfo:
    """Duration, frame rate, true frame count and size of a video (no decoding)."""
    return _scan(path).info


def _target_times(
    *,
    num_frames: int | None,
    fps: float | None,
    start: float,
    end: float,
    max_frames: int,
    seconds: np.ndarray,
) -> np.ndarray:
    if num_frames is None and fps is None:
        inside = seconds[(seconds >= start) & (seconds < end)]
        if len(inside) <= max_frames:
            return inside if len(inside) else np.array([start])
    elif fps is not None:
        count = math.ceil((end - start) * fps - 1e-9)
        if count <= max_frames:
            return start + np.arange(count) / fps
        log.warning("%d frames at %g fps exceed max_frames=%d; spreading %d frames instead",
                    count, fps, max_frames, max_frames)
    count = num_frames if num_frames is not None else max_frames
    segment = (end - start) / count
    return start + (np.arange(count) + 0.5) * segment


def _select(scan: _Scan, targets: np.ndarray, start: float, end: float) -> np.ndarray:
    """Index of the frame shown nearest to each target time, preferring frames in range
    (ties go to the earlier frame)."""
    s = scan.seconds
    pool = np.flatnonzero((s >= start) & (s < end))
    if len(pool) == 0:
        pool = np.arange(len(s))
    times = s[pool]
    right = np.searchsorted(times, targets).clip(0, len(times) - 1)
    left = (right - 1).clip(0)
    closer_right = np.abs(times[right] - targets) < np.abs(times[left] - targets)
    return pool[np.where(closer_right, right, left)]


def load_video(
    path: str | Path,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    max_frames: int = 256,
    size: tuple[int, int] | None = None,
) -> VideoClip:
    """Sample frames from ``[start, end)`` seconds of a video.

    ``num_frames=N``: the centres of N equal segments of the range. ``fps=F``: one
    frame every 1/F seconds from ``start``. Neither: every frame in the range. At most
    ``max_frames`` frames come back; more are spread uniformly instead. Each target time
    takes the frame shown nearest to it, so frames may repeat when the range holds
    fewer frames than asked for. ``size=(width, height)`` resizes (the displayed
    picture: a rotated video comes out as it is displayed). ``end`` past the end of the
    video is clipped; ``start`` past it is a :class:`MediaError`.
    """
    if num_frames is not None and fps is not None:
        raise ValueError("give num_frames or fps, not both")
    if num_frames is not None and not 1 <= num_frames <= max_frames:
        raise ValueError(f"num_frames must be in 1..max_frames ({max_frames}), got {num_frames}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    scan = _scan(path)
    use_decord = True
    while True:
        lo, hi = _clip_range(scan, start, end)
        targets = _target_times(num_frames=num_frames, fps=fps, start=lo, end=hi,
                                max_frames=max_frames, seconds=scan.seconds)
        idx = _select(scan, targets, lo, hi)
        frames = _decode_decord(scan, idx, size) if use_decord else None
        if frames is not None:
            break
        decoded, failed = _decode_pyav(scan, np.unique(scan.pts[idx]), size)
        if failed is None:
            frames = np.stack([decoded[int(t)] for t in scan.pts[idx]])
            break
        # Treat the video as ending before the broken frame and sample again; each
        # round shortens the video, so this ends.
        bad = int(np.searchsorted(scan.pts, failed))
        if bad == 0:
            raise MediaError("no frame decodes", file=str(scan.info.path))
        log.warning("%s: frame at %.3fs does not decode; using the video before it",
                    scan.info.path, scan.seconds[bad])
        scan, use_decord = scan.cut(bad), False
    return VideoClip(frames, scan.seconds[idx].copy(), scan.info.fps, scan.info.duration_s)


def _clip_range(scan: _Scan, start: float | None, end: float | None) -> tuple[float, float]:
    duration = scan.info.duration_s
    lo = 0.0 if start is None else float(start)
    hi = duration if end is None else min(float(end), duration)
    where = str(scan.info.path)
    if lo < 0:
        raise MediaError(f"start {lo}s is negative", file=where)
    if lo >= duration:
        raise MediaError(f"start {lo}s is not before the end of the video ({duration:.3f}s)", file=where)
    if hi <= lo:
        raise MediaError(f"end {hi}s is not after start {lo}s", file=where)
    return lo, hi


def _decode_decord(scan: _Scan, idx: np.ndarray, size: tuple[int, int] | None) -> np.ndarray | None:
    """Frames from decord, or None when decord cannot be trusted with this file."""
    import decord

    if scan.info.rotation:
        log.debug("%s is displayed turned by %d degrees; decoding with PyAV", scan.info.path, scan.info.rotation)
        return None  # see the module docstring
    if not log.isEnabledFor(logging.DEBUG):
        # Decode problems reach the user as MediaError or a warning; ffmpeg's own
        # lines on stderr would only repeat them.
        decord.logging.set_level(decord.logging.QUIET)
    width, height = size if size is not None else (-1, -1)
    try:
        reader = decord.VideoReader(str(scan.info.path), ctx=decord.cpu(0), width=width, height=height)
        stamps = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
    except (decord.DECORDError, RuntimeError, IndexError) as exc:
        log.debug("decord cannot index %s (%s); decoding with PyAV", scan.info.path, exc)
        return None
    half = 0.5 * _frame_interval(scan.seconds, scan.info.fps)
    if len(stamps) != len(scan.seconds) or np.abs(stamps - stamps[0] - scan.seconds).max() > half:
        # Its index counts frames that are not shown (or misses some): its frame
        # numbers would point at the wrong pictures, or past the end.
        log.debug("decord's frame index of %s disagrees with the stream; decoding with PyAV", scan.info.path)
        return None
    try:
        return reader.get_batch(idx.tolist()).asnumpy()
    except (decord.DECORDError, RuntimeError) as exc:
        log.debug("decord failed on %s (%s); decoding with PyAV", scan.info.path, exc)
        return None


def _decode_pyav(
    scan: _Scan, wanted: np.ndarray, size: tuple[int, int] | None
) -> tuple[dict[int, np.ndarray], int | None]:
    """Decode the frames whose pts are in ``wanted`` (sorted).

    Returns the frames found and the pts of the first wanted frame that could not be
    decoded (None when all were). Seeks to the keyframe before a wanted frame when that
    skips decoding; otherwise decodes straight through.
    """
    import av

    rotation = scan.info.rotation
    if size is not None:
        width, height = _coded_size(size, rotation)
    resize = {"width": width, "height": height} if size is not None else {}
    found: dict[int, np.ndarray] = {}
    i = 0
    with _open_container(scan.info.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            # Formats that cannot seek still work when decoding from the start reaches.
            seek = _keyframe_between(scan.keyframes, scan.pts[0], wanted[0])
            while i < len(wanted):
                if seek:
                    container.seek(int(wanted[i]), stream=stream, backward=True)
                seek = True  # the loop below only breaks early when a seek helps
                progressed = False
                for frame in container.decode(stream):
                    if frame.pts is None or frame.pts < wanted[i]:
                        continue
                    if frame.pts > wanted[i]:  # the wanted frame never came out
                        return found, int(wanted[i])
                    found[int(wanted[i])] = _displayed(frame.to_ndarray(format="rgb24", **resize), rotation)
                    i, progressed = i + 1, True
                    if i == len(wanted) or _keyframe_between(scan.keyframes, frame.pts, wanted[i]):
                        break
                if not progressed:
                    return found, int(wanted[i])
        except av.FFmpegError:
            return found, int(wanted[i])
    return found, None


def _keyframe_between(keyframes: np.ndarray, after: int, upto: int) -> bool:
    k = np.searchsorted(keyframes, after, side="right")
    return bool(k < len(keyframes) and keyframes[k] <= upto)


def video_frames_as_pil(clip: VideoClip) -> list["Image.Image"]:
    """The clip's frames as RGB PIL images (what processors of VLMs accept)."""
    from PIL import Image

    return [Image.fromarray(f) for f in clip.frames]


def write_video(path: str | Path, frames: np.ndarray | Sequence[np.ndarray], fps: float, *,
                codec: str = "libx264", crf: int = 18) -> Path:
    """Write RGB uint8 frames (T, H, W, 3) as a video; H and W must be even.

    The file is written under a temporary name and renamed when complete, so a crash
    never leaves a half-written video under the final name. The same frames give the
    same bytes, in any process: x264 runs single-threaded and without its macroblock-tree
    rate control, whose output on small frames (measured at 32×32 and 48×64) depends on
    memory it does not initialise — the same frames written twice decoded to different
    pixels. Without it, files at the same ``crf`` are about 2% larger.
    """
    import av

    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0:
        raise ValueError(f"frames must be a non-empty uint8 array (T, H, W, 3), got {arr.dtype} {arr.shape}")
    if arr.shape[1] % 2 or arr.shape[2] % 2:
        raise ValueError(f"frame height and width must be even for yuv420p, got {arr.shape[1:3]}")
    out = Path(path)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    options = {"crf": str(crf), "x264-params": "mbtree=0"} if codec == "libx264" else {}
    # moov atom first, so a file cut short keeps its index and stays partly readable.
    muxer = {"movflags": "+faststart"} if out.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    with av.open(str(tmp), "w", options=muxer) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
        stream.width, stream.height, stream.pix_fmt = arr.shape[2], arr.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1  # threaded x264 output varies run to run
        for frame in arr:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------ image, audio


def load_image(path: str | Path) -> "Image.Image":
    """An RGB image, turned upright according to its EXIF orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = _check_file(path)
    try:
        with Image.open(p) as img:
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except UnidentifiedImageError:
        raise MediaError("not an image file", file=str(p)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"cannot decode image ({exc})", file=str(p)) from None


def load_audio(path: str | Path, sr: int = 16000) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at ``sr`` Hz, from an audio file or a video's
    audio track. A stream that breaks off partway gives what decoded before the break."""
    import av

    p = _check_file(path)
    chunks: list[np.ndarray] = []
    with _open_container(p) as container:
        if not container.streams.audio:
            raise MediaError("no audio stream", file=str(p))
        stream = container.streams.audio[0]
        # Keep the channels (planar float) and average them ourselves: ffmpeg's own
        # downmix weights each channel by 0.707, which can push correlated audio past 1.
        resampler = av.AudioResampler(format="fltp", rate=sr)
        try:
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
        except av.FFmpegError as exc:
            if not chunks:
                raise MediaError(f"cannot decode audio ({exc})", file=str(p)) from None
            log.warning("%s: audio breaks off (%s); using what came before", p, exc)
        chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    if not chunks:
        raise MediaError("audio stream holds no samples", file=str(p))
    return np.clip(np.concatenate(chunks, axis=1).mean(axis=0), -1.0, 1.0).astype(np.float32)
