"""Synthetic "films" with known shot boundaries and recurring scenes, for testing the miner.

A film is a sequence of shots; each shot belongs to a scene, and scenes come back
(A, B, A, C, B, ...), as in a film that cuts between places and returns to them. A
scene is a wide "set": a background picture (a two-colour gradient with large blobs in
the scene's palette) and a cast of coloured shapes. Each shot of a scene frames that set
differently (another part of the background, another zoom), pans or zooms slowly during
the shot (``camera``: or holds still, or pans fast as hand-held footage does), and shows a
changed cast (which shapes, where, how big, moving where). So
shots of one scene share palette and context but differ in framing and objects, and a
cut between two shots of the same scene is still a visible change of framing.

Everything is drawn with numpy and PIL from one seeded generator: the same seed gives
the same frames (:func:`render_film`); :func:`make_film` encodes them to mp4.
"""
from __future__ import annotations

import colorsys
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidcli.media import write_video

# The background set is this many frames wide and high, so shots can frame different parts.
_SET_SCALE = (2.5, 2.0)
_SHAPES = ("ellipse", "rectangle", "triangle")
CAMERAS = ("drift", "still", "pan")
_PLACES = ("A dog runs along a sandy beach", "An old man reads in a quiet library",
           "Cars drive through a busy city street", "A cook chops onions in a small kitchen",
           "Children play football in a park", "A boat sails on a calm lake")
_COLOUR_NAMES = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")


@dataclass
class SyntheticFilm:
    """A rendered film and its ground truth.

    ``shots`` are ``(start, end)`` seconds; ``cuts`` the start time of every shot after
    the first; ``scenes`` the scene label of each shot ("A", "B", ...).
    """

    path: Path | None  # None until written
    fps: float
    num_frames: int
    shots: list[tuple[float, float]]
    scenes: list[str]
    captions: dict[str, str] = field(default_factory=dict)

    @property
    def cuts(self) -> list[float]:
        return [start for start, _ in self.shots[1:]]

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


@dataclass
class _Scene:
    background: np.ndarray  # (H_set, W_set, 3) uint8
    colours: list[tuple[int, int, int]]  # cast colours


def _rgb(hue: float, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def _colour_name(hue: float) -> str:
    return _COLOUR_NAMES[int(round(hue * len(_COLOUR_NAMES))) % len(_COLOUR_NAMES)]


def _make_scene(rng: np.random.Generator, hue: float, width: int, height: int) -> _Scene:
    from PIL import Image, ImageDraw

    set_w, set_h = int(width * _SET_SCALE[0]), int(height * _SET_SCALE[1])
    top = np.array(_rgb(hue, 0.6, 0.9), dtype=np.float32)
    bottom = np.array(_rgb(hue + 0.05, 0.8, 0.35), dtype=np.float32)
    ramp = np.linspace(0.0, 1.0, set_h, dtype=np.float32)[:, None, None]
    gradient = (1 - ramp) * top + ramp * bottom
    image = Image.fromarray(np.broadcast_to(gradient, (set_h, set_w, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    # Large blobs give the set landmarks, so different framings of it look different.
    for _ in range(10):
        w, h = rng.integers(width // 4, width // 2), rng.integers(height // 4, height // 2)
        x, y = rng.integers(0, set_w - w), rng.integers(0, set_h - h)
        colour = _rgb(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0))
        shape = "ellipse" if rng.random() < 0.5 else "rectangle"
        getattr(draw, shape)([int(x), int(y), int(x + w), int(y + h)], fill=colour)
    # The cast contrasts with the set: the opposite side of the colour wheel.
    colours = [_rgb(hue + 0.5 + rng.uniform(-0.12, 0.12), 0.9, 1.0) for _ in range(4)]
    return _Scene(np.asarray(image), colours)


def _scene_order(rng: np.random.Generator, num_shots: int, num_scenes: int) -> list[int]:
    """Scene index per shot: visits that never repeat the scene just left, each visit
    one to three shots long, every scene visited at least twice when shots allow."""
    order: list[int] = []
    visits: list[int] = []
    while len(order) < num_shots:
        unseen = [s for s in range(num_scenes) if visits.count(s) < 2 and (not visits or s != visits[-1])]
        choices = unseen or [s for s in range(num_scenes) if not visits or s != visits[-1]]
        scene = int(rng.choice(choices))
        visits.append(scene)
        order += [scene] * int(rng.integers(1, 4))
    return order[:num_shots]


def _shot_lengths(rng: np.random.Generator, total: int, fps: float, min_s: float, max_s: float) -> list[int]:
    lengths: list[int] = []
    low, high = max(2, round(min_s * fps)), max(2, round(max_s * fps))
    while sum(lengths) < total:
        lengths.append(int(rng.integers(low, high + 1)))
    excess = sum(lengths) - total
    lengths[-1] -= excess
    if lengths[-1] < low and len(lengths) > 1:  # a stub at the end joins the shot before
        stub = lengths.pop()
        lengths[-1] += stub
    return lengths


def _render_shot(rng: np.random.Generator, scene: _Scene, num_frames: int, width: int,
                 height: int, camera: str = "drift", pan_per_frame: float = 0.0) -> np.ndarray:
    from PIL import Image, ImageDraw

    set_h, set_w = scene.background.shape[:2]
    # Camera: a framing of the set (zoom 1 shows one frame's worth) drifting during the shot.
    zoom0 = rng.uniform(0.8, 1.4)
    zoom1 = zoom0 * rng.uniform(0.9, 1.1)
    pan = rng.uniform(-1.0, 1.0, size=2)  # pixels of set per frame
    direction = 1.0 if pan[0] >= 0 else -1.0
    if camera == "still":
        zoom1, pan = zoom0, np.zeros(2)
    elif camera == "pan":  # pan_per_frame frame widths per frame, horizontally, round the set
        pan = np.array([direction * pan_per_frame * width, 0.0])
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    cast = []
    for colour in scene.colours[: int(rng.integers(1, len(scene.colours) + 1))]:
        size = rng.uniform(0.12, 0.3) * height
        cast.append(dict(shape=_SHAPES[int(rng.integers(len(_SHAPES)))], colour=colour, size=size,
                         pos=rng.uniform([0, 0], [width, height]), vel=rng.uniform(-1.5, 1.5, size=2)))
    view_w, view_h = width / min(zoom0, zoom1), height / min(zoom0, zoom1)
    travel = 0.0 if camera == "pan" else abs(pan[0]) * num_frames  # a pan wraps round the set instead
    x0 = rng.uniform(0, set_w - view_w - travel)
    y0 = rng.uniform(0, set_h - view_h - abs(pan[1]) * num_frames)
    x0 += 0.0 if camera == "pan" else max(0.0, -pan[0]) * num_frames
    y0 += max(0.0, -pan[1]) * num_frames
    for t in range(num_frames):
        zoom = zoom0 + (zoom1 - zoom0) * t / max(1, num_frames - 1)
        ys = np.clip(y0 + pan[1] * t + np.arange(height) / zoom, 0, set_h - 1).astype(int)
        xs = x0 + pan[0] * t + np.arange(width) / zoom
        xs = (xs % set_w if camera == "pan" else np.clip(xs, 0, set_w - 1)).astype(int)
        image = Image.fromarray(scene.background[ys[:, None], xs[None, :]])
        draw = ImageDraw.Draw(image)
        for obj in cast:
            cx, cy = obj["pos"] + obj["vel"] * t
            r = obj["size"] / 2
            box = [int(cx - r), int(cy - r), int(cx + r), int(cy + r)]
            if obj["shape"] == "triangle":
                draw.polygon([(box[0], box[3]), (box[2], box[3]), (int(cx), box[1])], fill=obj["colour"])
            else:
                getattr(draw, obj["shape"])(box, fill=obj["colour"])
        frames[t] = np.asarray(image)
    return frames


def render_film(*, seed: int = 0, width: int = 96, height: int = 64, fps: float = 10.0,
                duration_s: float = 30.0, num_scenes: int = 3, min_shot_s: float = 1.5,
                max_shot_s: float = 4.0, camera: str = "drift",
                pan_speed: float = 1.2) -> tuple[np.ndarray, SyntheticFilm]:
    """The frames (T, H, W, 3) uint8 of a synthetic film and its ground truth (``path`` None).

    ``camera``: ``drift`` (a slow pan and zoom, a pixel or so per frame), ``still`` (a
    fixed framing; only the cast moves) or ``pan`` (a fast horizontal pan of ``pan_speed``
    frame widths per second, wrapping round the set: at 8 fps and the default 1.2 a
    frame moves 15% of its width from the one before, as in hand-held footage).

    Shot lengths are drawn between ``min_shot_s`` and ``max_shot_s`` in whole frames (the
    last shot absorbs a short remainder, so it may run longer), so every cut falls exactly
    on a frame: its time is ``frame_index / fps``. ``captions``
    maps each scene label to one sentence (what a captioner would say about every shot
    of that scene); the sentences of different scenes talk about different things.
    """
    if not 2 <= num_scenes <= len(_PLACES):
        raise ValueError(f"num_scenes must be in 2..{len(_PLACES)}, got {num_scenes}")
    rng = np.random.default_rng(seed)
    total = round(duration_s * fps)
    lengths = _shot_lengths(rng, total, fps, min_shot_s, max_shot_s)
    order = _scene_order(rng, len(lengths), num_scenes)
    # Hues spread around the wheel, so scenes have distinct palettes.
    offset = rng.uniform(0, 1)
    hues = [(offset + k / num_scenes) % 1.0 for k in range(num_scenes)]
    scenes = [_make_scene(rng, hue, width, height) for hue in hues]
    labels = string.ascii_uppercase[:num_scenes]
    captions = {labels[k]: f"{_PLACES[k]}, in {_colour_name(hues[k])} light." for k in range(num_scenes)}
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {', '.join(CAMERAS)}, got {camera!r}")
    frames = np.concatenate([_render_shot(rng, scenes[s], n, width, height, camera, pan_speed / fps)
                             for s, n in zip(order, lengths)])
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    shots = [(float(a / fps), float(b / fps)) for a, b in zip(bounds[:-1], bounds[1:])]
    return frames, SyntheticFilm(None, float(fps), int(total), shots, [labels[s] for s in order], captions)


def make_film(path: str | Path, **options) -> SyntheticFilm:
    """Render a synthetic film (options of :func:`render_film`) to ``path`` (mp4).

    Width and height must be even (yuv420p).
    """
    frames, film = render_film(**options)
    film.path = write_video(path, frames, film.fps)
    return film
