"""Every runnable example in docs/*.md runs, and does what its page says.

A page's ```bash blocks run in order, in one shell, in a copy of examples/, with the
tiny-model kit and the offline teacher in place of the page's models ($LLM, $VLM,
$INTERPRETER, $GENERATOR, $JUDGE). A wrapper function appends small sizes to each
vidcli subcommand (fewer steps, frames and pixels), so the commands stay those the
page shows. ```console blocks are for reading only (set-up, cluster launches).

A line ``#> FILE adds: a.b, c`` checks that every record of FILE has those (dotted)
fields after the block ran.
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
    from vidcli.testing_teacher import teacher_server

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
