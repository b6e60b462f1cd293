"""The report's DRF runs (its DRF_FULL settings without the reward and dimension ablations: rich, --dims TA,
200 steps, lr 1e-4) against CRITIC, into OUT, and their held-out oracle scores; the gains as JSON.

    python drf_against.py CRITIC OUT [SEEDS]     # SEEDS: comma-separated, default 0,1
"""
from __future__ import annotations

import json
import sys
import threading
from dataclasses import replace
from pathlib import Path

if __name__ == "__main__":
    from vidcli.toyworld.build import ensure_world
    from vidcli.toyworld.judge import judge_server
    from vidcli.toyworld.report import DRF_FULL, ReportContext, check_critic, drf_section

    critic, out = Path(sys.argv[1]), Path(sys.argv[2])
    seeds = tuple(int(s) for s in (sys.argv[3] if len(sys.argv) > 3 else "0,1").split(","))
    root, _ = ensure_world(seed=0, quick=False)
    ctx = ReportContext(root, 0, False, None, critic=check_critic(critic), cores=threading.BoundedSemaphore(2))
    settings = replace(DRF_FULL, seeds=seeds, ablation=(), dims_ablation=())
    with judge_server() as judge:  # the toy LLM that decomposes the training captions
        ctx.judge_url = judge.base_url
        section = drf_section(ctx, out, settings, workers=None)
    out.joinpath("section.json").write_text(json.dumps(section, indent=1, default=str))
    print(json.dumps({"gain": section["gain"]}, default=str))
