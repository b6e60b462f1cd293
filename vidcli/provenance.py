"""Which run made a record file: the sidecar ``FILE.vidcli.json`` (DESIGN.md §2).

A data command writing ``OUT`` keeps beside ``OUT.partial`` a small JSON file,
``OUT.partial.vidcli.json``: the command, the settings that change its records, and the
input files with their sha256. It is renamed to ``OUT.vidcli.json`` together with the
data when the run completes, with ``"complete": true`` and the counts. Two things read it:

- ``--resume`` refuses output made by another command, with other settings or from
  other input files, naming what differs (:func:`check_resumable`);
- the recipes treat a stage as done only when ``OUT`` exists with a complete sidecar
  whose input fingerprints still match the files (``python -m vidcli.provenance state
  OUT`` prints done, resume or fresh): a changed input is not "done".

Nothing secret is written: settings go through :func:`vidcli.redact.safe_settings`.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vidcli import __version__
from vidcli.errors import InputError

SIDECAR_SUFFIX = ".vidcli.json"


def sidecar_path(path: str | Path) -> Path:
    """``FILE.vidcli.json`` beside ``FILE``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (the input fingerprints of sidecars and ``vidcli.json``)."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_fingerprints(paths) -> dict[str, str | None]:
    """``{absolute path: sha256}`` of input files; stdin (``-``) has none (``None``)."""
    out: dict[str, str | None] = {}
    for path in paths:
        if path == "-":
            out["-"] = None
        else:
            out[str(Path(path).resolve())] = file_sha256(path)
    return out


@dataclass
class Provenance:
    """The identity of a run that writes a record file."""

    command: str
    settings: dict = field(default_factory=dict)
    inputs: dict[str, str | None] = field(default_factory=dict)

    def to_json(self, *, complete: bool, counts: dict | None = None) -> dict:
        return {"command": self.command, "version": __version__, "complete": complete,
                "settings": self.settings, "inputs": self.inputs, **({"counts": counts} if counts else {})}

    def write(self, path: Path, *, complete: bool = False, counts: dict | None = None) -> None:
        """Write the sidecar ``path`` atomically (temporary name, then rename)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(complete=complete, counts=counts), indent=1,
                                  ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def differences(self, saved: dict) -> list[str]:
        """What differs between this run and a saved sidecar, in words (empty: the same)."""
        found = []
        if saved.get("command") != self.command:
            found.append(f"it was written by `vidcli {saved.get('command')}`, not `vidcli {self.command}`")
            return found
        before = saved.get("settings") or {}
        changed = sorted(k for k in set(before) | set(self.settings) if before.get(k) != self.settings.get(k))
        if changed:
            found.append("settings differ: " + ", ".join(
                f"{_flag(k)} {json.dumps(before.get(k))} then, {json.dumps(self.settings.get(k))} now"
                for k in changed))
        old_inputs = saved.get("inputs") or {}
        # An input counts as the same file when its path or its content matches (a moved file
        # is the same input; an edited one is warned about, see check_resumable).
        old_hashes = {h for h in old_inputs.values() if h}
        for path, digest in self.inputs.items():
            if path not in old_inputs and (digest is None or digest not in old_hashes):
                found.append(f"input {path} was not an input of that run "
                             f"(it read {', '.join(old_inputs) or 'nothing'})")
        return found


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def read_sidecar(path: Path) -> dict | None:
    """A parsed sidecar, or None when absent or unreadable."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def check_resumable(data: Path, sidecar: Path, expected: Provenance) -> list[str]:
    """Refuse (InputError) to resume ``data`` unless ``sidecar`` says this run made it.

    Returns warnings: inputs edited in place since (the records already written were made
    from the earlier version; their ids are kept as done).
    """
    saved = read_sidecar(sidecar)
    if saved is None:
        raise InputError(f"--resume: cannot tell which run wrote it: {sidecar.name} is missing or unreadable; "
                         "remove the file to start afresh", file=str(data))
    problems = expected.differences(saved)
    if problems:
        raise InputError("--resume: refusing to continue another run's output: " + "; ".join(problems)
                         + "; use another -o, or remove the file to start afresh", file=str(data))
    old_inputs = saved.get("inputs") or {}
    return [f"input {path} changed since {data.name} was started; the records already written "
            "were made from its earlier version" for path, digest in expected.inputs.items()
            if digest is not None and path in old_inputs and old_inputs[path] not in (None, digest)]


def _changed_input(inputs: dict) -> str | None:
    """Why recorded inputs no longer match their files (None: all the same)."""
    for path, digest in inputs.items():
        digest = digest.get("sha256") if isinstance(digest, dict) else digest
        if digest is None or path == "-":
            continue
        try:
            now = file_sha256(path)
        except OSError:
            return f"its input {path} is gone"
        if now != digest:
            return f"its input {path} changed since it was written"
    return None


def stage_state(output: str | Path) -> tuple[str, str]:
    """What a recipe should do about a stage's output: ``done``, ``resume``, ``fresh`` or
    ``stale``, and why.

    A record file is done when it exists with a complete sidecar whose inputs are unchanged;
    a training folder when its final ``vidcli.json`` is there with unchanged inputs. An
    unfinished record file resumes from ``OUT.partial`` when that has a sidecar; anything
    else (nothing yet, an output whose inputs changed) starts afresh, and the earlier
    output stays until the new run completes. Training folders always resume (the
    trainer picks the newest complete checkpoint, or starts), except a final model whose
    inputs changed since: ``stale`` (retraining would replace it, so that is the user's call).
    """
    output = Path(output)
    if output.is_dir() or not output.suffix:
        info = read_sidecar(output / "vidcli.json")
        if info is None or not info.get("final"):
            return "resume", f"{output} holds no final model yet"
        changed = _changed_input(info.get("inputs") or {})
        return ("stale", f"{changed}; move {output} aside to train again") if changed else ("done", "complete")
    partial = output.with_name(output.name + ".partial")
    saved = read_sidecar(sidecar_path(output))
    if output.exists() and saved is not None and saved.get("complete") is True:
        changed = _changed_input(saved.get("inputs") or {})
        if changed is None:
            return "done", "complete"
        why = changed
    elif output.exists():
        why = f"{output} has no completion record ({sidecar_path(output).name})"
    else:
        why = f"{output} does not exist"
    if partial.exists() and sidecar_path(partial).exists():
        return "resume", f"{why}; continuing {partial.name}"
    return "fresh", why


def main(argv: list[str]) -> int:
    """``python -m vidcli.provenance state OUT``: print done, resume, fresh or stale (the reason on stderr)."""
    if len(argv) != 2 or argv[0] != "state":
        print("usage: python -m vidcli.provenance state OUTPUT", file=sys.stderr)
        return 2
    state, why = stage_state(argv[1])
    print(state)
    print(why, file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised by the recipes' tests
    sys.exit(main(sys.argv[1:]))
