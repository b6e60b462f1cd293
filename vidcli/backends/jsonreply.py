"""Getting JSON out of chat replies, and asking again when there is none.

Models wrap the JSON we ask for in prose, in ```json fences, or add a trailing comma.
:func:`extract_json` finds it:

1. the whole reply, if it is JSON;
2. the content of fenced code blocks (```json ones first);
3. otherwise the first balanced ``{...}`` or ``[...]`` in the reply, found by a scan
   that knows JSON strings, so a brace inside a string does not end the object.

Trailing commas before ``}`` or ``]`` are tolerated: the repair is unambiguous (the
text can mean only one thing) and it is the commonest slip. Nothing else is repaired
(single quotes, comments, Python ``True``/``None``, NaN): those need guessing, and a
guess that yields a wrong value is worse than a retry.

:func:`generate_json` asks the model, parses, validates, and re-asks only the failures
with the bad reply and what was wrong appended to the conversation, so the retry is a
different request (a cache keyed on the conversation cannot replay the bad answer).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

from vidcli.backends.base import ChatModel, Conversation, Sampling

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_CLOSER = {"{": "}", "[": "]"}
_CLOSES_NEXT = re.compile(r"\s*[}\]]")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str):
    return json.loads(text, parse_constant=_reject_constant)


def _chars(text: str, start: int = 0):
    """Yield ``(index, char, in_string)``; quotes count as part of their string literal."""
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            yield i, ch, True
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        else:
            in_string = ch == '"'
            yield i, ch, in_string


def _strip_trailing_commas(text: str) -> str:
    """Drop commas that directly precede a closing bracket, outside strings."""
    return "".join(ch for i, ch, in_string in _chars(text)
                   if in_string or ch != "," or not _CLOSES_NEXT.match(text, i + 1))


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the bracket closing ``text[start]``; None if cut off or mismatched."""
    stack: list[str] = []
    for i, ch, in_string in _chars(text, start):
        if in_string:
            continue
        if ch in _CLOSER:
            stack.append(_CLOSER[ch])
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return None
            if not stack:
                return i + 1
    return None


def _parse_candidate(snippet: str):
    try:
        return _loads(snippet)
    except ValueError as first:
        repaired = _strip_trailing_commas(snippet)
        if repaired != snippet:
            try:
                return _loads(repaired)
            except ValueError:
                pass
        raise first


def _scan(text: str, expect: type | None) -> tuple[object, str | None]:
    """First balanced JSON value of the expected kind in ``text``; else (None, reason)."""
    reason = None
    for start, ch in enumerate(text):
        if ch not in _CLOSER or (expect is dict and ch != "{") or (expect is list and ch != "["):
            continue
        end = _balanced_end(text, start)
        if end is None:
            reason = reason or f"JSON starting at character {start} is cut off or has mismatched brackets"
            continue
        try:
            return _parse_candidate(text[start:end]), None
        except ValueError as exc:
            # Prose in brackets ("[see below]") lands here; keep looking further in.
            reason = reason or f"text at character {start} looks like JSON but does not parse: {exc}"
    return None, reason


def extract_json(text: str | None, *, expect: type | None = None) -> dict | list:
    """The JSON object or array in a model reply.

    ``expect`` (``dict`` or ``list``) restricts what counts, so a bracketed aside in
    the prose is not taken for the answer. Raises ValueError with a short reason.
    """
    if text is None or not text.strip():
        raise ValueError("reply is empty")
    kinds = (expect,) if expect is not None else (dict, list)
    stripped = text.strip()
    try:
        value = _parse_candidate(stripped)
        if isinstance(value, kinds):
            return value
    except ValueError:
        pass
    blocks = sorted(_FENCE.findall(text), key=lambda b: b[0].lower() != "json")
    reasons = []
    for _, body in blocks:
        value, reason = _scan(body, expect)
        if value is not None:
            return value  # type: ignore[return-value]
        reasons.append(reason)
    value, reason = _scan(text, expect)
    if value is not None:
        return value  # type: ignore[return-value]
    reason = next((r for r in [*reasons, reason] if r), None)
    if reason:
        raise ValueError(reason)
    what = {dict: "JSON object", list: "JSON array"}.get(expect, "JSON object or array")  # type: ignore[arg-type]
    raise ValueError(f"no {what} in reply")


@dataclass
class JsonResult:
    """The parsed value of one conversation, or why there is none."""

    value: dict | list | None
    error: str | None
    raw: str | None  # the last reply text
    attempts: int

    @property
    def ok(self) -> bool:
        return self.error is None


def _correction(reason: str) -> str:
    return (
        f"Your reply could not be used: {reason}. "
        "Answer again with only the JSON, no other text."
    )


def generate_json(
    model: ChatModel,
    conversations: list[Conversation],
    sampling: Sampling,
    *,
    validate: Callable[[object], None] | None = None,
    attempts: int = 3,
    expect: type | None = None,
) -> list[JsonResult]:
    """Ask for JSON; re-ask only the failures, at most ``attempts`` rounds in all.

    ``validate(value)`` raises ValueError with a reason when a parsed value has the
    wrong shape; that counts as a failure like unparsable text. A transport failure
    (the backend already retried it) ends that conversation at once. Each round is one
    batched ``model.generate`` call.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    results: list[JsonResult | None] = [None] * len(conversations)
    current = [list(c) for c in conversations]
    pending = list(range(len(conversations)))
    for round_no in range(1, attempts + 1):
        if not pending:
            break
        replies = model.generate([current[i] for i in pending], sampling)
        still_failing = []
        for i, answer in zip(pending, replies, strict=True):
            if not answer.ok:
                results[i] = JsonResult(None, answer.error or "empty reply", answer.text, round_no)
                continue
            try:
                value = extract_json(answer.text, expect=expect)
                if validate is not None:
                    validate(value)
            except ValueError as exc:
                reason = str(exc).replace("\n", " ")
                if round_no == attempts:
                    error = f"reply was not valid JSON after {attempts} attempts: {reason}"
                    results[i] = JsonResult(None, error, answer.text, round_no)
                else:
                    current[i] = current[i] + [
                        {"role": "assistant", "content": answer.text},
                        {"role": "user", "content": _correction(reason)},
                    ]
                    still_failing.append(i)
                continue
            results[i] = JsonResult(value, None, answer.text, round_no)
        pending = still_failing
    return results  # type: ignore[return-value]  # every index is filled by the last round
