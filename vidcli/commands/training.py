"""What the training commands (sft, grpo, drf-tune, revise-tune) share beyond their settings.

A trainer's settings (options, defaults, help, checks) are declared once, in its config
dataclass (:mod:`vidcli.settings`); the command generates its options with
``options_from(Config)`` and builds the config with :func:`build_config`. Here: the log
options, the ``--plan`` options, and the QLoRA device check.
"""
from __future__ import annotations

from typing import Any, Callable

import click


def _apply(func: Callable, decorators: list[Callable]) -> Callable:
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def log_options(func: Callable) -> Callable:
    """-q/--quiet and -v/--verbose (how loud a run is; not a setting of the run)."""
    return _apply(func, [
        click.option("-q", "--quiet", is_flag=True, help="No progress bar and no info logs."),
        click.option("-v", "--verbose", count=True, help="More logs on stderr (-vv for debug)."),
    ])


def settings_from(cls: type, **given: Any) -> Any:
    """``cls`` from the command's parsed options (and the ``given`` fields); a check of ``cls`` that
    fails is a usage error, in the command's flag names (exit 2)."""
    from vidcli.settings import config_from, flag_words

    try:
        return config_from(cls, click.get_current_context().params, **given)
    except ValueError as exc:
        raise click.UsageError(flag_words(str(exc), cls)) from None


def build_config(cls: type, **given: Any) -> Any:
    """The command's config (:func:`settings_from`), with its arguments as given, for vidcli.json."""
    return settings_from(cls, arguments=dict(click.get_current_context().params), **given)


def require_cuda_for_qlora(finetune: str) -> None:
    from vidcli.train.interpreter_tuning import qlora_unavailable

    problem = qlora_unavailable(finetune)
    if problem:
        raise click.UsageError(problem)


def plan_options(*, interpreter: bool = False) -> Callable:
    """``--plan`` and the settings only a plan reads (the GPU budget, processes, sharding, workload)."""
    options = [
        click.option("--plan", is_flag=True,
                      help="Print the run's memory plan per device (weights, gradients, optimiser state, activations "
                           "by phase, peak) and exit: no weights are read (a folder of config files is enough), "
                           "nothing is trained."),
        click.option("--gpu-memory", type=click.FloatRange(0, min_open=True), default=None, metavar="GIB",
                     help="With --plan: the memory of one GPU; the plan lists the measures that bring the peak "
                          "under it."),
        click.option("--plan-processes", type=click.IntRange(1), default=None, metavar="N",
                     help="With --plan: processes (GPUs) of the run [default: the accelerate config's, else 1]."),
        click.option("--accelerate-config", type=click.Path(dir_okay=False), default=None,
                     help="With --plan: the accelerate config whose DeepSpeed / FSDP sharding applies "
                          "[default: accelerate's default config when there is one]."),
    ]
    if interpreter:
        options += [
            click.option("--plan-visual-tokens", type=click.IntRange(0), default=None, metavar="N",
                         help="With --plan: image/video tokens in each prompt [default: half the prompt limit]."),
            click.option("--plan-target-tokens", type=click.IntRange(1), default=512, show_default=True,
                         metavar="N", help="With --plan (sft): target tokens of each example."),
        ]
    return lambda func: _apply(func, options)


def print_plan(command: str, config: Any, opts: dict[str, Any]) -> bool:
    """With ``--plan``: print the plan of ``config`` and say so (the command then stops)."""
    if not opts.get("plan"):
        return False
    from vidcli.plan import default_workload, plan_run
    from vidcli.plan.static import read_accelerate_config

    sharding = read_accelerate_config(opts.get("accelerate_config"), opts.get("plan_processes"))
    workload = None
    if command in ("sft", "grpo"):
        work = default_workload(command, config)
        visual = opts.get("plan_visual_tokens")
        target = opts.get("plan_target_tokens") if command == "sft" else work.target_tokens
        workload = type(work)(work.prompt_tokens,
                              work.visual_tokens if visual is None else min(visual, work.prompt_tokens),
                              target)
    plan = plan_run(command, config, sharding=sharding, gpu_memory=opts.get("gpu_memory"), workload=workload)
    click.echo(plan.render())
    return True
