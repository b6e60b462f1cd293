"""What the toy critic learns from: the clips, the questions about them, and their replies as tokens.

The questions are the project's own, built by the code that asks them:

- ``ta``: a DRF text-alignment question (:func:`vidcli.decompose.drf.ta_questions` on the
  elements of :func:`~vidcli.toyworld.language.drf_elements`), about one video; the reply
  is the JSON the question asks for, ``{"answer": "Yes"|"No", "explanation": ...}``, and
  a true condition's reply is exactly the reference answer ``decompose`` writes (so
  ``drf-tune --reward rich`` scores what the critic learned to say);
- ``vanilla``: :data:`vidcli.rewards.vlm.VANILLA_QUESTION` about a caption; reply "Yes"/"No";
- ``revise_first`` / ``revise_none``: the ReViSE critic's question
  (:meth:`vidcli.train.revise.Critic.question`) about (edited, source) and an edit
  instruction; ``first`` replies with one short sentence about the edited object, then
  ``"\\nVerdict: Yes|No"``, ``none`` with the verdict word first.

Truth comes from the pixels the critic sees: for a clean render, the scene's own facts;
for a degraded one (:func:`~vidcli.toyworld.scene.degrade`: blur, noise, objects faded
towards the background), the facts the oracle reads from it. A statement is true when
every fact it states holds, so the critic learns the oracle's judgement, and its
p(Yes) falls as a generated-looking video loses facts.

The vision stage's examples are clips with their scenes (:func:`vision_clips`), its targets
:data:`TARGETS`; the question stage's are questions (:class:`Item`: :func:`make_items`,
:func:`caption_items`), seen as a reward would hand them to the critic (:func:`views`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import torch

from vidcli.toyworld.language import Fact, caption, drf_elements, scene_facts
from vidcli.toyworld.scene import COLOURS, MOTIONS, PATTERNS, SHAPES, TONES, Degradation, Scene, degrade, render

FORMS = ("ta", "vanilla", "revise_first", "revise_none")
# The first stage's request: not a question any command asks, only a way to tie what the frames
# show to words before the yes/no questions (a caption holds every fact, a verdict one bit).
CAPTION_PROMPT = "Describe the video."
NO_EXPLANATION = "The video does not show this: {condition}."


# ----------------------------------------------------------------------------- scene changes


def perturbed(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene with one property changed (an object's shape, colour or motion, the background's
    tone or pattern, the camera, or two objects' places swapped), so one stated fact turns false."""
    while True:
        kind = str(rng.choice(["shape", "colour", "motion", "tone", "pattern", "camera", "swap"]))
        things = list(scene.things)
        i = int(rng.integers(len(things)))
        thing = things[i]
        if kind == "shape":
            free = [s for s in SHAPES if s not in {t.shape for t in things}]
            if not free:
                continue
            things[i] = replace(thing, shape=str(rng.choice(free)))
        elif kind == "colour":
            things[i] = replace(thing, colour=str(rng.choice([c for c in COLOURS if c != thing.colour])))
        elif kind == "motion":
            things[i] = replace(thing, motion=str(rng.choice([m for m in MOTIONS if m != thing.motion])))
        elif kind == "swap":
            if len(things) < 2:
                continue
            a, b = things
            things = [replace(a, x=b.x, y=b.y), replace(b, x=a.x, y=a.y)]
        elif kind == "tone":
            return replace(scene, tone=next(t for t in TONES if t != scene.tone))
        elif kind == "pattern":
            other = next(p for p in PATTERNS if p != scene.pattern)
            return replace(scene, pattern=other, camera="static" if other == "plain" else scene.camera)
        elif kind == "camera":
            if scene.pattern != "striped":
                continue
            return replace(scene, camera=str(rng.choice([c for c in ("static", "left", "right") if c != scene.camera])))
        return replace(scene, things=tuple(things))


def random_degradation(rng: np.random.Generator) -> Degradation:
    """A generated-looking spoil: blur and noise always, a fade of the objects in a third of the cases."""
    fade = float(rng.uniform(0.3, 1.0)) if rng.random() < 1 / 3 else 0.0
    return Degradation(blur=float(rng.uniform(0.3, 1.6)), noise=float(rng.uniform(2, 30)), fade=fade,
                       seed=int(rng.integers(2 ** 31)))


@dataclass
class Clip:
    """One video the critic sees, and the facts its pixels show."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    shown: set[Fact]
    scene: Scene


def make_clip(scene: Scene, how: Degradation | None) -> Clip:
    """A render of ``scene`` (spoiled by ``how``) with what it shows: the scene's facts when clean,
    the oracle's reading when spoiled."""
    from vidcli.toyworld.oracle import read_video

    if how is None:
        return Clip(render(scene), set(scene_facts(scene)), scene)
    frames = degrade(scene, how)
    return Clip(frames, read_video(frames).facts(), scene)


# ----------------------------------------------------------------------------- questions


@dataclass
class Item:
    """One question: ``videos`` shown in order, the question text, the truth, and what the reply
    says besides the verdict (:meth:`Replies.build` writes the reply)."""

    form: str
    videos: list[np.ndarray]
    question: str
    label: bool
    reasoning: str | None = None  # revise_first: the sentence before the verdict
    explanation: str | None = None  # ta: the JSON reply's explanation


def _holds(text: str, shown: set[Fact]) -> bool:
    from vidcli.toyworld.language import read_facts

    facts = read_facts(text)
    return bool(facts) and facts <= shown


def ta_item(clip: Clip, rng: np.random.Generator) -> Item:
    """A TA question on one element key: the clip's own condition or a changed scene's."""
    from vidcli.decompose.drf import ta_questions

    own = {q["key"]: q for q in ta_questions(drf_elements(clip.scene))}
    key = str(rng.choice(sorted(own)))
    question = own[key]
    if rng.random() < 0.5:
        for _ in range(20):
            other = {q["key"]: q for q in ta_questions(drf_elements(perturbed(clip.scene, rng)))}
            if key in other and other[key]["question"] != question["question"]:
                question = other[key]
                break
    label = _holds(ta_condition(question), clip.shown)
    explanation = question["reference"]["explanation"] if label else NO_EXPLANATION.format(
        condition=ta_condition(question))
    return Item("ta", [clip.frames], question["question"], label, explanation=explanation)


def ta_condition(question: dict) -> str:
    """The condition a TA question asks about (its reference explanation after the opening)."""
    return question["reference"]["explanation"].split(": ", 1)[1].rstrip(".")


def vanilla_item(clip: Clip, rng: np.random.Generator) -> Item:
    from vidcli.rewards.vlm import VANILLA_QUESTION

    scene = clip.scene if rng.random() < 0.5 else perturbed(clip.scene, rng)
    text = caption(scene)
    return Item("vanilla", [clip.frames], VANILLA_QUESTION.format(prompt=text), _holds(text, clip.shown))


def edited_object_sentence(shape: str, shown: set[Fact]) -> str:
    """What the edited video shows of the edited object, in one sentence (the first-form reasoning)."""
    if Fact("object", shape, None) not in shown:
        return f"The edited video shows no {shape}."
    # min, not the set's first: a degraded clip can read two objects of one shape, and a set's order
    # follows the process's string hashing, which would make the build differ from run to run
    colour = min((f.value for f in shown if f.kind == "colour" and f.subject == shape), default=None)
    motion = min((f.value for f in shown if f.kind == "motion" and f.subject == shape), default=None)
    verb = "stays still" if motion == "still" else f"moves {motion}" if motion else "is there"
    return f"The edited video shows a {colour + ' ' if colour else ''}{shape} that {verb}."


def revise_item(source: Clip, edited: Clip, instruction: str, subject: str, label: bool, form: str) -> Item:
    from vidcli.prompts import render_text
    from vidcli.rewards.critic import CRITIC_PROMPTS, critic_checks

    reasoning = form.removeprefix("revise_")
    question = render_text(CRITIC_PROMPTS[reasoning], instruction=instruction, checks=critic_checks(None))
    sentence = edited_object_sentence(subject, edited.shown)
    return Item(form, [edited.frames, source.frames], question, label, reasoning=sentence)


# ----------------------------------------------------------------------------- token targets


class Replies:
    """Token ids of the replies, built piece by piece as the readers tokenise them: the verdict
    is the token each reward reads (``{"answer": "`` then the verdict word; the word after the
    ReViSE cue; the first word), and the position of that token in the reply is kept."""

    def __init__(self, tokenizer) -> None:
        from vidcli.rewards.critic import VERDICT_CUE
        from vidcli.rewards.vlm import VERDICT_PREFIX

        self.tok = tokenizer
        self.end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.cue = self.ids(VERDICT_CUE)
        self.prefix = VERDICT_PREFIX

    def ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def build(self, item: Item) -> tuple[list[int], int]:
        """(reply ids, index of the verdict token in them)."""
        verdict = "Yes" if item.label else "No"
        if item.form == "ta":
            # As reference_answer writes it; the verdict's tokens follow the JSON opening.
            text = json.dumps({"answer": verdict, "explanation": item.explanation}, ensure_ascii=False)
            head = self.ids(self.prefix)
            full = self.ids(text)
            if full[:len(head)] != head:
                raise ValueError("the tokenizer joins the JSON opening with the verdict")
            return full + [self.end], len(head)
        if item.form == "vanilla":
            return self.ids(verdict) + [self.end], 0
        if item.form == "caption":
            return self.ids(item.explanation) + [self.end], -1
        if item.form == "revise_first":
            before = self.ids(item.reasoning) + self.cue
            word = self.ids(f"{self.tok.decode(self.cue)} {verdict}")[len(self.cue):]
            return before + word + [self.end], len(before)
        if item.form == "revise_none":
            return self.ids(f"{verdict}. {item.reasoning}") + [self.end], 0
        raise ValueError(f"unknown form {item.form!r}")


# ----------------------------------------------------------------------------- data


def views(videos: list[np.ndarray], rng: np.random.Generator) -> list[tuple[torch.Tensor, float]]:
    """The frames a reward would hand the critic: 5–10 of each video, spread over the clip (the same
    indices for every video, as revise-tune takes them), (F, 3, H, W) in [0, 1], and the rate it is
    told (F frames over a clip of 9 frames at 8 or 16 fps)."""
    count = int(rng.choice([5, 8, 9, 10]))
    out = []
    for frames in videos:
        index = np.floor(np.linspace(0, len(frames) - 1, count) + 0.5).astype(int)
        seconds = len(frames) / float(rng.choice([8.0, 16.0]))
        out.append((torch.from_numpy(frames[index]).permute(0, 3, 1, 2).float() / 255, count / seconds))
    return out


def make_items(rng: np.random.Generator, count: int, *, forms: tuple[str, ...] = FORMS,
               degraded: float = 0.4) -> list[Item]:
    """About ``count`` questions over fresh scenes and edits, about half of them true.

    Rendering and reading pixels cost more than a question, so each clip serves several:
    a single-video clip gets two TA questions and two vanilla ones; an edit gives a
    correct and a failed edited clip, each asked in both ReViSE forms.
    """
    from vidcli.toyworld.editor import random_edit, wrong_edit
    from vidcli.toyworld.scene import random_scene

    single = [f for f in forms if f in ("ta", "vanilla")]
    pair = [f for f in forms if f.startswith("revise")]
    items: list[Item] = []
    while len(items) < count:
        if single:
            clip = make_clip(random_scene(rng), random_degradation(rng) if rng.random() < degraded else None)
            for form in single * 2:
                items.append((ta_item if form == "ta" else vanilla_item)(clip, rng))
        if pair:
            edit = random_edit(rng)
            source = make_clip(edit.source, None)
            for scene in (edit.target, wrong_edit(edit, rng)):
                edited = make_clip(scene, random_degradation(rng) if rng.random() < degraded else None)
                label = edit_done(edit, edited)
                for form in pair:
                    instruction = edit.literal if rng.random() < 0.5 else edit.implicit
                    items.append(revise_item(source, edited, instruction, edit.subject, label, form))
    return items[:count]


def caption_items(rng: np.random.Generator, count: int) -> list[Item]:
    """The first stage's examples: clean and lightly spoiled renders with their captions."""
    from vidcli.toyworld.scene import random_scene

    items = []
    for _ in range(count):
        scene = random_scene(rng)
        how = Degradation(blur=float(rng.uniform(0, 0.8)), noise=float(rng.uniform(0, 10)),
                          seed=int(rng.integers(2 ** 31))) if rng.random() < 0.5 else None
        frames = render(scene) if how is None else degrade(scene, how)
        items.append(Item("caption", [frames], CAPTION_PROMPT, True, explanation=caption(scene)))
    return items


# The vision stage's targets: per shape its colour and its motion (0: no such object), then the
# background's tone and pattern and the camera.
TARGETS = [(f"{shape} colour", 1 + len(COLOURS)) for shape in SHAPES] + \
    [(f"{shape} motion", 1 + len(MOTIONS)) for shape in SHAPES] + [("tone", 2), ("pattern", 2), ("camera", 3)]


def scene_targets(scene: Scene) -> list[int]:
    """Class indices of :data:`TARGETS` for ``scene``."""
    colours, motions = [], []
    for shape in SHAPES:
        thing = scene.thing(shape)
        colours.append(0 if thing is None else 1 + list(COLOURS).index(thing.colour))
        motions.append(0 if thing is None else 1 + MOTIONS.index(thing.motion))
    return colours + motions + [list(TONES).index(scene.tone), PATTERNS.index(scene.pattern),
                                ("static", "left", "right").index(scene.camera)]


def vision_clips(rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, Scene]]:
    """Clean and lightly spoiled renders with their scenes, for the vision stage."""
    from vidcli.toyworld.scene import random_scene

    clips = []
    for _ in range(count):
        scene = random_scene(rng)
        how = Degradation(blur=float(rng.uniform(0, 0.8)), noise=float(rng.uniform(0, 10)),
                          seed=int(rng.integers(2 ** 31))) if rng.random() < 0.5 else None
        clips.append((render(scene) if how is None else degrade(scene, how), scene))
    return clips


def edit_done(edit, edited: Clip) -> bool:
    """Whether the clip carries out the edit and keeps the rest (what edit_adherence scores 1)."""
    kept = [f for f in scene_facts(edit.target) if f not in edit.changed and f.kind != "relation"]
    removed = [f for f in edit.changed if f.value == "absent"]
    asked = [f for f in edit.changed if f not in removed]
    return (all(f in edited.shown for f in asked + kept)
            and all(Fact("object", f.subject, None) not in edited.shown for f in removed))
