"""Backends by spec string, the same in every command.

- ``openai:MODEL`` — any OpenAI-compatible endpoint; endpoint and key from the
  arguments or ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``;
- ``hf:PATH_OR_ID`` — a local transformers model;
- ``embed`` — the offline MiniLM matcher (not a chat model: :func:`load_embedder`).

Chat models come wrapped in the on-disk reply cache unless ``use_cache=False``. An
``openai:`` model's replies are keyed by its endpoint too (user info and secrets
removed), so another server, or a server behind the same name that is gone, never
answers from the cache. Servers that are known to answer alike (replicas of one
deployment, a test server on a new port) can share entries on purpose: set
``VIDCLI_CACHE_ENDPOINT=NAME`` and every endpoint is keyed as NAME.
Nothing heavy is imported here; each backend imports its libraries when built.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from vidcli.backends.base import ChatModel
from vidcli.errors import InputError

VALID_FORMS = "openai:MODEL, hf:PATH_OR_ID (or embed, for the offline matcher)"


CACHE_ENDPOINT_ENV = "VIDCLI_CACHE_ENDPOINT"


def cache_endpoint(url: str) -> str:
    """An endpoint as the reply cache keys it: credentials removed, scheme and host in
    lower case, no trailing slash (``HTTP://Host:8000/v1/`` and ``http://host:8000/v1`` agree)."""
    from urllib.parse import urlsplit, urlunsplit

    from vidcli.redact import public_url

    parts = urlsplit(public_url(url))
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, ""))


def _bad_spec(spec: str, why: str) -> InputError:
    return InputError(f"bad backend spec {spec!r}: {why}; valid forms: {VALID_FORMS}")


def _local_fingerprint(path: str) -> str | None:
    """Digest of file names, sizes and mtimes of a local checkpoint folder.

    A checkpoint retrained in place keeps its path; without this the cache would keep
    answering with the old weights' replies.
    """
    root = Path(path)
    if not root.is_dir():
        return None
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = file.stat()
        h.update(f"{file.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def check_local_model(name: str) -> None:
    """Before loading: a model that names a local folder must exist and have whole weights.

    ``name`` is a path or hub id (no ``hf:``). A name that can only be a path (absolute,
    ``./``, ``~``, more than one ``/``, or under an existing folder) and is missing is
    reported as a missing folder, not left to the hub client to call a bad repo id.
    """
    from vidcli.filecheck import check_weights

    path = Path(name).expanduser()
    if path.exists():
        check_weights(path)
        return
    first = name.split("/", 1)[0]
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or ("/" in name and Path(first).is_dir()):
        raise InputError("model folder not found", file=name)


def parse_spec(spec: str) -> tuple[str, str]:
    """``(kind, name)`` of a chat backend spec (``openai:MODEL`` or ``hf:PATH_OR_ID``); InputError otherwise."""
    kind, sep, name = spec.partition(":")
    if spec == "embed":
        raise _bad_spec(spec, "the embedder is not a chat model")
    if not sep or kind not in ("openai", "hf"):
        raise _bad_spec(spec, "unknown backend")
    if not name.strip():
        raise _bad_spec(spec, f"missing the model after '{kind}:'")
    return kind, name


def load_chat_model(
    spec: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int = 8,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    timeout: float = 120.0,
    max_retries: int = 5,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 8,
    trust_remote_code: bool = False,
) -> ChatModel:
    """Build the chat model named by ``spec`` (see module docstring)."""
    kind, name = parse_spec(spec)

    key_spec = None
    if kind == "openai":
        from vidcli.backends.openai_chat import OpenAIChatModel

        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if api_key is None and base_url is None:
            raise InputError(
                "OPENAI_API_KEY is not set: give a key for the OpenAI API, or --base-url / "
                "OPENAI_BASE_URL for a local OpenAI-compatible server"
            )
        model: ChatModel = OpenAIChatModel(
            name,
            base_url=base_url,
            api_key=api_key,
            concurrency=concurrency,
            timeout=timeout,
            max_retries=max_retries,
        )
        key_spec = f"{spec}@{os.environ.get(CACHE_ENDPOINT_ENV) or cache_endpoint(model.endpoint)}"
    else:
        from vidcli.backends.hf import HFChatModel

        model = HFChatModel(
            name, device=device, dtype=dtype, batch_size=batch_size, trust_remote_code=trust_remote_code
        )
        fingerprint = _local_fingerprint(name)
        if fingerprint is not None:
            key_spec = f"hf:{Path(name).resolve()}@{fingerprint}"

    if not use_cache:
        return model
    from vidcli.backends.cache import CachedChatModel, ReplyCache

    return CachedChatModel(model, ReplyCache(cache_dir), key_spec=key_spec)


def load_embedder(spec: str = "embed", *, device: str = "cpu"):
    """The offline sentence embedder; ``spec`` must be ``embed``."""
    if spec != "embed":
        raise InputError(f"bad embedder spec {spec!r}: the only valid form is embed")
    from vidcli.backends.embed import Embedder

    return Embedder(device=device)
