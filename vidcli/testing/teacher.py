"""An offline *teacher*: an OpenAI-compatible server with rule-based replies, for smoke runs.

**This is a test double, not a model.** Tiny random-weight models answer nonsense, so
the LLM-driven stages (decompose, make-cot, mine-triplets, the rve and coverage judges)
would reject every record of a ``TINY=1`` recipe run or a test. The teacher stands in
for GPT-4o there: it recognises which vidcli prompt template a request was rendered
from and answers in the form that template asks for, built by rule from the request's
own text and pixels (:mod:`vidcli.testing.teacher_replies`). Replies are deterministic,
well-formed and loosely on topic; they say nothing about model quality.

Recognition: every template of :mod:`vidcli.prompts` becomes a pattern, its
``$placeholders`` turned into capture groups. A request matches a template when its
system message equals the template's system section (placeholder-free) and a text part
of its first user message matches the user section, which also reads the values back
(the caption, the instruction, ...). A template without a system section is matched on
the user text alone. A request that matches no template gets HTTP 400 naming the start
of its text, so a new template fails loudly until the teacher learns it
(:data:`~vidcli.testing.teacher_replies.REPLIES` must name every template; a test checks).

    python -m vidcli.testing teacher [--host 127.0.0.1] [--port 0] [--url-file FILE]

serves until SIGTERM/SIGINT; it prints its base URL (``http://HOST:PORT/v1``) on stdout
and, once listening, writes it to FILE (atomically; removed again at exit). Any model
name is accepted: ``--llm openai:teacher --base-url "$(cat FILE)"``.
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from dataclasses import dataclass
from importlib import resources

from vidcli.testing.server import Action, ScriptedServer, error, serve_until_signalled
from vidcli.testing.teacher_reading import Request
from vidcli.testing.teacher_replies import REPLIES

BANNER = "offline teacher: rule-based replies for smoke runs, not a model"


# ------------------------------------------------------------------ recognition


@dataclass(frozen=True)
class _Pattern:
    name: str
    system: str | None
    user: re.Pattern


def template_names() -> list[str]:
    """Every prompt template shipped in :mod:`vidcli.prompts`, sorted."""
    files = resources.files("vidcli.prompts").iterdir()
    return sorted(f.name[:-4] for f in files if f.name.endswith(".txt"))


def _regex(template) -> re.Pattern:
    """The template's text as a pattern: literal text exact, each placeholder a lazy group."""
    text, pieces, seen, pos = template.template, [], set(), 0
    for match in template.pattern.finditer(text):
        pieces.append(re.escape(text[pos:match.start()]))
        name = match.group("named") or match.group("braced")
        if name is None:
            pieces.append(re.escape("$"))
        else:
            pieces.append(f"(?P={name})" if name in seen else f"(?P<{name}>.*?)")
            seen.add(name)
        pos = match.end()
    pieces.append(re.escape(text[pos:]))
    return re.compile("".join(pieces), re.DOTALL)


@functools.cache  # built whole before it is shared: requests arrive on many threads at once
def _patterns() -> tuple[_Pattern, ...]:
    from vidcli.prompts import _load  # the loader render() uses, so both read templates alike

    patterns = []
    for name in template_names():
        sections = _load(name)
        system = sections["system"].template if "system" in sections else None
        patterns.append(_Pattern(name, system, _regex(sections["user"])))
    return tuple(patterns)


def _text_parts(content: object) -> list[str]:
    if isinstance(content, str):
        return [content.strip()]
    if isinstance(content, list):
        return [str(p.get("text", "")).strip() for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return []


class UnknownTemplate(ValueError):
    """The request was not rendered from any template the teacher knows."""


def identify(body: dict) -> tuple[str, Request]:
    """The template a chat request comes from and what it says; UnknownTemplate otherwise."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    system = next((" ".join(_text_parts(m.get("content"))) for m in messages if m.get("role") == "system"), None)
    user = next((m.get("content") for m in messages if m.get("role") == "user"), None)
    texts = _text_parts(user)
    for pattern in _patterns():
        if (pattern.system is None) != (system is None) or (system is not None and system.strip() != pattern.system):
            continue
        for text in texts:
            found = pattern.user.fullmatch(text)
            if found:
                return pattern.name, Request(found.groupdict(), texts, user)
        if pattern.system is not None:  # the system text is enough; the user values stay unread
            return pattern.name, Request({}, texts, user)
    shown = (system if system is not None else " ".join(texts))[:80]
    raise UnknownTemplate(f"offline teacher: no vidcli prompt template matches this request "
                          f"({'system' if system is not None else 'user'} text: {shown!r})")


def teacher_reply(body: dict) -> Action | str:
    """The teacher's answer to one chat-completions request body (HTTP 400 when unknown)."""
    try:
        name, request = identify(body)
    except UnknownTemplate as exc:
        return error(400, str(exc))
    rule = REPLIES.get(name)
    if rule is None:
        return error(400, f"offline teacher: no reply rule for prompt template {name!r}")
    return rule(request)


def teacher_server(host: str = "127.0.0.1", port: int = 0) -> ScriptedServer:
    """The teacher as a (not yet started) server; any model name is accepted."""
    return ScriptedServer(teacher_reply, model="teacher", host=host, port=port)


# ------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m vidcli.testing teacher", description=BANNER)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [default: 127.0.0.1]")
    parser.add_argument("--port", type=int, default=0, help="port; 0 lets the kernel pick a free one [default: 0]")
    parser.add_argument("--url-file", default=None, help="write the base URL here once listening (removed at exit)")
    args = parser.parse_args(argv)
    print(BANNER, file=sys.stderr, flush=True)
    return serve_until_signalled(teacher_server, args.host, args.port, args.url_file, "offline teacher")


if __name__ == "__main__":
    sys.exit(main())
