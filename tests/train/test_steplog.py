"""Step logs (rollouts.jsonl, steps.jsonl) cut back to a checkpoint's step on resume."""
from __future__ import annotations

import json

from vidcli.train.steplog import trim_step_log


def test_trim_keeps_rows_whose_text_holds_unicode_line_separators(tmp_path):
    # An untrained policy samples characters such as U+2028, U+0085 and U+001C; JSON leaves
    # them unescaped, and str.splitlines would cut those records in pieces and drop them.
    path = tmp_path / "rollouts.jsonl"
    rows = [{"step": 1, "completion": "a\u2028b\x1cc\x85d"}, {"step": 2, "completion": "fine"},
            {"step": 3, "completion": "later\u2029"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + '{"step": 4, "compl',
                    encoding="utf-8")
    trim_step_log(path, 2)
    kept = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    assert kept == rows[:2]  # step 3 is after the checkpoint, the torn last line is dropped
