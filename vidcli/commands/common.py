"""Options and error handling shared by every subcommand.

Exit statuses: 0 success; 1 an input or backend problem (one line on stderr, no
traceback); 2 a usage error (click's convention). A bug keeps its traceback.
"""
from __future__ import annotations

import functools
import sys
from typing import Callable

import click

from vidcli.errors import BackendError, InputError


def input_output_options(func: Callable) -> Callable:
    """INPUT... / -o OUT / --resume / --on-error / --rejects / --quiet / -v."""
    decorators = [
        click.argument("inputs", nargs=-1, metavar="[INPUT]...", type=click.Path(allow_dash=True)),
        click.option("-o", "--output", default="-", show_default=True, type=click.Path(allow_dash=True),
                     help="Output JSONL file ('-' = stdout). Files are written to OUT.partial and renamed when done."),
        click.option("--resume", is_flag=True,
                     help="Continue an earlier run into the same -o file: skip ids already written."),
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
    """Turn input/backend problems into one line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from vidcli.stream import StreamFailed

        name = click.get_current_context().info_name
        try:
            return func(*args, **kwargs)
        except StreamFailed as exc:
            click.echo(f"vidcli {name}: error: {exc}", err=True)
            click.echo(f"vidcli {name}: stopped after {exc.stats.written} record(s) written; "
                       "rerun with --resume to continue, or --on-error skip", err=True)
            sys.exit(1)
        except (InputError, BackendError) as exc:
            click.echo(f"vidcli {name}: error: {exc}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): not an error of ours.
            sys.stderr.close()
            sys.exit(0)

    return wrapper
