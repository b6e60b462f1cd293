"""A run's per-step log: one JSON line per row (rollout, record, triplet) beside the checkpoints.

``grpo`` writes ``rollouts.jsonl``, ``drf-tune`` ``rewards.jsonl``, ``revise-tune``
``steps.jsonl``; every row carries the ``step`` it belongs to. Rows are gathered from
every process and appended by the main process alone. A resumed run first cuts the log
back to the step it resumes at, so the steps it redoes are not logged twice.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from accelerate import Accelerator


class StepLog:
    """``OUTPUT/NAME``, appended step by step."""

    def __init__(self, accelerator: "Accelerator", path: Path) -> None:
        self.accelerator = accelerator
        self.path = Path(path)

    def gather(self, rows: list[dict]) -> list[dict]:
        """Every process's rows, in process order (on every process)."""
        from accelerate.utils import gather_object

        return gather_object(rows) if self.accelerator.num_processes > 1 else rows

    def append(self, rows: list[dict]) -> None:
        """Append rows already gathered (main process only)."""
        if not self.accelerator.is_main_process:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    def trim(self, step: int) -> None:
        """Keep the lines of steps up to ``step`` (main process only; a resumed run redoes the rest)."""
        if self.accelerator.is_main_process:
            trim_step_log(self.path, step)


def trim_step_log(path: Path, step: int) -> None:
    """Keep a step log's lines of steps up to ``step``.

    Lines torn by a kill are dropped; the file is replaced atomically.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)
