"""Interpreting requests: the engines ``vidcli interpret`` runs (a local model or an
OpenAI-compatible server) and the batch step of its record stream.

Records are interpreted one by one (a batch only shares the forward pass); a request
whose batch fails alone is answered alone, so only that record fails.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from vidcli.errors import InputError

log = logging.getLogger("vidcli")


class LocalEngine:
    """Interprets with a local model (``--model``), batched."""

    def __init__(self, interpreter, options: dict, batch_size: int, max_prompt_tokens: int | None) -> None:
        self.interpreter = interpreter
        self.options = options
        self.batch_size = self.records_per_batch = batch_size
        self.max_prompt_tokens = max_prompt_tokens

    def unsupported(self, request) -> str | None:
        return self.interpreter.unsupported(request)

    def answer(self, requests: list) -> list[str | Exception]:
        """Raw text per request, or the InputError that request alone raised."""
        if not requests:
            return []
        try:
            return list(self.interpreter.generate(requests, batch_size=self.batch_size,
                                                  max_prompt_tokens=self.max_prompt_tokens, **self.options))
        except InputError as exc:
            if len(requests) == 1:
                return [exc]
        # Some request in the batch is at fault: answer one by one so only that one fails.
        return [result for r in requests for result in self.answer([r])]

    def close(self) -> None:
        self.interpreter = None


class ServerEngine:
    """Interprets through an OpenAI-compatible server (``--backend openai:MODEL``)."""

    def __init__(self, chat_model, sampling, concurrency: int) -> None:
        self.chat = chat_model
        self.sampling = sampling
        self.records_per_batch = max(16, 4 * concurrency)  # enough requests to keep the server busy

    def unsupported(self, request) -> str | None:
        from vidcli.interpreter.messages import audio_problem

        return audio_problem(request, self.chat.spec)

    def answer(self, requests: list) -> list[str | Exception]:
        from vidcli.errors import BackendError
        from vidcli.interpreter.messages import server_conversation

        replies = self.chat.generate([server_conversation(r, self.chat.spec) for r in requests], self.sampling)
        return [reply.text if reply.ok else BackendError(reply.error) for reply in replies]

    def close(self) -> None:
        self.chat.close()


def interpret_batch(sources, engine, style: str, load) -> list:
    """Stream stage: request records → records with ``output`` (or per-record failures)."""
    from vidcli.interpreter.messages import output_record
    from vidcli.stream import Outcome

    outcomes: list = [None] * len(sources)
    ready: list[tuple[int, object]] = []
    for i, src in enumerate(sources):
        try:
            request = load(src.record, src.base_dir)
            problem = engine.unsupported(request)
            if problem:
                raise InputError(problem)
            ready.append((i, request))
        except InputError as exc:
            outcomes[i] = Outcome.fail("interpret", _without_record(exc))
    for (i, _), raw in zip(ready, engine.answer([r for _, r in ready])):
        if isinstance(raw, Exception):
            outcomes[i] = Outcome.fail("interpret", _without_record(raw) if isinstance(raw, InputError) else str(raw))
            continue
        output = output_record(raw, style)
        if not output["format_ok"]:
            log.warning("id=%s: the output does not follow the answer format (%s); its prompt is the raw answer text",
                        sources[i].id, output["format_problem"])
        outcomes[i] = Outcome.ok({**sources[i].record, "output": output})
    return outcomes


def _without_record(exc) -> str:
    """The error's text without its record id (the stream's error line names the record itself)."""
    where = f"{exc.file}:{exc.line}: " if exc.file and exc.line else f"{exc.file}: " if exc.file else ""
    return where + exc.message


def load_engine(model_path: str | None, backend_spec: str | None, *, dtype, device, load_in_4bit,
                trust_remote_code, base_url, concurrency, no_cache, batch_size, max_prompt_tokens, generation):
    """The engine for ``--backend openai:MODEL`` or ``--model PATH`` (exactly one is given)."""
    if backend_spec is not None:
        from vidcli.backends import load_chat_model
        from vidcli.backends.base import Sampling

        chat = load_chat_model(backend_spec, base_url=base_url, concurrency=concurrency, use_cache=not no_cache)
        sampling = Sampling(temperature=generation["temperature"], max_tokens=generation["max_new_tokens"],
                            top_p=generation["top_p"], seed=generation["seed"])
        return ServerEngine(chat, sampling, concurrency)
    from vidcli.interpreter.model import Interpreter

    interpreter = Interpreter.from_pretrained(model_path, device=device, dtype=dtype, load_in_4bit=load_in_4bit,
                                              trust_remote_code=trust_remote_code)
    return LocalEngine(interpreter, generation, batch_size, max_prompt_tokens)


def flag_request(record: dict, frames: int):
    """The request of flags mode's one record."""
    from vidcli.interpreter.messages import request_from_record

    # Paths on the command line are the user's own: relative to the working directory, '..' allowed.
    with no_record_id():
        return request_from_record(record, Path.cwd(), allow_escape=True, video_frames=frames)


@contextlib.contextmanager
def no_record_id():
    """Flags mode has no record: drop the content-hash id (never seen by the user) from errors."""
    try:
        yield
    except InputError as exc:
        exc.record_id = None
        raise


def interpret_one(engine, request, style: str) -> dict:
    """Flags mode: the output of one request (its errors without a record id)."""
    from vidcli.interpreter.messages import output_record

    with no_record_id():
        problem = engine.unsupported(request)
        if problem:
            raise InputError(problem)
        (raw,) = engine.answer([request])
        if isinstance(raw, Exception):
            raise raw
    return output_record(raw, style)
