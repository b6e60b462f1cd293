"""Shot-boundary detection with PySceneDetect, in seconds.

We use PySceneDetect's detectors through its own PyAV video backend, which streams the
frames (a film never has to fit in memory) and stamps every cut with the frame's
presentation time, so cut times agree with :func:`vidcli.media.load_video`, which
samples by the same clock (seconds from the first frame).

The default detector is ``histogram+adaptive``: PySceneDetect's HistogramDetector and
AdaptiveDetector run side by side and a cut found by either counts (two cuts closer
than the shortest shot are one). The colour histogram of a frame hardly changes while
the camera pans or zooms over one place, however fast, so it finds cuts between moving
shots even at 8 fps and never cuts inside a pan; it misses a cut between two framings
of one set with the same colours, which the adaptive detector (each frame's content
change against the average change of its neighbours) finds — but the adaptive detector
alone misses cuts next to fast camera motion at low frame rates, where every frame
changes a lot. ``content`` (ContentDetector, a fixed threshold on the HSV and edge
change) misses cuts within a scene at its default threshold; ``hash`` (perceptual hashes)
finds every cut but also cuts inside pans. Chosen by precision and recall at ±0.5 s on
rendered films with known cuts at 8, 24 and 30 fps, with a still and a panning camera
(``tests/bench/bench_shots.py``; figures in its docstring).

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

DETECTORS = ("histogram+adaptive", "adaptive", "content", "histogram", "hash")
DEFAULT_DETECTOR = "histogram+adaptive"


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


def _make_detectors(detector: str, threshold: float | None, min_frames: int) -> list:
    from scenedetect import AdaptiveDetector, ContentDetector, HashDetector, HistogramDetector

    if detector not in DETECTORS:
        raise ValueError(f"unknown shot detector {detector!r}; choose from {', '.join(DETECTORS)}")
    names = detector.split("+")
    if threshold is not None and len(names) > 1:
        raise ValueError(f"a threshold is one detector's own; {detector!r} combines {len(names)}")
    made = {"adaptive": (AdaptiveDetector, "adaptive_threshold"), "content": (ContentDetector, "threshold"),
            "histogram": (HistogramDetector, "threshold"), "hash": (HashDetector, "threshold")}
    detectors = []
    for name in names:
        cls, key = made[name]
        kwargs = {} if threshold is None else {key: threshold}
        detectors.append(cls(min_scene_len=min_frames, **kwargs))
    return detectors


def detect_shots(
    path: str | Path,
    *,
    detector: str = DEFAULT_DETECTOR,
    threshold: float | None = None,
    min_shot_s: float = 0.5,
) -> list[tuple[float, float]]:
    """Shots of a video as ``(start, end)`` seconds, in order, covering the whole video.

    ``threshold`` is a single detector's own: the ratio to the neighbours' change for
    ``adaptive`` (PySceneDetect's default 3.0), the HSV change for ``content`` (27.0),
    the histogram distance for ``histogram`` (0.2), the hash distance for ``hash`` (0.35).
    No shot is shorter than ``min_shot_s`` (a flash or a very fast cut is merged; of two
    detectors' cuts closer than that, the first stands).
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
    detectors = _make_detectors(detector, threshold, min_frames)
    try:
        # suppress_output: keep ffmpeg's own log lines off stderr (our errors say it once).
        video = VideoStreamAv(str(path), suppress_output=True)
        manager = SceneManager()
        for det in detectors:
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
    starts = [scenes[0][0]]
    for start, _ in scenes[1:]:
        if start.frame_num - starts[-1].frame_num >= min_frames:
            starts.append(start)
    shots = [(float(a.seconds), float(b.seconds)) for a, b in zip(starts, [*starts[1:], scenes[-1][1]])]
    if decoded >= info.num_frames:
        # The scan's duration includes the last frame's display time, like load_video's.
        shots[-1] = (shots[-1][0], max(shots[-1][1], info.duration_s))
    return shots


def clips_from_shots(video: str, shots: list[tuple[float, float]], *, min_duration: float = 0.0) -> list[Clip]:
    """Clips for the shots at least ``min_duration`` seconds long (too short to show an edit)."""
    # The tolerance keeps float noise in the times (3.9 - 3.0 < 0.9) from dropping a shot.
    return [Clip(video, start, end) for start, end in shots if end - start >= min_duration - 1e-9]
