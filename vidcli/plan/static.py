"""Memory that is counted, not measured: weights, gradients, optimiser state, and their sharding."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from vidcli.errors import InputError
from vidcli.plan.report import Term, count_text


@dataclass(frozen=True)
class Sharding:
    """How the trained model's state is split over processes (accelerate's DeepSpeed / FSDP settings).

    ``stage`` follows ZeRO: 0 replicates everything (DDP), 1 shards the optimiser state,
    2 the gradients too, 3 the trained weights too. Frozen models the recipe does not
    hand to accelerate (a VLM reward, a text encoder) are replicated in every case.
    """

    processes: int = 1
    stage: int = 0
    offload_optimizer: bool = False
    offload_weights: bool = False
    source: str = "1 process"

    def share(self, at_stage: int) -> int:
        """The divisor for state sharded from ``at_stage`` on."""
        return self.processes if self.stage >= at_stage else 1


def read_accelerate_config(path: str | os.PathLike | None, processes: int | None) -> Sharding:
    """The sharding of an ``accelerate config`` file (YAML or JSON); DDP when there is none.

    ``processes`` overrides the file's ``num_processes``. Without a file, accelerate's
    default config is read when it exists (``$HF_HOME/accelerate/default_config.yaml``).
    """
    if path is None:
        home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
        default = home / "accelerate" / "default_config.yaml"
        path = default if default.is_file() else None
    if path is None:
        return Sharding(processes or 1, source=f"{processes or 1} process(es), no accelerate config")
    try:
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith(".json"):
            config = json.loads(text)
        else:
            import yaml

            config = yaml.safe_load(text)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the accelerate config: {exc}", file=str(path)) from None
    if not isinstance(config, dict):
        raise InputError("the accelerate config is not a mapping", file=str(path))
    n = int(processes or config.get("num_processes") or 1)
    kind = str(config.get("distributed_type", "NO")).upper()
    if kind == "DEEPSPEED":
        ds = config.get("deepspeed_config") or {}
        stage = int(ds.get("zero_stage", 0) or 0)
        return Sharding(n, stage, offload_optimizer=str(ds.get("offload_optimizer_device", "none")) != "none",
                        offload_weights=str(ds.get("offload_param_device", "none")) != "none",
                        source=f"{n} processes, DeepSpeed ZeRO-{stage} ({path})")
    if kind == "FSDP":
        fsdp = config.get("fsdp_config") or {}
        strategy = str(fsdp.get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
        stage = {"FULL_SHARD": 3, "1": 3, "HYBRID_SHARD": 3, "SHARD_GRAD_OP": 2, "2": 2, "NO_SHARD": 0,
                 "3": 0}.get(strategy, 3)
        offload = bool(fsdp.get("fsdp_offload_params", False))
        return Sharding(n, stage, offload_optimizer=offload, offload_weights=offload,
                        source=f"{n} processes, FSDP {strategy} ({path})")
    return Sharding(n, 0, source=f"{n} process(es), {kind.lower()} ({path})")


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of distinct tensors (meta tensors too: shape × element size)."""
    seen: dict[int, int] = {}
    for t in tensors:
        seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def module_bytes(module: nn.Module, *, trained: bool | None = None) -> int:
    """Parameter and buffer bytes of a module; only trained (or only frozen) parameters when asked."""
    params = [p for p in module.parameters() if trained is None or p.requires_grad == trained]
    buffers = list(module.buffers()) if trained is not True else []
    return tensor_bytes([*params, *buffers])


def dtypes_text(module: nn.Module) -> str:
    counts: dict[str, int] = {}
    for p in module.parameters():
        name = str(p.dtype).removeprefix("torch.")
        counts[name] = counts.get(name, 0) + p.numel()
    return " + ".join(f"{count_text(n)} {d}" for d, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def weight_term(name: str, module: nn.Module, sharding: Sharding, *, trained: bool) -> Term:
    """A model's weights: counted by dtype from the meta build; trained weights sharded at stage 3."""
    total = module_bytes(module)
    how = f"counted: {count_text(sum(p.numel() for p in module.parameters()))} parameters ({dtypes_text(module)})"
    if trained and sharding.stage >= 3:
        if sharding.offload_weights:
            return Term("weights", name, 0.0, how + ", offloaded to CPU (ZeRO-3 / FSDP offload)")
        trained_bytes = module_bytes(module, trained=True)
        total = total - trained_bytes + trained_bytes / sharding.processes
        how += f", trained ones / {sharding.processes} processes"
    return Term("weights", name, float(total), how)


def trained_terms(parameters: list[nn.Parameter], optimizer: str, sharding: Sharding) -> list[Term]:
    """Gradients (float32, as the parameters) and AdamW moments of the trained parameters."""
    n = sum(p.numel() for p in parameters)
    grad = sum(p.numel() * p.element_size() for p in parameters)
    gdiv = sharding.share(2)
    terms = [Term("gradients", "trained parameters", grad / gdiv,
                  f"counted: {count_text(n)} × {grad / max(n, 1):.0f} B" + (f" / {gdiv}" if gdiv > 1 else ""))]
    per = 2.0 + 2 * 2 / 256 if optimizer == "adamw8bit" else 8.0  # 8-bit moments with fp32 block scales
    odiv = sharding.share(1)
    how = ("counted: 2 moments × 1 B + block scales" if optimizer == "adamw8bit" else
           "counted: 2 moments × 4 B") + f" × {count_text(n)}" + (f" / {odiv}" if odiv > 1 else "")
    if sharding.offload_optimizer:
        terms.append(Term("optimizer", f"{optimizer} state", 0.0, how + ", offloaded to CPU"))
    else:
        terms.append(Term("optimizer", f"{optimizer} state", per * n / odiv, how))
    return terms
