"""Training data from a critic's own pixel ascent: the base generator's training videos moved along the critic's
gradient as `python -m vidcli.toyworld gradient-check` moves the held-out ones, each moved video's truth read
again by the oracle. Where the steps only raise the critic's reward (a plain background turned striped, a pan
lost, texture added), the moved video's questions say so; trained on them, the critic should stop rewarding
those moves — and its next gradient should have to add the captions' facts instead.

    python ascent_negatives.py move CRITIC DATA OUT PART PARTS [SETTING]   # OUT/part-PART.pkl: every PARTS-th video
    python ascent_negatives.py merge DATA OUT PARTS              # OUT/items.pkl: DATA's items and the parts'

`move` takes every PARTS-th of `robust_critic.py data`'s training videos (from the PART-th), moves it by the
gradient check's 15 signed steps of 2/255 along CRITIC's rich TA reward for its caption's TA questions (as
drf-tune asks them), and asks about the moved video each of those questions (the caption's own conditions) and
one more TA question on any key (the clip's own condition or a changed scene's, as `critic_data.ta_item` does),
labels from the oracle's reading of the moved pixels; with SETTING (default 0), that many more questions about
the moved video's setting (`background_negatives.setting_item`). Parts run side by side (one per core). Then
`robust_critic.py train OUT ...`, `evalgen` and the gradient check as for the other critics.
"""
from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

import numpy as np


def _scenes_and_videos(data_dir: Path):
    from robust_critic import PER_VIDEO, TRAIN_CAPTIONS

    from vidcli.toyworld.scene import random_scene

    with open(data_dir / "items.pkl", "rb") as f:
        blob = pickle.load(f)
    draw = np.random.default_rng([38, 1])  # robust_critic.data's scenes, in its order
    scenes = [random_scene(draw) for _ in range(TRAIN_CAPTIONS)]
    return blob, scenes, [blob["generated"][PER_VIDEO * i].videos[0] for i in range(TRAIN_CAPTIONS)]


def move(critic: Path, data_dir: Path, out: Path, part: int, parts: int, setting: int = 0) -> None:
    import torch
    from background_negatives import setting_item
    from robust_critic import save_items

    from vidcli.decompose.drf import ta_questions
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.toyworld.critic_data import NO_EXPLANATION, Clip, Item, _holds, ta_condition, ta_item
    from vidcli.toyworld.gradient import ascend
    from vidcli.toyworld.language import drf_elements
    from vidcli.toyworld.oracle import read_video

    torch.set_num_threads(1)
    _, scenes, videos = _scenes_and_videos(data_dir)
    scorer = VLMScorer.from_pretrained(critic)
    rng = np.random.default_rng([40, part])
    added, flips, asked, started = [], 0, 0, time.time()
    mine = list(range(part, len(videos), parts))
    for n, i in enumerate(mine):
        scene, video = scenes[i], videos[i]
        questions = ta_questions(drf_elements(scene))
        moved, before, after, _ = ascend(scorer, video, questions)
        clip = Clip(moved, read_video(moved).facts(), scene)
        was = read_video(video).facts()
        for question in questions:
            label = _holds(ta_condition(question), clip.shown)
            flips += label != _holds(ta_condition(question), was)
            asked += 1
            explanation = question["reference"]["explanation"] if label else NO_EXPLANATION.format(
                condition=ta_condition(question))
            added.append(Item("ta", [moved], question["question"], label, explanation=explanation))
        added.append(ta_item(clip, rng))
        added += [setting_item(clip, rng) for _ in range(setting)]
        if n % 20 == 0 or n == len(mine) - 1:
            print(f"{n + 1}/{len(mine)} reward {-before:.2f} -> {-after:.2f}; own questions whose truth the steps "
                  f"changed {flips}/{asked}; {time.time() - started:.0f}s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    save_items(out, {"added": added}, name=f"part-{part}.pkl")


def merge(data_dir: Path, out: Path, parts: int) -> None:
    from robust_critic import save_items

    blob, _, _ = _scenes_and_videos(data_dir)
    added = []
    for part in range(parts):
        with open(out / f"part-{part}.pkl", "rb") as f:
            added += pickle.load(f)["added"]
    print(f"{len(added)} questions on moved videos, {np.mean([it.label for it in added]):.3f} true", flush=True)
    save_items(out, {"generated": blob["generated"] + added, "renders": blob["renders"], "test": blob["test"]})


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    command, args = sys.argv[1], sys.argv[2:]
    if command == "move":
        move(Path(args[0]), Path(args[1]), Path(args[2]), int(args[3]), int(args[4]), *map(int, args[5:6]))
    elif command == "merge":
        merge(Path(args[0]), Path(args[1]), int(args[2]))
    else:
        sys.exit(f"unknown command {command!r}: move or merge")
