"""Fine-tuning the interpreter: the pieces ``sft`` and ``grpo`` share.

- **Loading** (:func:`load_interpreter`): ``full`` trains float32 master weights of the
  whole backbone; ``lora`` and ``qlora`` put peft adapters on the language model's
  attention and MLP projections (:data:`LORA_TARGETS`) over a frozen base held in the
  compute dtype — QLoRA loads the base in 4-bit NF4 through bitsandbytes and needs CUDA.
  A resumed full run loads the checkpoint folder itself; a resumed adapter run builds
  the base exactly as a fresh run does, then takes the checkpoint's adapter and camera
  encoder weights. ``merge_adapter`` (grpo) merges an adapter that ``--model`` carries
  (an SFT LoRA checkpoint) into its base first, so new adapters train on top of it.
- **Prompts** (:func:`record_request`, :func:`check_prompt_lengths`): a record's
  interpreter request, and every prompt measured against its budget before the first
  step.

The settings read here are fields that :class:`~vidcli.train.sft.SFTConfig` and
:class:`~vidcli.train.grpo.GRPOConfig` both have: ``model``, ``finetune``, ``lora``,
``gradient_checkpointing``, ``trust_remote_code``, ``media_root``, ``allow_escape``,
``video_frames``, ``drop_long_prompts``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from vidcli.errors import InputError
from vidcli.train.sft_data import CAMERA_PROMPT

log = logging.getLogger("vidcli.train")

FINETUNE = ("full", "lora", "qlora")
# The language model's attention and MLP projections; never the vision or audio towers,
# whose blocks reuse some of these names (Qwen2.5-VL's vision MLP, Omni's audio encoder).
LORA_TARGETS = r"^(?!.*(?:visual|vision|audio)).*\.(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


@dataclass
class LoraSettings:
    """peft LoRA adapter shape: rank 16, alpha 32 (scale 2), dropout 0.05."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: str = LORA_TARGETS


def load_interpreter(config, *, device: str, mixed_precision: str | None, resume_from: Path | None,
                     stage: str = "cot", merge_adapter: bool = False):
    """The interpreter from ``config.model``, or from the checkpoint being resumed, as the run trains it."""
    import torch

    from vidcli import weights
    from vidcli.interpreter.model import Interpreter
    from vidcli.train.start import compute_dtype

    qlora, adapters = config.finetune == "qlora", config.finetune != "full"
    if qlora and not torch.cuda.is_available() and weights.reading_weights():
        raise InputError("--finetune qlora needs a CUDA GPU (bitsandbytes 4-bit); use lora or full on this machine")
    source = str(resume_from) if resume_from is not None and not adapters else config.model
    # Full fine-tuning trains float32 master weights; under LoRA the base is frozen and is
    # held in the compute dtype (autocast casts it to that at every product anyway).
    dtype = "auto" if qlora else compute_dtype(mixed_precision) if adapters else "float32"
    interpreter = Interpreter.from_pretrained(
        source, device=device, dtype=dtype, with_camera=True if stage == "camera" else None, load_in_4bit=qlora,
        trust_remote_code=config.trust_remote_code)
    if adapters:
        if merge_adapter and hasattr(interpreter.model, "merge_and_unload"):
            interpreter.model = interpreter.model.merge_and_unload()  # it becomes part of the reference
        interpreter.model = add_lora(interpreter.model, config)
        if resume_from is not None:
            load_adapter(interpreter, resume_from, config.model, device)
    if config.gradient_checkpointing:
        model = interpreter.model
        kwargs = {"use_reentrant": False}  # works with frozen inputs (LoRA, camera stage)
        if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.x
            model.activation_checkpointing_enable(kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if interpreter.camera_encoder is not None:
            interpreter.camera_encoder.gradient_checkpointing_enable()
    if merge_adapter and not adapters and hasattr(interpreter.model, "merge_and_unload"):
        interpreter.model = interpreter.model.merge_and_unload()  # an SFT adapter given as --model
    return interpreter


def add_lora(model, config):
    """``model`` with ``config.lora`` adapters (prepared for k-bit training under QLoRA)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lora = config.lora
    if config.finetune == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.targets, bias="none")
    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:  # e.g. no module matches the targets
        raise InputError(f"cannot add LoRA adapters to {config.model}: {exc}") from None


def load_adapter(interpreter, folder: Path, model_name: str, device: str) -> None:
    """A checkpoint's adapter weights (and camera encoder) into an interpreter built as the run built it."""
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    from vidcli.interpreter.camera_encoder import CameraEncoder
    from vidcli.interpreter.model import CAMERA_DIR

    result = set_peft_model_state_dict(interpreter.model, load_peft_weights(str(folder), device="cpu"))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise InputError(f"the adapter in {folder} does not fit --model {model_name} "
                         f"(LoRA settings or base model changed?)")
    if (folder / CAMERA_DIR).is_dir():
        interpreter.camera_encoder = CameraEncoder.from_pretrained(folder / CAMERA_DIR, device=device)


# ----------------------------------------------------------------------------- prompts


def record_request(source, config, *, drop: bool = False, stage: str = "cot"):
    """The interpreter request of one record (``drop``: its instruction dropped), errors located."""
    from vidcli.interpreter.messages import request_from_record

    record = source.record
    if stage == "camera":
        record = {**record, "instruction": record.get("instruction") or CAMERA_PROMPT}
    try:
        return request_from_record(record, source.base_dir, media_root=config.media_root,
                                   allow_escape=config.allow_escape, video_frames=config.video_frames,
                                   drop_instruction=drop)
    except InputError as exc:
        raise exc.located(file=source.file, line=source.line, record_id=source.id) from None


def check_prompt_lengths(interpreter, items: list, config, *, stage: str = "cot") -> list:
    """Measure every record's prompt (with its instruction: the longest form) before the first step.

    ``items`` have ``source`` and ``prompt_limit``. The over-long ones are logged one
    per line (file:line id, length, limit); then the run stops with one error naming
    how many — or, with ``drop_long_prompts``, goes on without them.
    """
    over = []
    for item in items:
        length = int(interpreter.encode([record_request(item.source, config, stage=stage)])["attention_mask"].sum())
        if length > item.prompt_limit:
            over.append(item)
            src = item.source
            report = log.warning if config.drop_long_prompts else log.error
            report("%s:%s: id=%s: the prompt is %d tokens long, over the limit of %d", src.file, src.line,
                   src.id, length, item.prompt_limit)
    if not over:
        return items
    flags = "--max-prompt-tokens / --max-prompt-tokens-dense"
    if not config.drop_long_prompts:
        raise InputError(f"{len(over)} of {len(items)} prompt(s) are over their token limit (listed above): "
                         f"raise {flags}, or leave them out with --drop-long-prompts")
    dropped = {id(item) for item in over}
    kept = [item for item in items if id(item) not in dropped]
    log.warning("--drop-long-prompts: left out %d of %d record(s) over %s", len(over), len(items), flags)
    if not kept:
        raise InputError(f"every prompt is over its token limit ({flags})")
    return kept
