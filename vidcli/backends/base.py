"""What every text/vision backend offers, whatever serves it.

Conversations use the chat format of OpenAI and transformers' chat templates:
a list of ``{"role": ..., "content": ...}`` where content is a string or a list of parts

- ``{"type": "text", "text": str}``
- ``{"type": "image", "image": PIL.Image.Image}``
- ``{"type": "video", "video": list[PIL.Image.Image], "fps": float}``

Media are in-memory objects (already decoded), so backends never touch paths.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

Message = dict
Conversation = list[Message]


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    max_tokens: int = 512
    top_p: float = 1.0
    seed: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Reply:
    """One completion, or the one-line reason it failed after retries."""

    text: str | None
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@runtime_checkable
class ChatModel(Protocol):
    spec: str

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[Reply]:
        """Answer every conversation; order kept; a failure is a Reply with ``error``."""
        ...

    def close(self) -> None: ...
