"""Each trainer option that sets a field of its command's config has that field's default.

The run and optimiser options (``--lr``, ``--save-every``, ...) are left out: each command
gives them its method's defaults on purpose, while RunConfig/OptimConfig hold generic ones.
"""
from __future__ import annotations

import dataclasses
import importlib

import click
import pytest

from vidcli.train.drf import DRFConfig
from vidcli.train.grpo import GRPOConfig
from vidcli.train.revise import ReviseConfig
from vidcli.train.sft import SFTConfig

COMMANDS = {"sft": SFTConfig, "grpo": GRPOConfig, "drf_tune": DRFConfig, "revise_tune": ReviseConfig}


def _default(command: click.Command, param: click.Parameter):
    """What the command receives when the option is not given (its type and callback applied)."""
    ctx = click.Context(command)
    return param.process_value(ctx, param.get_default(ctx))


@pytest.mark.parametrize("module", list(COMMANDS))
def test_trainer_options_and_config_fields_agree(module):
    config = COMMANDS[module]
    command = importlib.import_module(f"vidcli.commands.{module}").command
    fields = {f.name: f for f in dataclasses.fields(config)}
    matched = []
    for param in command.params:
        field = fields.get(param.name)
        if field is None or field.default is dataclasses.MISSING:
            continue
        matched.append(param.name)
        assert _default(command, param) == field.default, (
            f"{module}: --{param.name.replace('_', '-')} defaults to {_default(command, param)!r}, "
            f"{config.__name__}.{field.name} to {field.default!r}")
        if isinstance(param.type, click.Choice):
            assert field.default in param.type.choices
    assert len(matched) >= 5  # the comparison really ran over the command's own settings
