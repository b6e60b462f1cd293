"""Write the small example media used by the README, the recipes and the tests.

    python examples/make_examples.py [OUT_DIR]     # default: examples/media

Everything is drawn from code (numpy + PIL), so the output is the same on every run:
three short clips (one with a scene cut), two identity images, a depth clip, a pose
clip, a 16 kHz tone and two camera files (RealEstate10K text and JSON).
"""
from __future__ import annotations

import json
import math
import sys
import wave
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vidcli.media import write_video

FPS = 8
W, H = 96, 64


def _canvas(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    """A vertical two-colour gradient background."""
    t = np.linspace(0.0, 1.0, H)[:, None, None]
    rows = (1 - t) * np.array(top) + t * np.array(bottom)
    return Image.fromarray(np.repeat(rows, W, axis=1).astype(np.uint8))


def rolling_ball(n: int = 24) -> np.ndarray:
    """A red ball rolling left to right over grass under a blue sky."""
    frames = []
    for i in range(n):
        img = _canvas((120, 170, 235), (40, 140, 60))
        d = ImageDraw.Draw(img)
        x = 8 + (W - 16) * i / (n - 1)
        d.ellipse([x - 7, 38, x + 7, 52], fill=(220, 30, 30))
        frames.append(np.asarray(img))
    return np.stack(frames)


def dancing_squares(n: int = 16) -> np.ndarray:
    """Two squares circling each other on a grey floor."""
    frames = []
    for i in range(n):
        img = _canvas((60, 60, 70), (150, 150, 150))
        d = ImageDraw.Draw(img)
        a = 2 * math.pi * i / n
        for phase, colour in ((0.0, (250, 200, 30)), (math.pi, (40, 90, 230))):
            cx, cy = W / 2 + 22 * math.cos(a + phase), H / 2 + 14 * math.sin(a + phase)
            d.rectangle([cx - 6, cy - 6, cx + 6, cy + 6], fill=colour)
        frames.append(np.asarray(img))
    return np.stack(frames)


def scene_cut(n: int = 24) -> np.ndarray:
    """A day scene with a rising triangle, then a hard cut to a night scene with a moon."""
    frames = []
    for i in range(n):
        if i < n // 2:
            img = _canvas((150, 210, 250), (230, 220, 160))
            y = 50 - 2 * i
            ImageDraw.Draw(img).polygon([(40, y + 10), (56, y + 10), (48, y - 4)], fill=(20, 120, 40))
        else:
            img = _canvas((10, 10, 40), (40, 30, 80))
            x = 20 + 4 * (i - n // 2)
            ImageDraw.Draw(img).ellipse([x - 8, 12, x + 8, 28], fill=(250, 240, 150))
        frames.append(np.asarray(img))
    return np.stack(frames)


RGB = tuple[int, int, int]


def identity(skin: RGB, hair: RGB, shirt: RGB) -> Image.Image:
    """A simple cartoon character portrait (96x96)."""
    img = Image.new("RGB", (96, 96), (235, 235, 240))
    d = ImageDraw.Draw(img)
    d.rectangle([22, 70, 74, 96], fill=shirt)
    d.ellipse([28, 18, 68, 64], fill=skin)
    d.chord([26, 12, 70, 46], 180, 360, fill=hair)
    for ex in (40, 56):
        d.ellipse([ex - 3, 36, ex + 3, 42], fill=(30, 30, 30))
    d.arc([38, 44, 58, 56], 20, 160, fill=(150, 40, 40), width=2)
    return img


def depth_clip(n: int = 16) -> np.ndarray:
    """Depth maps (near is bright) of a ball approaching in front of a receding floor."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    floor = 40 + 120 * (yy / (H - 1))  # farther towards the top
    frames = []
    for i in range(n):
        r = 8 + 10 * i / (n - 1)
        dist2 = (xx - W / 2) ** 2 + (yy - H / 2) ** 2
        bulge = np.sqrt(np.clip(1 - dist2 / (r * r), 0.0, None))
        ball = np.where(dist2 < r * r, 170 + 80 * (i / (n - 1)) * bulge, 0)
        depth = np.maximum(floor, ball).astype(np.uint8)
        frames.append(np.repeat(depth[..., None], 3, axis=2))
    return np.stack(frames)


# Limb colours in the usual pose-map style: one colour per limb on black.
_LIMBS = [("neck", "hip", (255, 0, 0)), ("neck", "lhand", (255, 170, 0)), ("neck", "rhand", (170, 255, 0)),
          ("hip", "lfoot", (0, 255, 170)), ("hip", "rfoot", (0, 170, 255)), ("neck", "head", (170, 0, 255))]


def pose_clip(n: int = 16) -> np.ndarray:
    """A stick figure walking to the right, drawn as a pose map."""
    frames = []
    for i in range(n):
        img = Image.new("RGB", (W, H), (0, 0, 0))
        d = ImageDraw.Draw(img)
        x = 20 + 56 * i / (n - 1)
        swing = 8 * math.sin(2 * math.pi * i / 8)
        joints = {"head": (x, 10), "neck": (x, 18), "hip": (x, 36), "lhand": (x - swing, 30),
                  "rhand": (x + swing, 30), "lfoot": (x + swing, 56), "rfoot": (x - swing, 56)}
        for a, b, colour in _LIMBS:
            d.line([joints[a], joints[b]], fill=colour, width=3)
        for jx, jy in joints.values():
            d.ellipse([jx - 2, jy - 2, jx + 2, jy + 2], fill=(255, 255, 255))
        frames.append(np.asarray(img))
    return np.stack(frames)


def write_tone(path: Path, freq: float = 440.0, seconds: float = 2.0, rate: int = 16000) -> None:
    """A sine tone with 50 ms fades, 16-bit mono PCM WAV."""
    t = np.arange(int(seconds * rate)) / rate
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.05)
    samples = (0.3 * fade * np.sin(2 * math.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


def _look(forward: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Camera-to-world pose (OpenCV axes, world y down) looking along ``forward``."""
    f = forward / np.linalg.norm(forward)
    right = np.cross([0.0, 1.0, 0.0], f)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(f, right), f, centre
    return m


def write_re10k_dolly_pan(path: Path, n: int = 16) -> None:
    """RealEstate10K-style text: the camera moves 0.6 units forward while panning 25° left."""
    lines = ["https://www.youtube.com/watch?v=example"]
    for i in range(n):
        s = i / (n - 1)
        a = math.radians(-25 * s)
        c2w = _look(np.array([math.sin(a), 0.0, math.cos(a)]), np.array([0.0, 0.0, 0.6 * s]))
        w2c = np.linalg.inv(c2w)[:3].reshape(-1)
        timestamp_us = round(i * 1e6 / FPS)
        values = [timestamp_us, 0.9, 1.35, 0.5, 0.5, 0, 0, *(round(float(v), 6) + 0.0 for v in w2c)]
        lines.append(" ".join(str(v) for v in values))
    path.write_text("\n".join(lines) + "\n")


def write_json_orbit(path: Path, n: int = 16, radius: float = 4.0, degrees: float = 40.0) -> None:
    """JSON camera file: an arc of ``degrees`` to the right around a subject at the origin."""
    frames = []
    for i in range(n):
        a = math.radians(degrees * i / (n - 1))
        centre = np.array([radius * math.sin(a), 0.0, -radius * math.cos(a)])
        c2w = _look(-centre, centre)
        frames.append({"timestamp": round(i / FPS, 6),
                       "intrinsics": {"fx": 0.9, "fy": 1.35, "cx": 0.5, "cy": 0.5},
                       "c2w": [[round(float(v), 6) + 0.0 for v in row] for row in c2w]})
    path.write_text(json.dumps({"fps": FPS, "frames": frames}, indent=1) + "\n")


def main(out_dir: Path) -> list[Path]:
    """Write every example file into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        write_video(out_dir / "ball.mp4", rolling_ball(), FPS),
        write_video(out_dir / "squares.mp4", dancing_squares(), FPS),
        write_video(out_dir / "scene_cut.mp4", scene_cut(), FPS),
        write_video(out_dir / "depth.mp4", depth_clip(), FPS),
        write_video(out_dir / "pose.mp4", pose_clip(), FPS),
    ]
    for name, look in (("identity_a.png", ((240, 200, 170), (90, 50, 20), (200, 40, 60))),
                       ("identity_b.png", ((150, 100, 70), (20, 20, 20), (40, 120, 200)))):
        identity(*look).save(out_dir / name, optimize=True)
        written.append(out_dir / name)
    for name, writer in (("tone.wav", write_tone), ("camera_dolly_pan.txt", write_re10k_dolly_pan),
                         ("camera_orbit.json", write_json_orbit)):
        writer(out_dir / name)
        written.append(out_dir / name)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "media"
    for p in main(target):
        print(f"{p}\t{p.stat().st_size} bytes")
