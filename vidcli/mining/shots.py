"""Shot-boundary detection with PySceneDetect, in seconds.

We use PySceneDetect's detectors through its own PyAV video backend, which streams the
frames (a film never has to fit in memory) and stamps every cut with the frame's
presentation time, so cut times agree with :func:`vidcli.media.load_video`, which
samples by the same clock (seconds from the first frame).

The default detector is ``adaptive`` (AdaptiveDetector): it compares each frame's
content change with the average change of its neighbours, so a cut between two shots
of the same set (similar colours, another framing) still stands out, while a camera pan
(steady change) does not. ``content`` (ContentDetector, a fixed threshold on the HSV
change) is the classic alternative; on our synthetic films it misses cuts within a scene
at its default threshold (see ``tests/test_mining_shots.py``).

A file that cannot be opened or decoded is a :class:`~vidcli.errors.MediaError` naming
that video, so a caller mining many videos can skip it and go on.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from vidcli.errors import MediaError
from vidcli.media import probe_video

log = logging.getLogger(__name__)

DETECTORS = ("adaptive", "content")


@dataclass(frozen=True)
class Clip:
    """A time range of a video, in seconds; ``caption`` once a captioner has seen it."""

    video: str
    start: float
    end: float
    caption: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    def as_record(self) -> dict:
        """The ``{video, start, end}`` object of a triplet record."""
        return {"video": self.video, "start": round(self.start, 6), "end": round(self.end, 6)}


def _make_detector(detector: str, threshold: float | None, min_frames: int):
    from scenedetect import AdaptiveDetector, ContentDetector

    if detector == "adaptive":
        kwargs = {} if threshold is None else {"adaptive_threshold": threshold}
        return AdaptiveDetector(min_scene_len=min_frames, **kwargs)
    if detector == "content":
        kwargs = {} if threshold is None else {"threshold": threshold}
        return ContentDetector(min_scene_len=min_frames, **kwargs)
    raise ValueError(f"unknown shot detector {detector!r}; choose from {', '.join(DETECTORS)}")


def detect_shots(
    path: str | Path,
    *,
    detector: str = "adaptive",
    threshold: float | None = None,
    min_shot_s: float = 0.5,
) -> list[tuple[float, float]]:
    """Shots of a video as ``(start, end)`` seconds, in order, covering the whole video.

    ``threshold`` is the detector's own: the ratio to the neighbours' change for
    ``adaptive`` (PySceneDetect's default 3.0), the HSV change for ``content`` (27.0).
    No shot is shorter than ``min_shot_s`` (a flash or a very fast cut is merged).
    A video with no cut is one shot. If decoding breaks off partway, the shots end where
    the decodable frames end (with a warning); no decodable frame at all is a
    :class:`MediaError`, as is a missing or unreadable file.
    """
    import av
    from scenedetect import SceneManager
    from scenedetect.backends.pyav import VideoStreamAv
    from scenedetect.video_stream import FrameRateUnavailable, VideoOpenFailure

    info = probe_video(path)  # MediaError for a missing, empty or non-video file
    min_frames = max(1, round(min_shot_s * info.fps))
    det = _make_detector(detector, threshold, min_frames)
    try:
        # suppress_output: keep ffmpeg's own log lines off stderr (our errors say it once).
        video = VideoStreamAv(str(path), suppress_output=True)
        manager = SceneManager()
        manager.add_detector(det)
        decoded = manager.detect_scenes(video)
        scenes = manager.get_scene_list(start_in_scene=True)
    except (VideoOpenFailure, FrameRateUnavailable, OSError, av.FFmpegError) as exc:
        raise MediaError(f"cannot decode video for shot detection ({exc})", file=str(path)) from None
    if decoded == 0 or not scenes:
        raise MediaError("no frame decodes", file=str(path))
    if decoded < info.num_frames:
        log.warning("%s: only %d of %d frames decode; shots end at %.3fs",
                    path, decoded, info.num_frames, scenes[-1][1].seconds)
    shots = [(float(a.seconds), float(b.seconds)) for a, b in scenes]
    if decoded >= info.num_frames:
        # The scan's duration includes the last frame's display time, like load_video's.
        shots[-1] = (shots[-1][0], max(shots[-1][1], info.duration_s))
    return shots


def clips_from_shots(video: str, shots: list[tuple[float, float]], *, min_duration: float = 0.0) -> list[Clip]:
    """Clips for the shots at least ``min_duration`` seconds long (too short to show an edit)."""
    # The tolerance keeps float noise in the times (3.9 - 3.0 < 0.9) from dropping a shot.
    return [Clip(video, start, end) for start, end in shots if end - start >= min_duration - 1e-9]
