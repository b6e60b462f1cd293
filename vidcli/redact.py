"""Keeping credentials out of what we log and store (DESIGN.md §2: keys never reach files).

Two leaks to stop: an argument whose name says it holds a secret (``--api-key``), and a
URL that carries one (``http://user:KEY@host/v1``, ``...?api_key=KEY``). Every setting
written to ``vidcli.json`` or a record file's sidecar, and every endpoint named in a
message, goes through here.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Matched against a name's words ("api_key", "hf_token"), so "max_prompt_tokens" stays.
_SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials", "auth",
                 "sig", "signature"}


def is_secret_name(name: str) -> bool:
    """Whether an argument or query parameter name suggests a credential."""
    return bool(_SECRET_WORDS & set(re.split(r"[_\W]+", name.lower())))


def public_url(url: str) -> str:
    """``url`` without user info and with secret-looking query values masked.

    ``http://user:k@host:8000/v1?api_key=k&x=1`` → ``http://host:8000/v1?api_key=***&x=1``.
    A string that is not a URL comes back unchanged.
    """
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, "***" if is_secret_name(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))


def safe_settings(arguments: dict) -> dict:
    """Arguments as JSON values: none whose name suggests a credential, URLs made public."""
    out = {}
    for name, value in arguments.items():
        if is_secret_name(name):
            continue
        out[name] = _plain(value)
    return out


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return public_url(value) if "://" in value else value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not is_secret_name(str(k))}
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return str(value)  # e.g. a Shard: its text form is what the user typed
