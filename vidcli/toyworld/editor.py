"""Toy edits and the toy editor: edit pairs drawn from scenes, and a revise-tune editing checkpoint.

The edits are the world's (:class:`vidcli.toyworld.edits.Edit`): one change — an object's
colour, its motion reversed, an object removed or added — with a literal and an implicit
instruction, and ``changed``, the facts the edit asks for in the form
:func:`vidcli.toyworld.oracle.edit_adherence` reads (a removal: ``Fact("object", shape, "absent")``).

The editor (:func:`train_editor`) is the toy generator tuned by the project's own
``revise-tune --objective sft`` on triplet records written from such pairs (source and
target videos as files, as mined triplets are), so the checkpoint is in revise-tune's
in-context layout and loads in ``vidcli generate`` as an editor.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from vidcli.toyworld.edits import KINDS, Edit, possible_edits
from vidcli.toyworld.scene import COLOURS, FPS, Scene, _fits, render


def random_edit(rng: np.random.Generator, kind: str | None = None) -> Edit:
    """An edit of ``kind`` (drawn when None) on a fresh scene, as :func:`~vidcli.toyworld.edits.possible_edits`
    makes it (an addition starts from one object, a removal from two)."""
    from vidcli.toyworld.scene import random_scene

    kind = kind or str(rng.choice(KINDS))
    if kind not in KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; choose from {KINDS}")
    objects = {"add": 1, "remove": 2}.get(kind)
    while True:
        made = {edit.kind: edit for edit in possible_edits(random_scene(rng, objects=objects), rng)}
        if kind in made:
            return made[kind]


def wrong_edit(edit: Edit, rng: np.random.Generator) -> Scene:
    """A scene that fails ``edit``: the source unchanged, the asked property given another value,
    or the right change with some other property of the target changed as well."""
    from vidcli.toyworld.critic_data import perturbed

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
    sizes = dict(pairs=48, steps=8, test=8) if quick else dict(pairs=1200, steps=200, test=64)
    rng = np.random.default_rng([seed, 21])
    edits = [random_edit(rng, KINDS[i % len(KINDS)]) for i in range(sizes["pairs"])]
    train_editor(folder, generator, critic, edits, seed=seed, steps=sizes["steps"])
    test_rng = np.random.default_rng([seed, 22])
    held_out = [random_edit(test_rng, KINDS[i % len(KINDS)]) for i in range(sizes["test"])]
    report = edit_report(folder, held_out, seed=seed)
    report["steps"] = sizes["steps"]
    report["train_pairs"] = len(edits)
    return report
