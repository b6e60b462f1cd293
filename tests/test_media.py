"""Video, image and audio loading; media paths in records."""
from __future__ import annotations

import logging
import math
import time
import wave
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from PIL import Image

from vidcli.errors import InputError, MediaError
from vidcli.media import (
    _decode_decord,
    _decode_pyav,
    _scan,
    load_audio,
    load_image,
    load_video,
    probe_video,
    video_frames_as_pil,
    write_video,
)
from vidcli.media_access import MediaAccess, resolve_media_path

T, FPS, H, W = 24, 8, 48, 64
# One distinct colour per frame; noise makes the frames big enough that cutting the
# file in half cuts frame data, not just the index.
COLOURS = np.array([[10 * i, 250 - 10 * i, (37 * i) % 200 + 20] for i in range(T)])


def frames_with_colours() -> np.ndarray:
    noise = np.random.default_rng(0).integers(-20, 21, (T, H, W, 3))
    return np.clip(COLOURS[:, None, None, :] + noise, 0, 255).astype(np.uint8)


def frame_ids(frames: np.ndarray) -> list[int]:
    """Which written frame each decoded frame is, by nearest mean colour."""
    means = frames.reshape(len(frames), -1, 3).mean(axis=1)
    return np.abs(means[:, None, :] - COLOURS[None]).sum(-1).argmin(1).tolist()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "colours.mp4", frames_with_colours(), FPS)


def test_written_video_round_trips(video):
    assert not list(video.parent.glob(".*partial*"))  # the temporary name is gone
    clip = load_video(video)
    assert clip.frames.shape == (T, H, W, 3) and clip.frames.dtype == np.uint8
    assert frame_ids(clip.frames) == list(range(T))
    means = clip.frames.reshape(T, -1, 3).mean(1)
    assert np.abs(means - COLOURS).max() < 8  # noise is clipped near 0 and 255
    assert np.allclose(clip.timestamps, np.arange(T) / FPS)


def test_probe(video):
    info = probe_video(video)
    assert (info.num_frames, info.fps, info.width, info.height) == (T, 8.0, W, H)
    assert info.duration_s == pytest.approx(3.0)


def test_num_frames_are_segment_centres(video):
    # 5 segments of 0.6 s: centres 0.3 0.9 1.5 2.1 2.7 -> frames 2.4 7.2 12 16.8 21.6.
    clip = load_video(video, num_frames=5)
    assert frame_ids(clip.frames) == [2, 7, 12, 17, 22]
    assert np.allclose(clip.timestamps, [0.25, 0.875, 1.5, 2.125, 2.75])
    assert clip.fps == 8.0 and clip.duration_s == pytest.approx(3.0)


def test_num_frames_in_a_range(video):
    # [1, 2): centres 1.125 1.375 1.625 1.875.
    clip = load_video(video, num_frames=4, start=1.0, end=2.0)
    assert frame_ids(clip.frames) == [9, 11, 13, 15]


def test_fps_sampling(video):
    clip = load_video(video, fps=2.0, start=0.5, end=2.0)  # 0.5, 1.0, 1.5
    assert frame_ids(clip.frames) == [4, 8, 12]
    assert np.allclose(clip.timestamps, [0.5, 1.0, 1.5])
    clip = load_video(video, fps=3.0)  # 0, .333, .667, ... 2.667 -> nearest frames
    assert frame_ids(clip.frames) == [round(k * 8 / 3) for k in range(9)]


def test_max_frames_spreads_uniformly(video):
    clip = load_video(video, max_frames=6)  # all 24 asked; 6 centres of 0.5 s segments
    assert frame_ids(clip.frames) == [2, 6, 10, 14, 18, 22]
    assert len(load_video(video, fps=100.0, max_frames=10).frames) == 10
    with pytest.raises(ValueError):
        load_video(video, num_frames=300)


def test_more_frames_than_the_range_holds_repeat(video):
    # Two frames in range (0 and 0.125 s); centres 0.031 0.094 0.156 0.219 s.
    clip = load_video(video, num_frames=4, start=0.0, end=0.25)
    assert frame_ids(clip.frames) == [0, 1, 1, 1]


def test_range_checks(video):
    assert len(load_video(video, start=2.5, end=99.0).frames) == 4  # end is clipped
    for kwargs in ({"start": 3.0}, {"start": -1.0}, {"start": 2.0, "end": 1.0}):
        with pytest.raises(MediaError) as err:
            load_video(video, **kwargs)
        assert str(video) in str(err.value)


def test_resize_and_pil(video):
    clip = load_video(video, num_frames=2, size=(32, 24))
    assert clip.frames.shape == (2, 24, 32, 3)
    images = video_frames_as_pil(clip)
    assert [im.size for im in images] == [(32, 24)] * 2 and images[0].mode == "RGB"
    assert np.array_equal(np.asarray(images[1]), clip.frames[1])


def test_pyav_path_matches_decord(video, tmp_path):
    """Both decoders give the same pictures, with one keyframe or many (seeking)."""
    short_gop = tmp_path / "gop.mp4"
    with av.open(str(short_gop), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"g": "4", "bf": "2"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for f in frames_with_colours():
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))
    for path, many_keyframes in ((video, False), (short_gop, True)):
        scan = _scan(path)
        assert (len(scan.keyframes) >= 4) == many_keyframes
        picks = [1, 5, 6, 20]
        found, failed = _decode_pyav(scan, scan.pts[picks], None)
        assert failed is None
        expected = decord.VideoReader(str(path)).get_batch(picks).asnumpy()
        assert np.array_equal(np.stack([found[int(p)] for p in scan.pts[picks]]), expected)
        assert frame_ids(expected) == picks


def test_write_video_checks_frames(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 5, 6, 3), np.uint8), 8)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 4, 6, 3), np.float32), 8)


# ------------------------------------------------------------------------- bad videos


def _expect_media_error(path: Path, reason: str, loader=load_video) -> None:
    start = time.monotonic()
    with pytest.raises(MediaError) as err:
        loader(path)
    message = str(err.value)
    assert message.startswith(str(path)) and reason in message and "\n" not in message
    assert time.monotonic() - start < 10


def test_unreadable_videos(tmp_path, video):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    data = video.read_bytes()
    # Without the faststart pass the index sits at the end: cutting it loses everything.
    plain = tmp_path / "plain.mp4"
    with av.open(str(plain), "w") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height = W, H
        for f in frames_with_colours():
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))
    (tmp_path / "no_index.mp4").write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    (tmp_path / "head.mp4").write_bytes(data[:200])
    _expect_media_error(tmp_path / "missing.mp4", "file not found")
    _expect_media_error(tmp_path, "not a regular file")
    _expect_media_error(tmp_path / "empty.mp4", "file is empty")
    _expect_media_error(tmp_path / "text.mp4", "not a readable media file")
    _expect_media_error(tmp_path / "no_index.mp4", "not a readable media file")
    _expect_media_error(tmp_path / "head.mp4", "")


def test_audio_only_file_has_no_video(tmp_path):
    wav = _write_tone(tmp_path / "tone.wav", 440.0, 8000)
    _expect_media_error(wav, "no video stream")
    _expect_media_error(wav, "no video stream", loader=probe_video)


@pytest.mark.timeout(30)
def test_video_cut_in_half_gives_the_frames_before_the_cut(tmp_path, video, caplog):
    half = tmp_path / "half.mp4"
    half.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        clip = load_video(half)
    n = len(clip.frames)
    assert 3 <= n < T
    assert frame_ids(clip.frames) == list(range(n))  # the right pictures, in order
    assert np.allclose(clip.timestamps, np.arange(n) / FPS)
    assert probe_video(half).num_frames < T
    # Sampling is spread over what decodes, not over the header's 3 seconds.
    sampled = load_video(half, num_frames=2)
    assert sampled.timestamps.max() < n / FPS


@pytest.mark.timeout(30)
def test_zeroed_tail_is_cut_off_with_a_warning(tmp_path, video, caplog):
    data = bytearray(video.read_bytes())
    data[len(data) * 6 // 10 :] = bytes(len(data) - len(data) * 6 // 10)
    broken = tmp_path / "zero_tail.mp4"
    broken.write_bytes(bytes(data))
    assert probe_video(broken).num_frames == T  # the index still lists every frame
    with caplog.at_level(logging.WARNING):
        clip = load_video(broken, num_frames=4)
    assert "does not decode" in caplog.text and str(broken) in caplog.text
    ids = frame_ids(clip.frames)
    assert ids == sorted(ids) and max(ids) < T - 3
    assert np.allclose(clip.timestamps, np.array(ids) / FPS)


@pytest.mark.timeout(30)
def test_header_over_reporting_frames(tmp_path, video):
    """An edit list hides the first 6 frames: decord counts 24, only 18 are shown."""
    shifted = tmp_path / "editlist.mp4"
    with av.open(str(video)) as src, av.open(str(shifted), "w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        shift = int(6 / (FPS * stream.time_base))
        for packet in src.demux(stream):
            if packet.dts is None:
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = out
            dst.mux(packet)
    assert len(decord.VideoReader(str(shifted))) == T
    info = probe_video(shifted)
    assert info.num_frames == T - 6 and info.duration_s == pytest.approx((T - 6) / FPS)
    clip = load_video(shifted)
    assert frame_ids(clip.frames) == list(range(6, T))
    assert np.allclose(clip.timestamps, np.arange(T - 6) / FPS)


def write_frames(path: Path, frames: np.ndarray, *, rotation: int = 0, first_pts: int = 0) -> Path:
    """An mp4 of ``frames`` at FPS whose display matrix turns it ``rotation`` degrees
    counter-clockwise, its first frame shown at ``first_pts / FPS`` seconds."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS), options={"crf": "10"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        if rotation:
            stream.set_display_rotation(rotation)
        for i, picture in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = first_pts + i, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def corner_marks() -> np.ndarray:
    """Grey frames (H, W) with a red mark at the top left and a blue one at the bottom right."""
    frames = np.full((6, H, W, 3), 128, np.uint8)
    frames[:, :16, :16] = (255, 0, 0)
    frames[:, -16:, -16:] = (0, 0, 255)
    return frames


def mark_centres(picture: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """(row, column) of the red and the blue mark, as fractions of the picture's height and width."""
    centres = []
    for colour in ((255, 0, 0), (0, 0, 255)):
        rows, cols = np.nonzero(np.abs(picture.astype(int) - colour).sum(-1) < 120)
        centres.append((round(rows.mean() / picture.shape[0], 1), round(cols.mean() / picture.shape[1], 1)))
    return tuple(centres)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_comes_out_as_displayed_from_every_path(tmp_path, rotation):
    """Phone footage: the stored picture and a display matrix that turns it."""
    path = write_frames(tmp_path / f"rot{rotation}.mp4", corner_marks(), rotation=rotation)
    upright = np.rot90(corner_marks()[0], rotation // 90)  # np.rot90: counter-clockwise, as the matrix says
    shown_h, shown_w = upright.shape[:2]
    info = probe_video(path)
    assert (info.rotation, info.width, info.height) == (rotation, shown_w, shown_h)

    scan = _scan(path)
    assert _decode_decord(scan, np.arange(3), None) is None  # decord never serves a rotated video
    found, failed = _decode_pyav(scan, scan.pts[:3], None)
    assert failed is None and all(np.abs(f.astype(int) - upright).mean() < 2 for f in found.values())

    clip = load_video(path, num_frames=3)
    assert clip.frames.shape == (3, shown_h, shown_w, 3)
    assert all(mark_centres(f) == mark_centres(upright) for f in clip.frames)
    # size= is the displayed picture's (width, height).
    small = load_video(path, num_frames=2, size=(shown_w // 2, shown_h // 2))
    assert small.frames.shape == (2, shown_h // 2, shown_w // 2, 3)
    expected = np.asarray(Image.fromarray(upright).resize((shown_w // 2, shown_h // 2), Image.BILINEAR))
    assert np.abs(small.frames[0].astype(int) - expected).mean() < 6
    assert video_frames_as_pil(small)[0].size == (shown_w // 2, shown_h // 2)


def test_a_video_whose_first_frame_is_late_keeps_its_clock(tmp_path):
    """A stream whose first frame is shown at 1.5 s: times count from that frame, on every path."""
    path = write_frames(tmp_path / "late.mp4", frames_with_colours(), first_pts=12)  # 12 / 8 fps = 1.5 s
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert float(next(p.pts for p in container.demux(stream) if p.pts is not None) * stream.time_base) == 1.5
    info = probe_video(path)
    assert info.num_frames == T and info.duration_s == pytest.approx(T / FPS)
    clip = load_video(path)
    assert frame_ids(clip.frames) == list(range(T)) and np.allclose(clip.timestamps, np.arange(T) / FPS)
    later = load_video(path, start=1.0, end=2.0)  # seconds from the first frame, not from the stream's zero
    assert frame_ids(later.frames) == list(range(8, 16))
    scan = _scan(path)
    found, failed = _decode_pyav(scan, scan.pts[8:16], None)
    assert failed is None and frame_ids(np.stack([found[int(p)] for p in scan.pts[8:16]])) == list(range(8, 16))


# ------------------------------------------------------------------------------ images


def test_load_image_and_exif_orientation(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # red left half
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.mode == "RGB" and img.size == (40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display after rotating 90 degrees clockwise
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif, quality=95)
    up = np.asarray(load_image(tmp_path / "r.jpg"))
    assert up.shape == (40, 20, 3)
    assert up[5, 10, 0] > 200 and up[35, 10, 0] < 50  # red half now on top
    Image.fromarray(arr).convert("L").save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").mode == "RGB"


def test_bad_images(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "empty.png").write_bytes(b"")
    for name, reason in [("missing.png", "not found"), ("empty.png", "empty"),
                         ("text.png", "not an image"), ("cut.png", "cannot decode image")]:
        _expect_media_error(tmp_path / name, reason, loader=load_image)


# ------------------------------------------------------------------------------- audio


def _write_tone(path: Path, freq: float, rate: int, seconds: float = 0.5, channels: int = 1) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    mono = (0.5 * np.sin(2 * math.pi * freq * t) * 32767).astype(np.int16)
    data = np.repeat(mono[:, None], channels, axis=1)
    if channels == 2:
        data[:, 1] = 0  # silent right channel: the mono mix halves the amplitude
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def test_load_audio_resamples_and_mixes(tmp_path):
    wav = _write_tone(tmp_path / "a.wav", 440.0, 8000)
    audio = load_audio(wav, sr=16000)
    assert audio.dtype == np.float32 and abs(len(audio) - 8000) <= 32
    assert _peak_hz(audio, 16000) == pytest.approx(440.0, abs=3)
    assert np.abs(audio[1000:-1000]).max() == pytest.approx(0.5, abs=0.02)
    stereo = load_audio(_write_tone(tmp_path / "s.wav", 300.0, 16000, channels=2))
    assert np.abs(stereo[1000:-1000]).max() == pytest.approx(0.25, abs=0.02)


def test_load_audio_from_video_track(tmp_path):
    path = tmp_path / "av.mp4"
    rate = 16000
    tone = (0.4 * np.sin(2 * math.pi * 500.0 * np.arange(rate) / rate)).astype(np.float32)
    with av.open(str(path), "w") as out:
        v = out.add_stream("mpeg4", rate=FPS)
        v.width, v.height = W, H
        a = out.add_stream("aac", rate=rate, layout="mono")
        for f in frames_with_colours()[:8]:
            out.mux(v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(v.encode(None))
        step = a.codec_context.frame_size or 1024
        for i in range(0, len(tone), step):
            frame = av.AudioFrame.from_ndarray(tone[None, i : i + step], format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
            out.mux(a.encode(frame))
        out.mux(a.encode(None))
    audio = load_audio(path, sr=8000)
    assert abs(len(audio) - 8000) < 1200  # the encoder adds priming samples
    assert _peak_hz(audio, 8000) == pytest.approx(500.0, abs=3)
    assert len(load_video(path).frames) == 8


def test_bad_audio(tmp_path, video):
    (tmp_path / "x.wav").write_text("not audio")
    _expect_media_error(tmp_path / "x.wav", "not a readable media file", loader=load_audio)
    _expect_media_error(video, "no audio stream", loader=load_audio)
    _expect_media_error(tmp_path / "none.wav", "file not found", loader=load_audio)


# ------------------------------------------------------------------------ media paths


def test_resolve_media_path(tmp_path):
    base = tmp_path / "data"
    assert resolve_media_path("clips/a.mp4", base) == base / "clips" / "a.mp4"
    assert resolve_media_path("clips/../b.mp4", base) == base / "b.mp4"
    assert resolve_media_path("/abs/c.mp4", base) == Path("/abs/c.mp4")
    root = tmp_path / "media"
    assert resolve_media_path("a.mp4", base, media_root=root) == root / "a.mp4"
    for bad in ("../secret.mp4", "clips/../../x.mp4", ".."):
        with pytest.raises(InputError, match="leaves"):
            resolve_media_path(bad, base)
    assert resolve_media_path("../x.mp4", base, allow_escape=True) == tmp_path / "x.mp4"
    with pytest.raises(InputError, match="non-empty"):
        resolve_media_path("", base)


def test_media_access_resolves_refuses_escapes_and_checks_files(tmp_path):
    base, root = tmp_path / "data", tmp_path / "media"
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "a.mp4").write_bytes(b"x")
    access = MediaAccess(str(root))  # as --media-root gives it
    assert access.media_root == root and MediaAccess("").media_root is None
    assert access.path("clips/a.mp4", base) == root / "clips" / "a.mp4"
    assert MediaAccess().path("a.mp4", base) == base / "a.mp4"
    assert access.file("clips/a.mp4", base, missing="video not found: {path}") == root / "clips" / "a.mp4"
    with pytest.raises(InputError, match=f"^source video not found: {root / 'b.mp4'}$") as caught:
        access.file("b.mp4", base, missing="source video not found: {path}")
    assert not isinstance(caught.value, MediaError)
    with pytest.raises(MediaError, match="^gone: "):
        access.file("b.mp4", base, missing="gone: {path}", error=MediaError)
    # An escape is an input error from path() and file(), a media error from media_path().
    with pytest.raises(InputError, match="leaves") as caught:
        access.path("../x.mp4", base)
    assert not isinstance(caught.value, MediaError)
    with pytest.raises(MediaError, match="^media path '../x.mp4' leaves"):
        access.media_path("../x.mp4", base)
    assert MediaAccess(root, allow_escape=True).path("../x.mp4", base) == tmp_path / "x.mp4"


# ----------------------------------------------------------------------------- examples

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def smooth_motion(seed: int, frames: int = 17, height: int = 48, width: int = 64) -> np.ndarray:
    """A bright blob crossing colour gradients: smooth frames, as a generator's are."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    video = []
    for t in range(frames):
        gradient = np.stack([np.sin(6 * x + 0.3 * t + seed), np.cos(5 * y - 0.2 * t), np.sin(3 * (x + y) + seed)], -1)
        blob = np.exp(-((x - 0.3 - 0.03 * t) ** 2 + (y - 0.5) ** 2) / 0.01)[..., None]
        video.append(((0.5 + 0.4 * gradient) * (1 - blob) + blob * np.array([1.0, 0.2, 0.1])) * 255)
    return np.clip(np.array(video), 0, 255).astype(np.uint8)


def test_write_video_is_deterministic(tmp_path):
    # Small smooth clips are where x264's macroblock-tree rate control read memory it had not
    # set: with it on, each of these clips written 4 times came out in 2 or more versions
    # (decoded pixels differed), the toy editor's training clips among them.
    rng = np.random.default_rng(0)
    litter = []
    for seed in range(4):
        frames = smooth_motion(seed)
        written = set()
        for n in range(4):
            litter.append(bytearray(int(rng.integers(100, 50_000))))  # a different heap for each write
            written.add(write_video(tmp_path / f"{seed}-{n}.mp4", frames, FPS).read_bytes())
        assert len(written) == 1, f"clip {seed}: {len(written)} different files from the same frames"
    flat = frames_with_colours()[:6]
    first = write_video(tmp_path / "a.mp4", flat, FPS).read_bytes()
    assert write_video(tmp_path / "b.mp4", flat, FPS).read_bytes() == first


def test_make_examples_writes_loadable_media(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.main(tmp_path)
    names = sorted(p.name for p in written)
    committed = sorted(p.name for p in (EXAMPLES / "media").iterdir())
    assert names == committed
    assert sum(p.stat().st_size for p in written) < 1_500_000
    for name in ("ball.mp4", "squares.mp4", "scene_cut.mp4", "depth.mp4", "pose.mp4"):
        info = probe_video(tmp_path / name)
        assert (info.width, info.height, info.fps) == (96, 64, 8.0) and 2.0 <= info.duration_s <= 3.0
    # The scene cut is the biggest change between neighbouring frames, at the midpoint.
    frames = load_video(tmp_path / "scene_cut.mp4").frames.astype(float)
    jumps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    assert jumps.argmax() == 11 and jumps[11] > 10 * np.delete(jumps, 11).max()
    assert load_image(tmp_path / "identity_a.png").size == (96, 96)
    tone = load_audio(tmp_path / "tone.wav")
    assert len(tone) == 32000 and _peak_hz(tone, 16000) == pytest.approx(440.0, abs=1)


def test_committed_examples_load():
    media = EXAMPLES / "media"
    assert probe_video(media / "ball.mp4").num_frames == 24
    assert load_video(media / "pose.mp4", num_frames=4).frames.shape == (4, 64, 96, 3)
    assert load_image(media / "identity_b.png").mode == "RGB"
