"""ReaDe stage 2 (SPEC §5): group relative policy optimisation of the interpreter.

One optimiser step, read top to bottom in :meth:`GRPORecipe.train`:

1. **Rollout** (:meth:`GRPORecipe.rollout`): each of the ``grad_accum`` micro-batches
   holds ``batch_size`` prompts; every prompt is repeated ``G`` times and the whole
   micro-batch is sampled in one batched ``generate`` (temperature, top-p, at most
   ``max_completion_tokens`` new tokens). A completion's mask keeps its tokens up to and
   including the first end token (end of turn or end of text); everything after it is
   padding.
2. **Reward**: R = R_format + α·R_user + ρ·R_detail + γ·R_supp − λ·R_contra from
   :class:`~vidcli.rewards.reade.ReadeReward` over the record's ``key_info``. A
   completion whose reward could not be computed (a judge failure after its retries,
   for any part, or a judge backend that gave up on the whole batch) is *masked*: it
   is recorded with its errors but gets no advantage and no loss, and is counted in
   the step's ``masked`` metric. With ``--reward video-feedback`` a frozen generator
   renders each completion's prompt and a frozen VLM scores the clip: R +=
   w_video·R_video (:mod:`vidcli.rewards.video_feedback`, which states the extra
   cost). Every completion goes to ``OUTPUT/rollouts.jsonl``; with ``--report-to``, the first
   ``--log-samples`` of a rollout go to the trackers as a table every ``--log-samples-every``
   steps (:meth:`GRPORecipe._log_rollout_table`).
3. **Advantages** within each group of ``G``: A_i = (R_i − mean) / (std + eps) over the
   group's scored completions; a group left with fewer than two scored completions
   contributes nothing (:func:`~vidcli.train.grpo_loss.scored_rows`,
   :func:`~vidcli.train.grpo_loss.group_advantages`).
4. **Loss** (:func:`~vidcli.train.grpo_loss.grpo_loss`): the clipped ratio (ε = 0.2) with
   a per-token k3 KL to the frozen reference (β = 0.001), averaged over each
   completion's tokens, then over the completions that take part. ``num_iterations``
   (μ) optimiser steps reuse one rollout; the first uses π_old = the current policy
   (detached), later ones the log-probs taken right after sampling.

**Prompts** are built as in stage 1, with instruction dropout (0.4, as the paper lists
for stage 2): the coin is :func:`~vidcli.train.core.seeded_uniform` of ``(seed, epoch,
example index)`` and a dropped instruction is dropped for all ``G`` samples of the
prompt; the key-info (U included) is the record's either way. Every prompt's length is
checked against its limit before the first step (:func:`~vidcli.train.interpreter_tuning.check_prompt_lengths`).

**The reference** is the policy the run starts from (``--model``, e.g. the SFT
checkpoint). With LoRA/QLoRA it is the same weights with the adapters disabled (peft's
``disable_adapter()``): no second copy. With full fine-tuning it is a frozen second copy
of the model held in the compute dtype (bf16 under bf16 mixed precision, where the
policy's products run in bf16 too; float32 without): 2 bytes per parameter more on every
device (about 17 GB for an 8B model), without gradients or optimiser state, and not
sharded by FSDP/DeepSpeed. With β = 0 there is no reference. The camera
encoder, trained in stage 1, stays frozen here, so the reference sees the same camera
tokens as the policy. An SFT LoRA checkpoint given as ``--model`` is merged into its
base first; the new adapters train on top of it.

**Resume** is exact: data order and sampling seeds are functions of ``(seed, data
position)``, optimiser/RNG state come from the checkpoint, and a checkpoint is only
written between rollouts (``save_every`` is a multiple of μ). ``rollouts.jsonl`` is cut
back to the resumed step.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from vidcli.errors import BackendError, BackendUnavailable, InputError
from vidcli.rewards.reade import PARTS, RewardResult, RewardWeights
from vidcli.rewards.video_feedback import (VIDEO_PARTS, VideoFeedback, VideoFeedbackConfig, VideoScore,
                                           add_video_reward, render_seed)
from vidcli.train.checkpoint import Checkpointer, RunInfo, check_output_dir, safe_arguments
from vidcli.train.core import RunConfig, run_recipe
from vidcli.train.grpo_loss import group_advantages, grpo_loss, scored_rows, token_logprobs
from vidcli.train.grpo_data import Rollout, append_completions, completion_mask, load_prompts
from vidcli.train.interpreter_tuning import (FINETUNE, LoraSettings, check_prompt_lengths, load_interpreter,
                                             record_request)
from vidcli.train.optim import build_optimizer, build_scheduler, clip_and_step, total_steps
from vidcli.train.order import DataOrder, seeded_uniform
from vidcli.train.start import RunStart, final_model, start_run
from vidcli.train.steplog import StepLog

log = logging.getLogger("vidcli.train")

ROLLOUTS = "rollouts.jsonl"


class RewardModel(Protocol):
    """What the recipe scores completions with (:class:`~vidcli.rewards.reade.ReadeReward` by default)."""

    def score_many(self, completions: list[str], key_infos: list[dict]) -> list[RewardResult]: ...


@dataclass
class GRPOConfig:
    """Everything one GRPO run needs (the CLI fills it from its flags)."""

    model: str
    inputs: list[str]
    run: RunConfig
    finetune: str = "full"  # the paper's; LoRA at its learning rate barely moves
    lora: LoraSettings = field(default_factory=LoraSettings)
    instruction_dropout: float = 0.4
    num_generations: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_tokens: int = 768
    min_completion_tokens: int = 0  # > 0 forces lengths (benchmarks); normally 0
    epsilon: float = 0.2
    beta: float = 0.001
    num_iterations: int = 1
    judge: str | None = None  # required unless a reward model is passed to the recipe
    judge_mode: str = "elements"
    judge_base_url: str | None = None
    judge_concurrency: int = 8
    weights: RewardWeights = field(default_factory=RewardWeights)
    video_feedback: VideoFeedbackConfig | None = None  # None: the ReaDe reward alone
    max_prompt_tokens: int = 1024
    max_prompt_tokens_dense: int = 2048  # the paper's stage-2 limit for depth and pose
    drop_long_prompts: bool = False  # drop over-long records instead of stopping before the first step
    video_frames: int = 16
    gradient_checkpointing: bool = False
    media_root: str | None = None
    allow_escape: bool = False
    trust_remote_code: bool = False
    log_every: int = 10
    arguments: dict = field(default_factory=dict)  # as given by the user, for vidcli.json

    def __post_init__(self) -> None:
        if self.finetune not in FINETUNE:
            raise ValueError(f"finetune must be one of {FINETUNE}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2: advantages compare completions of one prompt")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.epsilon <= 0 or self.beta < 0:
            raise ValueError("temperature and epsilon must be positive, top_p in (0, 1], beta non-negative")
        if self.num_iterations < 1 or self.run.save_every % self.num_iterations:
            raise ValueError("num_iterations must be >= 1 and divide save_every (checkpoints fall between rollouts)")
        if not 0 <= self.min_completion_tokens <= self.max_completion_tokens:
            raise ValueError("min_completion_tokens must be between 0 and max_completion_tokens")
        if not 0.0 <= self.instruction_dropout <= 1.0:
            raise ValueError("instruction_dropout must be in [0, 1]")


class PolicyLogits(nn.Module):
    """The module accelerate prepares: the policy's logits for the last ``width + 1`` positions.

    DDP synchronises gradients for forward passes made through its wrapper, so the
    policy forward (camera injection included) is this module's forward.
    """

    def __init__(self, interpreter) -> None:
        super().__init__()
        self.model = interpreter.model
        self.interpreter = interpreter  # a plain object: not registered a second time

    def forward(self, batch: dict, width: int) -> torch.Tensor:
        return self.interpreter.forward(batch, logits_to_keep=width + 1).logits


# ----------------------------------------------------------------------------- recipe


class GRPORecipe:
    """``setup()`` → ``train()`` → ``cleanup()``; ``save_checkpoint()`` in between."""

    def __init__(self, config: GRPOConfig, reward: RewardModel | None = None) -> None:
        self.config = config
        self.reward = reward
        self.step = 0
        self.position = 0  # micro-batches consumed: the data position
        self.metrics: dict = {}
        self.started: RunStart | None = None
        self._judge = None
        self.video = None  # VideoFeedback with --reward video-feedback

    def setup(self) -> None:
        cfg, run = self.config, self.config.run
        if self.reward is None and cfg.judge is None:
            from vidcli.rewards.coverage import CHOOSE_A_JUDGE

            raise ValueError(CHOOSE_A_JUDGE)
        check_output_dir(run.output_dir, run.resume)
        self.prompts, fingerprints = load_prompts(cfg)
        self.started = start = start_run(
            run, fingerprints, command="grpo", log_every=cfg.log_every, check_same_run=self._check_same_run,
            project="vidcli-grpo", hparams={"finetune": cfg.finetune, **safe_arguments(cfg.arguments)},
            line_keys=("loss", "reward", "kl", "masked"),
            find_unused_parameters=True)  # vision tower, text-only batches
        acc = self.accelerator = start.accelerator
        self.monitor = start.monitor
        self.build_models(start.device, acc.mixed_precision, start.resume_from)
        self.prompts = check_prompt_lengths(self.interpreter, self.prompts, cfg)
        self.module = PolicyLogits(self.interpreter)
        self.optimizer = build_optimizer(self.module.named_parameters(), run.optim)
        self.module, self.optimizer = acc.prepare(self.module, self.optimizer,
                                                  device_placement=[cfg.finetune != "qlora", True])
        self.order = DataOrder(len(self.prompts), run.batch_size, run.seed, acc.num_processes, acc.process_index)
        self.total_steps = total_steps(run, self.order.batches_per_epoch) * (1 if run.max_steps else cfg.num_iterations)
        self.scheduler = build_scheduler(self.optimizer, run.optim, self.total_steps)
        info = RunInfo("grpo", cfg.arguments, fingerprints,
                       {"finetune": cfg.finetune, "base_model": start.saved.get("base_model", cfg.model),
                        "lora": asdict(cfg.lora) if cfg.finetune != "full" else None,
                        "total_steps": self.total_steps, "reward": self._reward_info(), **self.monitor.run_info()})
        self.checkpointer = Checkpointer(acc, run.output_dir, info)
        self.step, self.position, self.metrics = start.restore(self.checkpointer, self.scheduler, self.order)
        self.rollout_log = StepLog(acc, run.output_dir / ROLLOUTS)
        self.rollout_log.trim(self.step)
        if self.reward is None:
            from vidcli.rewards.coverage import load_judge
            from vidcli.rewards.reade import ReadeReward

            options = {"base_url": cfg.judge_base_url, "concurrency": cfg.judge_concurrency} \
                if cfg.judge != "embed" else {}
            self._judge = load_judge(cfg.judge, mode=cfg.judge_mode, device=start.device, **options)
            self.reward = ReadeReward(self._judge, cfg.weights)
            if not self._judge.detects_contradiction:
                log.warning("judge %s cannot detect contradictions: rewards leave out the λ·R_contra term", cfg.judge)
        if cfg.video_feedback is not None:
            self.video = VideoFeedback.load(cfg.video_feedback, device=start.device)
        log.info("grpo/%s: %d records, %d steps, G=%d, %d trainable parameters", cfg.finetune, len(self.prompts),
                 self.total_steps, cfg.num_generations, sum(p.numel() for p in self.trainable))

    def build_models(self, device: str, mixed_precision: str | None, resume_from: Path | None = None) -> None:
        """The policy (LoRA/QLoRA, checkpointing; an SFT adapter given as ``--model`` merged first), its
        camera encoder frozen, and the frozen reference for full fine-tuning; sets ``trainable``.
        ``--plan`` builds the same on the meta device (:mod:`vidcli.weights`)."""
        self.device_name, self.mixed_precision = device, mixed_precision
        self.interpreter = load_interpreter(self.config, device=device, mixed_precision=mixed_precision,
                                            resume_from=resume_from, merge_adapter=True)
        camera = self._camera_parameters()
        self.trainable = [p for p in self.interpreter.trainable_parameters("cot")
                          if not any(p is q for q in camera)]
        for param in camera:
            param.requires_grad_(False)  # stage 1 trained it; the reference shares it
        self.reference = self._load_reference() if self.config.beta and self.config.finetune == "full" else None

    def _camera_parameters(self) -> list:
        encoder = self.interpreter.camera_encoder
        return list(encoder.parameters()) if encoder is not None else []

    def _check_same_run(self, folder: Path, info: dict) -> None:
        saved = info.get("finetune")
        if saved != self.config.finetune:
            raise InputError(f"--resume: {folder} was trained with --finetune {saved}, not {self.config.finetune}")
        reward = (info.get("reward") or {}).get("kind", "reade")
        if reward != self._reward_info()["kind"]:
            raise InputError(f"--resume: {folder} was trained with --reward {reward}")

    def _reward_info(self) -> dict:
        """The reward as vidcli.json records it: kind, ReaDe weights and, with video feedback, its models."""
        cfg = self.config
        info = {"kind": "reade", "judge": cfg.judge, "weights": asdict(cfg.weights)}
        if cfg.video_feedback is not None:
            info.update(kind="video-feedback", video_feedback=asdict(cfg.video_feedback))
        return info

    def _load_reference(self):
        """The frozen starting policy for full fine-tuning: ``--model`` loaded a second time, in the
        compute dtype (the policy's forward runs in it too under mixed precision)."""
        from vidcli.interpreter.model import Interpreter
        from vidcli.train.start import compute_dtype

        reference = Interpreter.from_pretrained(self.config.model, device=self.device_name,
                                                dtype=compute_dtype(self.mixed_precision),
                                                with_camera=False, trust_remote_code=self.config.trust_remote_code)
        if hasattr(reference.model, "merge_and_unload"):
            reference.model = reference.model.merge_and_unload()
        reference.camera_encoder = self.interpreter.camera_encoder  # frozen, shared
        reference.model.requires_grad_(False)
        return reference

    # ------------------------------------------------------------------ rollout

    def dropped(self, index: int, epoch: int) -> bool:
        """Whether record ``index`` has its instruction dropped in ``epoch`` (all G samples alike)."""
        return seeded_uniform(self.config.run.seed, epoch, index) < self.config.instruction_dropout

    def requests(self, indices: list[int], epoch: int = 0) -> list:
        """The interpreter requests of these records (instruction dropout applied), each repeated G times."""
        cfg, out = self.config, []
        for index in indices:
            request = record_request(self.prompts[index].source, cfg, drop=self.dropped(index, epoch))
            out += [request] * cfg.num_generations
        return out

    def stop_ids(self) -> list[int]:
        """Tokens that end a completion: the model's end tokens and the chat template's end of turn."""
        eos = self.interpreter.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        return sorted({*eos, self.interpreter.end_of_turn_ids()[-1], self.interpreter.processor.tokenizer.eos_token_id}
                      - {None})

    def placeholder_ids(self) -> list[int]:
        """Media placeholder tokens (image, video, audio, vision start, camera) a completion must not hold.

        Sampled into a completion, the model would look for media features there on the
        training forward. They are suppressed in sampling; their tiny probability mass
        stays in the log-prob denominators, as a top-p cut would.
        """
        config = self.interpreter.model.config
        names = ("image_token_id", "video_token_id", "audio_token_id", "vision_start_token_id",
                 "image_token_index", "video_token_index", "audio_token_index", "audio_start_token_id")
        found = {getattr(config, name, None) for name in names} | {self.interpreter.camera_token_id}
        return sorted(i for i in found if isinstance(i, int))

    def sample(self, indices: list[int], seed: int, epoch: int = 0) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """``(prompt batch, completion ids, completion mask)`` for G samples of each record."""
        cfg, interp = self.config, self.interpreter
        batch = interp.encode(self.requests(indices, epoch))
        tokenizer = interp.processor.tokenizer
        stops = self.stop_ids()
        inputs = {k: v for k, v in batch.items() if k != "camera_maps"}
        devices = [interp.device] if interp.device.type == "cuda" else []
        was_training = interp.model.training
        interp.model.eval()  # sample from the policy itself, without adapter dropout
        try:  # fork_rng: the seed is a function of the data position, so a resumed run samples alike
            with torch.random.fork_rng(devices=devices), torch.no_grad(), self.accelerator.autocast(), \
                    interp._cameras(batch.get("camera_maps")):
                torch.manual_seed(seed)
                output = interp.model.generate(
                    **inputs, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0,
                    repetition_penalty=1.0, max_new_tokens=cfg.max_completion_tokens,
                    min_new_tokens=cfg.min_completion_tokens or None, eos_token_id=stops,
                    suppress_tokens=self.placeholder_ids(),
                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0])
        finally:
            interp.model.train(was_training)
        ids = output[:, batch["input_ids"].shape[1]:]
        return batch, ids, completion_mask(ids, stops)

    def rollout(self, position: int, indices: list[int]) -> Rollout:
        """Sample, score and normalise one micro-batch; reference and old log-probs too."""
        cfg = self.config
        # Keyed by the micro-batch's place in the data stream, not by process: 2 processes with
        # --grad-accum 1 sample what 1 process with --grad-accum 2 samples.
        seed = int(np.random.default_rng([cfg.run.seed, self.order.stream_index(position)]).integers(2 ** 31))
        epoch = position // self.order.batches_per_epoch
        prompt_batch, ids, mask = self.sample(indices, seed, epoch)
        batch = append_completions(prompt_batch, ids, mask)
        lengths = mask.sum(dim=1).tolist()
        texts = self.interpreter.processor.tokenizer.batch_decode(
            [row[:n] for row, n in zip(ids.tolist(), lengths)], skip_special_tokens=True)
        keys = [self.prompts[i].key_info for i in indices for _ in range(cfg.num_generations)]
        rewards = self._score(texts, keys)
        video = self._video_scores(position, indices, texts, keys) if self.video is not None else None
        if video is not None:
            rewards = [add_video_reward(r, v, cfg.video_feedback.weight) for r, v in zip(rewards, video)]
        # A reward the judge could not give is no signal: masked, and its group normalised over the rest.
        scored = scored_rows(torch.tensor([not r.errors for r in rewards]), cfg.num_generations)
        totals = torch.tensor([r.total for r in rewards], dtype=torch.float32)
        advantages = group_advantages(totals, cfg.num_generations, valid=scored).to(ids.device)
        with torch.no_grad():
            ref_logp = self._reference_logp(batch, mask) if cfg.beta else None
            old_logp = self._logp(batch, mask) if cfg.num_iterations > 1 else None
        prompt_ids = [self.prompts[i].source.id or str(i) for i in indices for _ in range(cfg.num_generations)]
        shown = ["" if self.dropped(i, epoch) else self.prompts[i].source.record.get("instruction") or ""
                 for i in indices for _ in range(cfg.num_generations)]
        return Rollout(batch, mask, prompt_ids, texts, rewards, advantages, scored.to(ids.device), ref_logp,
                       old_logp, video, shown)

    def _video_scores(self, position: int, indices: list[int], texts: list[str], keys: list[dict]) -> list[VideoScore]:
        """R_video of each completion; render seeds are functions of (seed, data slot, row), like sampling's."""
        cfg, stream = self.config, self.order.stream_index(position)
        instructions = [self.prompts[i].source.record.get("instruction") for i in indices
                        for _ in range(cfg.num_generations)]
        seeds = [render_seed(cfg.run.seed, stream, row) for row in range(len(texts))]
        return self.video.score_many(texts, instructions, keys, seeds)

    def _score(self, texts: list[str], key_infos: list[dict]) -> list[RewardResult]:
        """Rewards; a judge backend that fails outright fails every completion (all are masked)."""
        from vidcli.rewards.format import format_reward

        try:
            return self.reward.score_many(texts, key_infos)
        except BackendUnavailable:
            raise  # a refused key or a dead judge ends the run; it is not a bad batch
        except BackendError as exc:
            log.warning("judge failed for a whole batch, format reward only: %s", exc)
            return [RewardResult(format_reward(t), {"format": format_reward(t), **dict.fromkeys(PARTS[1:])}, False,
                                 False, {"judge": str(exc)}) for t in texts]

    def _logp(self, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        logits = self.module(batch, mask.size(1))
        return token_logprobs(logits, batch["input_ids"], mask, self.config.temperature)

    def _reference_logp(self, batch: dict, mask: torch.Tensor) -> torch.Tensor:
        width = mask.size(1)
        # Same precision as the policy's forward, which accelerate runs under autocast.
        with self.accelerator.autocast():
            if self.reference is not None:
                logits = self.reference.forward(batch, logits_to_keep=width + 1).logits
            else:
                with self.interpreter.model.disable_adapter():
                    logits = self.interpreter.forward(batch, logits_to_keep=width + 1).logits
        return token_logprobs(logits, batch["input_ids"], mask, self.config.temperature)

    def policy_loss(self, rollout: Rollout) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The GRPO loss of one rollout under the current policy, and its diagnostics."""
        cfg = self.config
        logp = self._logp(rollout.batch, rollout.completion_mask)
        return grpo_loss(logp, rollout.old_logp, rollout.ref_logp, rollout.advantages, rollout.completion_mask,
                         epsilon_low=cfg.epsilon, beta=cfg.beta, row_mask=rollout.scored)

    # ------------------------------------------------------------------ loop

    def train(self) -> Path:
        """Run until ``total_steps``; return the folder holding the final model."""
        acc, run, cfg = self.accelerator, self.config.run, self.config
        self.monitor.begin(total_steps=self.total_steps, step=self.step,
                           samples_per_step=self.order.global_batch * cfg.num_generations * run.grad_accum)
        if self.step >= self.total_steps:
            log.info("nothing to do: the run is at step %d of %d", self.step, self.total_steps)
            return self.finish(final_model(run.output_dir))
        self.module.train()
        while self.step < self.total_steps:
            rollouts = []
            for _ in range(run.grad_accum):
                _, indices = self.order.micro_batch(self.position)
                rollouts.append(self.rollout(self.position, indices))
                self.position += 1
            self._write_rollouts(rollouts)
            for _ in range(cfg.num_iterations):
                if self.step >= self.total_steps:
                    break
                stats = []
                for rollout in rollouts:
                    with acc.accumulate(self.module):
                        loss, metrics = self.policy_loss(rollout)
                        acc.backward(loss)
                        if acc.sync_gradients:
                            lr = self.scheduler.get_last_lr()[0]
                            grad_norm = clip_and_step(acc, self.trainable, self.optimizer, self.scheduler,
                                                      run.optim.max_grad_norm)
                    stats.append({"loss": loss.detach(), **metrics})
                self.step += 1
                self.metrics = self._step_metrics(stats, rollouts, lr, grad_norm)
                self.monitor.step(self.step, self.metrics)
                if run.save_every and self.step % run.save_every == 0 and self.step < self.total_steps:
                    self.save_checkpoint()
        return self.finish()

    def _step_metrics(self, stats: list[dict], rollouts: list[Rollout], lr: float, grad_norm: float | None) -> dict:
        """Step means over micro-batches and processes: loss, KL, clip fractions, rewards (of the
        completions the judge scored), lengths; counts of judge errors and masked completions."""
        acc = self.accelerator
        out = {name: acc.reduce(torch.stack([s[name] for s in stats]).mean(), reduction="mean").item()
               for name in stats[0]}
        judged = [r for rollout in rollouts for r in rollout.rewards if not r.errors]
        rewards = [r for rollout in rollouts for r in rollout.rewards]
        local = {"reward": [r.total for r in judged],
                 "completion_length": [float(n) for ro in rollouts for n in ro.completion_mask.sum(1).tolist()]}
        parts = (*PARTS, *VIDEO_PARTS) if self.video is not None else PARTS
        local.update({f"reward/{part}": [r.parts[part] for r in rewards if r.parts.get(part) is not None]
                      for part in parts})
        local["judge_errors"] = [float(len(r.errors)) for r in rewards]
        local["masked"] = [float(not s) for rollout in rollouts for s in rollout.scored.tolist()]
        counts = ("judge_errors", "masked")
        for name, values in local.items():
            pair = torch.tensor([sum(values), len(values)], dtype=torch.float64, device=acc.device)
            total, count = acc.reduce(pair, reduction="sum").tolist()
            if count:
                out[name] = total / count if name not in counts else total
        out["lr"] = lr
        if grad_norm is not None:
            out["grad_norm"] = grad_norm
        return out

    def _write_rollouts(self, rollouts: list[Rollout]) -> None:
        """Append every completion of this rollout (all processes) to ``OUTPUT/rollouts.jsonl``."""
        rows = []
        for rollout in rollouts:
            for i, (pid, text, reward) in enumerate(zip(rollout.prompt_ids, rollout.texts, rollout.rewards)):
                rows.append({"step": self.step + 1, "prompt_id": pid, "sample": i % self.config.num_generations,
                             "instruction": rollout.instructions[i] if rollout.instructions else None,
                             "completion": text, "reward": reward.total, "parts": reward.parts,
                             "errors": reward.errors, "masked": not bool(rollout.scored[i]),
                             "advantage": float(rollout.advantages[i]),
                             "length": int(rollout.completion_mask[i].sum())})
                if rollout.video is not None:
                    rows[-1]["video"] = rollout.video[i].record()
        rows = self.rollout_log.gather(rows)
        self.rollout_log.append(rows)
        if self.accelerator.is_main_process:
            self._log_rollout_table(rows)

    def _log_rollout_table(self, rows: list[dict]) -> None:
        """The first ``--log-samples`` completions of this rollout (one prompt's group first) as a tracker
        table, when one of the steps the rollout serves is a multiple of ``--log-samples-every`` (and on
        the first step)."""
        run, media = self.config.run, self.monitor.media
        first, last = self.step + 1, self.step + self.config.num_iterations
        every = run.log_samples_every
        if not media.active or not every or not (first == 1 or last // every > (first - 1) // every):
            return
        parts = list(dict.fromkeys(part for row in rows for part in row["parts"]))
        columns = ["prompt_id", "sample", "instruction", "completion", "reward", *parts, "advantage", "masked"]
        table = [[row["prompt_id"], row["sample"], row["instruction"], row["completion"], row["reward"],
                  *[row["parts"].get(part) for part in parts], row["advantage"], row["masked"]]
                 for row in rows[:run.log_samples]]
        media.table("rollouts", columns, table, first)

    # ------------------------------------------------------------------ saving

    def finish(self, done: Path | None = None) -> Path:
        """Save the final model (unless ``done`` holds it already); the run's summary goes with it
        and closes the run on stderr."""
        return self.monitor.finish(self.step, lambda summary: done or self.save_checkpoint(True, summary),
                                   logs=[self.rollout_log.path])

    def save_checkpoint(self, final: bool = False, summary: dict | None = None) -> Path:
        """``checkpoint-STEP/`` (or, ``final``, the output folder itself) with weights, trainer state
        and the run's summary so far."""
        return self.checkpointer.save(self.step, save_weights=self.interpreter.save_pretrained,
                                      scheduler=self.scheduler, micro_batches=self.position,
                                      metrics=self.metrics, final=final, order=self.order,
                                      summary=summary or self.monitor.summary(self.step, logs=[self.rollout_log.path]))

    def cleanup(self) -> None:
        if self.started is not None:
            self.started.close()
        if self._judge is not None:
            self._judge.close()


def run_grpo(config: GRPOConfig, reward: RewardModel | None = None) -> Path:
    """Set up, train and clean up one GRPO run; returns the folder with the final model."""
    return run_recipe(GRPORecipe(config, reward))
