"""Tiny models of the real architectures and an offline teacher, for tests and TINY=1 runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidcli.testing.models import ALL_MODELS, BUILDERS, build_tiny_models, ensure_tiny_models


def main(argv: list[str] | None = None) -> int:
    """``tiny-models [OUTDIR] [--only llm,vlm]`` prints ``name<TAB>path`` lines; ``teacher ...``
    serves the offline teacher (its own flags: ``python -m vidcli.testing teacher --help``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["teacher"]:
        from vidcli.testing.teacher import main as teacher

        return teacher(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m vidcli.testing", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("tiny-models", help="write tiny models of the real architectures")
    tiny.add_argument("outdir", type=Path, nargs="?", default=None,
                      help="where to write them; omitted: build once into the cache and reuse (default_tiny_dir)")
    tiny.add_argument("--only", default=",".join(ALL_MODELS),
                      help="comma-separated subset of " + ",".join(ALL_MODELS))
    sub.add_parser("teacher", help="serve the rule-based offline teacher (an OpenAI-compatible server)")
    args = parser.parse_args(argv)
    which = [w.strip() for w in args.only.split(",") if w.strip()]
    if not which or set(which) - set(BUILDERS):
        parser.error(f"--only takes names from {','.join(ALL_MODELS)}")
    built = build_tiny_models(args.outdir, which) if args.outdir else ensure_tiny_models(which)
    for name, path in built.items():
        print(f"{name}\t{path}")
    return 0
