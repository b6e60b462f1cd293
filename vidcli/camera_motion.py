"""Camera motion in words: what a trajectory does, relative to its first camera.

:func:`describe_motion` turns a :class:`~vidcli.camera.Trajectory` into a short,
deterministic description ("strong dolly in, moderate pan left"); :func:`motion_components`
gives the numbers behind it. Conventions are :mod:`vidcli.camera`'s (OpenCV axes,
normalised intrinsics).
"""
from __future__ import annotations

import math

import numpy as np

from vidcli.camera import Trajectory, relative_poses

# Thresholds: below the first value a component is ignored; then slight / moderate /
# strong. Rotation is in degrees and zoom is the focal-length ratio (in either
# direction): both are fixed by the trajectory. Translation is not: poses from SLAM
# (RealEstate10K and most camera-control data) have an arbitrary origin and scale, so a
# distance in world units means nothing. Translation is therefore a fraction of the
# trajectory's own extent — the farthest the camera gets from where it started — and
# its level says how much of the camera's travel goes along that axis: a straight
# dolly is a "strong dolly in" whatever its length in world units, a dolly that drifts
# a little sideways adds a "slight truck".
TRANSLATION_BUCKETS = (0.2, 0.4, 0.7)
ROTATION_BUCKETS_DEG = (3.0, 10.0, 35.0)
ZOOM_BUCKETS = (1.05, 1.2, 1.6)
# Translation counts only when the camera gets somewhere: its extent must be at least
# this fraction of the length of its path. A camera shaken around one spot (SLAM jitter
# on a tripod shot) travels a long path without getting away (about 2/N of it for N
# frames); a move out and back has 0.5, a straight move 1.
MIN_COHERENCE = 0.3
# A centre closer than this fraction of the coordinates' size to the first one is the
# same point in floating point.
_SAME_POINT = 1e-9
# Within this much of looking straight up or down (cos of the pitch), yaw and roll turn
# about the same axis and yaw is numerically undefined: the turn is reported as roll.
_GIMBAL_COS = 1e-3


def _yaw_pitch_roll(r: np.ndarray) -> tuple[float, float, float]:
    """Angles (degrees) with r = Ry(yaw) Rx(pitch) Rz(roll) in OpenCV camera axes.

    Signs are chosen to read naturally: yaw > 0 turns the view right, pitch > 0 turns
    it up (y points down), roll > 0 turns the camera clockwise as seen from behind it.
    Looking straight up or down, yaw is set to 0 and the whole turn about the view
    axis is roll, so float noise cannot invent a pan.
    """
    pitch = math.asin(float(np.clip(-r[1, 2], -1.0, 1.0)))  # forward's y is -sin(pitch)
    if math.hypot(r[0, 2], r[2, 2]) < _GIMBAL_COS:
        return 0.0, math.degrees(pitch), math.degrees(math.atan2(-r[0, 1], r[0, 0]))
    yaw = math.atan2(r[0, 2], r[2, 2])
    roll = math.atan2(r[1, 0], r[1, 1])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def motion_components(traj: Trajectory) -> dict[str, float]:
    """The raw numbers behind :func:`describe_motion`, all relative to the first camera.

    Camera centres are taken in the first camera's axes (forward = its view axis,
    right, up) and divided by ``extent``, the largest distance of any centre from the
    first one (world units; 0 when the camera never moves). ``forward``/``right``/``up``
    are the last centre's coordinates, ``forward_out``/``right_out``/``up_out`` the
    coordinate of largest size reached on the way (a move out and back ends near 0 but
    went out to ±1). ``coherence`` is the extent over the path length (1 for a straight
    move, 0.5 out and back, small for jitter). ``yaw_deg`` (> 0 right), ``pitch_deg``
    (> 0 up) and ``roll_deg`` (> 0 clockwise) decompose the last camera's rotation;
    ``yaw_out_deg`` and ``pitch_out_deg`` are the angles of largest size reached on the
    way (a pan that returns has a small net yaw but went out); ``zoom`` is the mean
    focal-length ratio last/first.

    Every value is unchanged by a rotation, translation or uniform scaling of the world.
    """
    rel = relative_poses(traj.c2w)
    centres = rel[:, :3, 3] * np.array([1.0, -1.0, 1.0])  # right, up, forward (y points down)
    distances = np.linalg.norm(centres, axis=1)
    extent = float(distances.max())
    size = float(np.linalg.norm(traj.c2w[:, :3, 3], axis=1).max())
    if extent <= _SAME_POINT * size:
        extent, scaled = 0.0, np.zeros_like(centres)
    else:
        scaled = centres / extent
    path = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())
    out = scaled[np.abs(scaled).argmax(axis=0), [0, 1, 2]]
    angles = np.array([_yaw_pitch_roll(r) for r in rel[:, :3, :3]])  # (N, 3): yaw, pitch, roll
    yaw, pitch, roll = angles[-1]
    yaw_out, pitch_out = angles[np.abs(angles[:, :2]).argmax(axis=0), [0, 1]]
    k0, k1 = traj.intrinsics[0], traj.intrinsics[-1]
    return {
        "forward": float(scaled[-1, 2]),
        "right": float(scaled[-1, 0]),
        "up": float(scaled[-1, 1]),
        "forward_out": float(out[2]),
        "right_out": float(out[0]),
        "up_out": float(out[1]),
        "extent": extent,
        "coherence": extent / path if extent > 0 and path > 0 else 0.0,
        "yaw_deg": float(yaw),
        "pitch_deg": float(pitch),
        "roll_deg": float(roll),
        "yaw_out_deg": float(yaw_out),
        "pitch_out_deg": float(pitch_out),
        "zoom": float((k1[0] / k0[0] + k1[1] / k0[1]) / 2),
    }


def _bucket(value: float, buckets: tuple[float, float, float]) -> str | None:
    low, slight, moderate = buckets
    if value < low:
        return None
    return "slight" if value < slight else "moderate" if value < moderate else "strong"


def describe_motion(traj: Trajectory) -> str:
    """A short, deterministic description of the camera motion, e.g.
    ``"strong dolly in, moderate pan left"``, or ``"fixed camera"``.

    Words: dolly in/out (along the first view axis), truck left/right, pedestal
    up/down, pan left/right (yaw), tilt up/down (pitch), roll clockwise/
    counter-clockwise, zoom in/out (focal length). A translation that goes out and
    comes back becomes "dolly in and back" (likewise truck, pedestal); a pan whose net
    yaw is below the threshold but that turned farther on the way becomes "pan back
    and forth" (likewise tilt). Thresholds are :data:`TRANSLATION_BUCKETS` (fractions of
    the trajectory's extent, see the comment above it), :data:`ROTATION_BUCKETS_DEG`,
    :data:`ZOOM_BUCKETS` and :data:`MIN_COHERENCE`; :func:`motion_components` gives
    the numbers. The words depend only on the relative motion: the same under any
    rotation, translation or scaling of the world.
    """
    c = motion_components(traj)
    parts: list[str] = []

    def add(value: float, buckets: tuple[float, float, float], pos: str, neg: str) -> None:
        level = _bucket(abs(value), buckets)
        if level:
            parts.append(f"{level} {pos if value > 0 else neg}")

    def add_out_and_back(net: float, out: float, buckets: tuple[float, float, float], pos: str, neg: str,
                         back: str) -> None:
        if _bucket(abs(net), buckets):
            add(net, buckets, pos, neg)
        else:  # out and back: judged by how far it went
            level = _bucket(abs(out), buckets)
            if level:
                parts.append(f"{level} {back.format(pos if out > 0 else neg)}")

    if c["extent"] > 0 and c["coherence"] >= MIN_COHERENCE:
        for axis, pos, neg in (("forward", "dolly in", "dolly out"), ("right", "truck right", "truck left"),
                               ("up", "pedestal up", "pedestal down")):
            add_out_and_back(c[axis], c[f"{axis}_out"], TRANSLATION_BUCKETS, pos, neg, "{} and back")
    add_out_and_back(c["yaw_deg"], c["yaw_out_deg"], ROTATION_BUCKETS_DEG, "pan right", "pan left",
                     "pan back and forth")
    add_out_and_back(c["pitch_deg"], c["pitch_out_deg"], ROTATION_BUCKETS_DEG, "tilt up", "tilt down",
                     "tilt up and down")
    add(c["roll_deg"], ROTATION_BUCKETS_DEG, "roll clockwise", "roll counter-clockwise")
    zoom = c["zoom"]
    level = _bucket(max(zoom, 1.0 / zoom), ZOOM_BUCKETS)
    if level:
        parts.append(f"{level} zoom {'in' if zoom > 1 else 'out'}")
    return ", ".join(parts) if parts else "fixed camera"
