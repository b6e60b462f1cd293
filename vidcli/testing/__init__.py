"""Test scaffolding that ships with vidcli, so tests and the ``TINY=1`` recipes run with no
downloads: tiny models of the real architectures (:mod:`vidcli.testing.models`, their
tokenizers in :mod:`vidcli.testing.tokenizers`), a scripted OpenAI-compatible server
(:mod:`vidcli.testing.server`) and the rule-based offline teacher built on it
(:mod:`vidcli.testing.teacher`).

Command line (``python -m vidcli.testing``)::

    python -m vidcli.testing tiny-models [OUTDIR] [--only llm,vlm]
    python -m vidcli.testing teacher [--host H] [--port P] [--url-file FILE]
"""
from vidcli.testing.models import (
    ALL_MODELS,
    BUILDERS,
    build_tiny_models,
    builder_key,
    default_tiny_dir,
    ensure_tiny_models,
)
from vidcli.testing.tokenizers import QWEN_SPECIAL_TOKENS, VLM_CHAT_TEMPLATE, training_corpus

__all__ = ["ALL_MODELS", "BUILDERS", "QWEN_SPECIAL_TOKENS", "VLM_CHAT_TEMPLATE", "build_tiny_models", "builder_key",
           "default_tiny_dir", "ensure_tiny_models", "training_corpus"]
