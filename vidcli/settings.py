"""Settings declared once: a config dataclass field holds a setting's default, help text and
command-line form, and its ``__post_init__`` holds the checks.

- :func:`setting` declares a field that is also a command-line option (its click type, flag
  and help go into the field's metadata); :func:`group` a field holding a nested settings
  dataclass (the run's optimiser, the LoRA settings), whose options are flattened into the
  command's, optionally under a prefix (``lora_`` → ``--lora-rank``).
- :func:`retune` re-declares an inherited setting with another default or help text: how a
  command's config gives its method's own defaults (SFT's cosine 1e-5, GRPO's constant 2.5e-6)
  without writing the option again.
- :func:`options_from` turns a config class into click options; :func:`config_from` builds the
  config back from the parsed values. A ``ValueError`` of a config's checks names fields;
  :func:`flag_words` rewrites those names as the command's flags, so the command layer can
  report it as a usage error in the words the user typed.

click stays the command-line library: this module only writes the ``click.option`` calls.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import click

OPTION = "vidcli.option"
GROUP = "vidcli.group"


def setting(default: Any = dataclasses.MISSING, *, help: str | None = None, flag: str | tuple[str, ...] | None = None,
            name: str | None = None, type: Any = None, metavar: str | None = None,
            callback: Callable | None = None, cli_default: Any = dataclasses.MISSING,
            convert: Callable[[Any], Any] | None = None, cli: bool = True) -> Any:
    """A config field that is also an option.

    ``flag``: the option's declarations (default ``--field-name``; ``--x/--no-x`` for an on/off
    pair); ``name``: the click parameter's name when it is not the field's (it is the key of the
    run's saved arguments); ``cli_default``: the option's default when it is written otherwise
    than the field's (``"TA,Phy,VQ"`` for a tuple the ``callback`` parses); ``convert``: from the
    parsed value to the field's (``"bf16"`` → ``"bfloat16"``); ``cli=False``: a field of the
    group that this command does not offer (its default applies).
    """
    option = {"help": help, "flag": flag, "name": name, "type": type, "metavar": metavar, "callback": callback,
              "cli_default": cli_default, "convert": convert}
    metadata = {OPTION: option} if cli else {}
    return dataclasses.field(default=default, metadata=metadata)


def group(cls: type, *, prefix: str = "", required: bool = False) -> Any:
    """A field holding the settings dataclass ``cls``; its options are the command's, under ``prefix``."""
    metadata = {GROUP: cls, "prefix": prefix}
    if required:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default_factory=cls, metadata=metadata)


def retune(cls: type, name: str, default: Any = dataclasses.MISSING, *, help: str | None = None,
           cli: bool = True) -> Any:
    """Field ``name`` of ``cls`` again, with another ``default`` or ``help`` (``cli=False``: not offered
    by this command; its default applies). For a group field, ``default`` is the group's new class."""
    base = next(f for f in dataclasses.fields(cls) if f.name == name)
    metadata = dict(base.metadata)
    if OPTION in metadata and help is not None:
        metadata[OPTION] = dict(metadata[OPTION], help=help)
    if not cli:
        metadata.pop(OPTION, None)
    if GROUP in metadata and default is not dataclasses.MISSING:  # a group retuned to a subclass of its own
        metadata[GROUP] = default
        return dataclasses.field(default_factory=default, metadata=metadata)
    if default is dataclasses.MISSING:
        return dataclasses.field(default=base.default, default_factory=base.default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field, prefix: str = "") -> str:
    """The field's long flag as the user types it (``--k-grad``, ``--lambda``)."""
    flag = field.metadata[OPTION]["flag"]
    decls = (flag,) if isinstance(flag, str) else flag or ()
    longs = [d.split("/")[0] for d in decls if d.startswith("--")]
    return longs[0] if longs else "--" + (prefix + field.name).replace("_", "-")


def param_name(field: dataclasses.Field, prefix: str = "") -> str:
    """The click parameter's name (the key of the run's saved arguments)."""
    return field.metadata[OPTION]["name"] or prefix + field.name


def settings_of(cls: type, prefix: str = "") -> list[tuple[dataclasses.Field, str]]:
    """Every field of ``cls`` that is an option, nested groups flattened, in declaration order, with its prefix."""
    found = []
    for field in dataclasses.fields(cls):
        if GROUP in field.metadata:
            found += settings_of(field.metadata[GROUP], prefix + field.metadata["prefix"])
        elif OPTION in field.metadata:
            found.append((field, prefix))
    return found


def cli_default(field: dataclasses.Field) -> Any:
    """The option's default: the field's, unless the option writes it otherwise."""
    option = field.metadata[OPTION]
    if option["cli_default"] is not dataclasses.MISSING:
        return option["cli_default"]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _option(field: dataclasses.Field, prefix: str) -> Callable:
    option = field.metadata[OPTION]
    flag = option["flag"]
    decls = [flag] if isinstance(flag, str) else list(flag or [flag_of(field, prefix)])
    decls.append(param_name(field, prefix))
    default = cli_default(field)
    kwargs: dict[str, Any] = {"help": option["help"], "callback": option["callback"]}
    if option["metavar"]:
        kwargs["metavar"] = option["metavar"]
    if isinstance(default, bool) and not any("/" in d for d in decls):
        kwargs.update(is_flag=True)
    elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        kwargs.update(required=True, type=option["type"])
    else:
        kwargs.update(default=default, show_default=default is not None, type=option["type"])
    return click.option(*decls, **kwargs)


def options_from(cls: type) -> Callable[[Callable], Callable]:
    """A decorator adding one click option per setting of ``cls`` (groups included)."""
    inherited = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)}
    own = set(vars(cls).get("__annotations__", {})) - inherited

    def place(item: tuple[dataclasses.Field, str]) -> int:
        """Required options first, then the command's own settings, then the groups it shares."""
        field, prefix = item
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            return 0
        return 1 if field.name in own and field in dataclasses.fields(cls) else 2

    options = [_option(field, prefix) for field, prefix in sorted(settings_of(cls), key=place)]

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


def config_from(cls: type, values: dict[str, Any], prefix: str = "", **given: Any) -> Any:
    """``cls`` built from the parsed option ``values`` (keyed by parameter name) and the ``given`` fields.

    A value of ``None`` leaves the field at its default (an option without a default of its own).
    """
    kwargs = dict(given)
    for field in dataclasses.fields(cls):
        if field.name in kwargs:
            continue
        if GROUP in field.metadata:
            kwargs[field.name] = config_from(field.metadata[GROUP], values, prefix + field.metadata["prefix"])
        elif OPTION in field.metadata and values.get(param_name(field, prefix)) is not None:
            value = values[param_name(field, prefix)]
            convert = field.metadata[OPTION]["convert"]
            kwargs[field.name] = convert(value) if convert else value
    return cls(**kwargs)


def flag_words(message: str, cls: type) -> str:
    """``message`` with each of ``cls``'s setting names written as its flag (``k_grad`` → ``--k-grad``)."""
    flags = {prefix + field.name: flag_of(field, prefix) for field, prefix in settings_of(cls)}
    names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))
    pattern = re.compile(r"(?<![\w-])(" + names + r")(?![\w-])")
    return pattern.sub(lambda m: flags[m.group(1)], message)
