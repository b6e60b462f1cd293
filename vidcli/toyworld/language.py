"""The toy world's language: facts, the captions that state them, and a reader for such text.

A :class:`Fact` is one checkable statement about a scene — an object is there, has a
colour, moves a way, sits above another; the background's tone and pattern; the
camera's motion. Captions, six-part captions, DRF elements and key-info are all built
from a scene's facts with fixed phrasings (:func:`caption`, :func:`six_part`,
:func:`drf_elements`), and :func:`read_facts` finds the facts a text states, in those
phrasings and in the short "thing: detail" form key-info elements take. The exact toy
judge and the oracle's adherence scores both go through :func:`read_facts`, so a fact
means the same thing wherever it is written.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from vidcli.toyworld.scene import COLOURS, MOTIONS, PATTERNS, SHAPES, TONES, Scene, Thing

# Fact kinds, in the order reports list them.
KINDS = ("object", "colour", "motion", "relation", "background", "camera")
RELATIONS = ("above", "below", "left of", "right of")
STYLE = "flat colours on a simple synthetic scene"


@dataclass(frozen=True, order=True)
class Fact:
    """``kind`` (see KINDS), the object it is about (a shape; None for scene facts) and its value.

    object: value None (the object is there); colour: a colour name; motion: a motion;
    relation: "RELATION SHAPE" (e.g. "above square"); background: "dark"/"light" or
    "plain"/"striped"; camera: "static", "left" or "right" (the way it pans).
    """

    kind: str
    subject: str | None
    value: str | None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "subject": self.subject, "value": self.value}

    @classmethod
    def from_dict(cls, value: dict) -> "Fact":
        return cls(value["kind"], value.get("subject"), value.get("value"))

    def phrase(self) -> str:
        """The fact as a short sentence fragment ("the ball moves left")."""
        s = self.subject
        if self.kind == "object":
            return f"there is no {s}" if self.value == "absent" else f"there is a {s}"
        if self.kind == "colour":
            return f"the {s} is {self.value}"
        if self.kind == "motion":
            return f"the {s} stays still" if self.value == "still" else f"the {s} moves {self.value}"
        if self.kind == "relation":
            relation, other = self.value.rsplit(" ", 1)
            relation = {"left of": "to the left of", "right of": "to the right of"}.get(relation, relation)
            return f"the {s} is {relation} the {other}"
        if self.kind == "background":
            return f"the background is {self.value}"
        if self.kind == "camera":
            return "the camera is static" if self.value == "static" else f"the camera pans {self.value}"
        raise ValueError(f"unknown fact kind {self.kind!r}")


def relation(a: Thing, b: Thing, scene: Scene) -> str:
    """Where ``a`` is relative to ``b`` in the first frame, along the axis that separates them more."""
    (ax, ay), (bx, by) = a.centre(0.0, scene.pan_offset(0.0)), b.centre(0.0, scene.pan_offset(0.0))
    if abs(ax - bx) >= abs(ay - by):
        return "left of" if ax < bx else "right of"
    return "above" if ay < by else "below"


def scene_facts(scene: Scene) -> list[Fact]:
    """Every fact the scene's caption states, objects first."""
    facts = []
    for thing in scene.things:
        facts += [Fact("object", thing.shape, None), Fact("colour", thing.shape, thing.colour),
                  Fact("motion", thing.shape, thing.motion)]
    if len(scene.things) == 2:
        a, b = sorted(scene.things, key=lambda t: SHAPES.index(t.shape))  # one way of saying it
        facts.append(Fact("relation", a.shape, f"{relation(a, b, scene)} {b.shape}"))
    facts += [Fact("background", None, scene.tone), Fact("background", None, scene.pattern),
              Fact("camera", None, scene.camera)]
    return facts


# ----------------------------------------------------------------------------- writing


def _motion_verb(motion: str) -> str:
    return "stays still" if motion == "still" else f"moves {motion}"


def object_phrase(thing: Thing) -> str:
    return f"a {thing.colour} {thing.shape}"


def background_phrase(scene: Scene) -> str:
    return f"a {scene.tone} {scene.pattern} background"


def camera_sentence(camera: str) -> str:
    return "The camera is static." if camera == "static" else f"The camera pans {camera}."


def caption(scene: Scene) -> str:
    """The canonical caption: objects with their motion, the background, the layout, the camera."""
    clauses = [f"{object_phrase(t)} {_motion_verb(t.motion)}" for t in scene.things]
    text = " and ".join(clauses) + f" on {background_phrase(scene)}."
    text = text[0].upper() + text[1:]
    sentences = [text]
    for fact in scene_facts(scene):
        if fact.kind == "relation":
            sentences.append(fact.phrase().capitalize() + ".")
    sentences.append(camera_sentence(scene.camera))
    return " ".join(sentences)


def six_part(scene: Scene) -> dict[str, str]:
    """The six-part structured caption (SPEC §1) of the scene."""
    facts = scene_facts(scene)
    movement = [f.phrase() for f in facts if f.kind in ("motion", "relation")]
    return {
        "dense": caption(scene),
        "main_object": " and ".join(object_phrase(t) for t in scene.things),
        "background": background_phrase(scene),
        "movement": "; ".join(movement),
        "style": STYLE,
        "camera": camera_sentence(scene.camera)[:-1].lower().replace("the camera is static", "a static camera"),
    }


def drf_elements(scene: Scene) -> dict[str, list[str]]:
    """The eight DRF element lists (SPEC §3) that the canonical caption asks for."""
    return elements_of(scene_facts(scene))


def elements_of(facts: list[Fact]) -> dict[str, list[str]]:
    """The eight DRF element lists stating ``facts`` (in their order): "a red ball" per object,
    "a dark striped background", each motion, relation and colour as its phrase, the camera."""
    colours = {f.subject: f.value for f in facts if f.kind == "colour"}
    scene_words = [f.value for f in facts if f.kind == "background"]
    return {
        "environment": [f"a {' '.join(scene_words)} background"] if scene_words else [],
        "objects": [f"a {colours[f.subject]} {f.subject}" if f.subject in colours else f"a {f.subject}"
                    for f in facts if f.kind == "object" and f.value is None],
        "motion": [f.phrase() for f in facts if f.kind == "motion"],
        "spatial": [f.phrase() for f in facts if f.kind == "relation"],
        "color": [f.phrase() for f in facts if f.kind == "colour"],
        "lighting": [],
        "text": [],
        "camera": [f.phrase() for f in facts if f.kind == "camera"],
    }


# ----------------------------------------------------------------------------- reading

_SHAPE = "|".join(SHAPES)
_COLOUR = "|".join(COLOURS)
_TONE = "|".join(TONES)
_PATTERN = "|".join(PATTERNS)
_DIR = "|".join(m for m in MOTIONS if m != "still")
_NOUN = re.compile(rf"\b(?:(?P<colour>{_COLOUR})\s+)?(?P<shape>{_SHAPE})s?\b")
_COLOUR_IS = re.compile(rf"\b(?P<shape>{_SHAPE})\s+(?:is|looks|appears)\s+(?P<colour>{_COLOUR})\b")
_SHAPE_COLOUR = re.compile(rf"\b(?P<shape>{_SHAPE})\s*:\s*(?P<colour>{_COLOUR})\b")
# Between an object and its verb: no sentence break and no other object ("a ball stays still and a
# square moves left" says nothing about the ball moving left).
_GAP = rf"(?:(?!\b(?:{_SHAPE}|and)\b)[^.;,])*?"
_MOVES = re.compile(rf"\b(?P<shape>{_SHAPE})\b{_GAP}\b(?:moves?|moving|goes|going|travels?|rolls?|slides?)\s+"
                    rf"(?:to\s+the\s+)?(?P<dir>{_DIR})(?:wards)?\b")
_STILL = re.compile(rf"\b(?P<shape>{_SHAPE})\b{_GAP}\b(?:stays?|staying|remains?|sits?|rests?|is)\s+"
                    rf"(?:still|static|motionless|in\s+place)\b")
_REL = re.compile(rf"\b(?P<a>{_SHAPE})\s+(?:is\s+)?(?P<rel>above|below|to\s+the\s+left\s+of|to\s+the\s+right\s+of|"
                  rf"left\s+of|right\s+of)\s+the\s+(?:(?:{_COLOUR})\s+)?(?P<b>{_SHAPE})\b")
_BACKGROUND = re.compile(rf"\b(?P<words>(?:(?:{_TONE}|{_PATTERN})[\s,]+(?:and\s+)?)+)background\b")
_BACKGROUND_IS = re.compile(rf"\bbackground\s*(?:is|:)\s*(?P<words>(?:(?:{_TONE}|{_PATTERN})[\s,]*(?:and\s+)?)+)")
# Only a camera pans in this world, so "pan left" needs no "camera" beside it (a trajectory's
# description says "moderate pan left").
_PANS = re.compile(r"\bpan(?:s|ning)?\s+(?:to\s+the\s+)?(?P<dir>left|right)\b")
_STATIC = re.compile(r"\b(?:static|still|fixed|steady)\s+camera\b|\bcamera\b[^.;]*?\b(?:is|stays|remains)\s+"
                     r"(?:static|still|fixed|steady)\b")


def read_facts(text: str) -> set[Fact]:
    """The facts ``text`` states, in the phrasings :mod:`vidcli.toyworld.language` writes.

    Also reads key-info element forms: "ball" (the object), "ball: red", "background:
    dark", "camera: pans left". Matching is case-insensitive.
    """
    low = text.lower()
    facts: set[Fact] = set()
    for m in _NOUN.finditer(low):
        facts.add(Fact("object", m["shape"], None))
        if m["colour"]:
            facts.add(Fact("colour", m["shape"], m["colour"]))
    for pattern in (_COLOUR_IS, _SHAPE_COLOUR):
        facts |= {Fact("colour", m["shape"], m["colour"]) for m in pattern.finditer(low)}
    facts |= {Fact("motion", m["shape"], m["dir"]) for m in _MOVES.finditer(low)}
    facts |= {Fact("motion", m["shape"], "still") for m in _STILL.finditer(low)}
    for m in _REL.finditer(low):
        rel = re.sub(r"\s+", " ", m["rel"]).replace("to the ", "")
        if m["a"] != m["b"]:
            facts.add(Fact("relation", m["a"], f"{rel} {m['b']}"))
    for pattern in (_BACKGROUND, _BACKGROUND_IS):
        for m in pattern.finditer(low):
            facts |= {Fact("background", None, w) for w in re.findall(rf"{_TONE}|{_PATTERN}", m["words"])}
    facts |= {Fact("camera", None, m["dir"]) for m in _PANS.finditer(low)}
    if _STATIC.search(low) or re.search(r"\bcamera\s*:\s*(?:static|still|fixed)\b", low):
        facts.add(Fact("camera", None, "static"))
    return facts


def contradicts(a: Fact, b: Fact) -> bool:
    """Two facts that cannot both hold of one scene (same object or scene property, different value)."""
    if a.kind != b.kind or a.subject != b.subject or a.value == b.value or a.kind in ("object", "relation"):
        return False
    if a.kind == "background":  # tone and pattern are separate properties
        return (a.value in TONES) == (b.value in TONES)
    return True


def self_contradictory(text: str) -> bool:
    """True when ``text`` states two facts that cannot both hold (a ball both red and blue)."""
    facts = sorted(read_facts(text))
    return any(contradicts(a, b) for i, a in enumerate(facts) for b in facts[i + 1:])


def in_order(facts: set[Fact] | list[Fact], text: str) -> list[Fact]:
    """``facts`` sorted the way :func:`scene_facts` lists them, objects in the order ``text``
    first names them (so facts read back from a caption come out in the caption's order)."""
    low = text.lower()
    shapes = sorted({f.subject for f in facts if f.subject}, key=lambda s: (low.find(s) % (len(low) + 1), s))
    rank = {kind: i for i, kind in enumerate(("object", "colour", "motion"))}

    def key(fact: Fact) -> tuple:
        if fact.kind in rank:
            return (0, shapes.index(fact.subject), rank[fact.kind], str(fact.value))
        return (1, KINDS.index(fact.kind), 0 if fact.value in TONES else 1, str(fact.value))

    return sorted(set(facts), key=key)


def key_info_group(facts: set[Fact] | list[Fact], text: str = "", *, style: bool = False) -> dict:
    """A key-info element set (SPEC §3) stating exactly ``facts``: each object with its colour
    as an attribute, the background as an object with tone and pattern, motions and
    relations as actions, the camera as its motion; ``style`` adds the world's one style.
    Every element :func:`vidcli.rewards.coverage.group_elements` makes of it reads back
    (:func:`read_facts`) as the facts it came from."""
    ordered = in_order(facts, text)
    objects: dict[str, list[str]] = {}
    for fact in ordered:
        if fact.kind == "object":
            objects.setdefault(fact.subject, [])
        elif fact.kind == "colour":
            objects.setdefault(fact.subject, []).append(fact.value)
    scene_words = [f.value for f in ordered if f.kind == "background"]
    group = {"objects": [{"name": name, "attributes": attrs} for name, attrs in objects.items()],
             "actions": [f.phrase() for f in ordered if f.kind in ("motion", "relation")],
             "camera": [("static" if f.value == "static" else f"pans {f.value}")
                        for f in ordered if f.kind == "camera"],
             "style": [STYLE] if style else []}
    if scene_words:
        group["objects"].append({"name": "background", "attributes": scene_words})
    return group


def states_style(text: str) -> bool:
    """Whether ``text`` names the world's style (flat colours on a simple synthetic scene)."""
    return "flat colour" in text.lower() or "flat color" in text.lower()
