"""Options and error handling shared by every subcommand.

Exit statuses: 0 success; 1 an input or backend problem (one line on stderr, no
traceback); 2 a usage error (click's convention). A bug keeps its traceback.
"""
from __future__ import annotations

import errno
import functools
import sys
from typing import Callable

import click

from vidcli.errors import BackendError, InputError

# Options that do not change what a data command writes (how fast, where, how loud):
# left out of the settings that --resume compares (vidcli.provenance).
NOT_RESULT_SETTINGS = frozenset({
    "inputs", "output", "resume", "on_error", "rejects", "quiet", "verbose", "concurrency", "batch_size",
    "no_cache", "device", "base_url", "shard", "generated", "videos_dir", "report", "merge",
})
# Write failures a user can cause or fix (full disk, read-only place): one line, not a traceback.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                 errno.EISDIR, errno.ENOTDIR}


def output_provenance(output: str, inputs):
    """The sidecar identity of a file the current command writes from ``inputs`` (None for stdout)."""
    from vidcli.provenance import Provenance, input_fingerprints

    if output == "-":
        return None
    return Provenance(click.get_current_context().info_name, result_settings(), input_fingerprints(inputs))


# Options that name models: checked (folder there, weights whole) before any work.
MODEL_PARAMS = ("model", "model_path", "vlm", "vlm_spec", "llm_spec", "judge", "embedder_spec", "generator")


class LocalModel(click.ParamType):
    """A local model where only one makes sense (token probabilities, gradients): ``hf:PATH``
    or a bare ``PATH`` / hub id, the same as everywhere else; ``openai:`` is a usage error.
    The value reaches the command as ``hf:NAME`` (``spec=True``) or ``NAME``."""

    name = "hf:PATH"

    def __init__(self, *, spec: bool) -> None:
        self.spec = spec

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        kind, sep, rest = value.partition(":")
        if sep and kind == "openai":
            self.fail(f"{value!r}: this needs a local model whose probabilities or gradients can be read "
                      "(hf:PATH or a folder), not a server", param, ctx)
        name = rest if sep and kind == "hf" else value
        if not name.strip():
            self.fail(f"{value!r}: missing the model after 'hf:'", param, ctx)
        return f"hf:{name}" if self.spec else name


def result_settings(*, exclude: tuple[str, ...] = ()) -> dict:
    """The current command's options that change its records, for the output's sidecar."""
    from vidcli.redact import safe_settings

    params = click.get_current_context().params
    return safe_settings({k: v for k, v in sorted(params.items())
                          if k not in NOT_RESULT_SETTINGS and k not in exclude})


def input_output_options(func: Callable) -> Callable:
    """INPUT... / -o OUT / --resume / --on-error / --rejects / --quiet / -v."""
    decorators = [
        click.argument("inputs", nargs=-1, metavar="[INPUT]...", type=click.Path(allow_dash=True)),
        click.option("-o", "--output", default="-", show_default=True, type=click.Path(allow_dash=True),
                     help="Output JSONL file ('-' = stdout). Written to OUT.partial and renamed to OUT only when "
                          "every record is accounted for; OUT.vidcli.json says which run made it."),
        click.option("--resume", is_flag=True,
                     help="Continue an earlier run into the same -o file: skip ids already written. Refused when "
                          "another command, other settings or other inputs made it."),
        click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
                     help="fail: stop with status 1 at the first bad record; skip: write it to the rejects file and go on."),
        click.option("--rejects", type=click.Path(), default=None,
                     help="Rejects file for --on-error skip [default: OUT.rejects.jsonl]."),
        click.option("--media-root", type=click.Path(file_okay=False), default=None,
                     help="Resolve relative media paths against this folder instead of each JSONL file's folder."),
        click.option("--allow-escape", is_flag=True,
                     help="Allow relative media paths that leave the media folder with '..'."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar and no info logs."),
        click.option("-v", "--verbose", count=True, help="More logs on stderr (-vv for debug)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def backend_options(func: Callable) -> Callable:
    """Options that configure every model backend (see DESIGN.md §2)."""
    decorators = [
        click.option("--base-url", default=None, envvar="OPENAI_BASE_URL", show_envvar=True,
                     help="Endpoint for openai:MODEL backends (any OpenAI-compatible server)."),
        click.option("--concurrency", type=click.IntRange(1, 1024), default=8, show_default=True,
                     help="Requests in flight at once for openai: backends."),
        click.option("--batch-size", type=click.IntRange(1, 4096), default=8, show_default=True,
                     help="Generation batch size for local hf: backends."),
        click.option("--no-cache", is_flag=True, help="Do not read or write the reply cache."),
        click.option("--device", default="auto", show_default=True, help="Device for hf: backends."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def reports_errors(func: Callable) -> Callable:
    """Turn input/backend problems into one line on stderr and exit status 1.

    Before the command does any work, its INPUT files and its -o target are checked
    (exists, readable; not a directory, writable place), so a typo costs nothing and
    destroys nothing.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from vidcli.stream import StreamFailed

        ctx = click.get_current_context()
        name = ctx.info_name
        try:
            _check_paths(ctx, kwargs)
            return func(*args, **kwargs)
        except StreamFailed as exc:
            click.echo(f"vidcli {name}: error: {exc}", err=True)
            kept = f"; the records done so far are in {exc.partial}" if exc.partial else ""
            skip = ", or --on-error skip" if exc.skippable else ""
            click.echo(f"vidcli {name}: stopped after {exc.stats.written} record(s) written{kept}; "
                       f"rerun with --resume to continue{skip}", err=True)
            sys.exit(1)
        except (InputError, BackendError) as exc:
            click.echo(f"vidcli {name}: error: {exc}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): not an error of ours.
            sys.stderr.close()
            sys.exit(0)
        except OSError as exc:
            if exc.errno not in _WRITE_ERRNOS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"vidcli {name}: error: {where}{exc.strerror or exc}", err=True)
            output = kwargs.get("output")
            if "on_error" in kwargs and output and output != "-":
                click.echo(f"vidcli {name}: the records done so far are in {output}.partial; "
                           "rerun with --resume once the problem is fixed", err=True)
            sys.exit(1)

    return wrapper


def _check_paths(ctx: click.Context, kwargs: dict) -> None:
    from vidcli.jsonl import check_inputs, check_output

    from vidcli.backends import check_local_model

    planning = bool(kwargs.get("plan"))  # --plan reads records only when they exist, and writes nothing
    for name in ("inputs", "input_files"):  # interpret takes its records with --input
        if kwargs.get(name) and not planning:
            check_inputs(kwargs[name])
    for name in MODEL_PARAMS:
        value = kwargs.get(name)
        if isinstance(value, str) and value:
            kind, sep, rest = value.partition(":")
            if not sep or kind == "hf":
                check_local_model(rest if sep else value)
    output = kwargs.get("output")
    if output and not planning:
        param = next((p for p in ctx.command.params if p.name == "output"), None)
        folder = isinstance(getattr(param, "type", None), click.Path) and not param.type.file_okay
        check_output(output, folder=folder)
