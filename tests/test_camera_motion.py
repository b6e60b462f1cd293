"""Camera motion in words: levels, directions, out-and-back moves and invariance to the world frame."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tests.test_camera import K, moved, pose, rotation, similarity, traj, yawed
from vidcli.camera_motion import describe_motion, motion_components


def test_dolly_in_and_out():
    fwd = traj([pose(centre=(0, 0, z)) for z in np.linspace(0, 0.5, 6)])
    assert describe_motion(fwd) == "strong dolly in"
    c = motion_components(fwd)
    assert c["forward"] == pytest.approx(1.0) and c["extent"] == pytest.approx(0.5)
    assert c["coherence"] == pytest.approx(1.0)
    back = traj([pose(centre=(0, 0, -z)) for z in np.linspace(0, 0.1, 6)])
    assert describe_motion(back) == "strong dolly out"


def test_translation_levels_are_shares_of_the_travel():
    # 0.3 forward with 0.1 sideways: the sideways part is 0.32 of the extent (slight).
    t = traj([pose(), pose(centre=(0.1, 0, 0.3))])
    c = motion_components(t)
    assert c["forward"] == pytest.approx(0.3 / math.hypot(0.1, 0.3))
    assert c["right"] == pytest.approx(0.1 / math.hypot(0.1, 0.3))
    assert describe_motion(t) == "strong dolly in, slight truck right"
    # 45 degrees between forward and right: both halves of the travel are strong.
    assert describe_motion(traj([pose(), pose(centre=(-1, 0, 1))])) == "strong dolly in, strong truck left"
    # A small drift (0.1 of the travel) is no word at all.
    assert describe_motion(traj([pose(), pose(centre=(0, 0.1, 1))])) == "strong dolly in"


def test_pan_left_30_degrees():
    t = traj([pose(yawed(-a)) for a in np.linspace(0, 30, 7)])
    c = motion_components(t)
    assert c["yaw_deg"] == pytest.approx(-30.0)
    assert c["yaw_out_deg"] == pytest.approx(-30.0)
    assert describe_motion(t) == "moderate pan left"


def test_pan_right_strong():
    assert describe_motion(traj([pose(), pose(yawed(50))])) == "strong pan right"


def test_tilt_up_and_down():
    up = traj([pose((0, -math.sin(math.radians(a)), math.cos(math.radians(a)))) for a in (0, 6, 12)])
    assert motion_components(up)["pitch_deg"] == pytest.approx(12.0)
    assert describe_motion(up) == "moderate tilt up"
    down = traj([pose(), pose((0, math.sin(0.1), math.cos(0.1)))])  # 5.7 degrees
    assert describe_motion(down) == "slight tilt down"


def test_truck_and_pedestal():
    assert describe_motion(traj([pose(), pose(centre=(0.3, 0, 0))])) == "strong truck right"
    assert describe_motion(traj([pose(), pose(centre=(-0.1, 0, 0))])) == "strong truck left"
    # y points down, so a negative y translation lifts the camera.
    assert describe_motion(traj([pose(), pose(centre=(0, -0.2, 0))])) == "strong pedestal up"


def test_roll_direction():
    t = traj([pose(), pose(roll_deg=20)])
    assert motion_components(t)["roll_deg"] == pytest.approx(20.0)
    assert describe_motion(t) == "moderate roll clockwise"
    assert describe_motion(traj([pose(), pose(roll_deg=-5)])) == "slight roll counter-clockwise"


def test_zoom_in_by_one_and_a_half():
    k1 = [K[0] * 1.5, K[1] * 1.5, 0.5, 0.5]
    t = traj([pose(), pose()], intr=[K, k1])
    assert motion_components(t)["zoom"] == pytest.approx(1.5)
    assert describe_motion(t) == "moderate zoom in"
    k2 = [K[0] / 2, K[1] / 2, 0.5, 0.5]
    assert describe_motion(traj([pose(), pose()], intr=[K, k2])) == "strong zoom out"


def test_static_and_jitter_are_fixed():
    assert describe_motion(traj([pose()] * 5)) == "fixed camera"
    # Shaken around one spot: the path is long, the camera gets nowhere (coherence 1/8).
    jitter = traj([pose(yawed(0.5 * (-1) ** i), centre=(0.01 * (i % 2), 0, 0)) for i in range(9)])
    assert motion_components(jitter)["coherence"] == pytest.approx(1 / 8)
    assert describe_motion(jitter) == "fixed camera"
    rng = np.random.default_rng(3)
    noisy = traj([pose(centre=tuple(rng.normal(scale=1e-3, size=3))) for _ in range(16)])
    assert motion_components(noisy)["coherence"] < 0.3
    assert describe_motion(noisy) == "fixed camera"


def test_out_and_back_is_not_fixed():
    zs = [0, 0.1, 0.2, 0.3, 0.2, 0.1, 0.0]
    there_and_back = traj([pose(centre=(0, 0, z)) for z in zs])
    c = motion_components(there_and_back)
    assert c["forward"] == pytest.approx(0.0) and c["forward_out"] == pytest.approx(1.0)
    assert c["coherence"] == pytest.approx(0.5)
    assert describe_motion(there_and_back) == "strong dolly in and back"
    sideways = traj([pose(centre=(-x, 0, 0)) for x in (0, 1, 2, 1, 0.1)])
    assert describe_motion(sideways) == "strong truck left and back"


def test_combined_dolly_and_pan():
    poses = [pose(yawed(-a), centre=(0, 0, z)) for a, z in zip(np.linspace(0, 20, 5), np.linspace(0, 0.3, 5))]
    assert describe_motion(traj(poses)) == "strong dolly in, moderate pan left"


def test_translation_is_measured_in_the_first_cameras_axes():
    # The first camera already looks right (+x world); moving along +x is a dolly in.
    t = traj([pose((1, 0, 0), centre=(0, 0, 0)), pose((1, 0, 0), centre=(0.3, 0, 0))])
    assert describe_motion(t) == "strong dolly in"


def test_pan_back_and_forth():
    angles = [0, 15, 30, 15, 0, 1]
    assert describe_motion(traj([pose(yawed(a)) for a in angles])) == "moderate pan back and forth"

KNOWN_MOTIONS = {
    "strong dolly in": [pose(centre=(0, 0, z)) for z in np.linspace(0, 1, 6)],
    "strong dolly in and back": [pose(centre=(0, 0, z)) for z in (0, 0.5, 1, 0.5, 0)],
    "moderate dolly in, strong truck right, strong pan left": [pose(yawed(-a), centre=(4 * math.sin(math.radians(a)), 0,
                                                                     4 - 4 * math.cos(math.radians(a))))
                                             for a in np.linspace(0, 50, 6)],
    "strong dolly in, moderate pan left": [pose(yawed(-a), centre=(0, 0, z))
                                           for a, z in zip(np.linspace(0, 20, 5), np.linspace(0, 3, 5))],
    "strong dolly in, moderate pedestal down, slight tilt up": [
        pose((0, -math.sin(math.radians(a)), math.cos(math.radians(a))), centre=(0, 0.5 * a / 8, 1.0 * a / 8))
        for a in (0, 4, 8)],
    "fixed camera": [pose(yawed(0.5 * (-1) ** i), centre=(0.01 * (i % 2), 0, 0)) for i in range(9)],
}


@pytest.mark.parametrize("words", list(KNOWN_MOTIONS))
@pytest.mark.parametrize("seed", range(8))
def test_words_do_not_depend_on_the_world_frame_or_scale(words, seed):
    t = traj(KNOWN_MOTIONS[words])
    assert describe_motion(t) == words
    g, scale = similarity(seed)
    assert describe_motion(moved(t, g, scale)) == words


def test_same_move_reads_the_same_wherever_the_origin_is():
    # One unit forward, with the origin at the camera, 3.5 units in front, or far away:
    # the distance to the world origin says nothing about the scene.
    for z0 in (0.0, -3.5, -4.0, 1e4):
        t = traj([pose(centre=(0, 0, z0)), pose(centre=(0, 0, z0 + 1))])
        assert describe_motion(t) == "strong dolly in"


def test_tilt_up_to_vertical_has_no_pan():
    tilt = traj([rotation("x", a) for a in np.linspace(0, 90, 7)])
    assert describe_motion(tilt) == "strong tilt up"
    for seed in range(8):  # float noise of a world rotation must not read as yaw
        c = motion_components(moved(tilt, *similarity(seed)))
        assert c["yaw_deg"] == 0.0 and abs(c["roll_deg"]) < 1e-6 and c["pitch_deg"] == pytest.approx(90.0)
        assert describe_motion(moved(tilt, *similarity(seed))) == "strong tilt up"
    down = traj([rotation("x", -a) for a in np.linspace(0, 90, 4)])
    assert describe_motion(down) == "strong tilt down"
    # Straight up, then a turn about the view axis: a roll, not a pan.
    rolled = traj([np.eye(4), rotation("x", 90) @ rotation("z", 20)])
    assert describe_motion(rolled) == "strong tilt up, moderate roll clockwise"
