"""Build the toy world's models (critic, generator, editor) and print what was measured.

Usage: ``python tests/bench/bench_toyworld_models.py OUTDIR [--quick] [--seed 0] [--threads 1]``.
Prints each model's figures (critic: held-out accuracy per question form, reliability
table, log p(Yes) against the oracle's adherence; generator: the oracle's adherence per
fact kind beside chance and the VAE's ceiling; editor: edit adherence per edit kind
beside leaving the source unedited) and the seconds each build took, with the machine's
load average before and after (the figures are for 2 CPU cores with nothing else running).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from vidcli.toyworld.models import build_models

    load_before = os.getloadavg()
    start = time.perf_counter()
    report = build_models(args.outdir, seed=args.seed, quick=args.quick, threads=args.threads)
    print(json.dumps(report, indent=1))
    print(f"total {time.perf_counter() - start:.0f} s; load average before {load_before[0]:.1f}, "
          f"after {os.getloadavg()[0]:.1f} (on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
