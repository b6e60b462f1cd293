"""Every runnable example in docs/*.md runs, and does what its page says.

A page's ```bash blocks run in order, in one shell, in a copy of examples/, with the
tiny-model kit and the offline teacher in place of the page's models ($LLM, $VLM,
$INTERPRETER, $GENERATOR, $JUDGE). A wrapper function appends small sizes to each
vidcli subcommand (fewer steps, frames and pixels), so the commands stay those the
page shows. ```console blocks are for reading only (set-up, cluster launches).

A line ``#> FILE adds: a.b, c`` checks that every record of FILE has those (dotted)
fields after the block ran.

The examples at the end of each subcommand's ``--help`` name real checkpoints and data
that are not here, so they are checked without running: each parses (options, choices,
types) and each backend option in it is a spec the loaders take.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "changelog.md")  # the changelog runs nothing
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
ADDS = re.compile(r"^#>\s*(\S+)\s+adds:\s*(.+)$", re.M)

# Sizes small enough for the tiny models on two CPU cores; the last value of a repeated
# option wins in click, so these override what the page passes.
TINY_FLAGS = {
    "decompose": "--frames 4",
    "make-cot": "--frames 4 --dedup-embedder none",
    "sft": "--max-steps 1 --batch-size 1 --grad-accum 1 --warmup-steps 0 --video-frames 4 --save-every 0",
    "grpo": "--max-steps 1 -G 2 --grad-accum 1 --warmup-steps 0 --max-completion-tokens 8 --video-frames 4 "
            "--save-every 0",
    "interpret": "--max-new-tokens 16 --frames 4",
    "score": "--frames 3",
    "drf-tune": "--max-steps 1 --k-grad 1 --steps 2 --frames-vlm 3 --height 32 --width 32 --frames 5 "
                "--guidance 1 --save-every 0 --vlm-dtype float32",
    "revise-tune": "--max-steps 1 --grad-accum 1 --frames-critic 3 --critic-tokens 8 --height 32 --width 32 "
                   "--frames 5 --sigma-max 0.8 --save-every 0 --vlm-dtype float32",
    "generate": "--steps 2 --height 32 --width 32 --num-frames 5",
    "mine-triplets": "",
}


def _prelude() -> str:
    cases = "\n".join(f'    {name}) extra="{flags}" ;;' for name, flags in TINY_FLAGS.items())
    return f"""set -euo pipefail
vidcli() {{
  local extra=""
  case "${{1:-}}" in
{cases}
  esac
  # --help and flags-mode interpret lines get no extra sizes that they would not take
  case " $* " in *" --help "*) extra="" ;; esac
  # shellcheck disable=SC2086
  command vidcli "$@" $extra
}}
"""


def _field(record: dict, dotted: str):
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


@pytest.fixture(scope="module")
def teacher():
    from vidcli.testing.teacher import teacher_server

    with teacher_server() as server:
        yield server.base_url


def test_every_page_has_runnable_examples():
    assert PAGES, "docs/ has no pages"
    for page in PAGES:
        assert BLOCK.findall(page.read_text(encoding="utf-8")), f"{page.name} has no ```bash example"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_documented_examples_run(page, tmp_path, tiny_models, teacher):
    text = page.read_text(encoding="utf-8")
    blocks = BLOCK.findall(text)
    work = tmp_path / "examples"
    shutil.copytree(REPO / "examples", work)
    kit = {name: str(path) for name, path in tiny_models.items()}
    env = {**os.environ, "LLM": "openai:teacher", "JUDGE": "openai:teacher", "VLM": kit["vlm"],
           "INTERPRETER": kit["vlm"], "GENERATOR": kit["wan"], "OPENAI_BASE_URL": teacher,
           "OPENAI_API_KEY": "unused", "OMP_NUM_THREADS": "1",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    script = _prelude() + "\n".join(blocks)
    result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{page.name}: an example failed:\n{result.stderr[-5000:]}"
    checks = ADDS.findall("\n".join(blocks))
    for name, fields in checks:
        records = [json.loads(line) for line in (work / name).read_text().splitlines() if line.strip()]
        assert records, f"{page.name}: {name} is empty"
        for field in (f.strip() for f in fields.split(",")):
            for record in records:
                try:
                    _field(record, field)
                except KeyError:
                    pytest.fail(f"{page.name}: {name}: record {record.get('id')} has no field {field!r}")


# --- the examples at the end of every subcommand's --help --------------------------------------

SPEC_OPTIONS = ("--llm", "--vlm", "--judge", "--backend")


def _epilogue_commands(text: str) -> list[list[str]]:
    """The ``vidcli ...`` command lines of a help epilogue, continuations joined, shell
    variables given a value; lines that elide options with ``...`` are left out."""
    import shlex

    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("#") or "..." in line:
            continue
        for part in re.split(r"\||\$\(|;", line):
            part = part.strip()
            if part.endswith(')"'):  # the end of a "$(vidcli ...)" substitution
                part = part[:-2]
            part = part.split(">")[0]
            if part.startswith("vidcli ") or part.startswith("accelerate launch -m vidcli "):
                words = shlex.split(part.replace("$I", "0").replace("$SLURM_ARRAY_TASK_ID", "0"))
                found.append(words[words.index("vidcli") + 1:] if "vidcli" in words else words[4:])
    return found


def _parse(sub, words: list[str]):
    """``sub.make_context`` in the current folder, creating the files and folders that the
    example's options require to exist (the example's own data is not here)."""
    import click

    for _ in range(10):
        try:
            return sub.make_context(words[0], words[1:])
        except click.BadParameter as exc:
            found = re.search(r"(File|Directory) '([^']+)' does not exist", str(exc))
            if not found:
                raise
            kind, path = found.groups()
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).mkdir() if kind == "Directory" else Path(path).touch()
    raise AssertionError(f"cannot satisfy {words}")


@pytest.mark.parametrize("name", sorted(__import__("vidcli.cli", fromlist=["COMMANDS"]).COMMANDS))
def test_help_examples_parse_with_valid_backend_specs(name, tmp_path, monkeypatch):
    """Every example in ``vidcli NAME --help`` parses (options, choices, types), and every
    backend option in it is a spec the loader takes (what made `--vlm Qwen/...` fail)."""
    import importlib

    from vidcli.backends import parse_spec
    from vidcli.cli import COMMANDS, cli
    from vidcli.commands.common import LocalModel

    monkeypatch.chdir(tmp_path)
    epilog = importlib.import_module(COMMANDS[name][0]).command.epilog or ""
    examples = _epilogue_commands(epilog)
    assert examples, f"{name} --help has no example"
    for words in examples:
        sub = cli.get_command(None, words[0])
        assert sub is not None, words
        ctx = _parse(sub, words)  # raises on a usage error
        for option in SPEC_OPTIONS:
            param = next((p for p in sub.params if option in getattr(p, "opts", ())), None)
            if param is None or isinstance(param.type, LocalModel):  # checked when parsed
                continue
            value = ctx.params.get(param.name)
            if isinstance(value, str) and value != "embed":
                parse_spec(value)
