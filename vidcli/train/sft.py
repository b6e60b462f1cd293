"""ReaDe stage 1 (SPEC §4): supervised fine-tuning of the instruction interpreter.

Two stages share one recipe:

``cot`` (default) — the interpreter learns to answer a request with its chain-of-thought
target. Records come from ``vidcli make-cot``: the prompt is the request
(:func:`~vidcli.interpreter.messages.request_from_record`: ``instruction`` and
``conditions``), the assistant turn is ``cot.target``. The loss is the next-token
negative log-likelihood of the assistant turn only, L = −Σ_t log π(y_t | x, y_<t),
averaged over its tokens (:meth:`Interpreter.loss`); with gradient accumulation a step
averages its micro-batches' losses. **Instruction dropout**: with
probability ``instruction_dropout`` (0.4) an example's instruction is replaced by the
empty request line, so the model also learns to interpret from the conditions alone.
The coin is :func:`~vidcli.train.core.seeded_uniform` of ``(seed, epoch, example
index)``: the same on every run and on resume, different from epoch to epoch. A
dropped instruction is not quoted: the assistant turn is then the record's target for
an empty instruction (:class:`~vidcli.train.sft_data.Example`, ``dropped_target``:
make-cot's ``cot.no_instruction.target``, else the target without its step 1). Records
without conditions keep their instruction (nothing would be left), and so do records
whose target has no make-cot step labels (there is no step 1 to take out).

``camera`` — pre-trains only the camera encoder (every other parameter frozen) on
camera-to-text records::

    {"id": "...", "conditions": [{"type": "camera", "path": "traj.txt"}],
     "target": "The camera dollies in slowly while panning left."}

``target`` (or ``caption``) is the text to predict; every condition must be a camera
trajectory; ``instruction`` is optional (default :data:`CAMERA_PROMPT`). A fresh encoder
is created when the model has none.

Fine-tuning modes: ``full`` (all weights of the backbone, vision tower included, plus
the camera encoder), ``lora`` and ``qlora`` (peft adapters on the language model's
attention and MLP projections — :data:`LORA_TARGETS` — with the base frozen; QLoRA loads
the base in 4-bit NF4 through bitsandbytes and needs CUDA). The camera encoder, when
present, trains in every mode.

Prompt budget: ``max_prompt_tokens`` (1024, the paper's stage-1 limit for every
condition type), or ``max_prompt_tokens_dense`` for a record with a depth or pose
condition (also 1024 here; GRPO's default is 2048). Every prompt is measured before
the first step (:meth:`SFTRecipe._check_prompt_lengths`): the over-long ones are all
reported at once, each naming its file, line and id, and the run stops — or, with
``drop_long_prompts``, they are left out with a warning.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from vidcli.errors import InputError
from vidcli.train.checkpoint import (Checkpointer, RunInfo, check_output_dir, check_same_inputs, latest_checkpoint,
                                     read_run_info, remove_partials, safe_arguments)
from vidcli.train.core import (DataOrder, RunConfig, build_optimizer, build_scheduler, clip_and_step,
                               make_accelerator, seeded_uniform, set_seed, total_steps)
from vidcli.train.core import run_recipe
from vidcli.train.monitor import RunMonitor
from vidcli.train.sft_data import CAMERA_PROMPT, load_examples

log = logging.getLogger("vidcli.train")

STAGES = ("cot", "camera")
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


@dataclass
class SFTConfig:
    """Everything one SFT run needs (the CLI fills it from its flags)."""

    model: str
    inputs: list[str]
    run: RunConfig
    stage: str = "cot"
    finetune: str = "full"
    lora: LoraSettings = field(default_factory=LoraSettings)
    instruction_dropout: float = 0.4
    max_prompt_tokens: int = 1024
    max_prompt_tokens_dense: int = 1024  # the paper's stage 1 uses 1024 for every condition type
    drop_long_prompts: bool = False  # drop over-long records instead of stopping before the first step
    video_frames: int = 16
    gradient_checkpointing: bool = False
    media_root: str | None = None
    allow_escape: bool = False
    trust_remote_code: bool = False
    log_every: int = 10
    arguments: dict = field(default_factory=dict)  # as given by the user, for vidcli.json

    def __post_init__(self) -> None:
        if self.stage not in STAGES or self.finetune not in FINETUNE:
            raise ValueError(f"stage must be one of {STAGES} and finetune one of {FINETUNE}")
        if not 0.0 <= self.instruction_dropout <= 1.0:
            raise ValueError("instruction_dropout must be in [0, 1]")
        if self.stage == "camera" and self.finetune != "full":
            raise ValueError("the camera stage trains only the camera encoder; --finetune does not apply to it")


class InterpreterLoss(nn.Module):
    """The module accelerate prepares: the interpreter's trainable modules under one root.

    DDP synchronises gradients for forward passes made through its wrapper, and the
    loss goes through :meth:`Interpreter.loss` (camera injection included), so the
    wrapper's forward is that loss.
    """

    def __init__(self, interpreter) -> None:
        super().__init__()
        self.model = interpreter.model
        self.camera_encoder = interpreter.camera_encoder
        self.interpreter = interpreter  # a plain object: not registered a second time

    def forward(self, batch: dict) -> torch.Tensor:
        return self.interpreter.loss(batch)


# ----------------------------------------------------------------------------- recipe


class SFTRecipe:
    """``setup()`` → ``train()`` → ``cleanup()``; ``save_checkpoint()`` in between."""

    def __init__(self, config: SFTConfig) -> None:
        self.config = config
        self.step = 0
        self.position = 0  # micro-batches consumed: the data position
        self.metrics: dict = {}

    def setup(self) -> None:
        cfg, run = self.config, self.config.run
        check_output_dir(run.output_dir, run.resume)
        self.examples, fingerprints = load_examples(cfg)
        self.accelerator = acc = make_accelerator(run, find_unused_parameters=True)  # vision tower, camera encoder
        self.monitor = RunMonitor(acc, run, command="sft", log_every=cfg.log_every)
        if not acc.is_main_process:
            logging.getLogger("vidcli").setLevel(logging.WARNING)  # one log per run, not one per process
        if acc.is_main_process and run.resume:
            remove_partials(run.output_dir)
        acc.wait_for_everyone()
        resume_from = latest_checkpoint(run.output_dir) if run.resume else None
        if resume_from is not None:
            self._check_same_run(resume_from)
            check_same_inputs(resume_from, fingerprints)
            self.monitor.restore(read_run_info(resume_from))
        self.monitor.start_trackers(project=f"vidcli-sft-{cfg.stage}",
                                    hparams={"stage": cfg.stage, "finetune": cfg.finetune,
                                             **safe_arguments(cfg.arguments)})
        set_seed(run.seed)
        device = acc.device  # multi-CPU runs name it "cpu:0", which loaders refuse
        self.build_models("cpu" if device.type == "cpu" else str(device), acc.mixed_precision, resume_from)
        self.examples = self._check_prompt_lengths(self.examples)
        trainable = self.trainable
        self.module = InterpreterLoss(self.interpreter)
        self.optimizer = build_optimizer(self.module.named_parameters(), run.optim)
        placement = [cfg.finetune != "qlora", True]  # a 4-bit model is placed by its loader
        self.module, self.optimizer = acc.prepare(self.module, self.optimizer, device_placement=placement)
        self.order = DataOrder(len(self.examples), run.batch_size, run.seed,
                               acc.num_processes, acc.process_index)
        self.total_steps = total_steps(run, self.order.batches_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, run.optim, self.total_steps)
        info = RunInfo("sft", cfg.arguments, fingerprints,
                       {"stage": cfg.stage, "finetune": cfg.finetune, "base_model": self._base_model(resume_from),
                        "lora": asdict(cfg.lora) if cfg.finetune != "full" else None,
                        "total_steps": self.total_steps, **self.monitor.run_info()})
        self.checkpointer = Checkpointer(acc, run.output_dir, info)
        if resume_from is not None:
            self.metrics = (read_run_info(resume_from) or {}).get("metrics", {})
            progress = self.checkpointer.load(resume_from, self.scheduler)
            self.step, self.position = progress["step"], self.order.resume_position(progress)
            log.info("resumed from %s at step %d", resume_from, self.step)
        elif run.resume:
            log.info("--resume: no checkpoint in %s yet, starting from step 0", run.output_dir)
        kept = [e.source.id for e in self.examples if e.dropped_target is None and e.source.record.get("conditions")]
        if cfg.stage == "cot" and cfg.instruction_dropout and kept:
            log.warning("%d record(s) with conditions have a target without make-cot's labelled steps, so no "
                        "target for a dropped instruction: their instruction is always kept (first: id=%s)",
                        len(kept), kept[0])
        count = sum(p.numel() for p in trainable)
        log.info("sft %s/%s: %d records, %d steps, %d trainable parameters", cfg.stage, cfg.finetune,
                 len(self.examples), self.total_steps, count)

    def build_models(self, device: str, mixed_precision: str | None, resume_from: Path | None = None) -> None:
        """The interpreter as the run trains it (LoRA/QLoRA, checkpointing); sets ``trainable``
        (and requires_grad). ``--plan`` builds the same on the meta device (:mod:`vidcli.weights`)."""
        self.device_name = device
        self.mixed_precision = mixed_precision
        self.interpreter = self._load_interpreter(resume_from)
        self.trainable = self.interpreter.trainable_parameters(self.config.stage)

    def _check_same_run(self, folder: Path) -> None:
        saved = read_run_info(folder) or {}
        for key in ("stage", "finetune"):
            if saved.get(key) != getattr(self.config, key):
                raise InputError(f"--resume: {folder} was trained with --{key} {saved.get(key)}, "
                                 f"not {getattr(self.config, key)}")

    def _base_model(self, resume_from: Path | None) -> str:
        if resume_from is not None:
            return (read_run_info(resume_from) or {}).get("base_model", self.config.model)
        return self.config.model

    def _load_interpreter(self, resume_from: Path | None):
        """The interpreter from ``--model``, or from the checkpoint being resumed.

        Full weights resume from the checkpoint folder itself. Adapters resume on the base
        built exactly as in a fresh run (same quantisation and peft preparation), then
        take the checkpoint's adapter and camera encoder weights.
        """
        from vidcli import weights
        from vidcli.interpreter.model import Interpreter
        from vidcli.train.core import compute_dtype

        cfg = self.config
        qlora, adapters = cfg.finetune == "qlora", cfg.finetune != "full"
        if qlora and not torch.cuda.is_available() and weights.reading_weights():
            raise InputError("--finetune qlora needs a CUDA GPU (bitsandbytes 4-bit); use lora or full on this machine")
        source = str(resume_from) if resume_from is not None and not adapters else cfg.model
        # Full fine-tuning trains float32 master weights; under LoRA the base is frozen and is
        # held in the compute dtype (autocast casts it to that at every product anyway).
        dtype = "auto" if qlora else compute_dtype(self.mixed_precision) if adapters else "float32"
        interpreter = Interpreter.from_pretrained(
            source, device=self.device_name, dtype=dtype,
            with_camera=True if cfg.stage == "camera" else None, load_in_4bit=qlora,
            trust_remote_code=cfg.trust_remote_code)
        if adapters:
            interpreter.model = self._add_lora(interpreter.model)
            if resume_from is not None:
                self._load_adapter(interpreter, resume_from)
        if cfg.gradient_checkpointing:
            model = interpreter.model
            kwargs = {"use_reentrant": False}  # works with frozen inputs (LoRA, camera stage)
            if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.x
                model.activation_checkpointing_enable(kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            if interpreter.camera_encoder is not None:
                interpreter.camera_encoder.gradient_checkpointing_enable()
        return interpreter

    def _load_adapter(self, interpreter, folder: Path) -> None:
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        from vidcli.interpreter.camera_encoder import CameraEncoder
        from vidcli.interpreter.model import CAMERA_DIR

        result = set_peft_model_state_dict(interpreter.model, load_peft_weights(str(folder), device="cpu"))
        missing = [k for k in result.missing_keys if "lora_" in k]
        if result.unexpected_keys or missing:
            raise InputError(f"the adapter in {folder} does not fit --model {self.config.model} "
                             f"(LoRA settings or base model changed?)")
        if (folder / CAMERA_DIR).is_dir():
            interpreter.camera_encoder = CameraEncoder.from_pretrained(folder / CAMERA_DIR, device=self.device_name)

    def _add_lora(self, model):
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        lora = self.config.lora
        if self.config.finetune == "qlora":
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=self.config.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=lora.targets, bias="none")
        try:
            return get_peft_model(model, peft_config)
        except ValueError as exc:  # e.g. no module matches the targets
            raise InputError(f"cannot add LoRA adapters to {self.config.model}: {exc}") from None

    # ------------------------------------------------------------------ data

    def _request(self, source, drop: bool = False):
        """The interpreter request of one record (``drop``: its instruction dropped), errors located."""
        from vidcli.interpreter.messages import request_from_record

        cfg, record = self.config, source.record
        if cfg.stage == "camera":
            record = {**record, "instruction": record.get("instruction") or CAMERA_PROMPT}
        try:
            return request_from_record(record, source.base_dir, media_root=cfg.media_root,
                                       allow_escape=cfg.allow_escape, video_frames=cfg.video_frames,
                                       drop_instruction=drop)
        except InputError as exc:
            raise exc.located(file=source.file, line=source.line, record_id=source.id) from None

    def _check_prompt_lengths(self, items: list) -> list:
        """Measure every record's prompt (with its instruction: the longest form) before the first step.

        ``items`` have ``source`` and ``prompt_limit``. The over-long ones are logged one
        per line (file:line id, length, limit); then the run stops with one error naming
        how many — or, with ``drop_long_prompts``, goes on without them.
        """
        cfg = self.config
        over = []
        for item in items:
            length = int(self.interpreter.encode([self._request(item.source)])["attention_mask"].sum())
            if length > item.prompt_limit:
                over.append(item)
                src = item.source
                report = log.warning if cfg.drop_long_prompts else log.error
                report("%s:%s: id=%s: the prompt is %d tokens long, over the limit of %d", src.file, src.line,
                       src.id, length, item.prompt_limit)
        if not over:
            return items
        flags = "--max-prompt-tokens / --max-prompt-tokens-dense"
        if not cfg.drop_long_prompts:
            raise InputError(f"{len(over)} of {len(items)} prompt(s) are over their token limit (listed above): "
                             f"raise {flags}, or leave them out with --drop-long-prompts")
        dropped = {id(item) for item in over}
        kept = [item for item in items if id(item) not in dropped]
        log.warning("--drop-long-prompts: left out %d of %d record(s) over %s", len(over), len(items), flags)
        if not kept:
            raise InputError(f"every prompt is over its token limit ({flags})")
        return kept

    def batch(self, epoch: int, indices: list[int]) -> dict:
        """The model-ready batch of these examples (instruction dropout applied)."""
        cfg = self.config
        requests, targets = [], []
        for index in indices:
            example = self.examples[index]
            drop = example.dropped_target is not None \
                and seeded_uniform(cfg.run.seed, epoch, index) < cfg.instruction_dropout
            requests.append(self._request(example.source, drop))
            targets.append(example.dropped_target if drop else example.target)
        return self.interpreter.encode(requests, targets)

    # ------------------------------------------------------------------ loop

    def train(self) -> Path:
        """Run until ``total_steps``; return the folder holding the final model."""
        acc, run = self.accelerator, self.config.run
        self.monitor.begin(total_steps=self.total_steps, step=self.step,
                           samples_per_step=self.order.global_batch * run.grad_accum)
        if self.step >= self.total_steps:
            log.info("nothing to do: the run is at step %d of %d", self.step, self.total_steps)
            finished = latest_checkpoint(run.output_dir) == run.output_dir
            return self.finish(run.output_dir if finished else None)
        self.module.train()
        while self.step < self.total_steps:
            losses = []
            for _ in range(run.grad_accum):
                epoch, indices = self.order.micro_batch(self.position)
                batch = self.batch(epoch, indices)
                self.position += 1
                with acc.accumulate(self.module):
                    loss = self.module(batch)
                    acc.backward(loss)
                    if acc.sync_gradients:
                        lr = self.scheduler.get_last_lr()[0]
                        grad_norm = clip_and_step(acc, self.trainable, self.optimizer, self.scheduler,
                                                  run.optim.max_grad_norm)
                losses.append(loss.detach())
            self.step += 1
            mean_loss = acc.reduce(torch.stack(losses).mean(), reduction="mean").item()
            self.metrics = {"loss": mean_loss, "lr": lr, "epoch": self.position / self.order.batches_per_epoch}
            if grad_norm is not None:
                self.metrics["grad_norm"] = grad_norm
            self.monitor.step(self.step, self.metrics)
            if run.save_every and self.step % run.save_every == 0 and self.step < self.total_steps:
                self.save_checkpoint()
        return self.finish()

    def finish(self, done: Path | None = None) -> Path:
        """Save the final model (unless ``done`` holds it already); the run's summary goes with it
        and closes the run on stderr."""
        return self.monitor.finish(self.step, lambda summary: done or self.save_checkpoint(True, summary),
                                   logs=self.step_logs())

    def step_logs(self) -> list[Path]:
        """Per-step logs the run writes beside its checkpoints (none for sft)."""
        return []

    def save_checkpoint(self, final: bool = False, summary: dict | None = None) -> Path:
        """``checkpoint-STEP/`` (or, ``final``, the output folder itself) with weights, trainer state
        and the run's summary so far."""
        summary = summary or self.monitor.summary(self.step, logs=self.step_logs())
        return self.checkpointer.save(self.step, save_weights=self.interpreter.save_pretrained,
                                      scheduler=self.scheduler, micro_batches=self.position,
                                      metrics=self.metrics, final=final, order=self.order, summary=summary)

    def cleanup(self) -> None:
        if hasattr(self, "monitor"):
            self.monitor.close()
        if hasattr(self, "accelerator"):
            self.accelerator.end_training()


def run_sft(config: SFTConfig) -> Path:
    """Set up, train and clean up one SFT run; returns the folder with the final model."""
    return run_recipe(SFTRecipe(config))
