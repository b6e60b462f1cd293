"""Reading back what a run gave its trackers: TensorBoard with its own event reader, W&B from its
offline run folders (the run's transaction log and its media files)."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import struct
from pathlib import Path

import pytest


def trackers_installed() -> bool:
    """Both tracker packages are there (the test extra installs them: pip install -e '.[test]')."""
    return all(importlib.util.find_spec(name) is not None for name in ("tensorboard", "wandb"))


def need_trackers() -> None:
    if not trackers_installed():
        pytest.skip("tensorboard and wandb are not installed (pip install -e '.[test]' installs them)")


@contextlib.contextmanager
def offline_wandb(root: Path):
    """W&B offline, its caches and artifact staging under ``root`` rather than the home folder; its
    process-wide state reset afterwards, so the next run reads the environment afresh."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
            patch.setenv(name, str(Path(root) / name.lower()))
        patch.delenv("WANDB_RUN_ID", raising=False)
        try:
            yield
        finally:
            import wandb

            wandb.teardown()


def tensorboard_events(logs: Path, project: str):
    """TensorBoard's EventAccumulator over the run's event files (OUTPUT/logs/PROJECT; nothing sampled away)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(logs) / project), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def tensorboard_text(events, tag: str) -> dict[int, str]:
    """The text summaries of ``tag`` per step (add_text stores them under TAG/text_summary)."""
    return {e.step: e.tensor_proto.string_val[0].decode("utf-8") for e in events.Tensors(f"{tag}/text_summary")}


def wandb_runs(logs: Path) -> list[Path]:
    """The offline run folders under OUTPUT/logs, oldest first."""
    return sorted((Path(logs) / "wandb").glob("offline-run-*"))


def wandb_records(run_dir: Path):
    """The records of a run's ``run-ID.wandb`` transaction log (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = Path(run_dir).glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    block, pos, chunks, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # the rest of a block too short for a record header is padding
            pos += room
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # a whole record
            chunks.append(chunk)
        elif kind == 2:  # first piece
            pending = chunk
        elif kind == 3:  # middle piece
            pending += chunk
        elif kind == 4:  # last piece
            chunks.append(pending + chunk)
    for raw in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        yield record


def wandb_history(run_dir: Path) -> list[dict]:
    """Each logged history row as {key: value} (values JSON-decoded; media as their file entries)."""
    rows = []
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def wandb_run_id(run_dir: Path) -> str:
    return next(r.run.run_id for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "run")
