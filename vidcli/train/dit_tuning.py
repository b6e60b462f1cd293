"""Fine-tuning a video DiT: the pieces ``drf-tune`` and ``revise-tune`` share.

- **Loading** (:func:`load_generator`, :func:`train_dit`): the generator's DiT in float32
  for full fine-tuning (the optimiser's master weights) or, under LoRA, frozen in the
  compute dtype with float32 adapters on its attention and feed-forward projections
  (:data:`LORA_TARGETS`); text encoder and VAE frozen in their flags' dtypes.
- **The prepared module** (:class:`TrainedDenoiser`): accelerate wraps the DiT with the
  recipe's call into it as forward, so DDP/FSDP synchronise what the recipe computes.
- **Saving** (:func:`save_pipeline`): a diffusers pipeline folder — the tuned
  ``transformer/`` (full) or ``pytorch_lora_weights.safetensors`` (LoRA), the scheduler
  when ``--shift`` changed it, links to the other components of the base pipeline — so
  ``WanPipeline.from_pretrained(OUTPUT)`` (plus ``load_lora_weights(OUTPUT)``) loads it.

The settings read here are declared once, in :class:`~vidcli.train.dit_config.DitTuning`, which
:class:`~vidcli.train.drf.DRFConfig` and :class:`~vidcli.train.revise.ReviseConfig` extend
(plus ``model`` and drf-tune's ``shift``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vidcli.diffusion import LORA_WEIGHTS
from vidcli.errors import InputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from accelerate import Accelerator

    from vidcli.train.core import RunConfig
    from vidcli.train.optim import OptimConfig

# The DiT blocks' attention and feed-forward projections (Wan and CogVideoX name them alike).
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2", "ff.net.0.proj", "ff.net.2"]
class TrainedDenoiser(torch.nn.Module):
    """The module accelerate prepares: the DiT, with the recipe's call into it as forward.

    DDP (or FSDP) synchronises the gradients of forward passes made through the wrapper
    that ``accelerator.prepare`` returns, but the recipes reach the DiT through an
    adapter call (``adapter.denoise`` in the rollout, the editor's velocity in
    revise-tune); that call becomes the wrapper's forward.
    """

    def __init__(self, dit: torch.nn.Module, call) -> None:
        super().__init__()
        self.dit = dit
        self.call = call  # a bound method of the adapter or editor, not a registered module

    def forward(self, *args):
        return self.call(*args)


def check_same_tuning(folder: Path, saved: dict, finetune: str, flag: str, value: str) -> None:
    """A resumed run keeps ``--finetune`` and its method's flag (``--reward``, ``--objective``)."""
    if saved.get("finetune") != finetune or saved.get(flag) != value:
        raise InputError(f"--resume: {folder} was trained with --finetune {saved.get('finetune')} "
                         f"--{flag} {saved.get(flag)}")


def frozen_dtype(chosen: str, mixed_precision: str | None) -> str:
    """The dtype a frozen model is held in: its flag's, or under ``auto`` the compute dtype."""
    from vidcli.train.start import compute_dtype

    return compute_dtype(mixed_precision) if chosen == "auto" else chosen


def load_generator(config, *, device: str, mixed_precision: str | None, resume_from: Path | None):
    """The generator adapter (DiT, text encoder, VAE) placed in the dtypes the run trains it in."""
    from vidcli.diffusion import OffloadedTextEncoder, load_adapter, set_flow_shift
    from vidcli.train.start import compute_dtype

    full_resume = resume_from is not None and config.finetune == "full"
    adapter = load_adapter(resume_from if full_resume else config.model, device=device,
                           dtype="float32" if config.finetune == "full" else compute_dtype(mixed_precision),
                           text_encoder_dtype=frozen_dtype(config.text_encoder_dtype, mixed_precision),
                           vae_dtype=config.vae_dtype)
    adapter.decode_checkpointing = config.decode_checkpointing
    if config.fold_text_padding:
        adapter.fold_text_padding()
    if getattr(config, "shift", None) is not None:  # drf-tune's --shift (revise-tune draws its own t)
        set_flow_shift(adapter.pipe, config.shift)
    if config.offload_text_encoder:
        adapter.offloaded_text_encoder = OffloadedTextEncoder(adapter.pipe, adapter.device)
    return adapter


def train_dit(adapter, config, resume_from: Path | None):
    """Make the DiT trainable (all weights, or LoRA adapters, restored on resume), in training mode;
    returns ``(trainable parameters, LoRA config or None)``."""
    dit = adapter.trainable_module()
    dit.requires_grad_(config.finetune == "full")
    lora_config = None
    if config.finetune == "lora":
        lora_config = _add_lora(dit, config, resume_from)
        for param in dit.parameters():
            if param.requires_grad:  # adapters take the base's dtype; the optimiser wants float32
                param.data = param.data.float()
    if config.gradient_checkpointing:
        dit.enable_gradient_checkpointing()
    dit.train()
    return [p for p in dit.parameters() if p.requires_grad], lora_config


def _add_lora(dit: torch.nn.Module, config, resume_from: Path | None):
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    lora_config = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=LORA_TARGETS)
    dit.add_adapter(lora_config)  # diffusers' own peft integration: the module keeps its class
    if resume_from is not None:
        state = load_file(resume_from / LORA_WEIGHTS)
        prefix = "transformer."
        set_peft_model_state_dict(dit, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return lora_config


def prepare_denoiser(accelerator: "Accelerator", adapter, call, optim: "OptimConfig"):
    """``(prepared TrainedDenoiser, optimiser)`` over the adapter's DiT, whose forward is ``call``."""
    from vidcli.train.optim import build_optimizer
    from vidcli.train.start import aligned_storage

    dit = adapter.trainable_module()
    aligned_storage(dit)  # the same memory layout whatever the process count (see there)
    return accelerator.prepare(TrainedDenoiser(dit, call), build_optimizer(dit.named_parameters(), optim))


def synced(accelerator: "Accelerator", denoiser, last: bool):
    """Gradients are averaged over processes on a step's last backward only (no_sync before)."""
    return contextlib.nullcontext() if last else accelerator.no_sync(denoiser)


def samples_due(run: "RunConfig", step: int, total_steps: int) -> bool:
    """Whether the trackers get media at ``step``: every ``--log-samples-every`` steps (0 included)
    and at the last step; never without a tracker. The same answer on every process."""
    every = run.log_samples_every
    return bool(run.trackers) and bool(every) and (step % every == 0 or step == total_steps)


def save_pipeline(folder: Path, adapter, config, *, base_model: str, lora_config) -> None:
    """A diffusers pipeline folder: the tuned transformer (or LoRA weights), the scheduler when
    ``--shift`` changed it, and links to the rest of ``base_model``."""
    base = Path(base_model).resolve()
    dit = adapter.trainable_module()
    own = {"transformer"} if config.finetune == "full" else set()
    if getattr(config, "shift", None) is not None:
        own.add("scheduler")
        adapter.pipe.scheduler.save_pretrained(folder / "scheduler")
    for entry in base.iterdir():
        if entry.name == "model_index.json":
            shutil.copy2(entry, folder / entry.name)
        elif entry.is_dir() and entry.name not in own:
            os.symlink(entry.resolve(), folder / entry.name, target_is_directory=True)
    if config.finetune == "full":
        dit.save_pretrained(folder / "transformer", safe_serialization=True)
    else:
        from peft.utils import get_peft_model_state_dict

        type(adapter.pipe).save_lora_weights(
            folder, transformer_lora_layers=get_peft_model_state_dict(dit), weight_name=LORA_WEIGHTS,
            transformer_lora_adapter_metadata=lora_config.to_dict())
