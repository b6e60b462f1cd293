"""Shot-boundary detection on synthetic films with known cuts, and the film generator."""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from vidcli.errors import MediaError
from vidcli.media import load_video, probe_video, write_video
from vidcli.mining.shots import Clip, clips_from_shots, detect_shots
from vidcli.mining.synthetic import make_film, render_film

# (seed, fps, duration_s): several frame rates and lengths.
FILMS = [(0, 10.0, 30.0), (1, 8.0, 20.0), (2, 12.0, 40.0), (3, 10.0, 25.0)]


def cut_f1(detected: list[float], truth: list[float], tolerance: float) -> tuple[float, int]:
    """F1 of detected cut times against true ones; each true cut matches at most one
    detection within ``tolerance`` seconds (greedy, in time order). Returns (F1, matches)."""
    unused = sorted(detected)
    hits = 0
    for cut in sorted(truth):
        near = [d for d in unused if abs(d - cut) <= tolerance + 1e-9]
        if near:
            unused.remove(min(near, key=lambda d: abs(d - cut)))
            hits += 1
    if not detected and not truth:
        return 1.0, 0
    precision = hits / len(detected) if detected else 0.0
    recall = hits / len(truth) if truth else 0.0
    return (2 * precision * recall / (precision + recall) if hits else 0.0), hits


def test_cut_f1_by_hand():
    # truth 1, 2, 3; detections 1.05 (hit), 2.5 (miss), 3.0 (hit), 4 (extra): P = 2/4, R = 2/3.
    f1, hits = cut_f1([1.05, 2.5, 3.0, 4.0], [1.0, 2.0, 3.0], tolerance=0.1)
    assert hits == 2
    assert f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # One detection cannot serve two true cuts.
    assert cut_f1([1.0], [0.95, 1.05], tolerance=0.1) == (pytest.approx(2 / 3), 1)


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    folder = tmp_path_factory.mktemp("films")
    return [make_film(folder / f"film{seed}.mp4", seed=seed, fps=fps, duration_s=dur) for seed, fps, dur in FILMS]


def test_generator_ground_truth(films):
    for film in films:
        info = probe_video(film.path)
        assert info.num_frames == film.num_frames and info.fps == pytest.approx(film.fps)
        assert (info.width, info.height) == (96, 64)
        starts, ends = zip(*film.shots)
        assert starts[0] == 0.0 and ends[-1] == pytest.approx(film.duration_s)
        assert list(starts[1:]) == list(ends[:-1])  # contiguous
        # Every cut falls on a frame.
        assert np.allclose(np.round(np.array(film.cuts) * film.fps), np.array(film.cuts) * film.fps)
        assert len(film.scenes) == len(film.shots)
        # Scenes recur: some scene is left and later returned to.
        visits = [s for k, s in enumerate(film.scenes) if k == 0 or s != film.scenes[k - 1]]
        assert max(Counter(visits).values()) >= 2
        assert set(film.captions) == set(film.scenes)


def test_generator_is_deterministic():
    frames_a, a = render_film(seed=5, duration_s=8)
    frames_b, b = render_film(seed=5, duration_s=8)
    frames_c, c = render_film(seed=6, duration_s=8)
    assert np.array_equal(frames_a, frames_b) and a == b
    assert frames_a.shape == (80, 64, 96, 3) and frames_a.dtype == np.uint8
    assert not np.array_equal(frames_a, frames_c)
    with pytest.raises(ValueError, match="num_scenes"):
        render_film(num_scenes=1)


def test_shots_of_one_scene_look_alike_and_cuts_are_visible(films):
    """The premise of the films: frames of the same scene share colours, different
    scenes do not, and every cut changes the picture (mean colour or layout)."""
    film = films[0]
    clip = load_video(film.path)
    means = clip.frames.reshape(len(clip.frames), -1, 3).mean(axis=1)
    shot_of = np.searchsorted(np.array(film.cuts), clip.timestamps + 1e-6)
    centre = np.array([means[shot_of == k].mean(axis=0) for k in range(len(film.shots))])
    labels = np.array(film.scenes)
    dist = np.linalg.norm(centre[:, None] - centre[None], axis=-1)
    same = (labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)
    assert dist[same].mean() < 0.5 * dist[labels[:, None] != labels[None]].mean()


def test_detected_cuts_match_known_cuts(films):
    total_hits = total_detected = total_truth = 0
    for film in films:
        shots = detect_shots(film.path)
        detected = [start for start, _ in shots[1:]]
        f1, hits = cut_f1(detected, film.cuts, tolerance=1.0 / film.fps)
        assert f1 >= 0.9, (film.path.name, detected, film.cuts)
        total_hits += hits
        total_detected += len(detected)
        total_truth += len(film.cuts)
    precision, recall = total_hits / total_detected, total_hits / total_truth
    assert 2 * precision * recall / (precision + recall) >= 0.95


def test_adaptive_beats_a_fixed_content_threshold(films):
    """Cuts between two framings of one scene change the picture less than the fixed
    threshold asks, but much more than its neighbours: why the default keeps ``adaptive``."""
    found = {"adaptive": 0, "content": 0}
    for film in films:
        for detector in found:
            detected = [start for start, _ in detect_shots(film.path, detector=detector)[1:]]
            found[detector] += cut_f1(detected, film.cuts, tolerance=1.0 / film.fps)[1]
    assert found["content"] < found["adaptive"]


@pytest.fixture(scope="module")
def panning_films(tmp_path_factory):
    """8 fps films whose every shot pans fast (15% of the frame width per frame)."""
    folder = tmp_path_factory.mktemp("pans")
    return [make_film(folder / f"pan{seed}.mp4", seed=seed, fps=8.0, duration_s=20.0, camera="pan")
            for seed in (0, 3)]


def test_default_finds_cuts_between_fast_moving_shots_at_8_fps(panning_films):
    """Each frame of a fast pan at 8 fps changes as much as a cut does: the adaptive detector
    alone misses cuts there; the colour histogram, which a pan hardly changes, does not."""
    for film in panning_films:
        found = {d: [s for s, _ in detect_shots(film.path, detector=d)[1:]] for d in ("histogram+adaptive", "adaptive")}
        assert [s for s, _ in detect_shots(film.path)[1:]] == found["histogram+adaptive"]  # the default
        assert len(found["histogram+adaptive"]) == len(film.cuts)  # no cut inside a pan
        assert cut_f1(found["histogram+adaptive"], film.cuts, tolerance=0.5)[1] == len(film.cuts)
        assert cut_f1(found["adaptive"], film.cuts, tolerance=0.5)[1] < len(film.cuts)


def test_two_detectors_cutting_a_frame_apart_make_one_cut(tmp_path):
    """A cut the histogram finds on frame k and the adaptive detector on frame k+1 is one cut."""
    frames, film = render_film(seed=1, fps=8.0, duration_s=12.0, camera="still")
    # Every cut becomes two a frame apart: a frame halfway between the shots in front of each.
    for cut in film.cuts:
        k = round(cut * film.fps)
        frames[k - 1] = (frames[k - 2].astype(int) + frames[k].astype(int)) // 2
    path = write_video(tmp_path / "soft.mp4", frames, film.fps)
    shots = detect_shots(path, min_shot_s=0.5)
    assert all(end - start >= 0.5 - 1e-6 for start, end in shots[:-1])
    assert cut_f1([s for s, _ in shots[1:]], film.cuts, tolerance=0.25)[0] == 1.0


def test_cut_times_count_from_the_first_frame_as_load_video_does(tmp_path):
    """A film whose first frame is shown at 1.5 s: cuts keep the clock load_video samples by."""
    from tests.test_media import write_frames

    frames, film = render_film(seed=1, fps=8.0, duration_s=12.0, camera="still")
    path = write_frames(tmp_path / "late.mp4", frames, first_pts=12)  # 12 frames at 8 fps: 1.5 s late
    shots = detect_shots(path)
    assert [start for start, _ in shots[1:]] == pytest.approx(film.cuts)
    second = load_video(path, start=shots[1][0], end=shots[1][1]).frames
    assert np.abs(second.astype(int) - frames[round(film.cuts[0] * 8):round(film.cuts[1] * 8)]).mean() < 3


def test_shots_cover_the_video(films):
    film = films[1]
    shots = detect_shots(film.path)
    assert shots[0][0] == 0.0
    assert all(a[1] == b[0] for a, b in zip(shots, shots[1:]))
    assert shots[-1][1] == pytest.approx(probe_video(film.path).duration_s)


def test_min_shot_length_merges_short_shots(films):
    film = films[2]
    shortest = min(end - start for start, end in film.shots)
    limit = shortest + 1.0
    shots = detect_shots(film.path, min_shot_s=limit)
    assert len(shots) < len(film.shots)
    assert all(end - start >= limit - 1e-6 for start, end in shots[:-1])


def test_content_detector_threshold_is_passed(films):
    film = films[0]
    # No frame changes by more than the whole HSV range: one shot.
    assert detect_shots(film.path, detector="content", threshold=255.0) == [(0.0, pytest.approx(film.duration_s))]
    assert len(detect_shots(film.path, detector="content", threshold=5.0)) > 1
    with pytest.raises(ValueError, match="unknown shot detector"):
        detect_shots(film.path, detector="histogram-ish")
    with pytest.raises(ValueError, match="a threshold is one detector's own"):
        detect_shots(film.path, detector="histogram+adaptive", threshold=0.3)


def test_unreadable_videos_are_media_errors(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 50)
    with pytest.raises(MediaError) as err:
        detect_shots(junk)
    assert str(junk) in str(err.value)
    with pytest.raises(MediaError, match="not found"):
        detect_shots(tmp_path / "missing.mp4")


def test_video_that_breaks_off_gives_the_shots_before_the_break(tmp_path, caplog):
    import av

    film = make_film(tmp_path / "film.mp4", seed=0)
    with av.open(str(film.path)) as container:
        packets = sorted((p.pts, p.pos) for p in container.demux(container.streams.video[0]) if p.size)
    # Zero every byte from the packet shown mid-film on: the index still lists all
    # frames, but the second half does not decode.
    data = bytearray(film.path.read_bytes())
    start = packets[len(packets) // 2][1]
    data[start:] = bytes(len(data) - start)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="vidcli.mining.shots"):
        shots = detect_shots(broken)
    assert "frames decode" in caplog.text
    # The shots end where media.load_video also finds the decodable frames end.
    usable = load_video(broken)
    end = shots[-1][1]
    assert end == pytest.approx(usable.timestamps[-1] + 1 / film.fps)
    assert 0.3 * film.duration_s < end < 0.6 * film.duration_s
    detected = [start for start, _ in shots[1:]]
    f1, _ = cut_f1(detected, [c for c in film.cuts if c < end], tolerance=1.0 / film.fps)
    assert f1 >= 0.9


def test_clips_from_shots_drops_short_shots():
    clips = clips_from_shots("v.mp4", [(0.0, 0.5), (0.5, 3.0), (3.0, 3.9)], min_duration=0.9)
    assert clips == [Clip("v.mp4", 0.5, 3.0), Clip("v.mp4", 3.0, 3.9)]
    assert clips[0].as_record() == {"video": "v.mp4", "start": 0.5, "end": 3.0}
    assert clips[1].duration == pytest.approx(0.9)
