"""What a data stage leaves behind when a user's mistake or a fault stops it (DESIGN.md §2).

Every case: exit status 1, one line naming the problem (no traceback), no file under the
final name unless the run completed, and an earlier complete output left as it was.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cli.helpers import invoke, read_jsonl, run_cli, write_jsonl
from tests.cli.test_decompose import BALL_ELEMENTS
from vidcli.testing.server import ScriptedServer, error, reply

EARLIER = '{"id":"old","caption":"an earlier complete result"}\n'


def _captions(tmp_path: Path, n: int = 4) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "caption": f"caption {i}"} for i in range(n)])


def _decompose(url: str, *args: str) -> list[str]:
    return ["decompose", "--llm", "openai:m", "--base-url", url, "--concurrency", "1", "-q", *args]


def _one_line_error(result) -> str:
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and lines[0].startswith("vidcli decompose: error: "), result.stderr
    return lines[0]


def _dead_url() -> str:
    with ScriptedServer() as server:
        return server.base_url  # nothing listens there once the block ends


def _full_disk(monkeypatch):
    from vidcli import jsonl

    real = jsonl.RecordWriter.write

    def write(self, record):
        if self.written >= 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(self._partial))
        real(self, record)

    monkeypatch.setattr(jsonl.RecordWriter, "write", write)


# name, server script, extra args, setup(tmp_path, monkeypatch) -> args override, expected text, partial records
CASES = {
    "input path typo": dict(args=lambda t: ["missing.jsonl"], expect="missing.jsonl: input file not found",
                            partial=None),
    "-o is a directory": dict(out=lambda t: t / "adir", expect="-o names a directory", partial=None),
    "server unreachable": dict(url=_dead_url, expect="cannot reach http://127.0.0.1:", partial=0),
    "key refused (401)": dict(server=error(401, "bad key"), expect="HTTP 401: bad key", partial=0,
                              no_skip_hint=True),
    "the same failure every time": dict(server=error(404, "no model m"),
                                        expect="requests to openai:m all failed with: HTTP 404: no model m",
                                        partial=0, n=12),
    "disk full": dict(setup=_full_disk, expect="No space left on device", partial=1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_stopped_stage_keeps_the_earlier_output(case, tmp_path, monkeypatch):
    from vidcli.backends.openai_chat import OpenAIChatModel

    monkeypatch.setattr(OpenAIChatModel, "_backoff", lambda self, n, after: 0.0)  # real retries, no waiting
    spec = CASES[case]
    out = spec.get("out", lambda t: t / "out.jsonl")(tmp_path)
    if out.suffix:
        out.write_text(EARLIER)
    else:
        out.mkdir()
    inputs = [str(_captions(tmp_path, spec.get("n", 4)))]
    if "args" in spec:
        inputs = [str(tmp_path / a) for a in spec["args"](tmp_path)]
    if "setup" in spec:
        spec["setup"](monkeypatch)
    with ScriptedServer(default=spec.get("server", reply(json.dumps(BALL_ELEMENTS)))) as server:
        url = spec["url"]() if "url" in spec else server.base_url
        result = invoke([*_decompose(url, "--on-error", "skip"), *inputs, "-o", str(out)])
        asked = server.count
    assert result.exit_code == 1
    line = _one_line_error(result)
    assert spec["expect"] in line
    if spec.get("no_skip_hint"):
        assert "--on-error skip" not in result.stderr and "OPENAI_API_KEY" in line
    if spec["partial"] is None:  # refused before any work
        assert asked == 0 and not Path(str(out) + ".partial").exists()
    else:
        assert len(read_jsonl(str(out) + ".partial")) == spec["partial"]
        assert "--resume" in result.stderr
    if out.suffix:
        assert out.read_text() == EARLIER  # never replaced by an incomplete run


def test_a_read_only_place_is_one_line_before_any_work(tmp_path):
    if os.access("/proc/sys", os.W_OK):
        pytest.skip("no read-only folder on this machine")
    with ScriptedServer(default=reply(json.dumps(BALL_ELEMENTS))) as server:
        result = invoke([*_decompose(server.base_url), str(_captions(tmp_path)), "-o", "/proc/sys/out.jsonl"])
        assert server.count == 0
    assert result.exit_code == 1 and "folder /proc/sys is not writable" in _one_line_error(result)


def test_resume_refuses_output_of_another_command(tmp_path):
    data = _captions(tmp_path)
    out = tmp_path / "out.jsonl"
    with ScriptedServer(default=reply(json.dumps(BALL_ELEMENTS))) as server:
        assert invoke([*_decompose(server.base_url), str(data), "-o", str(out)]).exit_code == 0
        before = out.read_bytes()
        other = invoke(["score", "--metric", "format", "--resume", "-q", str(data), "-o", str(out)])
        changed = invoke([*_decompose(server.base_url), "--temperature", "0.7", "--resume", str(data), "-o", str(out)])
    assert other.exit_code == 1 and "written by `vidcli decompose`, not `vidcli score`" in other.stderr
    assert changed.exit_code == 1 and "--temperature 0.0 then, 0.7 now" in changed.stderr
    assert "Traceback" not in other.stderr + changed.stderr and out.read_bytes() == before


def test_ctrl_c_leaves_the_partial_file_and_the_earlier_output(tmp_path):
    data = _captions(tmp_path, 40)
    out = tmp_path / "out.jsonl"
    out.write_text(EARLIER)
    partial = tmp_path / "out.jsonl.partial"
    served, interrupted = [], threading.Event()

    def answer(request: dict):
        # The first batch (decompose writes its records 16 at a time at --concurrency 1) is answered
        # at once, later requests only slowly until the run was interrupted: however fast the
        # machine, the run cannot finish before its Ctrl-C.
        served.append(request)
        return reply(json.dumps(BALL_ELEMENTS), delay_ms=0 if len(served) <= 16 or interrupted.is_set() else 3000)

    # The run gets Ctrl-C as a terminal delivers it. A suite started in the background (`cmd &`
    # in a script) runs with SIGINT ignored, which a child would inherit and keep ignoring;
    # a Python-level handler here is reset to the default in the child instead.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with ScriptedServer(default=answer) as server:
        try:
            proc = subprocess.Popen([sys.executable, "-m", "vidcli", *_decompose(server.base_url), str(data),
                                     "-o", str(out)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        deadline = time.time() + 60
        while time.time() < deadline and not (partial.exists() and partial.read_bytes().count(b"\n") >= 2):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        interrupted.set()
        assert out.read_text() == EARLIER and 2 <= partial.read_bytes().count(b"\n") < 40
        resumed = run_cli([*_decompose(server.base_url), "--resume", str(data), "-o", str(out)])
    assert proc.returncode != 0 and "Traceback" not in err
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["id"] for r in read_jsonl(out)) == sorted(f"r{i}" for i in range(40))


# --- damaged or missing models: one line naming the file, before any work ---------------------

def _copy_with_truncated(src: Path, dst: Path, damaged: str) -> Path:
    """A copy of a model folder (linked, not copied, where untouched) with one file cut in half."""
    import shutil

    shutil.copytree(src, dst, copy_function=os.symlink)
    target = dst / damaged
    data = Path(os.readlink(target)).read_bytes() if target.is_symlink() else target.read_bytes()
    target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[: len(data) // 2])
    return dst


def _adapter(tmp_path: Path, tiny_models) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_models["vlm"]),
                                                            "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    return folder


MODEL_CASES = {
    "interpret, truncated weights": (lambda t, m: ["interpret", "--model", str(_copy_with_truncated(
        Path(m["vlm"]), t / "vlm", "model.safetensors")), "--text", "hi"],
        "model.safetensors: weights file is truncated"),
    "interpret, damaged LoRA adapter": (lambda t, m: ["interpret", "--model", str(_adapter(t, m)), "--text", "hi"],
                                        "adapter_model.safetensors: weights file is"),
    "sft --model, truncated weights": (lambda t, m: ["sft", "--stage", "camera", "--model", str(_copy_with_truncated(
        Path(m["vlm"]), t / "vlm", "model.safetensors")), str(_captions(t)), "-o", str(t / "run")],
        "weights file is truncated"),
    "generate, truncated transformer": (lambda t, m: ["generate", "--model", str(_copy_with_truncated(
        Path(m["wan"]), t / "wan", "transformer/diffusion_pytorch_model.safetensors")), str(_captions(t)),
        "-o", str(t / "out.jsonl")], "diffusion_pytorch_model.safetensors: weights file is truncated"),
    "a missing local folder": (lambda t, m: ["interpret", "--model", str(t / "runs" / "grpo"), "--text", "hi"],
                               "grpo: model folder not found"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_a_model_problem_is_one_line(case, tmp_path, tiny_models):
    build, expected = MODEL_CASES[case]
    result = invoke(build(tmp_path, tiny_models))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr and expected in result.stderr.splitlines()[0], result.stderr


def test_frames_beyond_the_positions_of_the_model_are_refused_before_sampling(tmp_path, tiny_models):
    result = invoke(["generate", "--model", str(tiny_models["wan"]), "--num-frames", "4097", "--height", "32",
                     "--width", "32", str(_captions(tmp_path)), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 2 and "--num-frames 4097 is beyond this model's positions" in result.stderr
    assert "at most 253" in result.stderr and not list(tmp_path.glob("out*"))


@pytest.mark.parametrize("value, seen", [("hf:models/vlm", "hf:models/vlm"), ("models/vlm", "hf:models/vlm")])
def test_local_model_options_take_the_backend_spec_or_a_path(value, seen):
    import click

    from vidcli.commands.common import LocalModel

    assert LocalModel(spec=True).convert(value, None, None) == seen
    assert LocalModel(spec=False).convert(value, None, None) == "models/vlm"
    with pytest.raises(click.BadParameter, match="needs a local model"):
        LocalModel(spec=False).convert("openai:gpt-4o", None, None)


def test_interpret_input_typo_is_found_before_the_model_loads(tmp_path):
    result = invoke(["interpret", "--model", str(tmp_path / "never-loaded"), "--input", str(tmp_path / "typo.jsonl"),
                     "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1
    assert result.stderr == f"vidcli interpret: error: {tmp_path / 'typo.jsonl'}: input file not found\n"
