"""Training data for a critic that should not be fooled by added column-wise variation: every pixel ascent and
DRF run traced so far turned plain backgrounds into ones the oracle reads as striped. This adds, to the data of
``robust_critic.py data``, copies of the base generator's training videos with a column-wise offset added to
every pixel (the same in each colour channel, so grey stays grey), each copy's truth read again by the oracle,
so that the critic learns where the oracle's plain ends.

    python background_negatives.py DATA OUT      # OUT/items.pkl: DATA's items and the copies' questions

Per training video whose background the oracle reads as plain, two copies: an offset per column whose spread
(standard deviation over the columns) is drawn uniformly in 2–16 grey levels, either fine (each column its own
normal draw) or smooth (a sum of one to four random cosines over the width), static over the frames or moving by
one column per frame. Each copy gets two questions on its setting (the TA key "environment": the clip's own
condition or a changed scene's, as ``critic_data.ta_item`` does) and one TA question on any key. Then
``robust_critic.py train OUT ...`` and ``evalgen`` as for the other critics.
"""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np


def offsets(rng: np.random.Generator, width: int, frames: int) -> np.ndarray:
    """(frames, width) offsets in grey levels."""
    spread = rng.uniform(2.0, 16.0)
    if rng.random() < 0.5:
        profile = rng.normal(size=width + frames)
    else:
        x = np.arange(width + frames) / width
        profile = sum(np.cos(2 * np.pi * rng.uniform(0.5, 4.0) * x + rng.uniform(0, 2 * np.pi))
                      for _ in range(rng.integers(1, 5)))
    moving = rng.random() < 0.5
    rows = [profile[(t if moving else 0):(t if moving else 0) + width] for t in range(frames)]
    rows = np.asarray(rows)
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows * spread / max(rows.std(axis=1).mean(), 1e-6)


def setting_item(clip, rng: np.random.Generator):
    """``critic_data.ta_item`` with the key fixed to the setting ("environment": the background)."""
    from vidcli.decompose.drf import ta_questions
    from vidcli.toyworld.critic_data import NO_EXPLANATION, Item, _holds, perturbed, ta_condition
    from vidcli.toyworld.language import drf_elements

    own = {q["key"]: q for q in ta_questions(drf_elements(clip.scene))}
    question = own["environment"]
    if rng.random() < 0.5:
        for _ in range(20):
            other = {q["key"]: q for q in ta_questions(drf_elements(perturbed(clip.scene, rng)))}
            if "environment" in other and other["environment"]["question"] != question["question"]:
                question = other["environment"]
                break
    label = _holds(ta_condition(question), clip.shown)
    explanation = question["reference"]["explanation"] if label else NO_EXPLANATION.format(
        condition=ta_condition(question))
    return Item("ta", [clip.frames], question["question"], label, explanation=explanation)


def main(data_dir: Path, out: Path) -> None:
    from robust_critic import PER_VIDEO, TRAIN_CAPTIONS, save_items  # the same draw of scenes

    from vidcli.toyworld.critic_data import Clip, ta_item
    from vidcli.toyworld.oracle import read_video
    from vidcli.toyworld.scene import random_scene

    with open(data_dir / "items.pkl", "rb") as f:
        blob = pickle.load(f)
    draw = np.random.default_rng([38, 1])  # robust_critic.data's scenes, in its order
    scenes = [random_scene(draw) for _ in range(TRAIN_CAPTIONS)]
    videos = [blob["generated"][PER_VIDEO * i].videos[0] for i in range(TRAIN_CAPTIONS)]
    rng = np.random.default_rng([39, 1])
    added, flipped, copies = [], 0, 0
    for scene, video in zip(scenes, videos):
        if read_video(video).pattern != "plain":
            continue
        for _ in range(2):
            t, _, w, _ = video.shape
            moved = np.clip(video.astype(float) + offsets(rng, w, t)[:, None, :, None], 0, 255).round()
            moved = moved.astype(np.uint8)
            reading = read_video(moved)
            clip = Clip(moved, reading.facts(), scene)
            copies += 1
            flipped += reading.pattern == "striped"
            added += [setting_item(clip, rng), setting_item(clip, rng), ta_item(clip, rng)]
    print(f"{copies} copies of plain-read videos, {flipped} read as striped; {len(added)} questions, "
          f"{np.mean([it.label for it in added]):.3f} true", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    save_items(out, {"generated": blob["generated"] + added, "renders": blob["renders"], "test": blob["test"]})


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(Path(sys.argv[1]), Path(sys.argv[2]))
