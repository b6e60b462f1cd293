"""Each data command's --help names the input fields it reads and every field it adds."""
from __future__ import annotations

import re

import pytest

from tests.cli.helpers import invoke

READS_AND_ADDS = {
    "decompose": ["caption", "video", "instruction", "gold", "elements", "questions", "key_info",
                  "user", "supplementary", "imaginative", "--keep-consistent"],
    "make-cot": ["instruction", "gold", "conditions", "gold_text", "cot", "steps", "intent", "nontext",
                 "alignment", "supplement", "target", "descriptions"],
    "mine-triplets": ["video", "source", "target", "instruction", "literal_instruction", "reasoning_type",
                      "subset", "split", "scores", "clip"],
    "interpret": ["instruction", "conditions", "output", "think", "answer", "prompt", "raw", "format_ok",
                  "format_problem"],
    "generate": ["output.prompt", "prompt", "caption", "instruction", "source", "output.video",
                 "output.generation", "seed", "steps", "guidance", "num_frames"],
    "score": ["output.raw", "completion", "key_info", "scores", "format", "user", "detail", "supp", "contra",
              "reward", "questions", "vqa", "rve", "errors"],
}


@pytest.mark.parametrize("command", sorted(READS_AND_ADDS))
def test_help_names_every_field_read_and_added(command):
    result = invoke([command, "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    missing = [f for f in READS_AND_ADDS[command] if not re.search(rf"(?<![\w.-]){re.escape(f)}(?![\w-])", text)]
    assert not missing, f"vidcli {command} --help does not mention {missing}"
    assert "--shard" in text and "Examples:" in text
