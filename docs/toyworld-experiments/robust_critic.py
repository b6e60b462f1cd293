"""Critics trained on the base generator's own videos, plainly or against a multi-step (PGD) adversary.

    python robust_critic.py data DATA                                 # videos and questions (~14 min)
    python robust_critic.py train DATA START OUT none 0 0 STEPS       # plain, from the critic folder START
    python robust_critic.py train DATA START OUT linf EPS K STEPS     # PGD: K steps inside an L-inf ball of EPS/255
    python robust_critic.py evalgen CRITIC DATA                       # TA verdicts on the held-out videos

`data` draws 480 fresh captions (scenes never in the world) and 64 more for testing with the full build's
generator (`vidcli generate`, 20 steps, guidance 5, as the report does), asks six TA questions about each video
with the oracle's truth read from the same pixels (half of them a changed scene's), and adds 1440 questions
about renders in the critic command's joint-stage mix. `train` goes on from START (tower lr 5e-4, language
model 2e-4, batches of 16); with `linf` each batch is seen clean and moved by K signed steps of 2.5·EPS/K
from a random start in the ball (single-video questions only), the loss the mean of the two. QUICK=1 uses
the quick build and a handful of captions, to try the script on a laptop.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

QUICK = os.environ.get("QUICK") == "1"
TRAIN_CAPTIONS, TEST_CAPTIONS = (8, 4) if QUICK else (480, 64)
PER_VIDEO = 6  # TA questions asked about each generated video, stored one video after another


def _videos(out: Path, name: str, scenes: list) -> list[np.ndarray]:
    from vidcli.toyworld.build import default_dir
    from vidcli.toyworld.language import caption
    from vidcli.toyworld.report import ReportContext, _generate

    root = default_dir(seed=0, quick=QUICK)  # only the generator is read: it is there before the build ends
    ctx = ReportContext(root, 0, QUICK, None)
    prompts = out / f"{name}.captions.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"{name}-{i:04d}", "caption": caption(s)}) + "\n"
                               for i, s in enumerate(scenes)), encoding="utf-8")
    return [frames for _, frames in _generate(ctx, root / "generator", prompts, out / name / "generated.jsonl",
                                              20, 5.0)]


def data(out: Path) -> None:
    from vidcli.toyworld.critic_data import Clip, ta_item
    from vidcli.toyworld.curriculum.critic import JOINT_MIX, _video_clip, draw_items
    from vidcli.toyworld.oracle import read_video
    from vidcli.toyworld.scene import random_scene

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([38, 1])
    scenes = [random_scene(rng) for _ in range(TRAIN_CAPTIONS + TEST_CAPTIONS)]
    started = time.time()
    frames = _videos(out, "fresh", scenes)
    print("generated", len(frames), f"{time.time() - started:.0f}s", flush=True)
    generated = {"train": [], "test": []}
    for i, (scene, video) in enumerate(zip(scenes, frames)):
        clip = Clip(video, read_video(video).facts(), scene)
        generated["train" if i < TRAIN_CAPTIONS else "test"] += [ta_item(clip, rng) for _ in range(PER_VIDEO)]
    renders = [item for item, _ in draw_items(np.random.default_rng([38, 2]), 3 * TRAIN_CAPTIONS, JOINT_MIX,
                                              _video_clip)]
    for part, items in generated.items():
        print(part, len(items), "true", round(float(np.mean([it.label for it in items])), 3), flush=True)
    save_items(out, {"generated": generated["train"], "renders": renders, "test": generated["test"]})


def save_items(out: Path, blob: dict, name: str = "items.pkl") -> None:
    """OUT/NAME, written under a temporary name first: a run stopped while writing leaves no half file
    that ``train`` would read."""
    partial = out / f"{name}.partial"
    with open(partial, "wb") as f:
        pickle.dump(blob, f)
    os.replace(partial, out / name)


def _loss(scorer, replies, items, rng, delta=None):
    """The critic's reply loss (:func:`vidcli.toyworld.critic.reply_loss`) with each single-video item's frames
    moved by its ``delta`` (None: as they are); also the frames each item was shown."""
    from vidcli.toyworld.critic import reply_loss
    from vidcli.toyworld.critic_data import views

    rows, lengths, verdicts, shown = [], [], [], []
    for k, item in enumerate(items):
        seen = views(item.videos, rng)
        pixels = []
        for j, (x, fps) in enumerate(seen):
            if delta is not None and delta[k] is not None and j == 0:
                x = (x + delta[k]).clamp(0, 1)
            pixels.append(scorer.video_pixels(x, fps))
        shown.append(seen[0][0])
        reply, verdict = replies.build(item)
        rows.append((pixels, scorer.prompt_ids(pixels, item.question) + reply))
        lengths.append(len(reply))
        verdicts.append(verdict)
    logits = scorer.model(**scorer.batch_inputs(rows)).logits.float()
    return reply_loss(logits, [ids[-n:] for (_, ids), n in zip(rows, lengths)], verdicts), shown


def train(data_dir: Path, start: Path, out: Path, mode: str, eps255: float, k: int, steps: int) -> None:
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.toyworld.critic_data import Replies
    from vidcli.toyworld.curriculum.critic import _optimizer
    from vidcli.train.core import DataOrder, clip_and_step, set_seed

    with open(data_dir / "items.pkl", "rb") as f:
        blob = pickle.load(f)
    items = blob["generated"] + blob["renders"]
    # Trained under a temporary name and renamed at the end: a run stopped early (Ctrl-C, an error) leaves no
    # folder under OUT that holds START's weights and looks like a trained critic.
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(start, partial, ignore=shutil.ignore_patterns("eyes.pt"))
    set_seed(0)
    scorer = VLMScorer.from_pretrained(partial)
    model = scorer.model
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    replies = Replies(scorer.processor.tokenizer)
    tower = [(n, p) for n, p in model.named_parameters() if n.startswith("model.visual.")]
    language = [(n, p) for n, p in model.named_parameters() if not n.startswith("model.visual.")]
    optimizer, scheduler, config = _optimizer([(tower, 5e-4), (language, 2e-4)], steps)
    order = DataOrder(len(items), 16, 0)
    eps = eps255 / 255
    alpha = 2.5 * eps / max(k, 1)
    started, losses, adversarial = time.time(), [], []
    for step in range(steps):
        _, indices = order.micro_batch(step)
        batch = [items[i] for i in indices]
        seed = [0, 38, step]  # the same views for the clean and the moved batch
        clean, shown = _loss(scorer, replies, batch, np.random.default_rng(seed))
        total = clean
        if mode == "linf":
            draw = torch.Generator().manual_seed(step)
            delta = [((torch.rand(x.shape, generator=draw) * 2 - 1) * eps).requires_grad_(True)
                     if len(item.videos) == 1 else None for x, item in zip(shown, batch)]
            for _ in range(k):
                loss, _ = _loss(scorer, replies, batch, np.random.default_rng(seed), delta)
                grads = iter(torch.autograd.grad(loss, [d for d in delta if d is not None]))
                delta = [None if d is None else (d + alpha * next(grads).sign()).clamp(-eps, eps).detach()
                         .requires_grad_(True) for d in delta]
            moved, _ = _loss(scorer, replies, batch, np.random.default_rng(seed),
                             [None if d is None else d.detach() for d in delta])
            total = 0.5 * (clean + moved)
            adversarial.append(float(moved.detach()))
        model.zero_grad(set_to_none=True)
        total.backward()
        clip_and_step(None, [p for _, p in tower + language], optimizer, scheduler, config.max_grad_norm)
        losses.append(float(clean.detach()))
        if step % 50 == 0 or step == steps - 1:
            moved_mean = np.mean(adversarial[-50:]) if adversarial else float("nan")
            print(f"step {step + 1}/{steps} clean {np.mean(losses[-50:]):.4f} moved {moved_mean:.4f} "
                  f"{time.time() - started:.0f}s", flush=True)
    model.eval()
    model.save_pretrained(partial)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)


def evalgen(critic: Path, data_dir: Path) -> None:
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.toyworld.critic import verdict_margins
    from vidcli.toyworld.critic_data import Replies

    with open(data_dir / "items.pkl", "rb") as f:
        items = pickle.load(f)["test"]
    scorer = VLMScorer.from_pretrained(critic)
    margin = verdict_margins(scorer, Replies(scorer.processor.tokenizer), items, np.random.default_rng([38, 9]))
    truth = np.asarray([it.label for it in items])
    yes, no = margin[truth], margin[~truth]
    auc = float(np.mean(yes[:, None] > no[None, :]) + 0.5 * np.mean(yes[:, None] == no[None, :]))
    print(json.dumps({"critic": str(critic), "n": len(items), "true": round(float(truth.mean()), 3),
                      "accuracy": round(float(np.mean((margin > 0) == truth)), 3), "auc": round(auc, 3),
                      "says_yes": round(float(np.mean(margin > 0)), 3)}), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    command, args = sys.argv[1], sys.argv[2:]
    if command == "data":
        data(Path(args[0]))
    elif command == "train":
        train(Path(args[0]), Path(args[1]), Path(args[2]), args[3], float(args[4]), int(args[5]), int(args[6]))
    elif command == "evalgen":
        evalgen(Path(args[0]), Path(args[1]))
    else:
        sys.exit(f"unknown command {command!r}: data, train or evalgen")
