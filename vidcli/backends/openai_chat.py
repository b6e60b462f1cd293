"""Chat backend for any OpenAI-compatible endpoint (OpenAI, vLLM, ``transformers serve``).

Every conversation of a ``generate`` call runs concurrently on one event loop, at most
``concurrency`` in flight. The openai client's own retries are switched off so that
the policy here is the only one (and its request count is exact):

- retried with exponential backoff and jitter: 408, 429, 5xx, timeouts, connection
  errors, and a 200 whose body is not a chat completion (a proxy error page);
  ``Retry-After`` (or ``retry-after-ms``) is honoured, capped at ``retry_after_cap``;
- not retried: any other 4xx (a bad key or a bad request does not heal by waiting).

A request that still fails becomes ``Reply(text=None, error="one line")``: a failure of
that one conversation. A failure of the backend itself raises
:class:`~vidcli.errors.BackendUnavailable` instead, so a run stops rather than rejecting
every record: the server refuses the key (401/403), it stays unreachable through every
retry, or ``max_identical_failures`` requests in a row fail with the same error. The
message names the endpoint without credentials. The API key is scrubbed from every
message we produce, and the object's repr does not show it.
"""
from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vidcli.backends.base import Conversation, Reply, Sampling
from vidcli.errors import BackendUnavailable
from vidcli.redact import public_url

log = logging.getLogger(__name__)

# Local servers ignore the key, but the openai client insists on having one.
PLACEHOLDER_API_KEY = "no-key-needed"


def _is_retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _data_url(image, fmt: str) -> str:
    """Encode a PIL image as a base64 data URL (PNG keeps pixels exact; JPEG for frames)."""
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    elif fmt == "PNG" and image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _video_parts(part: dict) -> list[dict]:
    frames = part["video"]
    if not frames:
        raise ValueError("video part has no frames")
    fps = float(part.get("fps") or 1.0)
    stamps = part.get("timestamps") or [i / fps for i in range(len(frames))]
    marker = (
        f"[video: {len(frames)} frames at {fps:g} fps, "
        f"t = {', '.join(f'{t:.2f}' for t in stamps)} s]"
    )
    images = [{"type": "image_url", "image_url": {"url": _data_url(f, "JPEG")}} for f in frames]
    return [{"type": "text", "text": marker}, *images]


def to_openai_messages(conversation: Conversation) -> list[dict]:
    """Our conversation format → the chat-completions ``messages`` payload."""
    messages = []
    for message in conversation:
        content = message.get("content")
        if isinstance(content, list):
            parts: list[dict] = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in ("text", "image_url"):
                    parts.append(part)
                elif kind == "image":
                    parts.append({"type": "image_url", "image_url": {"url": _data_url(part["image"], "PNG")}})
                elif kind == "video":
                    parts.extend(_video_parts(part))
                else:
                    raise ValueError(f"unsupported content part type {kind!r}")
            content = parts
        messages.append({**message, "content": content})
    return messages


def _retry_after_seconds(headers) -> float | None:
    """Seconds a server asked us to wait, from ``retry-after-ms`` or ``Retry-After``
    (seconds or an HTTP date); None when absent or unreadable."""
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _status_message(exc) -> str:
    """``HTTP <status>: <the server's own words>`` from an APIStatusError."""
    body = getattr(exc, "body", None)
    detail = None
    if isinstance(body, dict):
        # OpenAI and vLLM say "message"; FastAPI servers (transformers serve) say "detail".
        detail = next((body[k] for k in ("message", "detail") if isinstance(body.get(k), str)), None)
    elif isinstance(body, str) and body.strip():
        detail = body
    if detail is None:
        detail = getattr(exc.response, "reason_phrase", "") or "error"
    return f"HTTP {exc.status_code}: {detail}"


@dataclass
class _Retry:
    reason: str
    retry_after: float | None = None
    unreachable: bool = False  # a connection failure: if it outlasts the retries, the server is gone


class OpenAIChatModel:
    """ChatModel over the chat-completions API (see module docstring for the policy)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        retry_after_cap: float = 60.0,
        max_identical_failures: int = 10,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.model = model
        self.spec = f"openai:{model}"
        self.base_url = base_url
        self._api_key = api_key or PLACEHOLDER_API_KEY
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_cap = retry_after_cap
        self.max_identical_failures = max_identical_failures  # 0: never stop for a repeated failure
        self.requests_sent = 0  # every HTTP attempt, retries included
        self._streak: tuple[str | None, int] = (None, 0)  # the last failure and how often in a row

    def __repr__(self) -> str:
        return f"OpenAIChatModel(spec={self.spec!r}, base_url={self.endpoint!r})"

    @property
    def endpoint(self) -> str:
        """The server's URL as it may be shown or stored (no user info, no secret query values)."""
        return public_url(self.base_url or "https://api.openai.com/v1")

    def _scrub(self, text: str) -> str:
        """One line, bounded, with the API key masked wherever a server echoed it."""
        if self._api_key != PLACEHOLDER_API_KEY and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        text = " ".join(text.split())
        return text if len(text) <= 300 else text[:297] + "..."

    # -- sync entry point ----------------------------------------------------------
    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[Reply]:
        """Answer every conversation, order kept. Callable from sync code, repeatedly.

        Raises BackendUnavailable when the backend itself fails (see module docstring).
        """
        if not conversations:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            replies = asyncio.run(self._generate_async(conversations, sampling))
        else:
            # Called from inside a running loop (a notebook, an async app): a private
            # thread gets its own loop instead of nesting in the caller's.
            with ThreadPoolExecutor(max_workers=1) as pool:
                replies = pool.submit(asyncio.run, self._generate_async(conversations, sampling)).result()
        self._count_failures(replies)
        return replies

    def _count_failures(self, replies: list[Reply]) -> None:
        last, run = self._streak
        for answer in replies:
            last, run = (None, 0) if answer.ok else (answer.error, run + 1 if answer.error == last else 1)
        self._streak = (last, run)
        if self.max_identical_failures and run >= self.max_identical_failures:
            raise BackendUnavailable(f"{self.endpoint}: the last {run} requests to {self.spec} all failed "
                                     f"with: {last}")

    def close(self) -> None:
        """Nothing persists between calls: each generate opens and closes its client."""

    # -- async machinery -----------------------------------------------------------
    async def _generate_async(self, conversations: list[Conversation], sampling: Sampling) -> list[Reply]:
        from openai import AsyncOpenAI

        # A fresh client per call: its connection pool belongs to this event loop,
        # which asyncio.run closes at the end.
        client = AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0)
        semaphore = asyncio.Semaphore(self.concurrency)
        try:
            tasks = [self._one(client, semaphore, c, sampling) for c in conversations]
            return list(await asyncio.gather(*tasks))
        finally:
            await client.close()

    def _params(self, sampling: Sampling) -> dict:
        params = {"temperature": sampling.temperature, "max_tokens": sampling.max_tokens, "top_p": sampling.top_p}
        if sampling.seed is not None:
            params["seed"] = sampling.seed
        return params

    def _backoff(self, retry_number: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        ceiling = min(self.backoff_max, self.backoff_base * 2**retry_number)
        # "Equal jitter": at least half the exponential delay, spread over the rest,
        # so many clients hit by the same 429 do not come back in lockstep.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def _one(self, client, semaphore: asyncio.Semaphore, conversation: Conversation, sampling: Sampling) -> Reply:
        async with semaphore:
            try:
                messages = to_openai_messages(conversation)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                return Reply(text=None, error=self._scrub(f"bad conversation: {exc}"))
            try:
                return await self._with_retries(client, messages, self._params(sampling))
            except BackendUnavailable:
                raise
            except Exception as exc:  # a bug or an unforeseen client error: keep the batch alive
                log.exception("%s: unexpected error", self.spec)
                return Reply(text=None, error=self._scrub(f"unexpected error: {type(exc).__name__}: {exc}"))

    async def _with_retries(self, client, messages: list[dict], params: dict) -> Reply:
        # The semaphore slot stays held while backing off: a rate-limited server gets
        # less traffic, not the same traffic from other conversations.
        retry_number = 0
        while True:
            outcome = await self._attempt(client, messages, params)
            if isinstance(outcome, Reply):
                return outcome
            if retry_number >= self.max_retries:
                reason = self._scrub(f"{outcome.reason} (gave up after {retry_number + 1} attempts)")
                if outcome.unreachable:
                    raise BackendUnavailable(f"cannot reach {self.endpoint}: {reason}")
                log.warning("%s: %s", self.spec, reason)
                return Reply(text=None, error=reason)
            delay = self._backoff(retry_number, outcome.retry_after)
            log.info("%s: %s; retrying in %.2fs", self.spec, self._scrub(outcome.reason), delay)
            await asyncio.sleep(delay)
            retry_number += 1

    async def _attempt(self, client, messages: list[dict], params: dict) -> Reply | _Retry:
        import openai

        self.requests_sent += 1
        try:
            completion = await client.chat.completions.create(model=self.model, messages=messages, **params)
        except openai.APIStatusError as exc:
            reason = _status_message(exc)
            if _is_retryable_status(exc.status_code):
                return _Retry(reason, _retry_after_seconds(exc.response.headers))
            if exc.status_code in (401, 403):
                raise BackendUnavailable(self._scrub(
                    f"{self.endpoint}: {reason}: the server refused the request's credentials; "
                    "check OPENAI_API_KEY (and --base-url)"))
            return Reply(text=None, error=self._scrub(reason))
        except openai.APITimeoutError:
            return _Retry(f"request timed out after {self.timeout:g}s")
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            return _Retry(f"connection error: {type(cause).__name__}: {cause}", unreachable=True)
        except (openai.APIResponseValidationError, ValueError) as exc:
            return _Retry(f"malformed response: {type(exc).__name__}: {exc}")
        except openai.OpenAIError as exc:
            return Reply(text=None, error=self._scrub(f"{type(exc).__name__}: {exc}"))
        choices = getattr(completion, "choices", None)
        if not choices:
            # The client hands back plain text when the body is not JSON.
            return _Retry("malformed response: not a chat completion")
        content = choices[0].message.content
        if content is None:
            return Reply(text=None, error=f"reply has no text (finish_reason={choices[0].finish_reason})")
        return Reply(text=content)
