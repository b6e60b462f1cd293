"""Camera trajectories: loading and Plücker ray maps (motion descriptions: :mod:`vidcli.camera_motion`).

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
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vidcli.errors import MediaError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

log = logging.getLogger("vidcli")

_RE10K_COLUMNS = 19  # timestamp, fx fy cx cy, two zeros, 3x4 world-to-camera
_ROTATION_TOL = 1e-3  # how far R^T R may be from I before we refuse it


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

DEFAULT_FPS = 30.0  # frame rate assumed where a file gives no usable times
# Intrinsics assumed for a file that gives none: a 53-degree field of view both ways
# (normalised focal length 1), principal point at the centre.
DEFAULT_INTRINSICS = (1.0, 1.0, 0.5, 0.5)
_BARE_ROW = 12  # a 3x4 world-to-camera matrix, row-major
_warned: set[tuple[str, str]] = set()  # (file, assumption) already reported by this process


def _assume(file: str, what: str) -> None:
    """Say once per process and file what was assumed to read it (trajectories are re-read every epoch)."""
    if (file, what) not in _warned:
        _warned.add((file, what))
        log.warning("%s: %s", file, what)


def load_trajectory(path: str | Path) -> Trajectory:
    """Read a camera trajectory from a RealEstate10K text file or a JSON file.

    **RealEstate10K text** (any suffix other than ``.json``): an optional first line with
    the source URL (or an empty one), then one line per frame with 19 numbers::

        timestamp_us fx fy cx cy 0 0 r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3

    where the 3x4 matrix is world-to-camera, row-major, and the timestamp is in
    microseconds (converted to seconds here).

    **JSON** (suffix ``.json``): ``{"frames": [...], "fps"?: float, "intrinsics"?:
    default}`` or a bare list of frames. Each frame is::

        {"timestamp"?: seconds,
         "intrinsics": {"fx", "fy", "cx", "cy"} | [fx, fy, cx, cy],   # normalised
         "c2w": 4x4 | 3x4   or   "w2c": 4x4 | 3x4}

    or, in a bare list, a row of 12 numbers (a 3x4 world-to-camera matrix, row-major)
    with no intrinsics. ``intrinsics`` may be left out of a frame when the top level
    gives a default. When no frame has a timestamp, frames are evenly spaced at the
    top-level ``fps`` (default 30).

    Variants that published camera files use are read with a one-line warning on
    stderr saying what was assumed: timestamps that are all the same placeholder
    (frames taken in file order, evenly spaced at :data:`DEFAULT_FPS` — their rate
    changes nothing, since trajectories are resampled over their own span); bare
    12-number rows (:data:`DEFAULT_INTRINSICS`); a mirrored world, where every rotation
    has determinant −1 (poses are re-expressed relative to frame 0, whose relative
    rotations are proper). A broken file is a :class:`MediaError` naming the file, the
    line (text) or frame index (JSON), and what is wrong: non-finite or non-numeric
    values, a matrix that is not a rotation and translation, determinants that differ
    between frames, a wrong number of columns, times that go backwards.
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


class _Frames:
    """Frames as they are read, then checked together (times, determinants) by :meth:`finish`.

    ``fails`` holds, per frame, how to report an error at that frame (its line or index).
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.times: list[float | None] = []
        self.intr: list[list[float]] = []
        self.c2w: list[np.ndarray] = []
        self.fails: list = []

    def add(self, t: float | None, k: list[float], c2w: np.ndarray, fail) -> None:
        if not all(math.isfinite(v) for v in k) or k[0] <= 0 or k[1] <= 0:
            raise fail(f"focal lengths must be positive and finite, got {k}")
        if t is not None and not math.isfinite(t):
            raise fail(f"timestamps must be finite, got {t}")
        self.times.append(t)
        self.intr.append(k)
        self.c2w.append(c2w)
        self.fails.append(fail)

    def finish(self, fps: float = DEFAULT_FPS) -> Trajectory:
        if not self.c2w:
            raise MediaError("camera file has no frames", file=self.file)
        c2w = np.stack(self.c2w)
        mirrored = np.linalg.det(c2w[:, :3, :3]) < 0
        if mirrored.any() and not mirrored.all():
            i = int(np.argmax(mirrored != mirrored[0]))
            kinds = ("a mirrored rotation (det -1)", "a proper rotation (det +1)")
            raise self.fails[i](f"{kinds[0] if mirrored[i] else kinds[1]}, but the first frame has "
                                f"{kinds[0] if mirrored[0] else kinds[1]}: mixed determinants")
        if mirrored.all():
            _assume(self.file, "every rotation has determinant -1 (a mirrored world): "
                               "poses re-expressed relative to frame 0")
            c2w = relative_poses(c2w)
        return Trajectory(self._timestamps(fps), np.asarray(self.intr, dtype=np.float64), c2w)

    def _timestamps(self, fps: float) -> np.ndarray:
        times = self.times
        if times[0] is None:
            return np.arange(len(times)) / fps
        if len(times) > 1 and len(set(times)) == 1:
            _assume(self.file, f"every timestamp is the same ({times[0]:g} s, a placeholder): "
                               "frames taken in file order, "
                               f"evenly spaced at {fps:g} fps")
            return np.arange(len(times)) / fps
        for i in range(1, len(times)):
            if times[i] <= times[i - 1]:
                raise self.fails[i](f"timestamps must be strictly increasing, got {times[i]} after {times[i - 1]}")
        return np.asarray(times, dtype=np.float64)


def _parse_re10k(text: str, file: str) -> Trajectory:
    frames = _Frames(file)
    for lineno, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        # The dataset's files start with the YouTube URL of the clip.
        if not frames.c2w and len(fields) == 1 and not _is_float(fields[0]):
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
        frames.add(values[0] / 1e6, values[1:5], _invert_pose(w2c, fail), fail)
    return frames.finish()


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
    fps = top.get("fps", DEFAULT_FPS)
    if not _is_number(fps) or fps <= 0:
        raise MediaError(f"'fps' must be a positive number, got {fps!r}", file=file)
    if isinstance(doc, list) and isinstance(frames[0], list):
        return _parse_bare_rows(frames, file)
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise MediaError(f"frame {i}: expected an object", file=file)
    has_time = ["timestamp" in f for f in frames]
    if any(has_time) and not all(has_time):
        missing = has_time.index(False)
        raise MediaError(f"frame {missing}: 'timestamp' given for some frames but not this one", file=file)
    out = _Frames(file)
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
        t = frame["timestamp"] if all(has_time) else None
        if all(has_time) and not _is_number(t):
            raise fail(f"'timestamp' must be a number, got {t!r}")
        c2w = m if key == "c2w" else _invert_pose(m, fail)
        out.add(None if t is None else float(t), _parse_intrinsics(k, fail), c2w, fail)
    return out.finish(float(fps))


def _parse_bare_rows(rows: list, file: str) -> Trajectory:
    """A bare list of 12-number rows: 3x4 world-to-camera matrices, nothing else."""
    out = _Frames(file)
    for i, row in enumerate(rows):

        def fail(msg: str, i: int = i) -> MediaError:
            return MediaError(f"frame {i}: {msg}", file=file)

        if not isinstance(row, list):
            raise fail(f"expected a row of {_BARE_ROW} numbers like the frames before it")
        if len(row) != _BARE_ROW:
            raise fail(f"expected {_BARE_ROW} numbers (a 3x4 world-to-camera matrix, row-major), got {len(row)}")
        if not all(_is_number(v) for v in row):
            raise fail(f"not a number: {next(v for v in row if not _is_number(v))!r}")
        w2c = np.eye(4)
        w2c[:3] = np.asarray(row, dtype=np.float64).reshape(3, 4)
        out.add(None, list(DEFAULT_INTRINSICS), _invert_pose(w2c, fail), fail)
    fx, fy, cx, cy = DEFAULT_INTRINSICS
    _assume(file, f"frames are bare 3x4 world-to-camera rows: assumed intrinsics fx={fx:g} fy={fy:g} cx={cx:g} "
                  f"cy={cy:g} and frames evenly spaced at {DEFAULT_FPS:g} fps")
    return out.finish()


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
    if not np.all(np.isfinite(out)):
        raise fail("has non-finite values")
    if not np.allclose(out[3], [0, 0, 0, 1]):
        raise fail("last row must be [0, 0, 0, 1]")
    _check_rotation(out[:3, :3], fail)
    return out


def _check_rotation(r: np.ndarray, fail) -> None:
    """Orthonormal, so invertible; the sign of the determinant is checked across frames."""
    if not np.all(np.isfinite(r)) or np.abs(r.T @ r - np.eye(3)).max() > _ROTATION_TOL:
        raise fail("rotation part is not a rotation (must be orthonormal: not invertible, scaled or sheared)")


def _invert_pose(m: np.ndarray, fail) -> np.ndarray:
    """Invert a rigid transform exactly (R^T, -R^T t) after checking R is orthonormal."""
    if not np.all(np.isfinite(m)):
        raise fail("matrix has non-finite values")
    _check_rotation(m[:3, :3], fail)
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
