"""Every trainer's setup at the published sizes, built on the meta device from config files alone.

The folders in ``tests/data/realsize/`` hold the published configuration files of each
model and no weights (sources and cross-checks in ``tests/data/realsize/SOURCES.md``).
Each recipe's own ``build_models`` — the code a user's run takes — builds them under
:func:`vidcli.weights.without_weights`; the tests check the parameter counts against the
totals the model publishers state (the safetensors metadata of the checkpoints: exact,
tolerance 0), which parameters train, the LoRA targets, the camera projector's width,
the dtypes each model is held in, and that nothing is materialised.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vidcli import weights
from vidcli.train.core import RunConfig

REALSIZE = Path(__file__).resolve().parent / "data" / "realsize"

# Published totals (SOURCES.md): the checkpoints' safetensors metadata, parameter counts.
QWEN25_VL_7B = 8_292_166_656
QWEN25_VL_3B = 3_754_622_976
QWEN2_VL_7B = 8_291_375_616
OMNI_THINKER = 8_931_813_888
WAN_13B_DIT = 1_418_996_800
WAN_14B_DIT = 14_288_491_584
WAN_VAE = 126_892_531
UMT5_XXL_ENCODER = 5_680_910_336
COGVIDEOX_2B_DIT = 1_693_783_872
COGVIDEOX_5B_DIT = 5_570_283_072
T5_XXL_ENCODER = 4_762_310_656


def count(params) -> int:
    return sum(p.numel() for p in params)


def run_config(tmp_path: Path) -> RunConfig:
    return RunConfig(output_dir=tmp_path / "run")


def on_meta(*modules: torch.nn.Module) -> bool:
    return all(t.device.type == "meta" for m in modules for t in [*m.parameters(), *m.buffers()])


def build_sft(tmp_path, model: str, **fields):
    from vidcli.train.sft import SFTConfig, SFTRecipe

    recipe = SFTRecipe(SFTConfig(model=str(REALSIZE / model), inputs=[], run=run_config(tmp_path), **fields))
    with weights.without_weights():
        recipe.build_models("cuda", "bf16")
    return recipe


@pytest.mark.parametrize("model, total", [("qwen2.5-vl-7b", QWEN25_VL_7B), ("qwen2.5-vl-3b", QWEN25_VL_3B),
                                          ("qwen2-vl-7b", QWEN2_VL_7B), ("qwen2.5-omni-7b", OMNI_THINKER)])
def test_sft_full_builds_every_interpreter_at_its_published_size(tmp_path, model, total):
    recipe = build_sft(tmp_path, model, finetune="full")
    interpreter = recipe.interpreter
    assert count(interpreter.model.parameters()) == total
    assert count(recipe.trainable) == total  # vision tower included: full fine-tuning trains everything
    assert on_meta(interpreter.model)
    assert {p.dtype for p in interpreter.model.parameters()} == {torch.float32}  # the optimiser's master weights
    assert interpreter.processor is None  # a configuration-only folder: no tokenizer was needed


def test_sft_camera_stage_trains_only_a_camera_encoder_projecting_to_the_llm_width(tmp_path):
    recipe = build_sft(tmp_path, "qwen2.5-omni-7b", stage="camera")
    encoder = recipe.interpreter.camera_encoder
    assert encoder.config.out_hidden_size == 3584  # the Omni-7B thinker's hidden size
    assert encoder.projector[-1].out_features == 3584
    assert {id(p) for p in recipe.trainable} == {id(p) for p in encoder.parameters()}
    assert not any(p.requires_grad for p in recipe.interpreter.model.parameters())
    # ViT-S-sized encoder: patch embedding, 8 blocks of width 512, two-layer projector into 3584.
    c = encoder.config
    blocks = c.depth * (4 * c.hidden_size ** 2 + 4 * c.hidden_size  # attention: qkv + out, with biases
                        + 2 * int(c.hidden_size * c.mlp_ratio) * c.hidden_size + int(c.hidden_size * c.mlp_ratio)
                        + c.hidden_size + 4 * c.hidden_size)  # mlp with biases, two layer norms
    patch = c.in_channels * c.patch_size ** 2 * c.hidden_size + c.hidden_size
    projector = c.hidden_size * 3584 + 3584 + 3584 * 3584 + 3584
    assert count(encoder.parameters()) == patch + blocks + 2 * c.hidden_size + projector
    assert on_meta(encoder)


def test_sft_lora_targets_only_the_language_models_projections(tmp_path):
    recipe = build_sft(tmp_path, "qwen2.5-vl-7b", finetune="lora")
    model = recipe.interpreter.model
    lora = {n for n, _ in model.named_parameters() if "lora_" in n}
    assert lora and all(not re.search(r"visual|vision|audio", n) for n in lora)
    targets = {re.sub(r".*\.(\w+_proj)\.lora_[AB].*", r"\1", n) for n in lora}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # rank 16 on 28 layers: r·(in + out) per projection.
    h, kv, inter, r = 3584, 512, 18944, 16
    per_layer = r * ((h + h) + (h + kv) * 2 + (h + h) + (h + inter) * 2 + (inter + h))
    assert count(recipe.trainable) == 28 * per_layer
    assert {id(p) for p in recipe.trainable} == {id(p) for p in model.parameters() if p.requires_grad}
    base = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
    assert base == {torch.bfloat16}  # the frozen base in the compute dtype under bf16 mixed precision
    assert {p.dtype for p in recipe.trainable} == {torch.float32}
    assert count(p for n, p in model.named_parameters() if "lora_" not in n) == QWEN25_VL_7B
    assert on_meta(model)


def test_grpo_full_keeps_a_frozen_reference_in_the_compute_dtype(tmp_path):
    from vidcli.train.grpo import GRPOConfig, GRPORecipe

    recipe = GRPORecipe(GRPOConfig(model=str(REALSIZE / "qwen2.5-vl-7b"), inputs=[], run=run_config(tmp_path),
                                   finetune="full"))
    with weights.without_weights():
        recipe.build_models("cuda", "bf16")
    reference = recipe.reference.model
    assert count(reference.parameters()) == QWEN25_VL_7B
    assert {p.dtype for p in reference.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in reference.parameters())
    assert count(recipe.trainable) == QWEN25_VL_7B
    assert on_meta(reference, recipe.interpreter.model)


def test_grpo_lora_needs_no_second_copy(tmp_path):
    from vidcli.train.grpo import GRPOConfig, GRPORecipe

    recipe = GRPORecipe(GRPOConfig(model=str(REALSIZE / "qwen2.5-vl-7b"), inputs=[], run=run_config(tmp_path),
                                   finetune="lora"))
    with weights.without_weights():
        recipe.build_models("cuda", "bf16")
    assert recipe.reference is None  # adapters disabled on the policy itself


@pytest.mark.parametrize("generator, dit, text_encoder", [
    ("wan2.1-t2v-1.3b", WAN_13B_DIT, UMT5_XXL_ENCODER), ("wan2.1-t2v-14b", WAN_14B_DIT, UMT5_XXL_ENCODER),
    ("cogvideox-2b", COGVIDEOX_2B_DIT, T5_XXL_ENCODER), ("cogvideox-5b", COGVIDEOX_5B_DIT, T5_XXL_ENCODER)])
def test_drf_builds_generator_and_frozen_vlm_at_published_sizes(tmp_path, generator, dit, text_encoder):
    from vidcli.train.drf import DRFConfig, DRFRecipe

    recipe = DRFRecipe(DRFConfig(model=str(REALSIZE / generator), vlm=str(REALSIZE / "qwen2.5-vl-7b"), inputs=[],
                                 run=run_config(tmp_path)))
    with weights.without_weights():
        recipe.build_models("cuda", "bf16")
    pipe = recipe.adapter.pipe
    assert count(pipe.transformer.parameters()) == dit
    assert count(recipe.trainable) == dit
    assert {p.dtype for p in pipe.transformer.parameters()} == {torch.float32}
    assert count(pipe.text_encoder.parameters()) == text_encoder
    assert pipe.text_encoder.dtype == torch.bfloat16  # --text-encoder-dtype auto under bf16
    assert count(recipe.scorer.model.parameters()) == QWEN25_VL_7B
    assert recipe.scorer.model.dtype == torch.bfloat16  # --vlm-dtype auto under bf16
    if generator.startswith("wan"):
        assert count(pipe.vae.parameters()) == WAN_VAE
        assert pipe.vae.dtype == torch.float32  # as Wan advises
    assert not any(p.requires_grad for m in (pipe.vae, pipe.text_encoder, recipe.scorer.model)
                   for p in m.parameters())
    assert on_meta(pipe.transformer, pipe.text_encoder, pipe.vae, recipe.scorer.model)


def test_drf_lora_holds_the_dit_in_bf16_and_trains_float32_adapters(tmp_path):
    from vidcli.train.dit_tuning import LORA_TARGETS
    from vidcli.train.drf import DRFConfig, DRFRecipe

    recipe = DRFRecipe(DRFConfig(model=str(REALSIZE / "wan2.1-t2v-1.3b"), vlm=str(REALSIZE / "qwen2.5-vl-7b"),
                                 inputs=[], run=run_config(tmp_path), finetune="lora", lora_rank=64))
    with weights.without_weights():
        recipe.build_models("cuda", "bf16")
    dit = recipe.adapter.trainable_module()
    lora = {n: p for n, p in dit.named_parameters() if "lora_" in n}
    assert {id(p) for p in lora.values()} == {id(p) for p in recipe.trainable}
    assert {p.dtype for p in lora.values()} == {torch.float32}
    frozen = {p.dtype for n, p in dit.named_parameters() if "lora_" not in n}
    assert torch.bfloat16 in frozen
    # Wan keeps some norms and its time embedding in float32 whatever the dtype, as diffusers loads it.
    keep = set(type(dit)._keep_in_fp32_modules)
    kept = {n for n, _ in dit.named_parameters() if keep & set(n.split("."))}
    assert kept and all(p.dtype == torch.float32 for n, p in dit.named_parameters() if n in kept)
    targets = {re.sub(r"^blocks\.\d+\.(.*)\.lora_[AB].*", r"\1", n) for n in lora}
    assert targets == {"attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                       "attn2.to_v", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"}
    assert set(LORA_TARGETS) >= {"to_q", "ffn.net.2"}
    # rank 64 on 30 blocks: 8 attention projections 1536→1536, the feed-forward 1536→8960→1536.
    h, f, r = 1536, 8960, 64
    assert count(lora.values()) == 30 * r * (8 * (h + h) + (h + f) + (f + h))


def test_revise_builds_editor_and_critic(tmp_path):
    from vidcli.train.revise import ReviseConfig, ReviseRecipe

    recipe = ReviseRecipe(ReviseConfig(model=str(REALSIZE / "wan2.1-t2v-1.3b"), vlm=str(REALSIZE / "qwen2.5-vl-7b"),
                                       inputs=[], run=run_config(tmp_path)))
    with weights.without_weights():
        recipe.build_models("cuda", "bf16")
    assert count(recipe.trainable) == WAN_13B_DIT
    assert count(recipe.critic.scorer.model.parameters()) == QWEN25_VL_7B
    assert recipe.adapter.decode_checkpointing
    assert on_meta(recipe.adapter.pipe.transformer, recipe.critic.scorer.model)


def test_random_weights_build_the_same_architecture_on_a_device(tiny_models):
    """The real-size benchmarks' mode: the config's architecture, random numbers, on the device asked for."""
    from transformers import AutoModelForImageTextToText

    from vidcli.rewards.vlm import VLMScorer

    loaded = AutoModelForImageTextToText.from_pretrained(tiny_models["vlm"])
    with weights.random_weights("cpu"):
        scorer = VLMScorer.from_pretrained(tiny_models["vlm"], device="cpu")
    random_state, loaded_state = scorer.model.state_dict(), loaded.state_dict()
    assert random_state.keys() == loaded_state.keys()
    assert all(random_state[k].shape == loaded_state[k].shape for k in loaded_state)
    assert all(t.device.type == "cpu" for t in random_state.values())
    weight = "model.language_model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(random_state[weight], loaded_state[weight])  # not read from the checkpoint
    assert scorer.processor is not None  # the folder has one: it is read as usual
    assert weights.reading_weights()  # the mode ends with its block


def test_drf_memory_measures_reach_the_models(tmp_path):
    from vidcli.train.drf import DRFConfig, DRFRecipe

    recipe = DRFRecipe(DRFConfig(model=str(REALSIZE / "wan2.1-t2v-1.3b"), vlm=str(REALSIZE / "qwen2.5-vl-7b"),
                                 inputs=[], run=run_config(tmp_path), vae_dtype="bfloat16", vlm_checkpointing=True,
                                 offload_text_encoder=True, gradient_checkpointing=True))
    with weights.without_weights():
        recipe.build_models("cuda", "bf16")
    pipe, vlm = recipe.adapter.pipe, recipe.scorer.model
    assert pipe.vae.dtype == torch.bfloat16
    assert pipe.transformer.gradient_checkpointing
    checkpointed = getattr(vlm, "is_activation_checkpointing", None) or vlm.is_gradient_checkpointing
    assert checkpointed and vlm.training  # transformers recomputes only in training mode
    assert recipe.adapter.offloaded_text_encoder is not None
