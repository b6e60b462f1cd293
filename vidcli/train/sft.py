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
trajectory; ``instruction`` is optional (default :data:`~vidcli.train.sft_data.CAMERA_PROMPT`). A fresh encoder
is created when the model has none.

Fine-tuning modes (:mod:`vidcli.train.interpreter_tuning`): ``full`` (all weights of
the backbone, vision tower included, plus the camera encoder), ``lora`` and ``qlora``
(peft adapters on the language model's attention and MLP projections with the base
frozen; QLoRA loads the base in 4-bit NF4 through bitsandbytes and needs CUDA). The
camera encoder, when present, trains in every mode.

Prompt budget: ``max_prompt_tokens`` (1024, the paper's stage-1 limit for every
condition type), or ``max_prompt_tokens_dense`` for a record with a depth or pose
condition (also 1024 here; GRPO's default is 2048). Every prompt is measured before
the first step (:func:`~vidcli.train.interpreter_tuning.check_prompt_lengths`): the over-long ones are all
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
from vidcli.train.checkpoint import Checkpointer, RunInfo, check_output_dir, safe_arguments
from vidcli.train.core import RunConfig, run_recipe
from vidcli.train.interpreter_tuning import (FINETUNE, LoraSettings, check_prompt_lengths, load_interpreter,
                                             record_request)
from vidcli.train.optim import build_optimizer, build_scheduler, clip_and_step, total_steps
from vidcli.train.order import DataOrder, seeded_uniform
from vidcli.train.sft_data import load_examples
from vidcli.train.start import RunStart, final_model, start_run

log = logging.getLogger("vidcli.train")

STAGES = ("cot", "camera")


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
        self.started: RunStart | None = None

    def setup(self) -> None:
        cfg, run = self.config, self.config.run
        check_output_dir(run.output_dir, run.resume)
        self.examples, fingerprints = load_examples(cfg)
        self.started = start = start_run(
            run, fingerprints, command="sft", log_every=cfg.log_every, check_same_run=self._check_same_run,
            project=f"vidcli-sft-{cfg.stage}",
            hparams={"stage": cfg.stage, "finetune": cfg.finetune, **safe_arguments(cfg.arguments)},
            find_unused_parameters=True)  # vision tower, camera encoder
        acc = self.accelerator = start.accelerator
        self.monitor = start.monitor
        self.build_models(start.device, acc.mixed_precision, start.resume_from)
        self.examples = check_prompt_lengths(self.interpreter, self.examples, cfg, stage=cfg.stage)
        self.module = InterpreterLoss(self.interpreter)
        self.optimizer = build_optimizer(self.module.named_parameters(), run.optim)
        placement = [cfg.finetune != "qlora", True]  # a 4-bit model is placed by its loader
        self.module, self.optimizer = acc.prepare(self.module, self.optimizer, device_placement=placement)
        self.order = DataOrder(len(self.examples), run.batch_size, run.seed, acc.num_processes, acc.process_index)
        self.total_steps = total_steps(run, self.order.batches_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, run.optim, self.total_steps)
        info = RunInfo("sft", cfg.arguments, fingerprints,
                       {"stage": cfg.stage, "finetune": cfg.finetune,
                        "base_model": start.saved.get("base_model", cfg.model),
                        "lora": asdict(cfg.lora) if cfg.finetune != "full" else None,
                        "total_steps": self.total_steps, **self.monitor.run_info()})
        self.checkpointer = Checkpointer(acc, run.output_dir, info)
        self.step, self.position, self.metrics = start.restore(self.checkpointer, self.scheduler, self.order)
        kept = [e.source.id for e in self.examples if e.dropped_target is None and e.source.record.get("conditions")]
        if cfg.stage == "cot" and cfg.instruction_dropout and kept:
            log.warning("%d record(s) with conditions have a target without make-cot's labelled steps, so no "
                        "target for a dropped instruction: their instruction is always kept (first: id=%s)",
                        len(kept), kept[0])
        log.info("sft %s/%s: %d records, %d steps, %d trainable parameters", cfg.stage, cfg.finetune,
                 len(self.examples), self.total_steps, sum(p.numel() for p in self.trainable))

    def build_models(self, device: str, mixed_precision: str | None, resume_from: Path | None = None) -> None:
        """The interpreter as the run trains it (LoRA/QLoRA, checkpointing); sets ``trainable``
        (and requires_grad). ``--plan`` builds the same on the meta device (:mod:`vidcli.weights`)."""
        self.interpreter = load_interpreter(self.config, device=device, mixed_precision=mixed_precision,
                                            resume_from=resume_from, stage=self.config.stage)
        self.trainable = self.interpreter.trainable_parameters(self.config.stage)

    def _check_same_run(self, folder: Path, saved: dict) -> None:
        for key in ("stage", "finetune"):
            if saved.get(key) != getattr(self.config, key):
                raise InputError(f"--resume: {folder} was trained with --{key} {saved.get(key)}, "
                                 f"not {getattr(self.config, key)}")

    # ------------------------------------------------------------------ data

    def batch(self, epoch: int, indices: list[int]) -> dict:
        """The model-ready batch of these examples (instruction dropout applied)."""
        cfg = self.config
        requests, targets = [], []
        for index in indices:
            example = self.examples[index]
            drop = example.dropped_target is not None \
                and seeded_uniform(cfg.run.seed, epoch, index) < cfg.instruction_dropout
            requests.append(record_request(example.source, cfg, drop=drop, stage=cfg.stage))
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
            return self.finish(final_model(run.output_dir))
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
        return self.monitor.finish(self.step, lambda summary: done or self.save_checkpoint(True, summary))

    def save_checkpoint(self, final: bool = False, summary: dict | None = None) -> Path:
        """``checkpoint-STEP/`` (or, ``final``, the output folder itself) with weights, trainer state
        and the run's summary so far."""
        return self.checkpointer.save(self.step, save_weights=self.interpreter.save_pretrained,
                                      scheduler=self.scheduler, micro_batches=self.position,
                                      metrics=self.metrics, final=final, order=self.order,
                                      summary=summary or self.monitor.summary(self.step))

    def cleanup(self) -> None:
        if self.started is not None:
            self.started.close()


def run_sft(config: SFTConfig) -> Path:
    """Set up, train and clean up one SFT run; returns the folder with the final model."""
    return run_recipe(SFTRecipe(config))
