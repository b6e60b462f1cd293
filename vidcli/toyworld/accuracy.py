"""How often the oracle reads a property right, measured on rendered scenes and their copies.

:func:`oracle_accuracy` draws scenes, renders them, and compares what
:func:`~vidcli.toyworld.oracle.read_video` reads with the scene's truth, property by
property, on three versions of each video:

- ``render``: the frames as rendered;
- ``mp4``: the frames written with the project's writer (:func:`vidcli.media.write_video`,
  H.264 yuv420p) and decoded with its reader (:func:`vidcli.media.load_video`), as every
  command that takes a video file sees them;
- ``blocks``: the frames at 16×16 colour resolution in steps of two frames, as the toy
  generator's latent space (its hand-set Wan VAE) reconstructs them: the best any
  generated video can look.

Properties: ``presence`` (the set of shapes seen equals the scene's), ``shape`` (each
object found under its own shape), ``colour``, ``motion``, ``relation`` (the layout fact
of two-object scenes), ``tone``, ``pattern`` and ``camera``.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from vidcli.toyworld.language import scene_facts
from vidcli.toyworld.oracle import Reading, check, read_video
from vidcli.toyworld.scene import FPS, Scene, random_scene, render

PROPERTIES = ("presence", "shape", "colour", "motion", "relation", "tone", "pattern", "camera")
VERSIONS = ("render", "mp4", "blocks")


def blocks(frames: np.ndarray) -> np.ndarray:
    """Frames as the toy VAE reconstructs them: every second frame (the first, then pairs),
    average-pooled over 2×2 pixels and shown as 2×2 blocks."""
    kept = frames[::2].astype(float)
    t, h, w, c = kept.shape
    pooled = kept.reshape(t, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)).repeat(2, axis=1).repeat(2, axis=2)
    shown = [pooled[0]] + [f for frame in pooled[1:] for f in (frame, frame)]
    return np.clip(np.round(np.stack(shown)), 0, 255).astype(np.uint8)


def compare(scene: Scene, reading: Reading) -> dict[str, list[bool]]:
    """Per property, whether each of its readings matches the scene."""
    found: dict[str, list[bool]] = {p: [] for p in PROPERTIES}
    found["presence"].append(sorted(o.shape for o in reading.objects) == sorted(t.shape for t in scene.things))
    for thing in scene.things:
        seen = reading.find(thing.shape)
        found["shape"].append(seen is not None)
        found["colour"].append(seen is not None and seen.colour == thing.colour)
        found["motion"].append(seen is not None and seen.motion == thing.motion)
    found["relation"] += [check(f, reading) for f in scene_facts(scene) if f.kind == "relation"]
    found["tone"].append(reading.tone == scene.tone)
    found["pattern"].append(reading.pattern == scene.pattern)
    found["camera"].append(reading.camera == scene.camera)
    return found


def oracle_accuracy(count: int, *, seed: int = 12345) -> dict:
    """``{version: {property: {"accuracy", "right", "total"}}}`` over ``count`` drawn scenes."""
    from vidcli.media import load_video, write_video

    rng = np.random.default_rng(seed)
    right = {v: Counter() for v in VERSIONS}
    total = {v: Counter() for v in VERSIONS}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        for _ in range(count):
            scene = random_scene(rng)
            frames = render(scene)
            write_video(path, frames, FPS)
            versions = {"render": frames, "mp4": load_video(path).frames, "blocks": blocks(frames)}
            for version, video in versions.items():
                for prop, hits in compare(scene, read_video(video)).items():
                    right[version][prop] += sum(hits)
                    total[version][prop] += len(hits)
    return {v: {p: {"accuracy": right[v][p] / total[v][p], "right": right[v][p], "total": total[v][p]}
                for p in PROPERTIES if total[v][p]} for v in VERSIONS}
