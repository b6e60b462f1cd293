"""Checking weight and state files before loading them, so damage is one clear line.

A truncated or overwritten ``.safetensors`` file fails deep inside a loader with a
message that names no file; a damaged ``torch.save`` archive (optimizer, RNG state)
fails in the unpickler with advice to turn its safety off. Both checks here are cheap
and name the file:

- safetensors: the 8-byte header length, the JSON header, and the file size the
  header's tensor offsets require (nothing is loaded);
- ``torch.save`` files are zip archives: every member's CRC is verified (read, never
  unpickled).
"""
from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

from vidcli.errors import InputError


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why a safetensors file cannot be loaded (truncated, bad header), or None when it looks whole."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return "truncated (no header)"
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                return "truncated or not a safetensors file (header length beyond the end)"
            header = json.loads(handle.read(length))
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except (ValueError, UnicodeDecodeError):
        return "damaged (its header is not valid JSON)"
    if not isinstance(header, dict):
        return "damaged (its header is not a JSON object)"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            return f"damaged (bad entry for tensor {name!r})"
    if 8 + length + end > size:
        return f"truncated ({size} bytes, the header needs {8 + length + end})"
    return None


def archive_problem(path: str | os.PathLike) -> str | None:
    """Why a ``torch.save`` archive is damaged (not a zip, a member failing its CRC), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        return f"damaged ({exc})"
    return f"damaged (member {bad} fails its checksum)" if bad else None


def check_weights(folder: str | os.PathLike) -> None:
    """Raise InputError naming the first damaged safetensors file in ``folder`` (or the file itself)."""
    root = Path(folder)
    files = [root] if root.is_file() else sorted(root.rglob("*.safetensors"))
    for file in files:
        if file.suffix == ".safetensors":
            problem = safetensors_problem(file)
            if problem:
                raise InputError(f"weights file is {problem}", file=str(file))


def state_problems(folder: str | os.PathLike) -> list[str]:
    """``FILE: why`` for each damaged weight or ``torch.save`` file of a checkpoint folder."""
    root = Path(folder)
    found = []
    for file in sorted(root.rglob("*")):
        if not file.is_file():
            continue
        problem = None
        if file.suffix == ".safetensors":
            problem = safetensors_problem(file)
        elif file.suffix in (".bin", ".pkl", ".pt") and file.parent.name == "trainer_state":
            problem = archive_problem(file)
        if problem:
            found.append(f"{file}: {problem}")
    return found
