"""Shared fixtures of the toy-world tests: the --quick build (cached across runs) and the exact judge."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def toy_build():
    """``(folder, report)`` of ``python -m vidcli.toyworld build --quick --seed 0``, built once and cached."""
    from vidcli.toyworld.build import ensure_world

    return ensure_world(seed=0, quick=True)


@pytest.fixture(scope="session")
def toy_judge():
    """The exact toy judge, served over HTTP; yields its base URL."""
    from vidcli.toyworld.judge import judge_server

    with judge_server() as server:
        yield server.base_url
