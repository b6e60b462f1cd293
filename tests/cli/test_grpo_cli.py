"""``vidcli grpo`` end to end: help, an embed-judged run killed with SIGKILL and resumed, two processes, errors."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests.cli.helpers import invoke, read_jsonl
from tests.test_grpo import grpo_kit, one_thread  # noqa: F401  (fixtures)

MARKER = "sk-test-marker-9c2e41"


def grpo_args(kit, out, *extra) -> list[str]:
    return ["grpo", "--model", str(kit["base"]), str(kit["data"]), "-o", str(out), "-G", "3",
            "--max-completion-tokens", "6", "--video-frames", "4", "--lr", "1e-3", "--warmup-steps", "1",
            "--beta", "0.05", "--seed", "2", "-q", *extra]


def adapter(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_help_lists_defaults_and_examples():
    result = invoke(["grpo", "--help"])
    assert result.exit_code == 0
    for text in ("Examples:", "accelerate launch -m vidcli grpo", "default: 2.5e-06", "default: 0.001",
                 "default: 768", "--judge-mode [elements|number]", "--num-iterations", "default: 8",
                 "default: constant", "default: 50"):
        assert text in result.output, text
    assert "grpo" in invoke(["--help"]).output


def test_sigkill_after_a_checkpoint_then_resume_matches_an_uninterrupted_run(grpo_kit, tmp_path):
    steps = ["--max-steps", "4", "--save-every", "2", "--judge", "embed"]
    reference = invoke(grpo_args(grpo_kit, tmp_path / "ref", *steps))
    assert reference.exit_code == 0, reference.stderr

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": MARKER}
    proc = subprocess.Popen([sys.executable, "-m", "vidcli", *grpo_args(grpo_kit, out, *steps)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint-2").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "vidcli.json").exists()

    resumed = invoke(grpo_args(grpo_kit, out, *steps, "--resume"), env={"OPENAI_API_KEY": MARKER})
    assert resumed.exit_code == 0, resumed.stderr
    a, b = adapter(tmp_path / "ref"), adapter(out)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for path in out.rglob("*"):
        if path.is_file():
            assert MARKER.encode() not in path.read_bytes(), path

    # The rollout log is the uninterrupted run's, line for line: 4 steps × 2 prompts × G = 3.
    rows = read_jsonl(out / "rollouts.jsonl")
    assert rows == read_jsonl(tmp_path / "ref" / "rollouts.jsonl")
    assert len(rows) == 24 and [r["step"] for r in rows[::6]] == [1, 2, 3, 4]
    ids = {"vid", "cam", "txt", "dep"}
    for row in rows:
        assert row["prompt_id"] in ids and isinstance(row["completion"], str)
        # The embed judge cannot see contradictions: that part is null and not in the total.
        assert row["parts"]["contra"] is None and row["errors"] == {}
        weights = {"format": 1.0, "user": 1.0, "detail": 1.0, "supp": 0.8}
        assert row["reward"] == sum(w * row["parts"][k] for k, w in weights.items())
    info = json.loads((out / "vidcli.json").read_text())
    assert info["command"] == "grpo" and info["step"] == 4 and info["finetune"] == "lora"
    assert info["arguments"]["num_generations"] == 3 and info["arguments"]["judge"] == "embed"
    assert "reward" in info["metrics"] and "kl" in info["metrics"]


def test_bad_record_is_one_line_and_exit_1(grpo_kit, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": "nokey", "instruction": "a dog"}\n')
    result = invoke(["grpo", "--model", str(grpo_kit["base"]), str(data), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vidcli grpo: error: {data}:1: id=nokey: missing field 'key_info'")


def test_usage_errors_exit_2(grpo_kit, tmp_path):
    result = invoke(grpo_args(grpo_kit, tmp_path / "run", "--num-iterations", "3", "--save-every", "4"))
    assert result.exit_code == 2 and "must divide --save-every" in result.stderr
    result = invoke(grpo_args(grpo_kit, tmp_path / "run", "--judge-mode", "number"))
    assert result.exit_code == 2 and "apply to LLM judges" in result.stderr
    assert invoke(grpo_args(grpo_kit, tmp_path / "run", "-G", "1")).exit_code == 2
    assert invoke(["grpo", "--model", "m", "-o", str(tmp_path)]).exit_code == 2  # no INPUT


@pytest.mark.slow
def test_two_processes_share_the_prompts(grpo_kit, tmp_path):
    """``torchrun --nproc_per_node 2`` (what ``accelerate launch`` starts): each process rolls out its own prompts."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1"}
    with socket.socket() as probe:  # a free port, so parallel test runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    args = grpo_args(grpo_kit, out, "--max-steps", "1", "--grad-accum", "1", "--max-completion-tokens", "3")
    done = subprocess.run([*torchrun, "-m", "vidcli", *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_jsonl(out / "rollouts.jsonl")
    # 2 processes × 1 prompt × G = 3, gathered by the main process, groups kept together.
    assert len(rows) == 6 and [r["sample"] for r in rows] == [0, 1, 2, 0, 1, 2]
    assert rows[0]["prompt_id"] != rows[3]["prompt_id"]
    assert json.loads((out / "vidcli.json").read_text())["step"] == 1
