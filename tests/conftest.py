"""Shared fixtures: an isolated cache per test, offline hub, and the tiny-model kit."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own reply cache and no API credentials from the environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return tmp_path / "xdg-cache"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Paths of the tiny models of the real architectures, built once per session."""
    from vidcli.testing import ensure_tiny_models

    return ensure_tiny_models(tmp_path_factory.mktemp("tiny-models"))
