"""Memory plans: how much GPU memory a training run takes, before any weight is loaded.

``vidcli sft|grpo|drf-tune|revise-tune ... --plan`` builds the run's models from their
configuration files on the meta device through the recipe's own ``build_models``
(:mod:`vidcli.weights`), counts weights, gradients and optimiser state from them, and
measures activations on CPU with copies cut to one or two layers of the real widths
(:mod:`vidcli.plan.probe`), scaled to the run's depth and sizes. It prints a table per
device: each term, how it was found, the phases of a step and the peak, and — given
``--gpu-memory`` — the measures that bring the peak under that budget.

Entry point: :func:`plan_run`. Figures are bytes the framework allocates (what
``torch.cuda.max_memory_allocated`` reports); the CUDA context and allocator
fragmentation come on top (about 1–2 GiB).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from vidcli.plan.report import GiB, Plan
from vidcli.plan.static import Sharding

COMMANDS = ("sft", "grpo", "drf-tune", "revise-tune")


def resolve_precision(choice: str) -> str | None:
    """The mixed precision a plan assumes: ``auto`` is bf16 (a GPU that has it), ``no`` none."""
    return {"auto": "bf16", "no": None}.get(choice, choice)


def plan_run(command: str, config: Any, *, sharding: Sharding | None = None, gpu_memory: float | None = None,
             workload: Any = None) -> Plan:
    """The memory plan of one run of ``command`` with ``config`` (the command's config dataclass).

    ``gpu_memory`` (GiB) adds the measures that bring the peak under it, each on top of
    the ones before, in the order that changes the method least.
    """
    sharding = sharding or Sharding()
    plan = _plan(command, config, sharding, workload)
    if gpu_memory is not None:
        plan.budget = gpu_memory * GiB
        if plan.peak > plan.budget:
            current = config
            for flags, change in measures(command, config):
                current = change(current)
                peak = _plan(command, current, sharding, workload).peak
                plan.measures.append((flags, peak))
                if peak <= plan.budget:
                    break
    return plan


def _plan(command: str, config: Any, sharding: Sharding, workload: Any) -> Plan:
    from vidcli.plan import dit, interpreter

    precision = resolve_precision(config.run.mixed_precision)
    if command in ("sft", "grpo"):
        from vidcli.train.grpo import GRPORecipe
        from vidcli.train.sft import SFTRecipe

        recipe = SFTRecipe(config) if command == "sft" else GRPORecipe(config, reward=_NoReward())
        work = workload or default_workload(command, config)
        return interpreter.plan_interpreter(command, recipe, mixed_precision=precision, sharding=sharding, work=work)
    if command == "drf-tune":
        from vidcli.train.drf import DRFRecipe

        return dit.plan_drf(DRFRecipe(config), mixed_precision=precision, sharding=sharding)
    if command == "revise-tune":
        from vidcli.train.revise import ReviseRecipe

        return dit.plan_revise(ReviseRecipe(config), mixed_precision=precision, sharding=sharding)
    raise ValueError(f"no plan for {command!r}; plans exist for {', '.join(COMMANDS)}")


class _NoReward:
    """GRPO plans build no judge: rewards cost no GPU memory."""

    def score_many(self, completions, key_infos):  # pragma: no cover - never called
        raise RuntimeError("a plan scores nothing")


def default_workload(command: str, config: Any):
    """The worst case the flags allow (see :mod:`vidcli.plan.interpreter`)."""
    from vidcli.plan.interpreter import Workload

    prompt = config.max_prompt_tokens
    if command == "grpo":
        return Workload(prompt, prompt // 2, config.max_completion_tokens)
    return Workload(prompt, prompt // 2, 512)


def _with(config: Any, **changes: Any) -> Any:
    """A copy of a command config with config fields, run fields (``run__x``) or optimiser fields changed."""
    run = {k[5:]: v for k, v in changes.items() if k.startswith("run__")}
    optim = {k[7:]: v for k, v in changes.items() if k.startswith("optim__")}
    fields = {k: v for k, v in changes.items() if not k.startswith(("run__", "optim__"))}
    new_run = config.run
    if optim:
        new_run = replace(new_run, optim=replace(new_run.optim, **optim))
    if run:
        new_run = replace(new_run, **run)
    return replace(config, run=new_run, **fields)


def measures(command: str, config: Any) -> list[tuple[str, Any]]:
    """Memory measures for ``config``, in the order that changes the method least: (flags, change)."""
    out: list[tuple[str, Any]] = []
    add = out.append
    dit = command in ("drf-tune", "revise-tune")
    if dit:
        if config.vlm_dtype == "float32":
            add(("--vlm-dtype bf16", lambda c: _with(c, vlm_dtype="bfloat16")))
        if config.text_encoder_dtype == "float32":
            add(("--text-encoder-dtype bf16", lambda c: _with(c, text_encoder_dtype="bfloat16")))
        if not config.decode_checkpointing:
            add(("--decode-checkpointing", lambda c: _with(c, decode_checkpointing=True)))
        if command == "drf-tune" and not config.checkpoint_steps:
            add(("--step-checkpointing", lambda c: _with(c, checkpoint_steps=True)))
    if not config.gradient_checkpointing:
        add(("--gradient-checkpointing", lambda c: _with(c, gradient_checkpointing=True)))
    if dit and not config.vlm_checkpointing:
        add(("--vlm-checkpointing", lambda c: _with(c, vlm_checkpointing=True)))
    if dit and not config.offload_text_encoder:
        add(("--offload-text-encoder", lambda c: _with(c, offload_text_encoder=True)))
    if dit and config.vae_dtype == "float32":
        add(("--vae-dtype bf16", lambda c: _with(c, vae_dtype="bfloat16")))
    if command in ("sft", "grpo") and config.run.batch_size > 1:
        def halve(c):
            return _with(c, run__batch_size=max(1, c.run.batch_size // 2), run__grad_accum=c.run.grad_accum * 2)
        add((f"--batch-size {config.run.batch_size // 2} --grad-accum {config.run.grad_accum * 2} "
             "(same global batch)", halve))
    if config.run.optim.optimizer == "adamw":
        add(("--optimizer adamw8bit", lambda c: _with(c, optim__optimizer="adamw8bit")))
    if config.finetune == "full" and getattr(config, "stage", "cot") != "camera":
        add(("--finetune lora (raise --lr)", lambda c: _with(c, finetune="lora")))
    if command in ("sft", "grpo") and config.finetune in ("full", "lora") and getattr(config, "stage", "cot") != "camera":
        add(("--finetune qlora", lambda c: _with(c, finetune="qlora")))
    if command == "drf-tune":
        if config.k_grad > 1:
            add(("--k-grad 1 (changes the method: the paper's ablation)", lambda c: _with(c, k_grad=1)))
        if config.frames_vlm > 2:
            add(("--frames-vlm 2 (changes the method: the paper's ablation)", lambda c: _with(c, frames_vlm=2)))
    return out
