"""A critic's TA verdicts on the held-out generated videos of `robust_critic.py data`, by the kind of fact asked.

    python verdicts_by_kind.py CRITIC DATA     # DATA: the folder `robust_critic.py data` wrote
"""
from __future__ import annotations

import pickle
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

if __name__ == "__main__":
    import torch

    from vidcli.rewards.vlm import VLMScorer
    from vidcli.toyworld.critic import verdict_margins
    from vidcli.toyworld.critic_data import Replies
    from vidcli.toyworld.language import read_facts

    torch.set_num_threads(1)
    critic, data = Path(sys.argv[1]), Path(sys.argv[2])
    with open(data / "items.pkl", "rb") as f:
        items = pickle.load(f)["test"]
    scorer = VLMScorer.from_pretrained(critic)
    margins = verdict_margins(scorer, Replies(scorer.processor.tokenizer), items, np.random.default_rng([38, 9]))
    groups = defaultdict(list)
    for item, margin in zip(items, margins):
        condition = item.explanation.split(": ", 1)[1].rstrip(".")  # a true and a false reply both end with it
        kinds = sorted({fact.kind for fact in read_facts(condition)}) or ["?"]
        groups["+".join(kinds)].append((item.label, margin))
    for kind, rows in sorted(groups.items()):
        truth = np.array([label for label, _ in rows])
        margin = np.array([m for _, m in rows])
        says = margin > 0
        auc = (float(np.mean(margin[truth][:, None] > margin[~truth][None, :]))
               if truth.any() and (~truth).any() else float("nan"))
        print(f"{kind:24s} n={len(rows):3d} true={truth.mean():.2f} says yes={says.mean():.2f} "
              f"accuracy={(says == truth).mean():.2f} auc={auc:.2f}")
