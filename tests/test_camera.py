"""Camera trajectories: parsing and Plücker maps (motion words: test_camera_motion.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vidcli.camera import (
    Trajectory,
    load_trajectory,
    plucker_rays,
    plucker_stack,
    relative_poses,
    resample_trajectory,
)
from vidcli.camera_motion import describe_motion, motion_components
from vidcli.errors import MediaError

K = [0.8, 1.2, 0.5, 0.5]


def pose(forward=(0.0, 0.0, 1.0), centre=(0.0, 0.0, 0.0), roll_deg=0.0) -> np.ndarray:
    """c2w of a camera at ``centre`` looking along ``forward`` (world y points down)."""
    f = np.asarray(forward, float) / np.linalg.norm(forward)
    right = np.cross((0.0, 1.0, 0.0), f)
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    a = math.radians(roll_deg)
    # Clockwise roll seen from behind: the right axis dips towards "down".
    right, down = math.cos(a) * right + math.sin(a) * down, -math.sin(a) * right + math.cos(a) * down
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, down, f, centre
    return m


def traj(poses, intr=None) -> Trajectory:
    n = len(poses)
    k = np.tile(K, (n, 1)) if intr is None else np.asarray(intr, float)
    return Trajectory(np.arange(n) / 10.0, k, np.stack(poses))


def yawed(deg: float) -> tuple[float, float, float]:
    """Forward vector turned ``deg`` to the right (negative: left)."""
    return (math.sin(math.radians(deg)), 0.0, math.cos(math.radians(deg)))


def test_pose_helper_is_a_proper_rotation():
    m = pose(yawed(-30), roll_deg=20)
    assert np.allclose(m[:3, :3].T @ m[:3, :3], np.eye(3))
    assert np.isclose(np.linalg.det(m[:3, :3]), 1.0)


def rotation(axis: str, deg: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler(axis, deg, degrees=True).as_matrix()
    return m


def similarity(seed: int) -> tuple[np.ndarray, float]:
    """A random rigid change of world coordinates and a random global scale."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    g = np.eye(4)
    g[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    g[:3, 3] = rng.normal(scale=10.0 ** rng.uniform(-1, 4), size=3)
    return g, float(10.0 ** rng.uniform(-3, 3))


def moved(t: Trajectory, g: np.ndarray, scale: float) -> Trajectory:
    c2w = g[None] @ t.c2w
    c2w[:, :3, 3] *= scale
    return Trajectory(t.timestamps, t.intrinsics, c2w)



# ------------------------------------------------------------------------ Plücker maps


def test_plucker_hand_computed_pixel_identity_pose():
    t = traj([pose()], intr=[[1.0, 1.0, 0.5, 0.5]])
    rays = plucker_rays(t, 4, 4)
    assert rays.shape == (1, 6, 4, 4) and rays.dtype == torch.float32
    # Pixel (u=0, v=0): centre (0.5, 0.5), principal point (2, 2), focal 4.
    d = np.array([-0.375, -0.375, 1.0])
    d /= np.linalg.norm(d)
    assert np.allclose(rays[0, :3, 0, 0].numpy(), d, atol=1e-6)
    assert torch.count_nonzero(rays[0, 3:]) == 0  # identity pose: moment zero


def test_plucker_hand_computed_moved_camera():
    c2w = pose(yawed(40), centre=(1.0, -2.0, 0.5), roll_deg=10)
    k = [0.9, 1.1, 0.45, 0.55]
    t = traj([pose(), c2w], intr=[K, k])
    rays = plucker_rays(t, 6, 8, relative=False)
    u, v = 5, 2
    d_cam = np.array([(u + 0.5 - 0.45 * 8) / (0.9 * 8), (v + 0.5 - 0.55 * 6) / (1.1 * 6), 1.0])
    d = c2w[:3, :3] @ d_cam
    d /= np.linalg.norm(d)
    m = np.cross(c2w[:3, 3], d)
    assert np.allclose(rays[1, :3, v, u].numpy(), d, atol=1e-6)
    assert np.allclose(rays[1, 3:, v, u].numpy(), m, atol=1e-6)


def test_plucker_unit_directions_and_orthogonal_moments():
    poses = [pose(yawed(a), centre=(a / 10, 0.2, 1.0)) for a in (0, 10, 20)]
    rays = plucker_rays(traj(poses), 5, 7).double()
    d, m = rays[:, :3], rays[:, 3:]
    assert torch.allclose(d.norm(dim=1), torch.ones(3, 5, 7, dtype=torch.float64), atol=1e-6)
    assert torch.allclose((d * m).sum(dim=1), torch.zeros(3, 5, 7, dtype=torch.float64), atol=1e-6)
    # relative=True: the first camera becomes the origin, so its moment is zero.
    assert torch.count_nonzero(m[0]) == 0
    assert torch.count_nonzero(plucker_rays(traj(poses), 5, 7, relative=False)[0, 3:]) > 0


def test_plucker_relative_ignores_world_frame():
    poses = [pose(yawed(a), centre=(0, 0, a / 20)) for a in (0, 10, 20)]
    g = pose((0.3, -0.2, 1.0), centre=(5, 1, 2))
    a = plucker_rays(traj(poses), 4, 4)
    b = plucker_rays(Trajectory(np.arange(3) / 10.0, np.tile(K, (3, 1)), g[None] @ np.stack(poses)), 4, 4)
    assert torch.allclose(a, b, atol=1e-5)


def test_resample_uniform_in_time():
    poses = np.stack([pose(centre=(i, 0, 0)) for i in range(5)])
    t = Trajectory(np.array([0.0, 0.1, 0.2, 0.5, 1.0]), np.tile(K, (5, 1)), poses)
    r = resample_trajectory(t, 3)  # targets 0, 0.5, 1.0
    assert r.timestamps.tolist() == [0.0, 0.5, 1.0]
    assert r.c2w[:, 0, 3].tolist() == [0, 3, 4]


def test_plucker_stack_is_encoder_input():
    poses = [pose(yawed(a)) for a in range(20)]
    t = traj(poses)
    stack = plucker_stack(t, 8, 8)
    assert stack.shape == (96, 8, 8)
    rays = plucker_rays(t, 8, 8, num_frames=16)
    assert torch.equal(stack[6:12], rays[1])


# ------------------------------------------------------------------------------ files

W2C_ROWS = "1 0 0 0.1 0 1 0 0.2 0 0 1 0.3"
HEAD = "0 0.5 0.5 0.5 0.5 0 0"


def test_load_re10k_text(tmp_path):
    c2w_b = pose(yawed(30), centre=(1, 2, 3))
    w2c_b = np.linalg.inv(c2w_b)[:3].reshape(-1)
    text = (
        "https://www.youtube.com/watch?v=abc\n"
        f"33366667 0.5 0.9 0.5 0.5 0 0 {W2C_ROWS}\n"
        f"33400033 0.6 1.0 0.4 0.5 0 0 {' '.join(repr(float(x)) for x in w2c_b)}\n"
    )
    p = tmp_path / "cam.txt"
    p.write_text(text)
    t = load_trajectory(p)
    assert np.allclose(t.timestamps, [33.366667, 33.400033])
    assert np.allclose(t.intrinsics, [[0.5, 0.9, 0.5, 0.5], [0.6, 1.0, 0.4, 0.5]])
    assert np.allclose(t.c2w[0][:3, 3], [-0.1, -0.2, -0.3])  # centre = -R^T t with R = I
    assert np.allclose(t.c2w[1], c2w_b)


def test_load_json_variants(tmp_path):
    c2w = pose(yawed(-20), centre=(0, 1, 2))
    doc = {
        "fps": 8,
        "frames": [
            {"intrinsics": {"fx": 0.5, "fy": 0.8, "cx": 0.5, "cy": 0.5}, "c2w": np.eye(4).tolist()},
            {"intrinsics": [0.5, 0.8, 0.5, 0.5], "w2c": np.linalg.inv(c2w).tolist()},
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps(doc))
    t = load_trajectory(tmp_path / "a.json")
    assert t.timestamps.tolist() == [0.0, 0.125]
    assert np.allclose(t.c2w[1], c2w)
    frames = [{"timestamp": 0.5, "intrinsics": K, "c2w": c2w[:3].tolist()}]
    (tmp_path / "b.json").write_text(json.dumps(frames))
    t = load_trajectory(tmp_path / "b.json")
    assert t.timestamps.tolist() == [0.5] and np.allclose(t.c2w[0], c2w)
    shared = {"intrinsics": K, "frames": [{"c2w": np.eye(4).tolist()}]}
    (tmp_path / "c.json").write_text(json.dumps(shared))
    assert np.allclose(load_trajectory(tmp_path / "c.json").intrinsics, [K])


BAD_TEXT = [
    ("", "no frames"),
    (f"{HEAD} {W2C_ROWS}\n1 0.5 0.5 0.5 0.5 0 0 1 0 0\n", ":2: expected 19 numbers per frame, got 10"),
    (f"{HEAD} {W2C_ROWS.replace('0.2', 'abc')}\n", ":1: not a number: 'abc'"),
    (f"{HEAD} {W2C_ROWS.replace('1 0 0 0.1', '2 0 0 0.1')}\n", ":1: rotation part is not a rotation"),
    (f"{HEAD.replace('0', '9', 1)} {W2C_ROWS}\n{HEAD} {W2C_ROWS}\n", ":2: timestamps must be strictly increasing"),
    (f"{HEAD} {W2C_ROWS}\n1 {HEAD[2:]} {W2C_ROWS.replace('0 0 1 0.3', '0 0 -1 0.3')}\n",
     ":2: a mirrored rotation (det -1), but the first frame has a proper rotation (det +1): mixed determinants"),
    (f"{HEAD} {W2C_ROWS.replace('1 0 0 0.1', '0 0 0 0.1')}\n", ":1: rotation part is not a rotation"),
    (f"0 0 0.5 0.5 0.5 0 0 {W2C_ROWS}\n", ":1: focal lengths must be positive"),
    (f"{HEAD} {W2C_ROWS.replace('0.3', 'nan')}\n", ":1: matrix has non-finite values"),
    (f"https://x\n{HEAD} {W2C_ROWS}\nhttps://y\n", ":3: expected 19 numbers per frame, got 1"),
]


@pytest.mark.parametrize("text,expected", BAD_TEXT)
def test_bad_re10k_text(tmp_path, text, expected):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(MediaError) as err:
        load_trajectory(p)
    assert str(p) in str(err.value) and expected in str(err.value)


EYE = np.eye(4).tolist()
OK_FRAME = {"intrinsics": K, "c2w": EYE}


def frames_json(*frames: dict) -> str:
    return json.dumps(list(frames))


BAD_JSON = [
    ("{not json", "invalid JSON"),
    ('{"frames": []}', "no frames"),
    ('{"frames": 3}', "expected a list of frames"),
    ("[1]", "frame 0: expected an object"),
    (json.dumps({"fps": 0, "frames": [OK_FRAME]}), "'fps' must be a positive number"),
    (frames_json(OK_FRAME, {"intrinsics": K}), "frame 1: give exactly one of 'c2w' or 'w2c'"),
    (frames_json({"c2w": EYE}), "frame 0: missing 'intrinsics'"),
    (frames_json({"intrinsics": [1, 2], "c2w": EYE}), "frame 0: intrinsics must be"),
    (frames_json({"intrinsics": K, "c2w": [[1, 0], [0, 1]]}), "frame 0: 'c2w' must be 4x4 or 3x4"),
    (frames_json(OK_FRAME, {"intrinsics": K, "w2c": (np.eye(4) * 2).tolist()}), "frame 1: 'w2c' last row"),
    (
        frames_json(OK_FRAME, {"intrinsics": K, "c2w": np.diag([1, 1, -1, 1]).tolist()}),
        "frame 1: a mirrored rotation (det -1), but the first frame has a proper rotation (det +1)",
    ),
    ("[" + json.dumps(np.eye(4)[:3].reshape(-1).tolist()) + ", [1, 0, 0]]",
     "frame 1: expected 12 numbers (a 3x4 world-to-camera matrix, row-major), got 3"),
    ("[" + json.dumps(np.eye(4)[:3].reshape(-1).tolist()) + ', {"c2w": 1}]', "frame 1: expected a row of 12 numbers"),
    ('[[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, NaN]]', "frame 0: matrix has non-finite values"),
    (frames_json({"timestamp": 0, **OK_FRAME}, OK_FRAME), "frame 1: 'timestamp' given for some"),
    (frames_json({"timestamp": "x", **OK_FRAME}), "frame 0: 'timestamp' must be a number"),
    (frames_json({"timestamp": 1.0, **OK_FRAME}, {"timestamp": 0.5, **OK_FRAME}), "frame 1: timestamps must be"),
]


@pytest.mark.parametrize("text,expected", BAD_JSON)
def test_bad_json(tmp_path, text, expected):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(MediaError) as err:
        load_trajectory(p)
    assert str(p) in str(err.value) and expected in str(err.value)


def test_missing_camera_file(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        load_trajectory(tmp_path / "nope.txt")


def test_example_camera_files():
    from pathlib import Path

    media = Path(__file__).resolve().parent.parent / "examples" / "media"
    dolly_pan = load_trajectory(media / "camera_dolly_pan.txt")
    assert len(dolly_pan) == 16 and dolly_pan.timestamps[1] == pytest.approx(0.125)
    assert describe_motion(dolly_pan) == "strong dolly in, moderate pan left"
    orbit = load_trajectory(media / "camera_orbit.json")
    c = motion_components(orbit)
    assert c["yaw_deg"] == pytest.approx(-40.0, abs=1e-3)
    # Circling to the right of a subject: the camera slides right and turns left.
    assert "strong truck right" in describe_motion(orbit) and "pan left" in describe_motion(orbit)


# ------------------------------------------------------------ published variants


def re10k_text(c2ws, times=None, first_line="https://www.youtube.com/watch?v=abc", k=(0.5, 0.9, 0.5, 0.5)) -> str:
    """A RealEstate10K file of these camera-to-world poses (times in microseconds)."""
    times = times if times is not None else [i * 33366 for i in range(len(c2ws))]
    rows = []
    for t, c2w in zip(times, c2ws):
        w2c = np.linalg.inv(c2w)[:3].reshape(-1)
        rows.append(" ".join([str(t), *map(str, k), "0", "0", *(repr(float(x)) for x in w2c)]))
    return first_line + "\n" + "\n".join(rows) + "\n"


DOLLY_PAN = [pose(yawed(-a), centre=(0, 0, z)) for a, z in zip(np.linspace(0, 20, 5), np.linspace(0, 1, 5))]


@pytest.mark.parametrize("times", [[0] * 5, [1234567] * 5])
def test_re10k_placeholder_timestamps_are_frame_order(tmp_path, caplog, times):
    p = tmp_path / "cam.txt"
    p.write_text(re10k_text(DOLLY_PAN, times=times))
    with caplog.at_level("WARNING", logger="vidcli"):
        t = load_trajectory(p)
    assert np.allclose(t.timestamps, np.arange(5) / 30.0)
    assert describe_motion(t) == "strong dolly in, moderate pan left"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and warned[0].startswith(str(p))
    assert f"every timestamp is the same ({times[0] / 1e6:g} s, a placeholder): frames taken in file order, " \
        "evenly spaced at 30 fps" in warned[0]
    assert "\n" not in warned[0]


def test_re10k_empty_first_line(tmp_path, caplog):
    p = tmp_path / "cam.txt"
    p.write_text(re10k_text(DOLLY_PAN, first_line=""))
    with caplog.at_level("WARNING", logger="vidcli"):
        t = load_trajectory(p)
    assert len(t) == 5 and np.allclose(t.c2w, np.stack(DOLLY_PAN))
    assert not caplog.records  # nothing had to be assumed


def test_mirrored_world_is_read_relative_to_frame_0(tmp_path, caplog):
    mirror = np.diag([1.0, 1.0, -1.0, 1.0])  # the world's z flipped: every c2w rotation has det -1
    p = tmp_path / "cam.txt"
    p.write_text(re10k_text([mirror @ m for m in DOLLY_PAN]))
    with caplog.at_level("WARNING", logger="vidcli"):
        t = load_trajectory(p)
    assert np.allclose(np.linalg.det(t.c2w[:, :3, :3]), 1.0)
    assert np.allclose(t.c2w, relative_poses(np.stack(DOLLY_PAN)))
    assert describe_motion(t) == "strong dolly in, moderate pan left"
    assert "determinant -1 (a mirrored world): poses re-expressed relative to frame 0" in caplog.records[0].getMessage()


def test_far_from_origin_in_centimetres_reads_like_metres(tmp_path, caplog):
    g, _ = similarity(5)
    cm = []
    for m in DOLLY_PAN:
        m = g @ m
        m[:3, 3] = m[:3, 3] * 100 + np.array([2.5e5, -1.2e5, 8e4])
        cm.append(m)
    p = tmp_path / "cam.txt"
    p.write_text(re10k_text(cm))
    with caplog.at_level("WARNING", logger="vidcli"):
        t = load_trajectory(p)
    assert describe_motion(t) == "strong dolly in, moderate pan left"
    assert motion_components(t)["extent"] == pytest.approx(100.0, rel=1e-6)


def test_json_bare_rows_of_12_numbers(tmp_path, caplog):
    rows = [np.linalg.inv(m)[:3].reshape(-1).tolist() for m in DOLLY_PAN]
    p = tmp_path / "cam.json"
    p.write_text(json.dumps(rows))
    with caplog.at_level("WARNING", logger="vidcli"):
        t = load_trajectory(p)
    assert np.allclose(t.c2w, np.stack(DOLLY_PAN))
    assert np.allclose(t.intrinsics, [[1.0, 1.0, 0.5, 0.5]] * 5)
    assert np.allclose(t.timestamps, np.arange(5) / 30.0)
    assert describe_motion(t) == "strong dolly in, moderate pan left"
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == (f"{p}: frames are bare 3x4 world-to-camera rows: assumed intrinsics fx=1 fy=1 cx=0.5 "
                       "cy=0.5 and frames evenly spaced at 30 fps")


def test_each_assumption_is_reported_once_per_file(tmp_path, caplog):
    p = tmp_path / "cam.txt"
    p.write_text(re10k_text(DOLLY_PAN, times=[0] * 5))
    with caplog.at_level("WARNING", logger="vidcli"):
        for _ in range(3):  # a training run reads the same file every epoch
            load_trajectory(p)
    assert len(caplog.records) == 1
