"""``vidcli grpo`` end to end: help, an embed-judged run killed with SIGKILL and resumed, two processes, errors."""
from __future__ import annotations

import json

import pytest
import torch

from tests.cli.helpers import invoke, kill_when, read_jsonl
from tests.test_grpo import grpo_kit  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

MARKER = "sk-test-marker-9c2e41"


def grpo_args(kit, out, *extra) -> list[str]:
    return ["grpo", "--model", str(kit["base"]), str(kit["data"]), "-o", str(out), "-G", "3", "--judge", "embed",
            "--finetune", "lora", "--max-completion-tokens", "6", "--video-frames", "4", "--lr", "1e-3",
            "--warmup-steps", "1", "--beta", "0.05", "--seed", "2", "-q", *extra]


def adapter(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_help_lists_defaults_and_examples():
    result = invoke(["grpo", "--help"])
    assert result.exit_code == 0
    for text in ("Examples:", "accelerate launch -m vidcli grpo", "default: 2.5e-06", "default: 0.001",
                 "default: 768", "--judge-mode [elements|number]", "--num-iterations", "default: 8",
                 "default: constant", "default: 50", "--finetune [full|lora|qlora]", "default: full",
                 "raise --lr", "--instruction-dropout", "default: 0.4", "--drop-long-prompts", "default: 2048",
                 "--judge SPEC"):
        assert text in result.output, text
    assert "grpo" in invoke(["--help"]).output


def test_sigkill_after_a_checkpoint_then_resume_matches_an_uninterrupted_run(grpo_kit, tmp_path):
    steps = ["--max-steps", "4", "--save-every", "2", "--judge", "embed"]
    reference = invoke(grpo_args(grpo_kit, tmp_path / "ref", *steps))
    assert reference.exit_code == 0, reference.stderr

    out = tmp_path / "run"
    kill_when(grpo_args(grpo_kit, out, *steps), lambda: (out / "checkpoint-2").is_dir(),
              env={"OMP_NUM_THREADS": "1", "OPENAI_API_KEY": MARKER})  # same threads as in-process
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
    result = invoke(["grpo", "--model", str(grpo_kit["base"]), "--judge", "embed", str(data),
                     "-o", str(tmp_path / "run")])
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


def test_the_judge_is_an_explicit_choice(grpo_kit, tmp_path):
    result = invoke(["grpo", "--model", str(grpo_kit["base"]), str(grpo_kit["data"]), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    message = result.stderr.strip().splitlines()[-1]
    for text in ("choose a judge with --judge", "openai:MODEL", "--judge-mode number", "temperature 0.3",
                 "50 tokens", "hf:PATH", "embed", "cannot detect contradictions"):
        assert text in message, text
    assert not (tmp_path / "run").exists()


def video_args(models, *extra) -> list[str]:
    return ["--reward", "video-feedback", "--generator", str(models["wan"]), "--vlm", f"hf:{models['vlm']}",
            "--render-steps", "2", "--render-frames", "5", "--render-height", "32", "--render-width", "32",
            "--render-guidance", "1", "--vlm-frames", "3", *extra]


def test_video_feedback_run_writes_its_parts(grpo_kit, tiny_models, tmp_path):
    data = tmp_path / "rl.jsonl"
    data.write_text(json.dumps({"id": "txt", "instruction": "a brown dog runs",
                                "key_info": {"user": {"objects": [{"name": "dog", "attributes": []}]},
                                             "supplementary": {}, "imaginative": {}}}) + "\n")
    kit = {**grpo_kit, "data": data}
    args = grpo_args(kit, tmp_path / "run", "--max-steps", "1", "--grad-accum", "1", "-G", "2",
                     *video_args(tiny_models, "--video-weight", "2.5"))
    result = invoke(args)
    assert result.exit_code == 0, result.stderr
    rows = read_jsonl(tmp_path / "run" / "rollouts.jsonl")
    assert len(rows) == 2
    weights = {"format": 1.0, "user": 1.0, "detail": 1.0, "supp": 0.8}
    for row in rows:
        # The tiny random policy writes no answer block: R_video is 0 and nothing was rendered.
        assert "<answer>" not in row["completion"]
        assert row["parts"]["video"] == 0.0 and row["video"] == {"prompt": None, "seed": None, "questions": []}
        assert row["reward"] == pytest.approx(sum(w * row["parts"][k] for k, w in weights.items()))
    info = json.loads((tmp_path / "run" / "vidcli.json").read_text())
    feedback = info["reward"]["video_feedback"]
    assert info["reward"]["kind"] == "video-feedback" and feedback["weight"] == 2.5
    assert feedback["generator"] == str(tiny_models["wan"]) and feedback["vlm"] == f"hf:{tiny_models['vlm']}"
    assert info["metrics"]["reward/video"] == 0.0


def test_video_feedback_flag_mistakes_exit_2(grpo_kit, tiny_models, tmp_path):
    out = tmp_path / "run"
    cases = [
        (["--reward", "video-feedback"], "needs --generator PIPELINE_DIR and --vlm hf:PATH"),
        (["--generator", str(tiny_models["wan"])], "--generator applies to --reward video-feedback only"),
        (["--render-steps", "3"], "--render-steps applies to --reward video-feedback only"),
        (video_args(tiny_models, "--vlm", "openai:gpt-4o"), "needs a local model"),
        (video_args(tiny_models, "--render-frames", "8"), "--render-frames must be 4k+1"),
        (video_args(tiny_models, "--render-width", "40"), "must be multiples of 16"),
        (video_args(tiny_models, "--vlm-frames", "9"), "--vlm-frames 9 is more than --render-frames 5"),
        (video_args(tiny_models, "--generator", str(tmp_path / "missing")), "does not exist"),
    ]
    for extra, message in cases:
        result = invoke(grpo_args(grpo_kit, out, *extra))
        assert result.exit_code == 2 and message in result.stderr, (extra, result.stderr)
    assert not out.exists()
