"""Edits of toy scenes: what changes, the scene it gives, and how a user would ask for it.

Four kinds, as editing benchmarks have them: change an object's colour, reverse its
motion, remove an object, add one. Each :class:`Edit` carries the target scene (rendered
like any other), the facts the edit asks for (for :func:`vidcli.toyworld.oracle.edit_adherence`),
a literal instruction ("make the ball blue") and an implicit, reason-style one that
withholds the literal operation but leads to the same target (SPEC §7 rave types:
semantic inference for colours, temporal for reversals, spatial for removals, physical
causality for additions). The implicit wording still pins the edit down exactly, so the
world's judge can check it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vidcli.toyworld.language import Fact, object_phrase
from vidcli.toyworld.scene import COLOURS, MOTIONS, SHAPES, Scene, Thing, _fits

KINDS = ("colour", "reverse", "remove", "add")
REASONING = {"colour": "semantic", "reverse": "temporal", "remove": "spatial", "add": "physical"}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
# What a colour is "the colour of": the implicit instruction names the thing, not the colour.
LIKE = {"red": "a ripe tomato", "green": "fresh spring grass", "blue": "a clear summer sky",
        "purple": "lavender in bloom"}
_ARRIVES = {"left": "sliding in from the right and drifting left",
            "right": "sliding in from the left and drifting right",
            "up": "floating upwards like a bubble", "down": "dropping downwards under its own weight",
            "still": "settling in one place and staying put"}


@dataclass(frozen=True)
class Edit:
    kind: str
    source: Scene
    target: Scene
    subject: str  # the shape the edit is about
    literal: str
    implicit: str
    changed: tuple[Fact, ...]

    @property
    def reasoning_type(self) -> str:
        return REASONING[self.kind]


def _colour(scene: Scene, rng: np.random.Generator) -> Edit:
    thing = scene.things[int(rng.integers(len(scene.things)))]
    colour = str(rng.choice([c for c in COLOURS if c != thing.colour]))
    target = replace(scene, things=tuple(replace(t, colour=colour) if t is thing else t for t in scene.things))
    return Edit("colour", scene, target, thing.shape, f"make the {thing.shape} {colour}",
                f"Repaint the {thing.shape} so it takes on the colour of {LIKE[colour]}.",
                (Fact("colour", thing.shape, colour),))


def _reverse(scene: Scene, rng: np.random.Generator) -> Edit | None:
    moving = [t for t in scene.things if t.motion != "still"]
    if not moving:
        return None
    thing = moving[int(rng.integers(len(moving)))]
    ex, ey = thing.centre(1.0)  # it now runs the same path the other way: start where it ended
    flipped = replace(thing, motion=OPPOSITE[thing.motion], x=ex, y=ey)
    target = replace(scene, things=tuple(flipped if t is thing else t for t in scene.things))
    if not _fits(target):
        return None
    return Edit("reverse", scene, target, thing.shape,
                f"make the {thing.shape} move {flipped.motion} instead of {thing.motion}",
                f"Show the {thing.shape}'s trip as if the clip of it were played backwards in time.",
                (Fact("motion", thing.shape, flipped.motion),))


def _remove(scene: Scene, rng: np.random.Generator) -> Edit | None:
    if len(scene.things) < 2:
        return None
    gone = scene.things[int(rng.integers(2))]
    kept = next(t for t in scene.things if t is not gone)
    target = replace(scene, things=(kept,))
    return Edit("remove", scene, target, gone.shape, f"remove the {gone.shape}",
                f"Clear the space around the {kept.shape} so that nothing else shares the picture with it.",
                (Fact("object", gone.shape, "absent"),))


def _add(scene: Scene, rng: np.random.Generator) -> Edit | None:
    if len(scene.things) != 1:
        return None
    shape = str(rng.choice([s for s in SHAPES if s != scene.things[0].shape]))
    for _ in range(200):
        new = Thing(shape, str(rng.choice(list(COLOURS))), str(rng.choice(MOTIONS)),
                    float(rng.uniform(0, 32)), float(rng.uniform(0, 32)))
        target = replace(scene, things=scene.things + (new,))
        if _fits(target):
            break
    else:
        return None
    changed = (Fact("object", shape, None), Fact("colour", shape, new.colour), Fact("motion", shape, new.motion))
    motion = "that stays still" if new.motion == "still" else f"that moves {new.motion}"
    return Edit("add", scene, target, shape, f"add {object_phrase(new)} {motion}",
                f"Let a {shape} the colour of {LIKE[new.colour]} join the {scene.things[0].shape}, "
                f"{_ARRIVES[new.motion]}.", changed)


_MAKERS = {"colour": _colour, "reverse": _reverse, "remove": _remove, "add": _add}


def possible_edits(scene: Scene, rng: np.random.Generator) -> list[Edit]:
    """One edit of each kind the scene allows (a reversal needs a moving object, a removal two
    objects, an addition one), drawn from ``rng``."""
    made = [_MAKERS[kind](scene, rng) for kind in KINDS]
    return [edit for edit in made if edit is not None]
