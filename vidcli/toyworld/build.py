"""``python -m vidcli.toyworld build DIR``: the toy world and its trained models, in stages, cached.

The stages, in order (:data:`STAGES`); each writes its part under DIR and returns a
report, and a stage whose report is on disk under the same build key is not run again:

``world``        :func:`vidcli.toyworld.world.write_world`: media and records, DIR/world/
``oracle``       the oracle's measured accuracy per property (:mod:`vidcli.toyworld.accuracy`)
``cot``          ``vidcli make-cot`` on the world's training requests, taught by the exact
                 toy judge (:mod:`vidcli.toyworld.judge`): DIR/interpreter/cot.jsonl
``interpreter``  ``vidcli sft`` on those records (DIR/interpreter/sft) of the kit's tiny Qwen2.5-VL
                 with a tokenizer learned on them (:mod:`vidcli.toyworld.interpreter`, DIR/interpreter/base),
                 then ``vidcli interpret`` on the held-out requests and ``vidcli score --metric
                 format,coverage`` with the toy judge: the start point for GRPO, whose outputs
                 parse but miss facts
``models``       the trained critic, generator and editor (DIR/critic, DIR/generator,
                 DIR/editor): see :data:`STAGES` — the one place where they join the build

``oracle``, ``cot`` and ``interpreter`` (:data:`BESIDE`) run one after another in a second
thread, beside the ``models`` stage: each is one single-threaded process, and the models
stage leaves a core idle for minutes (while the critic waits for the generator, and while
the editor trains alone). A failure in either lane stops the other at once (its running
command is ended) and is what the build raises.

The key (:func:`build_key`) hashes the toyworld package's source, the tiny-model
builder's key, the library versions that shape the outputs, the seed and ``--quick``.
DIR/build.json holds the key and every stage's report; a DIR holding another key's
build is cleared first (only when it is a toy-world build: an unrelated folder is
refused). Every stage is deterministic for its seed; subprocesses run the real
commands as a user would, with ``OPENAI_BASE_URL`` pointing at the toy judge.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

log = logging.getLogger("vidcli.toyworld")


@dataclass(frozen=True)
class Size:
    scenes: int  # scenes in the world (a fifth held out)
    oracle_scenes: int  # scenes the oracle's accuracy is measured on
    sft_steps: int
    heldout: int  # held-out requests the interpreter is measured on


# SFT steps: with 400 (full) the interpreter wrote nearly one caption whatever was asked; at 3000 its
# dense caption states 64% of the asked facts (docs/toyworld.md, "The interpreter start point").
FULL = Size(scenes=400, oracle_scenes=1000, sft_steps=3000, heldout=80)
QUICK = Size(scenes=100, oracle_scenes=100, sft_steps=1000, heldout=12)
# A high rate for a model of 200K parameters; batch 2 gives more updates per token than 4 did.
SFT_FLAGS = ("--lr", "1e-2", "--warmup-steps", "10", "--batch-size", "2", "--grad-accum", "1", "--save-every", "0",
             "--instruction-dropout", "0")


@dataclass
class Context:
    root: Path
    seed: int
    quick: bool
    size: Size
    judge_url: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # once set, no command starts
    running: set = field(default_factory=set, repr=False)  # the commands started and not yet ended

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def interpreter(self) -> Path:
        return self.root / "interpreter"


# ----------------------------------------------------------------------------- stages


def _world(ctx: Context) -> dict:
    from vidcli.toyworld.world import write_world

    counts = write_world(ctx.world, seed=ctx.seed, count=ctx.size.scenes)
    for name in ("requests", "triplets", "scenes", "drf"):
        records = [json.loads(line) for line in (ctx.world / f"{name}.jsonl").read_text().splitlines()]
        for split in ("train", "test"):
            lines = [json.dumps(r, ensure_ascii=False) for r in records if r["split"] == split]
            (ctx.world / f"{name}.{split}.jsonl").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return {"records": counts}


def _oracle(ctx: Context) -> dict:
    return _call(ctx, "the oracle check", "vidcli.toyworld.accuracy:oracle_accuracy", ctx.size.oracle_scenes,
                 seed=ctx.seed + 12345)


_CALL = ("import importlib, json, sys\n"
         "module, name = sys.argv[1].split(':')\n"
         "args, kwargs = json.loads(sys.argv[2])\n"
         "json.dump(getattr(importlib.import_module(module), name)(*args, **kwargs), sys.stdout)\n")


def _call(ctx: Context, name: str, function: str, *args, **kwargs):
    """``function`` ("module:name") called with JSON arguments in a process of its own; its JSON result.

    The second lane runs its work in processes only: in a thread of the build, Python work would share
    the interpreter lock with the critic's training, and importing transformers' lazy modules from two
    threads at once fails ("cannot import name ...")."""
    argv = [sys.executable, "-c", _CALL, function, json.dumps([args, kwargs])]
    return json.loads(_run(ctx, name, argv, cache=None))


class CommandFailed(RuntimeError):
    """A vidcli command that the build or the report ran exited with an error."""


class Halted(Exception):
    """A command that did not start, or was ended, because its build or report is stopping."""


_RUNNING = threading.Lock()
_LANE = threading.local()  # ``idle``: the commands this thread starts run at the lowest priority


def _lowest_priority(pid: int) -> None:
    """Linux's SCHED_IDLE for ``pid`` (and the processes it starts): it runs only on a core no other
    process wants. Where that is refused, niceness 19 (which still took about a fifth of the busy cores:
    the scheduler's minimum time slice)."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, pid, 19)


def _run(ctx: Context, name: str, argv: list[str], *, cache: str | None = "cache") -> str:
    """Run ``argv`` (one thread, the toy judge's address and ``cache`` under the build as its cache —
    None: the caller's) and return its stdout. Refused once ``ctx.stop`` is set; :func:`_end_running`
    ends it."""
    # One thread: the toy models are so small that a second thread only adds overhead, and on a
    # busy 2-core machine it made a GRPO step ten times slower (117–192 s against 10 s).
    env = {"OMP_NUM_THREADS": "1", **os.environ, "OPENAI_API_KEY": "toy", "OPENAI_BASE_URL": ctx.judge_url or "",
           **({"XDG_CACHE_HOME": str(ctx.root / cache)} if cache else {})}
    with _RUNNING:
        if ctx.stop.is_set():
            raise Halted(f"{name} not started: stopping")
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ctx.running.add(process)
        if getattr(_LANE, "idle", False):
            _lowest_priority(process.pid)
    try:
        out, err = process.communicate()
    except BaseException as exc:
        # The caller's thread was stopped while waiting (the CLI's SIGTERM): the command must not outlive
        # it. A Ctrl-C reached the command too (one process group) and lets it end its own way.
        if not isinstance(exc, KeyboardInterrupt):
            _stop(process)
        raise
    finally:
        with _RUNNING:
            ctx.running.discard(process)
    if process.returncode != 0:
        if ctx.stop.is_set():
            raise Halted(f"{name} ended: stopping")
        raise CommandFailed(f"{name} failed (exit {process.returncode}): {err.strip()[-2000:]}")
    return out


def _end_running(ctx: Context) -> None:
    """Set ``ctx.stop`` and end every command still running under it."""
    with _RUNNING:
        ctx.stop.set()
        running = list(ctx.running)
    for process in running:
        process.terminate()
    for process in running:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """Terminate ``process`` and reap it; killed when it has not ended within 30 seconds."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _vidcli(ctx: Context, *args: str) -> None:
    """Run one vidcli command as a user would; its stderr is shown when it fails."""
    _run(ctx, f"vidcli {args[0]}", [sys.executable, "-m", "vidcli", *args])


def _cot(ctx: Context) -> dict:
    ctx.interpreter.mkdir(parents=True, exist_ok=True)
    out = ctx.interpreter / "cot.jsonl"
    _vidcli(ctx, "make-cot", "-q", "--llm", "openai:toy", "--dedup-threshold", "1.0",
            str(ctx.world / "requests.train.jsonl"), "-o", str(out))
    return {"records": sum(1 for _ in out.open(encoding="utf-8"))}


def _interpreter(ctx: Context) -> dict:
    base, cot = ctx.interpreter / "base", ctx.interpreter / "cot.jsonl"
    _call(ctx, "the interpreter's base", "vidcli.toyworld.interpreter:build_base", str(base), str(cot),
          seed=ctx.seed)
    sft, interpreted = ctx.interpreter / "sft", ctx.interpreter / "heldout.interpreted.jsonl"
    shutil.rmtree(sft, ignore_errors=True)  # a run the stage did not finish (stopped after sft saved)
    _vidcli(ctx, "sft", "-q", "--model", str(base), str(cot), "-o", str(sft),
            "--max-steps", str(ctx.size.sft_steps), "--seed", str(ctx.seed), *SFT_FLAGS)
    heldout = ctx.interpreter / "heldout.jsonl"
    lines = (ctx.world / "requests.test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    heldout.write_text("".join(lines[:ctx.size.heldout]), encoding="utf-8")
    # The subset lives outside the world's folder: its camera files resolve against the world.
    _vidcli(ctx, "interpret", "-q", "--model", str(sft), "--input", str(heldout), "-o", str(interpreted),
            "--max-new-tokens", "640", "--batch-size", "16", "--media-root", str(ctx.world))
    return interpreter_scores(ctx, interpreted)


def interpreter_scores(ctx: Context, interpreted: Path) -> dict:
    """Format rate and mean coverage (U, S, Z) of interpreted held-out requests, by the toy judge."""
    scored, summary = ctx.interpreter / "heldout.scored.jsonl", ctx.interpreter / "heldout.summary.json"
    _vidcli(ctx, "score", "-q", "--metric", "format,coverage", "--judge", "openai:toy", str(interpreted),
            "-o", str(scored), "--summary", str(summary))
    records = [json.loads(line) for line in scored.read_text(encoding="utf-8").split("\n") if line]
    report = {"heldout": len(records),
              "format_rate": sum(r["scores"]["format"] == 1.0 for r in records) / len(records)}
    for part in ("format", "user", "detail", "supp"):  # coverage of U, S and Z (SPEC §5)
        values = [r["scores"][part] for r in records if r["scores"].get(part) is not None]
        report[f"mean_{part}"] = sum(values) / len(values) if values else None
    return report


def _models(ctx: Context) -> dict:
    """The trained critic, generator and editor (DIR/critic, DIR/generator, DIR/editor)."""
    from vidcli.toyworld.models import build_models

    return build_models(ctx.root, seed=ctx.seed, quick=ctx.quick)


Stage = tuple[str, Callable[[Context], dict]]
STAGES: list[Stage] = [
    ("world", _world),
    ("oracle", _oracle),
    ("cot", _cot),
    ("interpreter", _interpreter),
    ("models", _models),
]
# Stages that run one after another in a second thread, beside the main lane's stages after them,
# their commands at the lowest priority (:func:`_lowest_priority`): they take the core the models stage
# leaves idle (while the critic waits for the generator, and while the editor trains alone) rather
# than share the busy ones. At the same priority they slowed the critic and the generator by a third
# and were done before the idle time came (full build 12 min 25 s, against 12 min 52 s one stage
# after another).
BESIDE = frozenset({"oracle", "cot", "interpreter"})


# ----------------------------------------------------------------------------- cache


# Modules that read a build but do not make it: editing them keeps the cached builds.
NOT_BUILD_SOURCES = frozenset({"report.py", "learning.py", "gradient.py", "__main__.py"})


def build_key(*, seed: int, quick: bool) -> str:
    """Names one build: the toyworld source, the video writer and reader it trains through
    (``vidcli/media.py``), the tiny-model builder, library versions, seed, size."""
    from vidcli.testing import builder_key

    h = hashlib.sha256()
    package = Path(__file__).parent
    for path in [*sorted(package.glob("*.py")), package.parent / "media.py"]:
        if path.name in NOT_BUILD_SOURCES:
            continue
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    h.update(f"|tiny={builder_key()}|seed={seed}|quick={quick}".encode())
    for dist in ("torch", "transformers", "diffusers", "numpy", "scipy", "av", "vidcli"):
        try:
            h.update(f"|{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"|{dist}=none".encode())
    return h.hexdigest()[:16]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def build(root: Path | str, *, seed: int = 0, quick: bool = False, force: bool = False) -> dict:
    """Run the stages not yet done under this build key; returns DIR/build.json's content.

    Two processes building into one DIR at once (two test sessions) take turns: the
    second waits on a lock file beside DIR and then finds the stages done.

    Refused in a process that is still importing its parent's script (the models stage's
    worker re-imports the script that started the build, as Python's spawn does): there it
    would wait forever on the lock its parent holds."""
    import fcntl
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError("a toy-world build was started by a script's top-level code while a worker process "
                           "re-imported that script; put the script's code under `if __name__ == \"__main__\":`")
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(root, seed=seed, quick=quick, force=force)


def _build_locked(root: Path, *, seed: int, quick: bool, force: bool) -> dict:
    from vidcli.toyworld.judge import judge_server

    key = build_key(seed=seed, quick=quick)
    state = _read_json(root / "build.json")
    if root.exists() and any(root.iterdir()) and (force or state is None or state.get("key") != key):
        if state is None:
            raise SystemExit(f"toy world: {root} is not empty and holds no toy-world build (no build.json); "
                             "give an empty or new folder")
        shutil.rmtree(root)
        state = None
    root.mkdir(parents=True, exist_ok=True)
    state = state or {"key": key, "seed": seed, "quick": quick, "stages": {}}
    _write_json(root / "build.json", state)
    ctx = Context(root, seed, quick, QUICK if quick else FULL)
    with judge_server() as judge:
        ctx.judge_url = judge.base_url
        _run_stages(ctx, state)
    return state


class _LaneFailed(BaseException):
    """Raised in the main lane by :func:`_run_stages`'s signal when the second lane failed."""


def _lane_failed(signum, frame) -> None:
    raise _LaneFailed()


def _run_stages(ctx: Context, state: dict) -> None:
    """The stages not done in ``state``: the :data:`BESIDE` ones in a second thread, started once the
    main lane reaches the first stage after them; each stage's report is saved as it ends. A failure
    in the second thread interrupts the main lane (SIGUSR1 to this thread, when it is the main one:
    a signal of its own, as SIGINT is ignored in a background job)."""
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGUSR1, _lane_failed)
        try:
            _lanes(ctx, state, interruptible=True)
        finally:
            signal.signal(signal.SIGUSR1, previous)
    else:
        _lanes(ctx, state, interruptible=False)


def _lanes(ctx: Context, state: dict, *, interruptible: bool) -> None:
    lock = threading.Lock()
    order = [name for name, _ in STAGES]
    todo = [(name, run) for name, run in STAGES if name not in state["stages"]]
    side = [(name, run) for name, run in todo if name in BESIDE]
    failed: list[BaseException] = []
    can_interrupt = [interruptible]  # cleared once the main lane only waits for this one

    def stage(name: str, run: Callable[[Context], dict]) -> None:
        started = time.monotonic()
        log.info("toy world: stage %s", name)
        report = run(ctx)
        report["seconds"] = round(time.monotonic() - started, 1)
        with lock:
            state["stages"][name] = report
            _write_json(ctx.root / "build.json", state)

    def side_lane() -> None:
        _LANE.idle = True
        try:
            for name, run in side:
                if ctx.stop.is_set():
                    return
                stage(name, run)
        except BaseException as exc:
            # A Ctrl-C also ends this lane's command: give the main lane's handler the moment it needs
            # to set ``stop`` rather than report the command's death as the failure.
            if ctx.stop.wait(0.5):
                return
            with lock:
                if ctx.stop.is_set():
                    return
                failed.append(exc)
                if can_interrupt[0]:
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    lane = threading.Thread(target=side_lane, name="toy-world-beside", daemon=True) if side else None
    try:
        for name, run in todo:
            if name in BESIDE:
                continue
            if lane is not None and lane.ident is None and order.index(name) > order.index(side[0][0]):
                lane.start()
            stage(name, run)
        if lane is not None:
            with lock:
                can_interrupt[0] = False
            if lane.ident is None:
                lane.start()
            lane.join()
    except BaseException:
        ctx.stop.set()  # first: the other lane then neither reports its own end nor interrupts this one
        with lock:
            can_interrupt[0] = False
        _end_running(ctx)
        if lane is not None and lane.ident is not None:
            lane.join()
        if failed:
            raise failed[0] from None
        raise
    if failed:
        raise failed[0]


def default_dir(*, seed: int = 0, quick: bool = True) -> Path:
    """Where :func:`ensure_world` keeps builds (``$XDG_CACHE_HOME/vidcli/toyworld/<key>``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "vidcli" / "toyworld" / build_key(seed=seed, quick=quick)


def ensure_world(*, seed: int = 0, quick: bool = True) -> tuple[Path, dict]:
    """The cached build for this key (built on first use): its folder and its report."""
    root = default_dir(seed=seed, quick=quick)
    return root, build(root, seed=seed, quick=quick)
