"""Each trainer option and the config field it sets agree: name, default and type.

The options are generated from the config dataclasses (vidcli.settings); these tests fail when
a field's command-line form contradicts the field (a ``cli_default``, ``type`` or ``flag`` that
disagrees with it, a field that no option reaches, an option that sets no field).
"""
from __future__ import annotations

import dataclasses
import importlib

import click
import pytest

from tests.cli.helpers import invoke
from vidcli.rewards.video_feedback_config import VideoFeedbackConfig
from vidcli.settings import OPTION, config_from, settings_of
from vidcli.train.dit_config import DRFConfig, ReviseConfig
from vidcli.train.interpreter_config import GRPOConfig, SFTConfig

COMMANDS = {"sft": SFTConfig, "grpo": GRPOConfig, "drf_tune": DRFConfig, "revise_tune": ReviseConfig}
# The settings of a group a command checks itself: grpo's --reward video-feedback.
GROUPS = {"grpo": [VideoFeedbackConfig]}
# What a command's options set besides its config's settings: the inputs and models it reads, how loud
# it is, --plan, and grpo's --reward and --generator (its --vlm is already a name above).
NOT_SETTINGS = {"inputs", "model", "vlm", "quiet", "verbose", "plan", "gpu_memory", "plan_processes",
                "accelerate_config", "plan_visual_tokens", "plan_target_tokens"}
VIDEO_FEEDBACK = {"reward", "generator"}
# Options whose flag is not the field's name, on purpose (a keyword, a clearer flag, a saved argument's name).
RENAMED = {"lam": "--lambda", "heatmaps_dir": "--save-grad-heatmaps", "output": "--output"}
FIELD_OF_PARAM = {"output": "output_dir", "step_checkpointing": "checkpoint_steps", "video_weight": "weight",
                  "render_steps": "steps", "render_frames": "frames", "render_height": "height",
                  "render_width": "width", "render_guidance": "guidance", "render_batch": "batch",
                  "render_prompt_style": "prompt_style"}
TYPES = {"int": (click.types.IntParamType,), "float": (click.types.FloatParamType,),
         "str": (click.types.StringParamType, click.Choice, click.Path), "Path": (click.Path,)}


def _command(module: str) -> click.Command:
    return importlib.import_module(f"vidcli.commands.{module}").command


def _default(command: click.Command, param: click.Parameter):
    """What the command receives when the option is not given (its type and callback applied)."""
    ctx = click.Context(command)
    return param.process_value(ctx, param.get_default(ctx))


def _settings(config: type) -> dict[str, tuple[dataclasses.Field, str]]:
    """The config's settings by the parameter name their option has."""
    return {field.metadata[OPTION]["name"] or prefix + field.name: (field, prefix)
            for field, prefix in settings_of(config)}


def _field_default(field: dataclasses.Field):
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


@pytest.mark.parametrize("module", list(COMMANDS))
def test_every_option_sets_a_field_with_its_name_default_and_type(module):
    config, command = COMMANDS[module], _command(module)
    settings = _settings(config)
    for group in GROUPS.get(module, []):
        settings.update(_settings(group))
    options = {p.name: p for p in command.params if p.name != "help"}
    extra = NOT_SETTINGS | (VIDEO_FEEDBACK | {"vlm"} if module == "grpo" else set())
    assert sorted(set(options) - set(settings) - extra) == [], "options that set no config field"
    assert sorted(set(settings) - set(options)) == [], "settings no option reaches"
    for name, (field, prefix) in settings.items():
        param = options[name]
        where = f"{module}: --{name.replace('_', '-')} / {config.__name__} field {prefix}{field.name}"
        # Name: the flag is the field's name (or a rename listed above), and the parameter names the field.
        flag = next(o for o in param.opts if o.startswith("--"))
        assert flag == RENAMED.get(name, "--" + name.replace("_", "-")), where
        assert FIELD_OF_PARAM.get(name, name) == prefix + field.name or name in RENAMED, where
        # Default: what the command passes when the option is absent is the field's default.
        convert = field.metadata[OPTION]["convert"] or (lambda value: value)
        if param.required:
            assert field.default is dataclasses.MISSING, where
        else:
            given = _default(command, param)
            if given is not None:
                given = convert(given)
            expected = _field_default(field)
            assert given == expected or (given is None and name == "lora_targets"), \
                f"{where}: the option gives {given!r}, the field defaults to {expected!r}"
        # Type: a flag for a bool field, a number type for a number field, a choice holding the default.
        kind = field.type.replace(" | None", "")
        if kind == "bool":
            assert param.is_flag, where
        elif kind in TYPES:
            assert isinstance(param.type, TYPES[kind]), f"{where}: {param.type!r} for a {field.type} field"
        else:
            assert param.callback is not None, f"{where}: a {field.type} field needs a parsing callback"
        if isinstance(param.type, click.Choice) and not param.required:
            assert convert(param.get_default(click.Context(command))) in [convert(c) for c in param.type.choices]


@pytest.mark.parametrize("module", list(COMMANDS))
def test_a_command_without_options_builds_its_configs_defaults(tmp_path, module):
    """The whole path: parsing no options and building the config gives the config's own defaults
    (the method's run, optimiser and settings), as a library user who gives no settings gets them."""
    config, command = COMMANDS[module], _command(module)
    args = ["in.jsonl", "--model", "m", "-o", str(tmp_path)] + (["--vlm", "v"] if module in ("drf_tune",
                                                                                            "revise_tune") else [])
    if module == "grpo":
        args += ["--judge", "embed"]
    ctx = command.make_context(module, args)
    given = {"model": "m", "inputs": ["in.jsonl"], **({"vlm": "v"} if "vlm" in ctx.params and module != "grpo"
                                                       else {})}
    built = config_from(config, ctx.params, **given)
    run_class = next(f for f in dataclasses.fields(config) if f.name == "run").metadata["vidcli.group"]
    extra = {"judge": "embed"} if module == "grpo" else {}
    assert built == config(run=run_class(output_dir=tmp_path), arguments={}, **given, **extra)


def test_a_config_check_is_a_usage_error_in_flag_words(tmp_path):
    """A config's ValueError names fields; the command reports it with the flags the user typed."""
    records = tmp_path / "in.jsonl"
    records.write_text("")
    result = invoke(["drf-tune", str(records), "--model", "m", "--vlm", "v", "-o", str(tmp_path / "run"),
                     "--k-grad", "5", "--steps", "4"])
    assert result.exit_code == 2
    assert "--k-grad 5 is more than --steps 4" in result.stderr
    with pytest.raises(ValueError, match="k_grad 5 is more than steps 4"):
        config_from(DRFConfig, {"k_grad": 5, "steps": 4}, model="m", vlm="v", inputs=[],
                    run=DRFConfig.__dataclass_fields__["run"].metadata["vidcli.group"](output_dir=tmp_path))
