"""Two processes under ``accelerate launch`` train what one process trains on the same global batch.

The launch, on a machine without GPUs (gloo over CPU)::

    ACCELERATE_USE_CPU=1 OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 \\
        --num_machines 1 --mixed_precision no --dynamo_backend no --main_process_port PORT \\
        -m vidcli sft ...

(``accelerate launch --cpu --num_processes 2`` starts a single process here: accelerate
sends multi-CPU runs through mpirun. ``--multi_gpu`` with ``ACCELERATE_USE_CPU=1`` takes
the torchrun path and the processes talk over gloo.)

**Same global batch.** 2 processes × batch b × ``--grad-accum 1`` and 1 process × batch b
× ``--grad-accum 2`` see the same examples in the same micro-batches with the same seeds
(:meth:`~vidcli.train.core.DataOrder.stream_index`): accumulation averages the two
micro-batch losses, DDP averages the two processes' gradients. (1 process × batch 2b is
the same global batch too, but a token-averaged loss then weighs the examples by their
lengths.) The float32 mean gradient is formed in two places: DDP halves each process's
gradient and the all-reduce adds the two, accumulation adds two gradients of halved
losses. Halving is exact and a sum of two is order-free, so on this CPU the runs agree
bit for bit. A reduction in another order (more terms, another backend) rounds
differently: 2 processes × ``--grad-accum 2`` against 1 × 4 of revise-tune differ by up
to 9e-7 after two steps. Weights are compared with ``atol=1e-5``: ten times that, and
a hundred times below the 1e-3 that one Adam step on a wrong gradient moves a weight
by. Logged losses are compared with ``rel=1e-5``.

**Checkpoints** are written once, by the main process, and resume on another process
count: a 2-process checkpoint continued by 1 process, and a 1-process checkpoint
continued by 2, end where an uninterrupted run ends. The models have no dropout, the
only per-process random stream a change of process count cannot carry over.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.helpers import invoke, read_jsonl
from tests.cli.test_grpo_cli import grpo_args
from tests.train.test_drf import RECORD, drf_kit, write_records  # noqa: F401  (fixtures)
from tests.train.test_grpo import grpo_kit  # noqa: F401  (fixture)
from tests.train.test_sft import sft_kit  # noqa: F401  (fixture)
from vidcli.errors import InputError
from vidcli.train.core import DataOrder

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

WEIGHT_ATOL = 1e-5
LOSS_REL = 1e-5


def launch(args: list[str], timeout: float = 150, program: tuple[str, ...] = ("-m", "vidcli")
           ) -> subprocess.CompletedProcess:
    """``accelerate launch`` (the venv's, as a module) of ``vidcli ARGS`` (or of ``PROGRAM ARGS``) on 2 CPU
    processes."""
    with socket.socket() as probe:  # a free port, so parallel test runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", port, *program, *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(folder / name)


def assert_same_weights(ours: dict, theirs: dict, base: dict) -> None:
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=WEIGHT_ATOL, msg=key)
    assert any(not torch.equal(ours[k], base[k]) for k in base if k in ours)  # the runs did train


def assert_written_once(out: Path, done: subprocess.CompletedProcess, steps: list[int]) -> None:
    """One ``checkpoint-N`` per save step, no temporary folder left, one save message per checkpoint."""
    left = {p.name for p in out.iterdir() if p.name.startswith((".", "checkpoint-"))}
    assert left == {f"checkpoint-{s}" for s in steps}
    for step in steps:
        assert done.stderr.count(f"saved {out / f'checkpoint-{step}'} at step {step}") == 1
        state = out / f"checkpoint-{step}" / "trainer_state"
        assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in state.iterdir()}
        progress = json.loads((state / "progress.json").read_text())
        assert progress["num_processes"] == 2 and progress["global_batch"] == 2


def continue_from(checkpoint: Path, out: Path) -> None:
    """A new output folder holding only ``checkpoint`` (as a run killed right after it would)."""
    out.mkdir()
    shutil.copytree(checkpoint, out / checkpoint.name, symlinks=True)


def in_process(args: list[str]):
    with torch.random.fork_rng():
        result = invoke(args)
    assert result.exit_code == 0, result.stderr
    return result


def test_data_position_converts_between_process_counts():
    """Checkpoints keep the data position in global terms (hand-computed, 5 examples, batch 1 per device)."""
    two = [DataOrder(5, 1, seed=0, num_processes=2, process_index=r) for r in range(2)]
    one = DataOrder(5, 1, seed=0)
    # Slots: micro-batch k of the 2-process run holds slots 2k and 2k+1 of the 1-process run. The last,
    # short global batch of epoch 0 is topped up from the start of its order: slot 5, an epoch of 6 slots.
    assert [[o.stream_index(k) for o in two] for k in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [one.stream_index(k) for k in range(6)] == [0, 1, 2, 3, 4, 5]
    assert two[0].micro_batch(1)[1] + two[1].micro_batch(1)[1] == one.micro_batch(2)[1] + one.micro_batch(3)[1]
    saved = two[0].progress(2)  # after 2 micro-batches of 2: 4 examples of epoch 0
    assert saved == {"micro_batches": 2, "global_batch": 2, "samples": 4}
    assert one.resume_position(saved) == 4
    assert two[0].resume_position(one.progress(4)) == 2
    assert two[0].resume_position({"micro_batches": 4, "num_processes": 1}) == 2  # a record without the batch
    assert two[0].resume_position(one.progress(5)) == 3  # the start of epoch 1
    with pytest.raises(InputError, match="stopped 3 examples into epoch 0.*global batch of 2"):
        two[0].resume_position(one.progress(3))


def test_processes_that_accelerate_does_not_connect_are_refused(tmp_path, monkeypatch):
    """``accelerate launch --multi_gpu`` without GPUs and without ACCELERATE_USE_CPU=1 starts
    processes that each set up a single-device run (WORLD_SIZE=2, one process each)."""
    from vidcli.train.core import RunConfig, make_accelerator

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="started as 2 processes, but accelerate set up 1.*ACCELERATE_USE_CPU=1"):
        make_accelerator(RunConfig(tmp_path / "run", mixed_precision="no"))


# A run in each process as a command runs it: the model prepared (DDP) and trained a step,
# torch._dynamo imported late (as DDP imports it), end_training, and the run's objects let go
# (run_recipe returns). The gloo threads still running then are listed from /proc (Linux).
TEARDOWN = """
import gc, importlib, os, sys, torch
from vidcli.train.core import RunConfig, make_accelerator
if sys.argv[2] == "late":  # as if make_accelerator did not import torch.distributed.nn.functional first
    import vidcli.train.start as start
    start.release_world_group_at_teardown = lambda: None

def run():
    accelerator = make_accelerator(RunConfig(sys.argv[1], mixed_precision="no"))
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.backward(model(torch.ones(2, 4)).sum())
    optimizer.step()
    importlib.import_module("torch._dynamo")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return accelerator.process_index

rank = run()
gc.collect()
defaults = torch.distributed.nn.functional.broadcast.__defaults__
held = any(isinstance(d, torch.distributed.ProcessGroup) for d in defaults)
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print("rank", rank, "held", held, "threads", sorted(n for n in names if "gloo" in n), flush=True)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="threads are listed from /proc")
@pytest.mark.parametrize("when", ["vidcli", "late"])
def test_a_finished_run_leaves_no_gloo_thread_for_interpreter_shutdown(tmp_path, when):
    """After end_training no gloo thread runs on into the interpreter's shutdown (where one that is torn
    down aborted a finished run's process, rarely, with "terminate called without an active exception").
    ``late`` is the control: with torch.distributed.nn.functional first imported after the group exists,
    its default arguments keep the group and its threads alive (torch 2.14; skipped on a torch whose
    defaults no longer keep it)."""
    script = tmp_path / "teardown.py"
    script.write_text(TEARDOWN, encoding="utf-8")
    done = launch([str(tmp_path / "run"), when], program=(str(script),))
    lines = sorted(line for line in done.stdout.splitlines() if line.startswith("rank "))
    if when == "vidcli":
        assert lines == ["rank 0 held False threads []", "rank 1 held False threads []"]
    elif not all(" held True " in line for line in lines):
        pytest.skip("this torch's torch.distributed.nn.functional keeps no group in its defaults")
    else:
        assert len(lines) == 2 and all("gloo" in line for line in lines), lines


# ----------------------------------------------------------------------------- sft


@pytest.mark.slow
def test_sft_two_processes_match_one_and_resume_on_one(sft_kit, tmp_path):
    def sft(out, *extra):
        return ["sft", "--model", str(sft_kit["base"]), str(sft_kit["cot"]), "-o", str(out), "--finetune", "full",
                "--batch-size", "1", "--lr", "1e-3", "--warmup-steps", "1", "--seed", "3", "--max-steps", "2",
                "--save-every", "1", *extra]

    done = launch(sft(tmp_path / "two", "--grad-accum", "1"))
    in_process(sft(tmp_path / "one", "--grad-accum", "2", "-q"))
    assert_written_once(tmp_path / "two", done, [1])

    name, base = "model.safetensors", weights(sft_kit["base"], "model.safetensors")
    one, two = weights(tmp_path / "one", name), weights(tmp_path / "two", name)
    assert_same_weights(two, one, base)
    assert_same_weights(weights(tmp_path / "two" / "checkpoint-1", name),
                        weights(tmp_path / "one" / "checkpoint-1", name), base)
    info = {k: json.loads((tmp_path / k / "vidcli.json").read_text()) for k in ("one", "two")}
    assert info["two"]["metrics"]["loss"] == pytest.approx(info["one"]["metrics"]["loss"], rel=LOSS_REL)

    # 2 → 1 processes: the data position (1 micro-batch of 2 examples) becomes 2 of 1 example.
    continue_from(tmp_path / "two" / "checkpoint-1", tmp_path / "resumed")
    resumed = in_process(sft(tmp_path / "resumed", "--grad-accum", "2", "--resume"))
    assert "resuming a 2-process checkpoint on 1 processes" in resumed.stderr
    assert_same_weights(weights(tmp_path / "resumed", name), one, base)


# ----------------------------------------------------------------------------- grpo


@pytest.mark.slow
def test_grpo_one_process_checkpoint_continues_on_two(grpo_kit, tmp_path):
    """1 → 2 processes: the second step, rolled out by two processes, is the single-process one.

    Sampling seeds follow the data stream, so each process samples its prompt's G
    completions exactly as the single process sampled them (the same text, reward and
    advantage), and the update averages the same two micro-batch gradients.
    """
    def grpo(out, *extra):
        return grpo_args(grpo_kit, out, "--finetune", "full", "--beta", "0", "--batch-size", "1",
                         "--max-steps", "2", "--save-every", "1", "--judge", "embed", *extra)

    in_process(grpo(tmp_path / "one", "--grad-accum", "2"))
    continue_from(tmp_path / "one" / "checkpoint-1", tmp_path / "two")
    done = launch([a for a in grpo(tmp_path / "two", "--grad-accum", "1", "--resume") if a != "-q"])
    left = {p.name for p in (tmp_path / "two").iterdir() if p.name.startswith((".", "checkpoint-"))}
    assert left == {"checkpoint-1"} and "resumed from" in done.stderr

    one, two = read_jsonl(tmp_path / "one" / "rollouts.jsonl"), read_jsonl(tmp_path / "two" / "rollouts.jsonl")
    second = [r for r in one if r["step"] == 2]
    assert len(one) == 12 and len(two) == len(second) == 6  # 2 steps × 2 prompts × G = 3; the copy kept no log
    assert len({r["prompt_id"] for r in second}) == 2
    for ours, theirs in zip(two, second):
        assert (ours["step"], ours["prompt_id"], ours["completion"]) == \
            (theirs["step"], theirs["prompt_id"], theirs["completion"])
        assert ours["reward"] == pytest.approx(theirs["reward"], rel=LOSS_REL)
    name = "model.safetensors"
    base = weights(grpo_kit["base"], name)
    assert_same_weights(weights(tmp_path / "two", name), weights(tmp_path / "one", name), base)
    info = {k: json.loads((tmp_path / k / "vidcli.json").read_text()) for k in ("one", "two")}
    assert info["two"]["metrics"]["loss"] == pytest.approx(info["one"]["metrics"]["loss"], rel=LOSS_REL, abs=1e-7)


# ----------------------------------------------------------------------------- drf-tune


@pytest.fixture
def two_records(tmp_path):
    cat = {**RECORD, "id": "cat", "caption": "a grey cat sleeps on a sofa"}
    return write_records(tmp_path / "data", [RECORD, cat])


@pytest.mark.slow
def test_drf_two_processes_match_one_with_accumulation_and_resume_on_one(drf_kit, two_records, tmp_path):
    """drf-tune's step is one video per process: 2 processes × ``--grad-accum 1`` against 1 × ``--grad-accum 2``.

    Before the DiT's weights were given aligned memory (:func:`~vidcli.train.core.aligned_storage`)
    this failed by 2e-5: the two-process run computed on weights ``prepare`` had copied to
    aligned memory, the one-process run on the file's unaligned ones, and Adam's first
    step magnified the different rounding of the CPU matrix kernels.
    """
    def args(out, *extra):
        return ["drf-tune", "--model", str(drf_kit["wan"]), "--vlm", str(drf_kit["vlm"]), str(two_records),
                "-o", str(out), "--dims", "TA", "--frames-vlm", "3", "--k-grad", "1", "--steps", "2",
                "--guidance", "1", "--height", "32", "--width", "32", "--frames", "5", "--lr", "1e-3",
                "--seed", "5", "--max-steps", "2", "--save-every", "1", *extra]

    done = launch(args(tmp_path / "two"))
    assert_written_once(tmp_path / "two", done, [1])
    in_process(args(tmp_path / "one", "--grad-accum", "2", "-q"))
    # 2 processes × 1 → 1 process × 2: the same global batch, continued exactly.
    continue_from(tmp_path / "two" / "checkpoint-1", tmp_path / "resumed")
    in_process(args(tmp_path / "resumed", "--grad-accum", "2", "--resume", "-q"))
    # 1 × 2 → 1 × 1: a smaller batch continues from the next record of the data stream.
    continue_from(tmp_path / "one" / "checkpoint-1", tmp_path / "halved")
    in_process(args(tmp_path / "halved", "--grad-accum", "1", "--resume", "-q"))

    name = "transformer/diffusion_pytorch_model.safetensors"
    base, one = weights(drf_kit["wan"], name), weights(tmp_path / "one", name)
    assert_same_weights(weights(tmp_path / "two", name), one, base)
    assert_same_weights(weights(tmp_path / "resumed", name), one, base)
    rows = {k: read_jsonl(tmp_path / k / "rewards.jsonl") for k in ("one", "two", "resumed", "halved")}
    assert len(rows["one"]) == 4 and len({r["id"] for r in rows["one"][:2]}) == 2  # both records each step
    assert [r["step"] for r in rows["resumed"]] == [2, 2]  # the copied checkpoint kept no log
    for ours, theirs in [*zip(rows["two"], rows["one"]), *zip(rows["resumed"], rows["one"][2:])]:
        assert (ours["id"], ours["step"]) == (theirs["id"], theirs["step"])
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=LOSS_REL)
    # The halved run's step 2 is the first record of the uninterrupted step 2: same record, noise and weights.
    (halved,) = rows["halved"]
    assert (halved["id"], halved["step"]) == (rows["one"][2]["id"], 2)
    assert halved["loss"] == pytest.approx(rows["one"][2]["loss"], rel=LOSS_REL)
    info = json.loads((tmp_path / "halved" / "vidcli.json").read_text())
    assert info["arguments"]["grad_accum"] == 1 and info["step"] == 2
