"""Media access: from a media path written in a record to the file it names.

Every command that reads media named by records (``make-cot``, ``decompose``,
``interpret``, ``score --metric vqa``, ``mine-triplets`` and the four trainers) goes
through :class:`MediaAccess`, which holds the two settings they share:

- ``--media-root DIR``: relative media paths are relative to DIR instead of the folder
  of the JSONL file that holds the record (absolute paths are used as they are);
- ``--allow-escape``: a relative path may leave that folder through ``..`` (refused
  otherwise, so a record cannot reach files outside the data it belongs to). The check
  is lexical: symlinks inside the folder are the user's.

Errors name the path and say what is wrong; the caller adds the record's file, line
and id (:meth:`vidcli.errors.InputError.located`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vidcli.errors import InputError, MediaError


def resolve_media_path(value: str, base_dir: Path, *, media_root: Path | None = None,
                       allow_escape: bool = False) -> Path:
    """Resolve a media path found in a record (see the module docstring); InputError for a value
    that is not a non-empty string, or a relative path that leaves its folder without ``allow_escape``."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"media path must be a non-empty string, got {value!r}")
    p = Path(value)
    if p.is_absolute():
        return p
    base = Path(media_root) if media_root is not None else Path(base_dir)
    joined = Path(os.path.normpath(base / p))
    rel = os.path.relpath(joined, base)
    if (rel == os.pardir or rel.startswith(os.pardir + os.sep)) and not allow_escape:
        raise InputError(f"media path {value!r} leaves {str(base)!r} through '..' (not allowed)")
    return joined


@dataclass(frozen=True)
class MediaAccess:
    """``--media-root`` and ``--allow-escape``: where a record's relative media paths point."""

    media_root: Path | str | None = None  # None or "": the folder of the record's JSONL file
    allow_escape: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "media_root", Path(self.media_root) if self.media_root else None)

    def path(self, value: object, base_dir: Path) -> Path:
        """The path a record's media value names (InputError: not a path, or an escape)."""
        return resolve_media_path(value, base_dir, media_root=self.media_root, allow_escape=self.allow_escape)

    def media_path(self, value: object, base_dir: Path) -> Path:
        """As :meth:`path`, where a path leaving the media folder is a media problem (MediaError),
        like a missing file."""
        try:
            return self.path(value, base_dir)
        except InputError as exc:
            raise MediaError(exc.message) from None

    def file(self, value: object, base_dir: Path, *, missing: str, error: type[InputError] = InputError) -> Path:
        """As :meth:`path`, checked to be an existing file: else ``error(missing)``, where
        ``missing`` may name the path as ``{path}``."""
        path = self.path(value, base_dir)
        if not path.is_file():
            raise error(missing.format(path=path))
        return path
