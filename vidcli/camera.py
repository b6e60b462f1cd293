"""Camera trajectories: loading, Plücker ray maps and motion descriptions.

Conventions (used everywhere in this module):

- Camera axes follow OpenCV: x points right, y points down, z points forward (the
  viewing direction).
- ``c2w`` maps camera coordinates to world coordinates; its last column is the camera
  centre in world space.
- Intrinsics are *normalised*: ``fx`` and ``cx`` are divided by the image width,
  ``fy`` and ``cy`` by the image height, so one trajectory serves any resolution.
- Timestamps are in seconds.

The heavy ``torch`` import happens only inside :func:`plucker_rays`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vidcli.errors import MediaError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

_RE10K_COLUMNS = 19  # timestamp, fx fy cx cy, two zeros, 3x4 world-to-camera
_ROTATION_TOL = 1e-3  # how far R^T R may be from I (and det R from 1) before we refuse it


@dataclass
class Trajectory:
    """A camera path: one pose and one set of intrinsics per frame.

    ``timestamps`` (N,) seconds; ``intrinsics`` (N, 4) normalised ``fx fy cx cy``;
    ``c2w`` (N, 4, 4) float64 camera-to-world matrices (OpenCV axes).
    """

    timestamps: np.ndarray
    intrinsics: np.ndarray
    c2w: np.ndarray

    def __len__(self) -> int:
        return len(self.timestamps)


# ----------------------------------------------------------------------------- loading


def load_trajectory(path: str | Path) -> Trajectory:
    """Read a camera trajectory from a RealEstate10K text file or a JSON file.

    **RealEstate10K text** (any suffix other than ``.json``): an optional first line with
    the source URL, then one line per frame with 19 numbers::

        timestamp_us fx fy cx cy 0 0 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3

    where the 3x4 matrix is world-to-camera, row-major, and the timestamp is in
    microseconds (converted to seconds here).

    **JSON** (suffix ``.json``): either ``{"frames": [...], "fps"?: float,
    "intrinsics"?: default}`` or a bare list of frames. Each frame is::

        {"timestamp"?: seconds,
         "intrinsics": {"fx", "fy", "cx", "cy"} | [fx, fy, cx, cy],   # normalised
         "c2w": 4x4 | 3x4   or   "w2c": 4x4 | 3x4}

    ``intrinsics`` may be left out of a frame when the top level gives a default.
    When no frame has a timestamp, frames are evenly spaced at the top-level ``fps``
    (default 30). Timestamps must be strictly increasing.

    Raises :class:`MediaError` naming the file, the line (text) or frame index (JSON),
    and what is wrong.
    """
    p = Path(path)
    if not p.is_file():
        raise MediaError("camera file not found", file=str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"cannot read camera file: {exc}", file=str(p)) from None
    parse = _parse_json if p.suffix.lower() == ".json" else _parse_re10k
    return parse(text, str(p))


def _parse_re10k(text: str, file: str) -> Trajectory:
    times: list[float] = []
    intr: list[list[float]] = []
    c2w: list[np.ndarray] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        # The dataset's files start with the YouTube URL of the clip.
        if not times and len(fields) == 1 and not _is_float(fields[0]):
            continue

        def fail(msg: str, lineno: int = lineno) -> MediaError:
            return MediaError(msg, file=file, line=lineno)

        if len(fields) != _RE10K_COLUMNS:
            raise fail(f"expected {_RE10K_COLUMNS} numbers per frame, got {len(fields)}")
        bad = [f for f in fields if not _is_float(f)]
        if bad:
            raise fail(f"not a number: {bad[0]!r}")
        values = [float(f) for f in fields]
        w2c = np.eye(4)
        w2c[:3, :4] = np.asarray(values[7:], dtype=np.float64).reshape(3, 4)
        c2w.append(_invert_pose(w2c, fail))
        _append_frame(times, intr, values[0] / 1e6, values[1:5], fail)
    if not times:
        raise MediaError("camera file has no frames", file=file)
    return Trajectory(np.asarray(times), np.asarray(intr, dtype=np.float64), np.stack(c2w))


def _parse_json(text: str, file: str) -> Trajectory:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MediaError(f"invalid JSON: {exc.msg}", file=file, line=exc.lineno) from None
    top: dict[str, Any] = doc if isinstance(doc, dict) else {}
    frames = doc.get("frames") if isinstance(doc, dict) else doc
    if not isinstance(frames, list):
        raise MediaError('expected a list of frames or {"frames": [...]}', file=file)
    if not frames:
        raise MediaError("camera file has no frames", file=file)
    fps = top.get("fps", 30.0)
    if not _is_number(fps) or fps <= 0:
        raise MediaError(f"'fps' must be a positive number, got {fps!r}", file=file)
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise MediaError(f"frame {i}: expected an object", file=file)
    has_time = ["timestamp" in f for f in frames]
    if any(has_time) and not all(has_time):
        missing = has_time.index(False)
        raise MediaError(f"frame {missing}: 'timestamp' given for some frames but not this one", file=file)
    times: list[float] = []
    intr: list[list[float]] = []
    c2w: list[np.ndarray] = []
    for i, frame in enumerate(frames):

        def fail(msg: str, i: int = i) -> MediaError:
            return MediaError(f"frame {i}: {msg}", file=file)

        k = frame.get("intrinsics", top.get("intrinsics"))
        if k is None:
            raise fail("missing 'intrinsics'")
        if ("c2w" in frame) == ("w2c" in frame):
            raise fail("give exactly one of 'c2w' or 'w2c'")
        key = "c2w" if "c2w" in frame else "w2c"
        m = _parse_matrix(frame[key], lambda msg: fail(f"'{key}' {msg}"))
        c2w.append(m if key == "c2w" else _invert_pose(m, fail))
        t = frame["timestamp"] if all(has_time) else i / float(fps)
        if not _is_number(t):
            raise fail(f"'timestamp' must be a number, got {t!r}")
        _append_frame(times, intr, float(t), _parse_intrinsics(k, fail), fail)
    return Trajectory(np.asarray(times), np.asarray(intr, dtype=np.float64), np.stack(c2w))


def _append_frame(times: list, intr: list, t: float, k: list[float], fail) -> None:
    """Checks shared by both formats, then append."""
    if not all(math.isfinite(v) for v in k) or k[0] <= 0 or k[1] <= 0:
        raise fail(f"focal lengths must be positive and finite, got {k}")
    if not math.isfinite(t) or (times and t <= times[-1]):
        raise fail(f"timestamps must be finite and strictly increasing, got {t}")
    times.append(t)
    intr.append(k)


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _parse_intrinsics(k: Any, fail) -> list[float]:
    if isinstance(k, dict):
        missing = [n for n in ("fx", "fy", "cx", "cy") if n not in k]
        if missing:
            raise fail(f"intrinsics missing {missing}")
        k = [k["fx"], k["fy"], k["cx"], k["cy"]]
    if not isinstance(k, list) or len(k) != 4:
        raise fail("intrinsics must be {fx, fy, cx, cy} or a list of 4 numbers")
    if not all(_is_number(v) for v in k):
        raise fail(f"intrinsics must be numbers, got {k!r}")
    return [float(v) for v in k]


def _parse_matrix(m: Any, fail) -> np.ndarray:
    try:
        arr = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail("must be a matrix of numbers") from None
    if arr.shape not in ((4, 4), (3, 4)):
        raise fail(f"must be 4x4 or 3x4, got shape {arr.shape}")
    out = np.eye(4)
    out[: arr.shape[0]] = arr
    if not np.allclose(out[3], [0, 0, 0, 1]):
        raise fail("last row must be [0, 0, 0, 1]")
    _check_rotation(out[:3, :3], fail)
    if not np.all(np.isfinite(out)):
        raise fail("has non-finite values")
    return out


def _check_rotation(r: np.ndarray, fail) -> None:
    if (
        not np.all(np.isfinite(r))
        or np.abs(r.T @ r - np.eye(3)).max() > _ROTATION_TOL
        or abs(np.linalg.det(r) - 1.0) > _ROTATION_TOL
    ):
        raise fail("rotation part is not a rotation (must be orthonormal with det +1)")


def _invert_pose(m: np.ndarray, fail) -> np.ndarray:
    """Invert a rigid transform exactly (R^T, -R^T t) after checking R is a rotation."""
    _check_rotation(m[:3, :3], fail)
    if not np.all(np.isfinite(m)):
        raise fail("matrix has non-finite values")
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


# ------------------------------------------------------------------------ Plücker rays


def resample_trajectory(traj: Trajectory, num_frames: int) -> Trajectory:
    """Pick ``num_frames`` frames at uniformly spaced times over the trajectory.

    Each target time (from the first to the last timestamp, both included) takes the
    frame with the nearest timestamp; poses are not interpolated, so every output pose
    is one that was given. With more targets than frames, frames repeat.
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    targets = np.linspace(traj.timestamps[0], traj.timestamps[-1], num_frames)
    idx = np.abs(traj.timestamps[None, :] - targets[:, None]).argmin(axis=1)
    return Trajectory(traj.timestamps[idx], traj.intrinsics[idx], traj.c2w[idx])


def relative_poses(c2w: np.ndarray) -> np.ndarray:
    """Express every camera-to-world pose in the first camera's frame (first becomes I)."""
    return np.linalg.inv(c2w[0])[None] @ c2w


def plucker_rays(
    traj: Trajectory,
    height: int,
    width: int,
    *,
    num_frames: int | None = None,
    relative: bool = True,
) -> "torch.Tensor":
    """Per-pixel Plücker coordinates, shape (F, 6, H, W), float32.

    Channels 0-2 hold the unit ray direction d in world space, channels 3-5 the moment
    o x d, where o is the camera centre. Pixel (u, v) is sampled at its centre
    (u + 0.5, v + 0.5); normalised intrinsics are scaled by ``width``/``height``.
    ``num_frames`` resamples the trajectory uniformly in time first
    (:func:`resample_trajectory`). With ``relative=True`` (the default, as the camera
    encoder expects) poses are taken relative to the first frame, so the first map has
    zero moment and the result does not depend on where the world origin was put.
    """
    import torch

    if num_frames is not None:
        traj = resample_trajectory(traj, num_frames)
    c2w = torch.from_numpy(relative_poses(traj.c2w) if relative else traj.c2w)
    k = torch.from_numpy(traj.intrinsics)
    fx, fy = k[:, 0] * width, k[:, 1] * height
    cx, cy = k[:, 2] * width, k[:, 3] * height
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5,
        torch.arange(width, dtype=torch.float64) + 0.5,
        indexing="ij",
    )
    x = (u[None] - cx[:, None, None]) / fx[:, None, None]
    y = (v[None] - cy[:, None, None]) / fy[:, None, None]
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # (F, H, W, 3)
    d = torch.einsum("fij,fhwj->fhwi", c2w[:, :3, :3], d_cam)
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[:, None, None, :3, 3].expand_as(d)
    m = torch.linalg.cross(o, d, dim=-1)
    return torch.cat([d, m], dim=-1).permute(0, 3, 1, 2).to(torch.float32).contiguous()


def plucker_stack(
    traj: Trajectory, height: int, width: int, *, num_frames: int = 16, relative: bool = True
) -> "torch.Tensor":
    """The camera encoder's input: (num_frames * 6, H, W), frame-major (96 channels for 16)."""
    rays = plucker_rays(traj, height, width, num_frames=num_frames, relative=relative)
    return rays.reshape(-1, height, width)


# -------------------------------------------------------------------- motion description

# Thresholds: below the first value a component is ignored; then slight / moderate /
# strong. Translation is a fraction of the scene scale, rotation is in degrees, zoom is
# the focal-length ratio (in either direction).
TRANSLATION_BUCKETS = (0.05, 0.15, 0.4)
ROTATION_BUCKETS_DEG = (3.0, 10.0, 35.0)
ZOOM_BUCKETS = (1.05, 1.2, 1.6)


def _yaw_pitch_roll(r: np.ndarray) -> tuple[float, float, float]:
    """Angles (degrees) with r = Ry(yaw) Rx(pitch) Rz(roll) in OpenCV camera axes.

    Signs are chosen to read naturally: yaw > 0 turns the view right, pitch > 0 turns
    it up (y points down), roll > 0 turns the camera clockwise as seen from behind it.
    """
    yaw = math.atan2(r[0, 2], r[2, 2])
    pitch = math.asin(float(np.clip(-r[1, 2], -1.0, 1.0)))  # forward's y is -sin(pitch)
    roll = math.atan2(r[1, 0], r[1, 1])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def _scene_scale(c2w: np.ndarray) -> float:
    """Mean camera-to-world-origin distance when the origin looks like a scene centre.

    Orbit-style trajectories put the subject at the world origin, so the distance from
    the cameras to it is the size that matters. We take the origin to be such a centre
    when no camera comes closer to it than half the mean distance. Otherwise (poses
    anchored on a camera, which then sits at the origin, or paths passing through it)
    that distance says nothing about the scene, and translation is judged in world
    units. Callers who know better pass ``scene_scale``.
    """
    dist = np.linalg.norm(c2w[:, :3, 3], axis=1)
    mean = float(dist.mean())
    return mean if mean > 0 and dist.min() >= 0.5 * mean else 1.0


def motion_components(traj: Trajectory, *, scene_scale: float | None = None) -> dict[str, float]:
    """The raw numbers behind :func:`describe_motion` (last frame relative to the first).

    ``forward``/``right``/``up`` are the last camera centre in the first camera's axes
    divided by ``scene_scale``; ``yaw_deg`` (> 0 right), ``pitch_deg`` (> 0 up) and
    ``roll_deg`` (> 0 clockwise) decompose the relative rotation; ``*_path_deg`` add up
    the absolute frame-to-frame changes (a pan that returns has a small net yaw but a
    long path); ``zoom`` is the mean focal-length ratio last/first.
    """
    rel = relative_poses(traj.c2w)
    scale = float(scene_scale) if scene_scale is not None else _scene_scale(traj.c2w)
    t = rel[-1, :3, 3] / scale
    yaw, pitch, roll = _yaw_pitch_roll(rel[-1, :3, :3])
    steps = [_yaw_pitch_roll(a[:3, :3].T @ b[:3, :3]) for a, b in zip(rel[:-1], rel[1:])]
    k0, k1 = traj.intrinsics[0], traj.intrinsics[-1]
    return {
        "forward": float(t[2]),
        "right": float(t[0]),
        "up": float(-t[1]),
        "yaw_deg": yaw,
        "pitch_deg": pitch,
        "roll_deg": roll,
        "yaw_path_deg": float(sum(abs(s[0]) for s in steps)),
        "pitch_path_deg": float(sum(abs(s[1]) for s in steps)),
        "zoom": float((k1[0] / k0[0] + k1[1] / k0[1]) / 2),
        "scene_scale": scale,
    }


def _bucket(value: float, buckets: tuple[float, float, float]) -> str | None:
    low, slight, moderate = buckets
    if value < low:
        return None
    return "slight" if value < slight else "moderate" if value < moderate else "strong"


def describe_motion(traj: Trajectory, *, scene_scale: float | None = None) -> str:
    """A short, deterministic description of the camera motion, e.g.
    ``"moderate dolly in, slight pan left"``, or ``"fixed camera"``.

    Words: dolly in/out (along the first view axis), truck left/right, pedestal
    up/down, pan left/right (yaw), tilt up/down (pitch), roll clockwise/
    counter-clockwise, zoom in/out (focal length). A pan whose net yaw is below
    the threshold but whose accumulated path is not becomes "pan back and forth"
    (likewise tilt). Thresholds are :data:`TRANSLATION_BUCKETS`,
    :data:`ROTATION_BUCKETS_DEG` and :data:`ZOOM_BUCKETS`; see
    :func:`motion_components` for the numbers.
    """
    c = motion_components(traj, scene_scale=scene_scale)
    parts: list[str] = []

    def add(value: float, buckets: tuple[float, float, float], pos: str, neg: str) -> None:
        level = _bucket(abs(value), buckets)
        if level:
            parts.append(f"{level} {pos if value > 0 else neg}")

    def add_rotation(net: float, path: float, pos: str, neg: str, sweep: str) -> None:
        if _bucket(abs(net), ROTATION_BUCKETS_DEG):
            add(net, ROTATION_BUCKETS_DEG, pos, neg)
        else:
            # Out and back: judge by the one-way extent.
            level = _bucket(path / 2, ROTATION_BUCKETS_DEG)
            if level:
                parts.append(f"{level} {sweep}")

    add(c["forward"], TRANSLATION_BUCKETS, "dolly in", "dolly out")
    add(c["right"], TRANSLATION_BUCKETS, "truck right", "truck left")
    add(c["up"], TRANSLATION_BUCKETS, "pedestal up", "pedestal down")
    add_rotation(c["yaw_deg"], c["yaw_path_deg"], "pan right", "pan left", "pan back and forth")
    add_rotation(c["pitch_deg"], c["pitch_path_deg"], "tilt up", "tilt down", "tilt up and down")
    add(c["roll_deg"], ROTATION_BUCKETS_DEG, "roll clockwise", "roll counter-clockwise")
    zoom = c["zoom"]
    level = _bucket(max(zoom, 1.0 / zoom), ZOOM_BUCKETS)
    if level:
        parts.append(f"{level} zoom {'in' if zoom > 1 else 'out'}")
    return ", ".join(parts) if parts else "fixed camera"
