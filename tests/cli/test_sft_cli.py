"""``vidcli sft`` end to end: help, a run killed with SIGKILL and resumed, secrets, errors."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from tests.cli.helpers import invoke, kill_when
from tests.test_sft import sft_kit  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

MARKER = "sk-test-marker-5b1d0e"


def sft_args(kit, out, *extra) -> list[str]:
    return ["sft", "--model", str(kit["base"]), str(kit["cot"]), "-o", str(out), "--batch-size", "2",
            "--grad-accum", "1", "--lr", "1e-3", "--warmup-steps", "2", "--seed", "3", "-q", *extra]


def tensors(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for name in ("model.safetensors", "camera_encoder/camera_encoder.safetensors"):
        out.update({f"{name}:{k}": v for k, v in load_file(folder / name).items()})
    return out


def test_help_lists_defaults_and_examples():
    result = invoke(["sft", "--help"])
    assert result.exit_code == 0
    for text in ("Examples:", "accelerate launch -m vidcli sft", "--stage camera", "default: 1e-05",
                 "default: 0.4", "--finetune [full|lora|qlora]", "--report-to"):
        assert text in result.output, text
    assert "sft" in invoke(["--help"]).output


def test_sigkill_after_a_checkpoint_then_resume_matches_an_uninterrupted_run(sft_kit, tmp_path):
    steps = ["--max-steps", "6", "--save-every", "2"]
    reference = invoke(sft_args(sft_kit, tmp_path / "ref", *steps))
    assert reference.exit_code == 0, reference.stderr

    out = tmp_path / "run"
    kill_when(sft_args(sft_kit, out, *steps), lambda: (out / "checkpoint-2").is_dir(),
              env={"OMP_NUM_THREADS": "1", "OPENAI_API_KEY": MARKER})  # same threads as in-process
    assert not (out / "vidcli.json").exists()  # it died before the end

    resumed = invoke(sft_args(sft_kit, out, *steps, "--resume"), env={"OPENAI_API_KEY": MARKER})
    assert resumed.exit_code == 0, resumed.stderr
    a, b = tensors(tmp_path / "ref"), tensors(out)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not list(out.glob(".checkpoint-*"))  # no partial folder left behind

    # No secret anywhere in the run folder; the input is fingerprinted.
    for path in out.rglob("*"):
        if path.is_file():
            assert MARKER.encode() not in path.read_bytes(), path
    info = json.loads((out / "vidcli.json").read_text())
    digest = hashlib.sha256(sft_kit["cot"].read_bytes()).hexdigest()
    assert info["inputs"] == {str(sft_kit["cot"]): {"sha256": digest, "records": 4}}
    assert info["command"] == "sft" and info["step"] == 6 and info["arguments"]["max_steps"] == 6
    assert info["arguments"]["max_prompt_tokens"] == 1024


def test_bad_record_is_one_line_and_exit_1(sft_kit, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"id": "ok", "instruction": "x", "cot": {"target": "y"}}\n{"id": "broken", \n')
    result = invoke(["sft", "--model", str(sft_kit["base"]), str(data), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vidcli sft: error: {data}:2: not valid JSON")
    missing = tmp_path / "missing.jsonl"
    data.write_text('{"id": "m", "instruction": "x", "cot": {"target": "y"}, '
                    '"conditions": [{"type": "identity", "path": "face.png"}]}\n')
    result = invoke(["sft", "--model", str(sft_kit["base"]), str(data), str(missing), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1  # a missing input file is found before anything is read
    assert result.stderr == f"vidcli sft: error: {missing}: input file not found\n"
    result = invoke(["sft", "--model", str(sft_kit["base"]), str(data), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"vidcli sft: error: {data}:1: id=m: conditions[0] (identity): file not found")


def test_output_folder_of_another_run_needs_resume(sft_kit, tmp_path):
    first = invoke(sft_args(sft_kit, tmp_path / "run", "--max-steps", "1"))
    assert first.exit_code == 0, first.stderr
    again = invoke(sft_args(sft_kit, tmp_path / "run", "--max-steps", "1"))
    assert again.exit_code == 1 and "already holds a training run; pass --resume" in again.stderr
    # Resuming a finished run with the same length has nothing left to do.
    done = invoke(sft_args(sft_kit, tmp_path / "run", "--max-steps", "1", "--resume"))
    assert done.exit_code == 0, done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_qlora_on_cpu_is_a_usage_error(sft_kit, tmp_path):
    result = invoke(sft_args(sft_kit, tmp_path / "run", "--finetune", "qlora"))
    assert result.exit_code == 2 and "needs a CUDA GPU" in result.stderr


def test_usage_errors_exit_2(sft_kit, tmp_path):
    result = invoke(sft_args(sft_kit, tmp_path / "run", "--stage", "camera", "--finetune", "lora"))
    assert result.exit_code == 2 and "leave --finetune at full" in result.stderr
    assert invoke(sft_args(sft_kit, tmp_path / "run", "--instruction-dropout", "1.5")).exit_code == 2
    assert invoke(["sft", "--model", "m", "-o", str(tmp_path)]).exit_code == 2  # no INPUT


def test_report_to_tensorboard(sft_kit, tmp_path):
    from accelerate.utils import is_tensorboard_available

    result = invoke(sft_args(sft_kit, tmp_path / "run", "--max-steps", "2", "--report-to", "tensorboard"))
    if not is_tensorboard_available():
        assert result.exit_code == 1 and "pip install tensorboard" in result.stderr
        return
    assert result.exit_code == 0, result.stderr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "run" / "logs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    losses = [e.step for e in events.Scalars("loss")]
    assert losses == [1, 2]
