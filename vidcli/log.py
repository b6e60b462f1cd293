"""Logging to stderr; stdout carries data only."""
from __future__ import annotations

import logging
import os
import sys


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root = logging.getLogger("vidcli")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("vidcli: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    if quiet or not sys.stderr.isatty():
        # Weight-loading bars of transformers/diffusers (read when they are imported,
        # which happens after this inside the command) would clutter logs and pipes.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        # Already imported (a long-lived process, tests): switch their bars off directly.
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
        if "diffusers" in sys.modules:
            sys.modules["diffusers"].utils.logging.disable_progress_bar()
    # Libraries log request lines that can carry headers; keep them quiet unless -vv.
    for noisy in ("httpx", "openai", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)
