"""Shared fixtures: an isolated cache per test, offline hub, and the tiny-model kit."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# What makes a test slow: it builds or loads models (the tiny-model kit and everything made
# from it), or it starts a process or a server — in its own body or in a fixture it uses.
_SLOW_CALLS = ("ensure_tiny_models(", "tiny_models[", "run_cli(", "subprocess.", "Popen(", "ScriptedServer(",
               "start_teacher(", "kill_when(", "ensure_world(", "judge_server(",
               "train_curriculum(")


def _sources(item) -> str:
    """The test function's source and that of every fixture it uses."""
    functions = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for definitions in (info.name2fixturedefs.values() if info is not None else ()):
        functions += [definition.func for definition in definitions]
    out = []
    for function in functions:
        try:
            out.append(inspect.getsource(function))
        except (TypeError, OSError):
            continue
    return "\n".join(out)


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that uses the tiny models or starts processes or servers, so the fast
    loop (``pytest -m "not slow"``) is the rest."""
    for item in items:
        if any(call in _sources(item) for call in _SLOW_CALLS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own reply cache and no API credentials from the environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return tmp_path / "xdg-cache"


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and a busy 2-core machine does not thrash."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models():
    """Paths of the tiny models of the real architectures, built once and cached."""
    from vidcli.testing import ensure_tiny_models

    return ensure_tiny_models()


@pytest.fixture(scope="session")
def transformers_server(tmp_path_factory, tiny_models):
    """`transformers serve` (the library's own OpenAI-compatible server) with the tiny LLM.

    Yields ``(base_url, model_path)``; the server is pinned to that one model.
    """
    import os
    import socket
    import urllib.error
    import urllib.request
    from pathlib import Path

    cli = Path(sys.executable).parent / "transformers"
    if not cli.exists():
        pytest.skip("the transformers CLI is not installed")
    path = tiny_models["llm"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [str(cli), "serve", str(path), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    with open(log_path, "w") as log_file:  # a file, not a pipe: nobody must drain it
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(base_url + "/models", timeout=2).read()
                break
            except urllib.error.HTTPError:
                break  # it answers (its model listing may fail without a hub cache): it is up
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not come up: {log_path.read_text()[-2000:]}")
                time.sleep(0.5)
        yield base_url, str(path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
