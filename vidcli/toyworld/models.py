"""The toy world's trained models, built in one call: critic, generator, editor.

:func:`build_models` writes ``ROOT/critic`` (a Qwen2.5-VL folder: ``--vlm`` of drf-tune and
revise-tune, ``score --vlm hf:ROOT/critic``), ``ROOT/generator`` (a WanPipeline folder:
``generate --model`` and ``drf-tune --model``) and ``ROOT/editor`` (a revise-tune output:
``generate --model`` on triplets) and returns what was measured on each
(``ROOT/models.json`` holds the same). Same seed, same folders and figures.

``quick`` builds smaller versions for tests (fewer examples and steps): weaker models
whose figures are checked against their own bands.

The generator trains in a second process while this one trains the critic, then the
editor (it starts from the generator and its revise-tune loads the critic): on two cores
the stage takes the critic's time plus the editor's instead of all three. Every builder
seeds itself, so the models do not depend on which process made them or in what order.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from functools import partial
from pathlib import Path

log = logging.getLogger("vidcli.toyworld")

REPORT = "models.json"


def build_models(root: Path, *, seed: int, quick: bool, threads: int | None = None) -> dict:
    """Build the three models under ``root`` (see the module docstring); the measured report.

    ``threads``: torch's intra-op threads while building (default: 1, which on a busy
    two-core machine ran faster than 2 for these small matrices; restored afterwards).
    """
    import torch

    from vidcli.toyworld.critic import build_critic
    from vidcli.toyworld.editor import build_editor
    from vidcli.toyworld.generator import build_generator

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or 1)
    report: dict = {"seed": seed, "quick": quick, "seconds_by_model": {}}
    seconds = report["seconds_by_model"]
    worker = None
    try:
        # The generator's builder in a spawned process (not forked: torch's threads), stopped on the
        # way out, so an error or Ctrl-C in the critic does not wait for the generator to finish.
        with torch.random.fork_rng(devices=[]):
            context = multiprocessing.get_context("spawn")
            receive, send = context.Pipe(duplex=False)
            worker = context.Process(target=_worker, args=(send, build_generator, root / "generator"),
                                     kwargs=dict(seed=seed, quick=quick, threads=threads or 1), daemon=True)
            worker.start()
            send.close()
            report["critic"], seconds["critic"] = _timed(build_critic, root / "critic", seed=seed, quick=quick)
            report["generator"], seconds["generator"] = _result(worker, receive)
            report["editor"], seconds["editor"] = _timed(
                partial(build_editor, generator=root / "generator", critic=root / "critic"), root / "editor",
                seed=seed, quick=quick)
    finally:
        torch.set_num_threads(before)
        if worker is not None and worker.is_alive():
            worker.terminate()
            worker.join()
    (root / REPORT).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def exit_with_parent(interval: float = 0.5) -> None:
    """Stop this process when its parent is gone: a parent killed outright (SIGTERM, SIGKILL) cannot
    stop its workers, and an orphaned builder would go on training into the build's folder.

    The parent is the one that started this process (multiprocessing's record of its pid), not the
    one it has when this runs: a parent killed while the worker was still importing has already been
    replaced by init, and comparing against that one would keep the orphan forever."""
    import multiprocessing
    import threading

    started_by = multiprocessing.parent_process()
    parent = started_by.pid if started_by is not None else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _worker(send, build, folder: Path, **kwargs) -> None:
    """A worker process's body: ``_timed(build, folder, **kwargs)``, its result or its error sent back;
    the process ends with its parent."""
    exit_with_parent()
    try:
        outcome = ("done", _timed(build, folder, **kwargs))
    except BaseException as exc:  # sent to the parent, which raises it
        outcome = ("failed", exc)
    try:
        send.send(outcome)
    except Exception:  # an error that does not pickle: its text
        send.send(("failed", RuntimeError(repr(outcome[1]))))
    send.close()


def _result(worker, receive):
    """The worker's result; its error raised here; a clear error when it died without either."""
    try:
        status, value = receive.recv()
    except EOFError:
        worker.join()
        raise RuntimeError(
            f"the generator's build process ended (exit code {worker.exitcode}) without a result; when the build "
            "is started from a script, that script's code must sit under `if __name__ == \"__main__\":` (the "
            "process re-imports it)") from None
    if status == "failed":
        raise value
    return value


def _timed(build, folder: Path, *, seed: int, quick: bool, threads: int | None = None) -> tuple[dict, float]:
    """``build(folder, seed=, quick=)`` (with ``threads`` torch threads when given: a worker process);
    (its report, seconds rounded to 0.1), logged."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    report = build(folder, seed=seed, quick=quick)
    seconds = round(time.perf_counter() - start, 1)
    log.info("%s built in %.0f s", folder.name, seconds)
    return report, seconds
