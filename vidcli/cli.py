"""The ``vidcli`` command group.

Subcommands live in ``vidcli/commands/<name>.py`` and are imported only when used,
so ``vidcli --help`` stays fast: the help listing comes from the table below, not from
importing torch-heavy modules.
"""
from __future__ import annotations

import importlib

import click

from vidcli import __version__

# name -> (module, one-line description). Only implemented subcommands are listed.
COMMANDS: dict[str, tuple[str, str]] = {
    "decompose": ("vidcli.commands.decompose", "Split captions into checkable elements, questions and key-info."),
    "make-cot": ("vidcli.commands.make_cot", "Build four-step chain-of-thought training records (ReaDe stage 1)."),
    "sft": ("vidcli.commands.sft",
            "Fine-tune the interpreter on CoT records, or pre-train its camera encoder (ReaDe stage 1)."),
    "grpo": ("vidcli.commands.grpo", "Reinforce the interpreter with the ReaDe reward by GRPO (ReaDe stage 2)."),
    "drf-tune": ("vidcli.commands.drf_tune",
                 "Fine-tune a video DiT on a frozen VLM's differentiable reward (Diffusion-DRF)."),
    "revise-tune": ("vidcli.commands.revise_tune",
                    "Train a video editor with flow matching and a frozen VLM critic (ReViSE)."),
    "mine-triplets": ("vidcli.commands.mine_triplets",
                      "Mine reasoning-informed editing triplets from films (icvg) or edit pairs (rave)."),
    "interpret": ("vidcli.commands.interpret",
                  "Interpret a video request: reasoning, six-part caption, generator prompt."),
    "generate": ("vidcli.commands.generate",
                 "Generate videos from prompts, or edit source clips, with a video checkpoint."),
    "score": ("vidcli.commands.score",
              "Score records (format, coverage, reward, vqa, rve) and summarise with 95% intervals."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(COMMANDS[name][0]).command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="vidcli")
def cli() -> None:
    """Data building, training and inference for controllable video generation.

    Subcommands read and write JSONL records (one JSON object per line; '-' is
    stdin/stdout) and checkpoint directories, so they chain in shell pipelines.

    \b
    Example:
      vidcli decompose --schema drf --llm openai:gpt-4o captions.jsonl > decomposed.jsonl
    """


def main() -> None:
    cli(prog_name="vidcli")
