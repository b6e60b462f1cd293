"""Prompt templates, stored as text files beside this module and loaded by name.

A template file has a ``[system]`` section and a ``[user]`` section; placeholders are
``$name`` (string.Template), so JSON braces in the text need no escaping.
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from string import Template

_SECTION = re.compile(r"^\[(system|user)\]\s*$", re.MULTILINE)


@lru_cache(maxsize=None)
def _load(name: str) -> dict[str, Template]:
    text = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    pieces = _SECTION.split(text)
    sections = {pieces[i]: Template(pieces[i + 1].strip()) for i in range(1, len(pieces) - 1, 2)}
    if "user" not in sections:
        raise ValueError(f"prompt template {name!r} has no [user] section")
    return sections


def render(name: str, **values: str) -> list[dict]:
    """The template as a chat conversation (system message if any, then the user turn)."""
    sections = _load(name)
    conversation = []
    if "system" in sections:
        conversation.append({"role": "system", "content": sections["system"].substitute(values)})
    conversation.append({"role": "user", "content": sections["user"].substitute(values)})
    return conversation


def render_text(name: str, **values: str) -> str:
    """Only the user section, as text (for prompts that get media parts added)."""
    return _load(name)["user"].substitute(values)
