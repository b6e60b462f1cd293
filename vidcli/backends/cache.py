"""On-disk cache of chat replies, keyed by (model spec, messages, sampling).

Layout: one small JSON file per key, ``<root>/chat/<first two hex>/<sha256>.json``,
written to a temporary file in the same folder and renamed into place. We chose
files over sqlite because several processes write at once in practice (pipeline stages
in a shell script, ranks of an ``accelerate launch``): ``os.replace`` is atomic on
POSIX, so a reader sees either no entry or a complete one and writers never wait for a
lock, whereas sqlite serialises writers ("database is locked" under load) and its
locking is unreliable on network file systems. Sharding keeps folders small.

Only successful replies are stored: a failure is retried on the next run.

Images and video frames enter the key as a sha256 of their pixels plus mode and size,
so the same picture loaded twice hits, and a re-encoded or resized one does not.
The model part of the key is the backend's identity: for ``openai:`` models the spec
and the endpoint (``openai:MODEL@http://host:8000/v1``, credentials removed; see
:func:`vidcli.backends.cache_endpoint`), for local checkpoints a fingerprint of their
files. Nothing secret enters the key or the entry (no API key, no user info of a URL).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

from vidcli.backends.base import ChatModel, Conversation, Reply, Sampling

log = logging.getLogger(__name__)

# Bump when the key recipe changes, so old entries stop matching instead of lying.
KEY_VERSION = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vidcli``, or ``~/.cache/vidcli`` when the variable is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vidcli"


def _image_digest(image) -> dict:
    """Key material for a PIL image: hash of mode, size and raw pixel bytes."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return {"mode": image.mode, "size": list(image.size), "sha256": h.hexdigest()}


def _canonical_part(part) -> object:
    if not isinstance(part, dict):
        return part
    kind = part.get("type")
    if kind == "image":
        return {"type": "image", "image": _image_digest(part["image"])}
    if kind == "video":
        frames = [_image_digest(frame) for frame in part["video"]]
        return {"type": "video", "fps": part.get("fps"), "frames": frames}
    return part  # text and already-serialised parts (image_url) are plain JSON


def canonical_messages(conversation: Conversation) -> list[dict]:
    """The conversation with media replaced by digests: plain JSON data."""
    out = []
    for message in conversation:
        content = message.get("content")
        if isinstance(content, list):
            content = [_canonical_part(p) for p in content]
        out.append({**message, "content": content})
    return out


def cache_key(spec: str, conversation: Conversation, sampling: Sampling, occurrence: int = 0) -> str:
    """sha256 hex of the canonical JSON of what determines a reply.

    ``occurrence`` numbers identical requests within one batch (0, 1, 2, ...): a batch
    that asks the same question four times at temperature 1 wants four samples, and on
    a rerun gets the same four back rather than one sample repeated.
    """
    material = {
        "v": KEY_VERSION,
        "model": spec,
        "messages": canonical_messages(conversation),
        "sampling": sampling.as_dict(),
    }
    if occurrence:
        material["occurrence"] = occurrence
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ReplyCache:
    """A folder of cached reply texts, safe for concurrent readers and writers."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def _path(self, key: str) -> Path:
        return self.root / "chat" / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached text for ``key``, or None (also for an unreadable entry)."""
        path = self._path(key)
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
            return entry["text"] if isinstance(entry.get("text"), str) else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError, KeyError) as exc:
            log.debug("ignoring unreadable cache entry %s: %s", path, exc)
            return None

    def put(self, key: str, text: str, *, spec: str) -> None:
        """Store ``text`` atomically (temp file + rename in the same folder)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"v": KEY_VERSION, "model": spec, "text": text}, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise


class CachedChatModel:
    """Wraps a ChatModel: cached replies come from disk, only misses reach ``inner``.

    ``key_spec`` is the model identity used in keys (defaults to ``inner.spec``); the
    loader passes a content fingerprint for local checkpoints, whose weights can change
    under the same path.
    """

    def __init__(self, inner: ChatModel, cache: ReplyCache, *, key_spec: str | None = None) -> None:
        self.inner = inner
        self.cache = cache
        self.spec = inner.spec
        self.key_spec = key_spec or inner.spec

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[Reply]:
        """Answer from the cache where possible; send all misses to ``inner`` in one batch."""
        seen: Counter[str] = Counter()
        keys = []
        for conversation in conversations:
            base = cache_key(self.key_spec, conversation, sampling)
            keys.append(cache_key(self.key_spec, conversation, sampling, seen[base]) if seen[base] else base)
            seen[base] += 1

        replies: list[Reply | None] = []
        misses: list[int] = []
        for i, key in enumerate(keys):
            text = self.cache.get(key)
            replies.append(Reply(text=text, cached=True) if text is not None else None)
            if text is None:
                misses.append(i)

        if misses:
            fresh = self.inner.generate([conversations[i] for i in misses], sampling)
            for i, answer in zip(misses, fresh, strict=True):
                if answer.ok:
                    self.cache.put(keys[i], answer.text, spec=self.key_spec)
                replies[i] = answer
        return replies  # type: ignore[return-value]  # every slot is filled above

    def close(self) -> None:
        self.inner.close()
