"""Toy edits and the toy editor: edit pairs drawn from scenes, and a revise-tune editing checkpoint.

An :class:`Edit` takes a source scene to a target scene by one change — an object's
colour, its motion reversed, an object removed or added — with a literal instruction
("Make the ball blue.") and an implicit one that names the result without the
operation ("Let the ball take on the colour of a clear sky."). ``changed`` lists the
facts the edit asks for in the form :func:`vidcli.toyworld.oracle.edit_adherence` reads
(a removal: ``Fact("object", shape, "absent")``).

The editor (:func:`train_editor`) is the toy generator tuned by the project's own
``revise-tune --objective sft`` on triplet records written from such pairs (source and
target videos as files, as mined triplets are), so the checkpoint is in revise-tune's
in-context layout and loads in ``vidcli generate`` as an editor.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vidcli.toyworld.language import Fact
from vidcli.toyworld.scene import COLOURS, FPS, TRAVEL, DIRECTION, Scene, render


KINDS = ("colour", "reverse", "remove", "add")
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
# What each colour looks like, for instructions that name the result without the word.
HINTS = {"red": "the colour of a ripe tomato", "green": "the colour of fresh grass",
         "blue": "the colour of a clear sky", "purple": "the colour of a ripe plum"}


@dataclass(frozen=True)
class Edit:
    kind: str
    source: Scene
    target: Scene
    subject: str  # the shape the edit is about
    literal: str
    implicit: str
    changed: tuple[Fact, ...]


def _verb(motion: str) -> str:
    return "stays still" if motion == "still" else f"moves {motion}"


def _fits(scene: Scene) -> bool:
    from vidcli.toyworld import scene as world

    return world._fits(scene)  # the world's own placement rule


def random_edit(rng: np.random.Generator, kind: str | None = None) -> Edit:
    """An edit of ``kind`` (drawn when None) on a fresh scene."""
    from vidcli.toyworld.scene import random_scene

    kind = kind or str(rng.choice(KINDS))
    while True:
        if kind == "colour":
            source = random_scene(rng)
            i = int(rng.integers(len(source.things)))
            thing = source.things[i]
            colour = str(rng.choice([c for c in COLOURS if c != thing.colour]))
            things = list(source.things)
            things[i] = replace(thing, colour=colour)
            return Edit(kind, source, replace(source, things=tuple(things)), thing.shape,
                        f"Make the {thing.shape} {colour}.", f"Let the {thing.shape} take on {HINTS[colour]}.",
                        (Fact("colour", thing.shape, colour),))
        if kind == "reverse":
            source = random_scene(rng)
            moving = [i for i, t in enumerate(source.things) if t.motion != "still"]
            if not moving:
                continue
            i = int(rng.choice(moving))
            thing = source.things[i]
            dx, dy = DIRECTION[thing.motion]
            # Start where the source's object ends, so the path is the same one run backwards.
            new = replace(thing, motion=OPPOSITE[thing.motion], x=thing.x + TRAVEL * dx, y=thing.y + TRAVEL * dy)
            things = list(source.things)
            things[i] = new
            target = replace(source, things=tuple(things))
            if not _fits(target):
                continue
            return Edit(kind, source, target, thing.shape,
                        f"Reverse the {thing.shape}'s motion so that it moves {new.motion}.",
                        f"Play the {thing.shape}'s journey backwards.", (Fact("motion", thing.shape, new.motion),))
        if kind in ("remove", "add"):
            full = random_scene(rng, objects=2)
            i = int(rng.integers(2))
            thing = full.things[i]
            fewer = replace(full, things=tuple(t for j, t in enumerate(full.things) if j != i))
            if kind == "remove":
                return Edit(kind, full, fewer, thing.shape, f"Remove the {thing.shape}.",
                            f"The {thing.shape} has left before the clip begins, so it is nowhere to be seen.",
                            (Fact("object", thing.shape, "absent"),))
            return Edit(kind, fewer, full, thing.shape,
                        f"Add a {thing.colour} {thing.shape} that {_verb(thing.motion)}.",
                        f"A {thing.shape} with {HINTS[thing.colour]} joins the scene and {_verb(thing.motion)}.",
                        (Fact("object", thing.shape, None), Fact("colour", thing.shape, thing.colour),
                         Fact("motion", thing.shape, thing.motion)))
        raise ValueError(f"unknown edit kind {kind!r}; choose from {KINDS}")


def wrong_edit(edit: Edit, rng: np.random.Generator) -> Scene:
    """A scene that fails ``edit``: the source unchanged, the asked property given another value,
    or the right change with some other property of the target changed as well."""
    from vidcli.toyworld.critic import perturbed

    choice = int(rng.integers(3))
    if choice == 0:
        return edit.source
    if choice == 1 and edit.kind in ("colour", "add"):
        things = [replace(t, colour=str(rng.choice([c for c in COLOURS if c not in (t.colour,)])))
                  if t.shape == edit.subject else t for t in edit.target.things]
        return replace(edit.target, things=tuple(things))
    while True:
        scene = perturbed(edit.target, rng)
        if _fits(scene):
            return scene


# ----------------------------------------------------------------------------- triplets on disk


def write_triplets(folder: Path, edits: list[Edit], *, prefix: str = "edit") -> Path:
    """Source and target videos of each edit under ``folder`` and a triplet JSONL beside them
    (``{id, instruction, source: {video}, target: {video}, kind, changed}``), literal and
    implicit instructions alternating. Returns the JSONL path."""
    from vidcli.media import write_video

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, edit in enumerate(edits):
        name = f"{prefix}{n:04d}"
        write_video(folder / f"{name}.src.mp4", render(edit.source), FPS)
        write_video(folder / f"{name}.tgt.mp4", render(edit.target), FPS)
        lines.append(json.dumps({
            "id": name, "instruction": edit.literal if n % 2 == 0 else edit.implicit,
            "source": {"video": f"{name}.src.mp4"}, "target": {"video": f"{name}.tgt.mp4"},
            "kind": edit.kind, "target_scene": edit.target.to_dict(),
            "changed": [[f.kind, f.subject, f.value] for f in edit.changed]}))
    path = folder / f"{prefix}s.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the editor


def revise_tune_args(triplets: Path, generator: Path, critic: Path, output: Path, *, seed: int,
                     steps: int) -> list[str]:
    """The ``vidcli revise-tune --objective sft`` command line that makes the toy editor."""
    return ["revise-tune", str(triplets), "--model", str(generator), "--vlm", str(critic), "-o", str(output),
            "--objective", "sft", "--height", "32", "--width", "32", "--frames", "9", "--frames-critic", "8",
            "--cfg-drop", "0.1", "--lr", "5e-4", "--schedule", "cosine", "--warmup-steps", str(max(1, steps // 20)),
            "--weight-decay", "0.01", "--max-grad-norm", "1.0", "--batch-size", "1", "--grad-accum", "8",
            "--max-steps", str(steps), "--save-every", "0", "--seed", str(seed), "--log-every", "50", "--quiet"]


def train_editor(folder: Path, generator: Path, critic: Path, edits: list[Edit], *, seed: int, steps: int) -> None:
    """Write the edits as triplets beside ``folder`` and run revise-tune --objective sft into ``folder``."""
    import shutil

    from vidcli.cli import cli

    data = folder.with_name(folder.name + ".triplets")
    try:
        triplets = write_triplets(data, edits)
        cli.main(revise_tune_args(triplets, generator, critic, folder, seed=seed, steps=steps),
                 prog_name="vidcli", standalone_mode=False)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def edit_report(folder: Path, edits: list[Edit], *, steps: int = 20, guidance: float = 5.0, seed: int = 0) -> dict:
    """``vidcli generate``'s editing (same loader and sampler) on held-out edits; the oracle's edit
    adherence per edit kind, beside the source left unedited (what doing nothing scores)."""
    import tempfile

    from vidcli.diffusion.edit import edit_videos, source_latents
    from vidcli.diffusion.generate import default_settings, load_video_model, to_uint8
    from vidcli.toyworld.oracle import edit_adherence

    model = load_video_model(folder, device="cpu", dtype="float32")
    settings = default_settings(model, steps=steps, guidance=guidance, num_frames=9, height=32, width=32,
                                fps=FPS, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_triplets(Path(tmp), edits, prefix="heldout")
        records = [json.loads(line) for line in path.read_text().splitlines()]
        from vidcli.diffusion.editor import Clip

        sources = [source_latents(model, Clip(Path(tmp) / r["source"]["video"], None, None), settings)
                   for r in records]
        videos = []
        for start in range(0, len(records), 16):
            chunk = records[start:start + 16]
            frames = edit_videos(model, [r["instruction"] for r in chunk], sources[start:start + 16],
                                 [r["id"] for r in chunk], settings)
            videos += [to_uint8(f) for f in frames]
    results = {"edited": [edit_adherence(v, e.target, list(e.changed)) for v, e in zip(videos, edits)],
               "unedited": [edit_adherence(render(e.source), e.target, list(e.changed)) for e in edits]}
    report: dict = {"count": len(edits), "sampling": {"steps": steps, "guidance": guidance, "seed": seed}}
    for name, rows in results.items():
        entry = {key: round(float(np.mean([r[key] for r in rows])), 3) for key in ("accuracy", "preservation", "score")}
        entry["by_kind"] = {kind: round(float(np.mean([r["score"] for r, e in zip(rows, edits) if e.kind == kind])), 3)
                            for kind in KINDS if any(e.kind == kind for e in edits)}
        report[name] = entry
    return report


def build_editor(folder: Path, generator: Path, critic: Path, *, seed: int, quick: bool) -> dict:
    """Train the editor from the toy generator with revise-tune --objective sft and measure it."""
    sizes = dict(pairs=48, steps=8, test=8) if quick else dict(pairs=1200, steps=400, test=64)
    rng = np.random.default_rng([seed, 21])
    edits = [random_edit(rng, KINDS[i % len(KINDS)]) for i in range(sizes["pairs"])]
    train_editor(folder, generator, critic, edits, seed=seed, steps=sizes["steps"])
    test_rng = np.random.default_rng([seed, 22])
    held_out = [random_edit(test_rng, KINDS[i % len(KINDS)]) for i in range(sizes["test"])]
    report = edit_report(folder, held_out, seed=seed)
    report["steps"] = sizes["steps"]
    report["train_pairs"] = len(edits)
    return report
