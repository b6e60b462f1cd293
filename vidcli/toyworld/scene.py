"""Scenes of the toy world: what a video shows, drawn from a seed and rendered to pixels.

A scene is one or two objects of distinct shapes (ball, square, triangle), each with one
of four colours and one motion (left, right, up, down, still), on a background that is
dark or light and plain or striped, filmed by a camera that is static or pans left or
right (only over a striped background, where a pan can be seen). Every fact a caption
states about a scene is a field of :class:`Scene`, so the truth of a video is known
exactly, and :mod:`vidcli.toyworld.oracle` reads the same fields back from pixels.

Geometry (fixed; the models are trained at this size): 32×32 frames, 9 frames at 8 fps.
Objects are about 10 px wide and travel 10 px over the clip; a pan moves the view
8 px. Positions are in pixels of the frame, sub-pixel, drawn antialiased (4×4
supersampling). Trajectories are drawn so that objects stay inside the frame and two
objects never touch, so every object is visible whole in every frame.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

SIZE = 32  # frame width and height
FRAMES = 9
FPS = 8.0
HALF = 5.0  # half the width of an object's bounding box
TRAVEL = 10.0  # distance an object moves over the clip (first to last frame)
PAN = 8.0  # distance the view moves over the clip when the camera pans
STRIPE = 6  # stripe width of a striped background (period 2 × STRIPE: a pan step of 4 px stays readable)
MARGIN = 1.0  # free pixels kept between an object and the frame edge
GAP = 3.0  # free pixels kept between two objects (so video coding never merges them)

SHAPES = ("ball", "square", "triangle")
# Hues far apart, and every colour at least 40 grey levels of luma away from every background
# level, so an object's outline is sharp in luma even where video coding blurs its colour.
COLOURS = {"red": (225, 40, 40), "green": (40, 185, 60), "blue": (50, 100, 240), "purple": (160, 60, 215)}
MOTIONS = ("left", "right", "up", "down", "still")
TONES = {"dark": (30, 55), "light": (195, 230)}  # grey levels of the plain colour and of the second stripe
PATTERNS = ("plain", "striped")
CAMERAS = ("static", "left", "right")
DIRECTION = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0), "still": (0.0, 0.0)}


@dataclass(frozen=True)
class Thing:
    """One object: shape, colour, motion, and where its centre starts (pixels, in the first frame)."""

    shape: str
    colour: str
    motion: str
    x: float
    y: float

    def centre(self, t: float, pan: float = 0.0) -> tuple[float, float]:
        """Centre in the frame at time ``t`` ∈ [0, 1] of the clip, the view shifted by ``pan`` px."""
        dx, dy = DIRECTION[self.motion]
        return self.x + TRAVEL * t * dx - pan, self.y + TRAVEL * t * dy


@dataclass(frozen=True)
class Scene:
    """Everything a toy video shows; two scenes with equal fields render to equal pixels."""

    things: tuple[Thing, ...]
    tone: str = "dark"
    pattern: str = "plain"
    camera: str = "static"
    phase: float = 0.0  # where the stripes start (pixels), so backgrounds vary without being a fact

    def thing(self, shape: str) -> Thing | None:
        return next((t for t in self.things if t.shape == shape), None)

    def to_dict(self) -> dict:
        return {"things": [asdict(t) for t in self.things], "tone": self.tone, "pattern": self.pattern,
                "camera": self.camera, "phase": self.phase}

    @classmethod
    def from_dict(cls, value: dict) -> "Scene":
        return cls(tuple(Thing(**t) for t in value["things"]), value["tone"], value["pattern"], value["camera"],
                   float(value.get("phase", 0.0)))

    def pan_offset(self, t: float) -> float:
        """How far the view has moved right at time ``t`` (negative: left)."""
        return {"static": 0.0, "left": -PAN, "right": PAN}[self.camera] * t


# ----------------------------------------------------------------------------- drawing scenes


def _fits(scene: Scene) -> bool:
    """Every object inside the frame in every frame, two objects never closer than GAP, and their
    layout in the first frame clear: one axis separates them at least twice as much as the other."""
    lo, hi = HALF + MARGIN, SIZE - HALF - MARGIN
    for t in np.linspace(0.0, 1.0, FRAMES):
        centres = [thing.centre(float(t), scene.pan_offset(float(t))) for thing in scene.things]
        if any(not (lo <= x <= hi and lo <= y <= hi) for x, y in centres):
            return False
        if len(centres) == 2:
            (x0, y0), (x1, y1) = centres
            if max(abs(x0 - x1), abs(y0 - y1)) < 2 * HALF + GAP:
                return False
            if t == 0 and max(abs(x0 - x1), abs(y0 - y1)) < 2 * min(abs(x0 - x1), abs(y0 - y1)):
                return False
    return True


def place(scene: Scene, rng: np.random.Generator, tries: int = 200) -> Scene | None:
    """The scene with start positions drawn so that it _fits (see :func:`_fits`); None if none was found."""
    for _ in range(tries):
        things = tuple(replace(t, x=float(rng.uniform(0, SIZE)), y=float(rng.uniform(0, SIZE)))
                       for t in scene.things)
        candidate = replace(scene, things=things)
        if _fits(candidate):
            return candidate
    return None


def random_scene(rng: np.random.Generator, *, objects: int | None = None) -> Scene:
    """A scene drawn from ``rng``: one or two objects (two in half the scenes), pans on a third of
    the striped backgrounds."""
    while True:
        count = objects or int(rng.integers(1, 3))
        shapes = rng.choice(SHAPES, size=count, replace=False)
        things = tuple(Thing(str(s), str(rng.choice(list(COLOURS))), str(rng.choice(MOTIONS)), 0.0, 0.0)
                       for s in shapes)
        pattern = str(rng.choice(PATTERNS))
        camera = str(rng.choice(["left", "right"])) if pattern == "striped" and rng.random() < 1 / 3 else "static"
        scene = Scene(things, str(rng.choice(list(TONES))), pattern, camera, float(rng.uniform(0, 2 * STRIPE)))
        placed = place(scene, rng)
        if placed is not None:
            return placed


# ----------------------------------------------------------------------------- rendering

_SUPER = 4  # supersampling factor per axis


def coverage(shape: str, cx: float, cy: float, height: int = SIZE, width: int = SIZE,
             half: float = HALF) -> np.ndarray:
    """(height, width) fraction of each pixel that a ``shape`` centred at (cx, cy) covers,
    measured on a 4×4 supersampled grid; ``half`` is half its box's width (the world's: HALF)."""
    xs, ys = np.meshgrid((np.arange(width * _SUPER) + 0.5) / _SUPER, (np.arange(height * _SUPER) + 0.5) / _SUPER)
    dx, dy = xs - cx, ys - cy
    if shape == "ball":
        inside = dx ** 2 + dy ** 2 <= half ** 2
    elif shape == "square":
        inside = (np.abs(dx) <= half - 0.5) & (np.abs(dy) <= half - 0.5)
    elif shape == "triangle":  # apex up, base at the bottom of the box
        inside = (dy >= -half) & (dy <= half) & (np.abs(dx) <= (dy + half) / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return inside.reshape(height, _SUPER, width, _SUPER).mean(axis=(1, 3))


def _grid() -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(SIZE * _SUPER) + 0.5) / _SUPER
    return np.meshgrid(centres, centres)


def background(scene: Scene, t: float) -> np.ndarray:
    """(SIZE, SIZE, 3) float background at time ``t``: plain, or vertical stripes shifted by the pan."""
    base, second = TONES[scene.tone]
    image = np.full((SIZE, SIZE), float(base))
    if scene.pattern == "striped":
        xs, _ = _grid()
        world_x = xs + scene.pan_offset(t) + scene.phase
        stripes = (np.floor(world_x / STRIPE) % 2).reshape(SIZE, _SUPER, SIZE, _SUPER).mean(axis=(1, 3))
        image = base + (second - base) * stripes
    return np.repeat(image[:, :, None], 3, axis=2)


def render(scene: Scene) -> np.ndarray:
    """The scene as RGB uint8 frames (FRAMES, SIZE, SIZE, 3)."""
    frames = []
    for t in np.linspace(0.0, 1.0, FRAMES):
        image = background(scene, float(t))
        for thing in scene.things:
            cx, cy = thing.centre(float(t), scene.pan_offset(float(t)))
            alpha = coverage(thing.shape, cx, cy)[:, :, None]
            image = image * (1 - alpha) + np.asarray(COLOURS[thing.colour], dtype=float) * alpha
        frames.append(np.clip(np.round(image), 0, 255).astype(np.uint8))
    return np.stack(frames)


# ----------------------------------------------------------------------------- degraded copies


@dataclass(frozen=True)
class Degradation:
    """How a clean render is spoiled to look generated: blur (Gaussian σ, px), noise (σ, grey
    levels), and a fade of every object towards the background (0: none, 1: gone)."""

    blur: float = 0.0
    noise: float = 0.0
    fade: float = 0.0
    seed: int = 0


def degrade(scene: Scene, how: Degradation) -> np.ndarray:
    """Render ``scene`` and spoil it as ``how`` says (see :class:`Degradation`)."""
    from scipy.ndimage import gaussian_filter

    frames = render(scene).astype(float)
    if how.fade:
        plain = render(replace(scene, things=())).astype(float)
        frames = frames * (1 - how.fade) + plain * how.fade
    if how.blur:
        frames = gaussian_filter(frames, sigma=(0, how.blur, how.blur, 0))
    if how.noise:
        frames = frames + np.random.default_rng(how.seed).normal(0, how.noise, frames.shape)
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)
