"""Memory plans against measured memory: every trainer, small models of the real architectures, on CPU.

The plan measures activations on shape-only copies cut to one and two layers; here the
whole step is run for real (random weights, real records, the recipe's own code) with
:class:`~vidcli.plan.meter.LiveTensors` counting every tensor it allocates, and the peak
(the bytes held before the step — weights, optimiser state — plus the step's own peak)
must be within 10% of the plan. The small models are the tiny kit's widened and deepened
(6 language-model layers, 4 vision blocks, 6 DiT blocks), so the plan's scaling by depth
is what is tested.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vidcli import weights
from vidcli.plan import measures, plan_run
from vidcli.plan.interpreter import Workload
from vidcli.plan.meter import LiveTensors, storage_bytes
from vidcli.train.core import OptimConfig, RunConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "media"
TOLERANCE = 0.10


# ----------------------------------------------------------------------------- small models


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Config-only folders of small real-architecture models (weights come from random_weights)."""
    from vidcli.testing import ensure_tiny_models

    kit = ensure_tiny_models(["vlm", "wan"])
    root = tmp_path_factory.mktemp("small-models")
    vlm = root / "vlm"
    shutil.copytree(kit["vlm"], vlm, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((vlm / "config.json").read_text())
    text, hidden, heads = config["text_config"], 128, 4
    text.update(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=6, num_attention_heads=heads,
                num_key_value_heads=2)
    text.pop("layer_types", None)
    head_dim = hidden // heads
    (text.get("rope_parameters") or text["rope_scaling"])["mrope_section"] = [head_dim // 8, head_dim * 3 // 16,
                                                                              head_dim * 3 // 16]
    config["vision_config"].update(depth=4, hidden_size=64, intermediate_size=128, num_heads=2,
                                   out_hidden_size=hidden, fullatt_block_indexes=[3])
    (vlm / "config.json").write_text(json.dumps(config))
    wan = root / "wan"
    shutil.copytree(kit["wan"], wan, ignore=shutil.ignore_patterns("*.safetensors"))
    dit = wan / "transformer" / "config.json"
    dit_config = json.loads(dit.read_text())
    dit_config.update(num_layers=6, num_attention_heads=4, attention_head_dim=16, ffn_dim=256)
    dit.write_text(json.dumps(dit_config))
    data = root / "data"
    data.mkdir()
    for name in ("identity_a.png", "ball.mp4"):
        shutil.copy(EXAMPLES / name, data / name)
    return {"vlm": vlm, "wan": wan, "data": data}


def run_config(out: Path, batch: int = 1, accum: int = 1) -> RunConfig:
    return RunConfig(out, batch_size=batch, grad_accum=accum, save_every=0, max_steps=5, mixed_precision="no",
                     optim=OptimConfig(lr=1e-5, warmup_steps=0, schedule="constant"))


def write(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def measured_peak(recipe, step) -> int:
    """Bytes held before the step (weights, buffers, optimiser state) + the step's own peak."""
    optimizer = recipe.optimizer
    for group in optimizer.param_groups:  # the optimiser state exists before the measured step
        for param in group["params"]:
            param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    models = []
    if hasattr(recipe, "interpreter"):
        models += [recipe.interpreter.model, recipe.interpreter.camera_encoder, getattr(recipe, "reference", None)]
        models[-1] = models[-1].model if models[-1] is not None else None
    else:
        pipe = recipe.adapter.pipe
        models += [pipe.transformer, pipe.vae, pipe.text_encoder, recipe.scorer.model]
    tensors = [t for m in models if m is not None for t in (*m.parameters(), *m.buffers())]
    tensors += [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    held = storage_bytes(tensors)
    with LiveTensors() as meter:
        step()
    return held + meter.peak


def assert_close(plan, measured: int) -> None:
    ratio = plan.peak / measured
    assert abs(ratio - 1) <= TOLERANCE, f"planned {plan.peak:.0f} B, measured {measured} B (ratio {ratio:.3f})\n" \
                                        + plan.render()


# ----------------------------------------------------------------------------- the trainers


def sft_recipe(small, tmp_path, **fields):
    from vidcli.train.sft import SFTConfig, SFTRecipe

    target = "<think>" + "the person waves at the camera " * 12 + "</think><answer>1. Dense caption: a wave</answer>"
    records = [{"id": f"s{i}", "instruction": "make the person in the picture wave at the camera slowly",
                "conditions": [{"type": "identity", "path": "identity_a.png"}], "cot": {"target": target}}
               for i in range(4)]
    config = SFTConfig(model=str(small["vlm"]), inputs=[write(small["data"] / "sft.jsonl", records)],
                       run=run_config(tmp_path / "run", batch=2), instruction_dropout=0.0, **fields)
    recipe = SFTRecipe(config)
    with weights.random_weights("cpu"):
        recipe.setup()
    batch = recipe.batch(0, [0])
    labels = batch["labels"][0]
    image = recipe.interpreter.model.config.image_token_id
    work = Workload(int((labels == -100).sum()), int((batch["input_ids"][0] == image).sum()), int((labels != -100).sum()))
    recipe.save_checkpoint = lambda final=False, summary=None: config.run.output_dir  # measured steps write nothing
    recipe.total_steps = 1
    return recipe, config, work


@pytest.mark.parametrize("fields", [dict(finetune="full", gradient_checkpointing=True), dict(finetune="lora")],
                         ids=["full-checkpointing", "lora"])
def test_sft_plan_matches_a_measured_step(small, tmp_path, fields):
    recipe, config, work = sft_recipe(small, tmp_path, **fields)
    assert work.visual_tokens > 0  # the vision tower is in the step
    measured = measured_peak(recipe, recipe.train)
    assert_close(plan_run("sft", config, workload=work), measured)


@pytest.mark.parametrize("finetune", ["full"])
def test_grpo_plan_matches_a_measured_step(small, tmp_path, finetune):
    import sys

    from vidcli.train.grpo import GRPOConfig, GRPORecipe

    sys.path.insert(0, str(Path(__file__).parent / "bench"))
    from gpu_realsize import LengthReward

    key = {k: {"objects": [{"name": "ball", "attributes": ["red"]}], "actions": ["rolls"], "camera": [], "style": []}
           for k in ("user", "supplementary", "imaginative")}
    records = [{"id": f"g{i}", "instruction": "a red ball rolls over the grass " * 4, "key_info": key}
               for i in range(4)]
    config = GRPOConfig(model=str(small["vlm"]), inputs=[write(small["data"] / "grpo.jsonl", records)],
                        run=run_config(tmp_path / "run"), finetune=finetune, num_generations=4,
                        max_completion_tokens=48, min_completion_tokens=48, instruction_dropout=0.0)
    recipe = GRPORecipe(config, LengthReward())
    with weights.random_weights("cpu"):
        recipe.setup()
    prompt = int(recipe.interpreter.encode(recipe.requests([0]))["attention_mask"][0].sum())
    recipe.save_checkpoint = lambda final=False, summary=None: config.run.output_dir
    recipe.total_steps = 1
    measured = measured_peak(recipe, recipe.train)
    assert_close(plan_run("grpo", config, workload=Workload(prompt, 0, 48)), measured)


DRF_RECORD = {"id": "ball", "caption": "a red ball", "video": "ball.mp4", "questions": [
    {"dim": "TA", "key": "objects", "question": "Is there a red ball?",
     "reference": {"answer": "Yes", "explanation": "A red ball rolls."}},
    {"dim": "VQ", "key": "quality", "question": "Is the first video blurry?",
     "reference": {"answer": "No", "issue": "none", "explanation": "Sharp."}}]}


@pytest.mark.parametrize("fields", [dict(finetune="full"),
                                    dict(finetune="lora", gradient_checkpointing=True, decode_checkpointing=False)],
                         ids=["full", "lora-dit-checkpointing-plain-decode"])
def test_drf_plan_matches_a_measured_step(small, tmp_path, fields):
    from vidcli.train.drf import DRFConfig, DRFRecipe

    config = DRFConfig(model=str(small["wan"]), vlm=str(small["vlm"]),
                       inputs=[write(small["data"] / "drf.jsonl", [DRF_RECORD])], run=run_config(tmp_path / "run"),
                       frames=9, height=64, width=96, frames_vlm=4, steps=4, k_grad=2, guidance=5.0, **fields)
    recipe = DRFRecipe(config)
    with weights.random_weights("cpu"):
        recipe.setup()
    measured = measured_peak(recipe, recipe.optimise)
    plan = plan_run("drf-tune", config)
    assert "counted in the 1 records" in " ".join(plan.notes)  # the VLM's tokenizer read the real questions
    assert_close(plan, measured)


def test_revise_plan_matches_a_measured_step(small, tmp_path):
    from vidcli.train.revise import ReviseConfig, ReviseRecipe

    record = {"id": "t", "instruction": "move the ball", "source": {"video": "ball.mp4", "start": 0, "end": 1},
              "target": {"video": "ball.mp4", "start": 1, "end": 2}}
    config = ReviseConfig(model=str(small["wan"]), vlm=str(small["vlm"]),
                          inputs=[write(small["data"] / "triplets.jsonl", [record])], run=run_config(tmp_path / "run"),
                          frames=9, height=64, width=96, frames_critic=4, sigma_max=1.0, critic_reasoning="none")
    recipe = ReviseRecipe(config)
    with weights.random_weights("cpu"):
        recipe.setup()
    measured = measured_peak(recipe, recipe.optimise)
    assert_close(plan_run("revise-tune", config), measured)


# ----------------------------------------------------------------------------- the meters


def test_live_tensors_counts_what_a_block_allocates_and_frees():
    before = torch.ones(1000)  # existed before: never counted, views of it neither
    with LiveTensors() as meter:
        view = before[10:]
        a = torch.zeros(250)  # 1000 B
        b = torch.zeros(500)  # 2000 B
        del a
        c = b * 2  # 2000 B
        assert meter.current == 4000
        meter.discount(c)
        del c
        assert meter.current == 2000
    assert meter.peak == 4000  # b + c
    assert meter.peak_without() == 3000  # a + b, before c (left out) appeared
    assert view.shape == (990,)


def test_shape_only_readings_equal_real_ones():
    from vidcli.plan.probe import fake_mode, measure

    layer = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
    x = torch.zeros(32, 64)

    def step(meter):
        out = layer(x).sum()
        held = meter.current
        out.backward()
        return held

    real = measure(step, layer.parameters())
    fake = fake_mode()
    with fake:
        fake_layer = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
        x = torch.zeros(32, 64)
    layer = fake_layer
    shapes_only = measure(step, layer.parameters(), fake)
    assert (shapes_only.peak, shapes_only.held) == (real.peak, real.held) and real.held > 32 * 256 * 4


# ----------------------------------------------------------------------------- the command line


def test_plan_from_a_folder_of_config_files(small, tmp_path):
    from click.testing import CliRunner

    from vidcli.cli import cli

    result = CliRunner().invoke(cli, ["revise-tune", "--plan", "--model", str(small["wan"]), "--vlm", str(small["vlm"]),
                                      "--frames", "9", "--height", "64", "--width", "96", "--frames-critic", "4",
                                      "--gpu-memory", "0.00001", "none.jsonl", "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "revise-tune --plan" in out and "peak" in out and "critic: forward and backward" in out
    assert "over --gpu-memory" in out and "--gradient-checkpointing" in out  # the measures, in order
    assert not (tmp_path / "run").exists()  # a plan trains nothing and writes nothing
    assert not list(small["wan"].rglob("*.safetensors"))  # config files only


def test_measures_come_in_the_order_that_changes_the_method_least(small, tmp_path):
    from vidcli.train.drf import DRFConfig

    config = DRFConfig(model=str(small["wan"]), vlm=str(small["vlm"]), inputs=[], run=run_config(tmp_path),
                       vlm_dtype="float32", decode_checkpointing=False)
    flags = [flags for flags, _ in measures("drf-tune", config)]
    assert flags[:3] == ["--vlm-dtype bf16", "--decode-checkpointing", "--gradient-checkpointing"]
    assert flags.index("--finetune lora (raise --lr)") < flags.index(
        "--k-grad 1 (changes the method: the paper's ablation)")


def test_accelerate_config_sharding(tmp_path):
    from vidcli.plan.static import read_accelerate_config

    zero3 = tmp_path / "zero3.yaml"
    zero3.write_text("distributed_type: DEEPSPEED\nnum_processes: 8\ndeepspeed_config:\n  zero_stage: 3\n"
                     "  offload_optimizer_device: cpu\n")
    sharding = read_accelerate_config(zero3, None)
    assert (sharding.processes, sharding.stage, sharding.offload_optimizer) == (8, 3, True)
    fsdp = tmp_path / "fsdp.yaml"
    fsdp.write_text("distributed_type: FSDP\nnum_processes: 4\nfsdp_config:\n  fsdp_sharding_strategy: SHARD_GRAD_OP\n")
    assert (read_accelerate_config(fsdp, 2).processes, read_accelerate_config(fsdp, None).stage) == (2, 2)
    assert read_accelerate_config(None, 3).processes == 3
