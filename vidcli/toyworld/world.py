"""The toy world on disk: media files and the JSONL records the real commands read.

:func:`write_world` draws ``count`` scenes from a seed and writes, under one folder
(media paths relative to it, as the commands expect):

``media/S.mp4``            each scene rendered and written with :func:`vidcli.media.write_video`
``media/S.camera.txt``     a RealEstate10K trajectory of the pan, for scenes whose camera pans
``media/E.mp4``            the target scene of each edit
``scenes.jsonl``           ``{id, scene, facts, caption, gold, video, split}``: the truth of each video;
                           ``decompose --schema drf`` and ``generate`` read its ``caption``
``drf.jsonl``              ``{id, caption, video, elements, questions, split}`` as ``decompose
                           --schema drf`` writes them: the eight element lists, one TA question
                           per non-empty key (reference "Yes" with an explanation from the
                           elements) and the Phy and VQ questions, whose reference answers on a
                           rendered video are "No" (nothing in this world can show those defects)
``requests.jsonl``         ReaDe requests ``{id, instruction, conditions, gold, key_info, scene_id,
                           split}``: a short, partial request (some facts of the scene), a camera
                           trajectory condition for some panning scenes, the six-part gold
                           caption, and key-info U (facts of the text), S (the trajectory's pan)
                           and Z (every fact of the gold caption, and its style)
``triplets.jsonl``         edit pairs as ReViSE triplets ``{id, source, target, instruction,
                           literal_instruction, reasoning_type, subset: rave, caption, edit, split}``
                           (``caption``: the target scene's):
                           ``instruction`` is the implicit, reason-style one; ``edit`` holds the
                           kind, the changed facts and both scenes, for the oracle's edit adherence

Each scene's held-out split ("test" for one scene in ``round(1 / holdout)``) is shared
by every record made from it, so no scene is on both sides. Everything depends only on
``seed`` and the scene's index: scene ``i`` is the same in a world of any size.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidcli.decompose.drf import phy_question, ta_questions, vq_question
from vidcli.toyworld.edits import Edit, possible_edits
from vidcli.toyworld.language import (
    Fact,
    caption,
    drf_elements,
    key_info_group,
    object_phrase,
    read_facts,
    scene_facts,
    six_part,
)
from vidcli.toyworld.scene import FPS, FRAMES, Scene, random_scene, render

FILES = ("scenes.jsonl", "drf.jsonl", "requests.jsonl", "triplets.jsonl")
PAN_DEGREES = 14.0  # yaw over the clip of a panning scene's trajectory: a "moderate pan"
DURATION = FRAMES / FPS  # seconds of every clip
CAMERA_SHARE = 0.5  # of the panning scenes' requests, those that carry the trajectory as a condition


@dataclass(frozen=True)
class Request:
    instruction: str
    facts: tuple[Fact, ...]  # what the text states


def scene_id(seed: int, index: int) -> str:
    return f"w{seed}-{index:05d}"


def split_of(index: int, holdout: float) -> str:
    every = max(1, round(1 / holdout)) if holdout > 0 else 0
    return "test" if every and index % every == every - 1 else "train"


def draw_request(scene: Scene, rng: np.random.Generator, *, with_camera: bool) -> Request:
    """A short request naming each object, and each of its colour and motion with probability
    ½; the camera's pan (half the time) when no trajectory carries it."""
    clauses = []
    for thing in scene.things:
        noun = object_phrase(thing) if rng.random() < 0.5 else f"a {thing.shape}"
        if rng.random() < 0.5:
            noun += " staying still" if thing.motion == "still" else f" moving {thing.motion}"
        clauses.append(noun)
    text = "show " + " with ".join(clauses)
    if scene.camera != "static" and not with_camera and rng.random() < 0.5:
        text += f", the camera panning {scene.camera}"
    return Request(text, tuple(sorted(read_facts(text))))


def camera_trajectory(path: Path, camera: str) -> None:
    """A RealEstate10K trajectory (URL line, then one row per frame) of a pure yaw pan."""
    sign = {"left": -1.0, "right": 1.0}[camera]
    rows = ["https://example.invalid/toyworld"]
    for i in range(FRAMES):
        angle = np.radians(sign * PAN_DEGREES * i / (FRAMES - 1))
        c2w = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
        w2c = np.concatenate([c2w.T, np.zeros((3, 1))], axis=1)
        rows.append(" ".join([str(round(i * 1e6 / FPS)), "0.5", "0.5", "0.5", "0.5", "0", "0"]
                             + [f"{v:.6f}" for v in w2c.ravel()]))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def key_info(scene: Scene, request: Request, conditions: list[dict]) -> dict:
    """U: the request's facts; S: what the conditions show (a trajectory: the pan); Z: the gold
    caption's facts as a whole, with its style (SPEC §3: the sets overlap)."""
    gold = caption(scene)
    shown = [Fact("camera", None, scene.camera)] if any(c["type"] == "camera" for c in conditions) else []
    return {"user": key_info_group(request.facts, request.instruction),
            "supplementary": key_info_group(shown),
            "imaginative": key_info_group(scene_facts(scene), gold, style=True)}


def drf_questions(scene: Scene) -> list[dict]:
    """TA questions from the scene's elements, and Phy/VQ with the reference answer of a rendered video."""
    text = caption(scene)
    phy, vq = phy_question(text), vq_question()
    phy["reference"] = {"answer": "No", "explanation": "Every shape keeps its form and moves steadily; "
                        "nothing deforms, jumps or passes through anything.", "source": "world"}
    vq["reference"] = {"answer": "No", "explanation": "Flat, sharp colours with no blur, noise or flicker.",
                       "source": "world"}
    return ta_questions(drf_elements(scene)) + [phy, vq]


def _clip(video: str) -> dict:
    return {"video": video, "start": 0.0, "end": DURATION}


def triplet(edit: Edit, ident: str, source_video: str, target_video: str, split: str) -> dict:
    return {"id": ident, "source": _clip(source_video), "target": _clip(target_video),
            "instruction": edit.implicit, "literal_instruction": edit.literal,
            "reasoning_type": edit.reasoning_type, "subset": "rave", "split": split,
            "caption": caption(edit.target),
            "edit": {"kind": edit.kind, "subject": edit.subject, "changed": [f.to_dict() for f in edit.changed],
                     "source_scene": edit.source.to_dict(), "target_scene": edit.target.to_dict()}}


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_world(root: Path, *, seed: int, count: int, holdout: float = 0.2) -> dict:
    """Write ``count`` scenes' media and records under ``root`` (module docstring); returns counts."""
    from vidcli.media import write_video

    root = Path(root)
    (root / "media").mkdir(parents=True, exist_ok=True)
    out: dict[str, list[dict]] = {name: [] for name in FILES}
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        scene = random_scene(rng)
        ident, split = scene_id(seed, index), split_of(index, holdout)
        video = f"media/{ident}.mp4"
        write_video(root / video, render(scene), FPS)
        gold = six_part(scene)
        out["scenes.jsonl"].append({"id": ident, "scene": scene.to_dict(),
                                    "facts": [f.to_dict() for f in scene_facts(scene)], "caption": caption(scene),
                                    "gold": gold, "video": video, "split": split})
        out["drf.jsonl"].append({"id": ident, "caption": caption(scene), "video": video,
                                 "elements": drf_elements(scene), "questions": drf_questions(scene), "split": split})
        conditions = []
        if scene.camera != "static" and rng.random() < CAMERA_SHARE:
            path = f"media/{ident}.camera.txt"
            camera_trajectory(root / path, scene.camera)
            conditions.append({"type": "camera", "path": path})
        request = draw_request(scene, rng, with_camera=bool(conditions))
        out["requests.jsonl"].append({"id": f"{ident}-request", "instruction": request.instruction,
                                      "conditions": conditions, "gold": gold,
                                      "key_info": key_info(scene, request, conditions), "scene_id": ident,
                                      "split": split})
        for edit in possible_edits(scene, rng):
            edit_id = f"{ident}-{edit.kind}"
            target_video = f"media/{edit_id}.mp4"
            write_video(root / target_video, render(edit.target), FPS)
            out["triplets.jsonl"].append(triplet(edit, edit_id, video, target_video, split))
    for name, records in out.items():
        _write_jsonl(root / name, records)
    return {name: len(records) for name, records in out.items()}
