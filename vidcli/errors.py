"""Error types shared by every command.

An :class:`InputError` is a problem with what the user gave us (a malformed line, a
missing field, an unreadable media file). Commands report it as a single line naming
the file, line, record id and reason, and never show a traceback for it. Anything
else that escapes is a bug and keeps its traceback.
"""
from __future__ import annotations


class InputError(Exception):
    """A problem with user input, reported as one line."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        record_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.record_id = record_id

    def located(self, *, file=None, line=None, record_id=None) -> "InputError":
        """Fill in location fields that are not set yet (returns self)."""
        self.file = self.file if self.file is not None else file
        self.line = self.line if self.line is not None else line
        self.record_id = self.record_id if self.record_id is not None else record_id
        return self

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        rid = f"id={self.record_id}: " if self.record_id is not None else ""
        return f"{where}{rid}{self.message}".replace("\n", " ")


class MediaError(InputError):
    """A media file (video, image, audio, camera trajectory) is missing or unreadable."""


class BackendError(Exception):
    """A model call failed for good (after retries). Recorded as the record's error."""


class BackendUnavailable(BackendError):
    """The backend cannot answer any record (a refused key, a server that stays unreachable,
    the same failure over and over): the run stops instead of rejecting every record."""


class ReplyFormatError(BackendError):
    """A model kept answering in a form we cannot parse (e.g. not the JSON we asked for)."""
