"""What a critic's pixel ascent changes in the background: the oracle's tone, pattern and pan of each video
before and after the gradient check's steps (15 signed steps of 2/255 on the base generator's videos of the
first 32 held-out captions, the gradient blurred by BLUR pixels first if given), one JSON row per video, then
the count of each change.

    python background_flips.py CRITIC [BLUR]
"""
from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

if __name__ == "__main__":
    import torch

    from vidcli.rewards.vlm import VLMScorer, vqa_loss
    from vidcli.toyworld.build import ensure_world
    from vidcli.toyworld.gradient import FPS, STEP, STEPS, smoothed
    from vidcli.toyworld.language import read_facts
    from vidcli.toyworld.oracle import read_video
    from vidcli.toyworld.report import ReportContext, _generate, _rows

    torch.set_num_threads(1)
    critic, blur = Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    root, _ = ensure_world(seed=0, quick=False)
    ctx = ReportContext(root, 0, False, None)
    records = _rows(ctx.world / "drf.test.jsonl")[:32]
    questions = {r["id"]: [q for q in r["questions"] if q["dim"] == "TA"] for r in records}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "captions.jsonl"
        prompts.write_text("".join(json.dumps({"id": r["id"], "caption": r["caption"]}) + "\n" for r in records))
        videos = [(record["caption"], questions[record["id"]], frames) for record, frames
                  in _generate(ctx, root / "generator", prompts, Path(tmp) / "generated.jsonl", 20, 5.0)]
    scorer = VLMScorer.from_pretrained(critic)
    changes = Counter()
    for caption, asked, frames in videos:
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        for _ in range(STEPS):
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(vqa_loss(scorer, x, asked, fps=FPS), x)
            x = (x - STEP * smoothed(grad, blur).sign()).clamp(0, 1)
        moved = (x.detach().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        before, after = read_video(frames), read_video(moved)
        row = {"caption": caption,
               "asked": sorted(f.value for f in read_facts(caption) if f.kind in ("background", "camera")),
               "before": [before.tone, before.pattern, before.camera],
               "after": [after.tone, after.pattern, after.camera]}
        for name, was, now in zip(("tone", "pattern", "camera"), row["before"], row["after"]):
            if was != now:
                changes[f"{name} {was}->{now}"] += 1
        print(json.dumps(row), flush=True)
    print(json.dumps(dict(changes)))
