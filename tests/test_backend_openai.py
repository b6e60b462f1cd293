"""OpenAIChatModel against a real HTTP server with scripted replies and faults."""
from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import logging
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from vidcli.backends import load_chat_model
from vidcli.backends.base import Sampling
from vidcli.backends.cache import CachedChatModel
from vidcli.backends.openai_chat import PLACEHOLDER_API_KEY, OpenAIChatModel, _retry_after_seconds
from vidcli.errors import BackendUnavailable, InputError
from vidcli.testing.server import Action, ScriptedServer, disconnect, error, garbage, reply

GREEDY = Sampling()


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def make_model(server: ScriptedServer, **kwargs) -> OpenAIChatModel:
    kwargs.setdefault("backoff_base", 0.01)  # real backoff shape, test-sized delays
    kwargs.setdefault("api_key", "test-key")
    return OpenAIChatModel("scripted-model", base_url=server.base_url, **kwargs)


def decode_data_url(url: str) -> tuple[str, Image.Image]:
    header, payload = url.split(",", 1)
    return header, Image.open(io.BytesIO(base64.b64decode(payload)))


def test_request_body_and_reply():
    with ScriptedServer(["hello there"]) as server:
        model = make_model(server)
        conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
        [answer] = model.generate([conversation], Sampling(temperature=0.7, max_tokens=33, top_p=0.9, seed=5))
        [request] = server.requests
    assert answer.text == "hello there" and answer.ok and not answer.cached
    assert request.body["model"] == "scripted-model"
    assert request.body["messages"] == conversation
    assert (request.body["temperature"], request.body["max_tokens"]) == (0.7, 33)
    assert (request.body["top_p"], request.body["seed"]) == (0.9, 5)
    assert request.headers["authorization"] == "Bearer test-key"


def test_seed_left_out_when_none():
    with ScriptedServer(["x"]) as server:
        make_model(server).generate([ask("q")], GREEDY)
        assert "seed" not in server.requests[0].body


def test_image_and_video_sent_as_data_urls():
    image = Image.new("RGB", (5, 3), (200, 10, 30))
    image.putpixel((1, 2), (0, 255, 0))
    frames = [Image.new("RGB", (8, 6), (i * 40, 0, 0)) for i in range(3)]
    conversation = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "video", "video": frames, "fps": 2.0},
                {"type": "text", "text": "describe"},
            ],
        }
    ]
    with ScriptedServer(["ok"]) as server:
        make_model(server).generate([conversation], GREEDY)
        parts = server.requests[0].body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "text", "image_url", "image_url", "image_url", "text"]
    header, sent = decode_data_url(parts[0]["image_url"]["url"])
    assert header == "data:image/png;base64"
    assert sent.tobytes() == image.tobytes()  # PNG: the exact pixels
    assert parts[1]["text"] == "[video: 3 frames at 2 fps, t = 0.00, 0.50, 1.00 s]"
    for part, frame in zip(parts[2:5], frames):
        header, sent = decode_data_url(part["image_url"]["url"])
        assert header == "data:image/jpeg;base64" and sent.size == (8, 6)
        assert abs(sent.getpixel((4, 3))[0] - frame.getpixel((4, 3))[0]) <= 3  # JPEG, near exact
    assert parts[5] == {"type": "text", "text": "describe"}


def test_bad_conversation_is_a_reply_error_not_an_exception():
    with ScriptedServer(["ok"]) as server:
        [answer] = make_model(server).generate([[{"role": "user", "content": [{"type": "audio"}]}]], GREEDY)
        assert server.count == 0
    assert answer.text is None and "unsupported content part type 'audio'" in answer.error


def test_transient_faults_retried_until_success():
    script = [error(429, retry_after=0), error(500), error(503), garbage(), disconnect(), "finally"]
    with ScriptedServer(script) as server:
        model = make_model(server)
        [answer] = model.generate([ask("q")], GREEDY)
        assert server.count == 6
    assert answer.text == "finally" and model.requests_sent == 6


def test_json_content_type_with_garbage_body_is_retried():
    broken = Action(status=200, body=b"{not json", headers={"Content-Type": "application/json"})
    with ScriptedServer([broken, "fine"]) as server:
        [answer] = make_model(server).generate([ask("q")], GREEDY)
        assert server.count == 2
    assert answer.text == "fine"


def test_retries_are_bounded():
    with ScriptedServer(default=error(500, "upstream down")) as server:
        [answer] = make_model(server, max_retries=3).generate([ask("q")], GREEDY)
        assert server.count == 4  # one try + three retries, exactly
    assert answer.text is None
    assert answer.error == "HTTP 500: upstream down (gave up after 4 attempts)"


@pytest.mark.parametrize("status", [400, 404, 422])
def test_client_errors_are_not_retried(status):
    with ScriptedServer([error(status, "nope")], default="should not be reached") as server:
        [answer] = make_model(server).generate([ask("q")], GREEDY)
        assert server.count == 1
    assert answer.error == f"HTTP {status}: nope"


def test_timeouts_retried_then_bounded():
    with ScriptedServer([reply("late", delay_ms=1500), "on time"]) as server:
        [answer] = make_model(server, timeout=0.3).generate([ask("q")], GREEDY)
        assert server.count == 2
    assert answer.text == "on time"
    with ScriptedServer(default=reply("late", delay_ms=1500)) as server:
        [answer] = make_model(server, timeout=0.3, max_retries=1).generate([ask("q")], GREEDY)
        assert server.count == 2
    assert answer.error == "request timed out after 0.3s (gave up after 2 attempts)"


def test_retry_after_is_honoured_and_capped():
    with ScriptedServer([error(429, retry_after=0.5), "ok"]) as server:
        start = time.monotonic()
        [answer] = make_model(server, backoff_base=0.001).generate([ask("q")], GREEDY)
        waited = time.monotonic() - start
    assert answer.text == "ok" and waited >= 0.5
    with ScriptedServer([error(429, retry_after=60), "ok"]) as server:
        start = time.monotonic()
        [answer] = make_model(server, retry_after_cap=0.2).generate([ask("q")], GREEDY)
        waited = time.monotonic() - start
    assert answer.text == "ok" and 0.2 <= waited < 5


def test_retry_after_header_forms():
    soon = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert _retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert _retry_after_seconds({"retry-after": "3"}) == 3.0
    assert 8 <= _retry_after_seconds({"retry-after": soon}) <= 10
    assert _retry_after_seconds({"retry-after": "-5"}) == 0.0
    assert _retry_after_seconds({"retry-after": "soonish"}) is None
    assert _retry_after_seconds({}) is None


def test_requests_overlap_up_to_the_concurrency_bound():
    lock = threading.Lock()
    state = {"in_flight": 0, "peak": 0}

    def slow_echo(body: dict) -> str:
        with lock:
            state["in_flight"] += 1
            state["peak"] = max(state["peak"], state["in_flight"])
        time.sleep(0.2)
        with lock:
            state["in_flight"] -= 1
        return "echo " + body["messages"][-1]["content"]

    with ScriptedServer(slow_echo) as server:
        model = make_model(server, concurrency=8)
        start = time.monotonic()
        answers = model.generate([ask(str(i)) for i in range(24)], GREEDY)
        elapsed = time.monotonic() - start
    assert [a.text for a in answers] == [f"echo {i}" for i in range(24)]  # order kept
    # Never above the bound; near it (a connection set up late can shave one off a wave).
    assert 5 <= state["peak"] <= 8
    assert elapsed < 24 * 0.2 / 2  # serial would take 4.8 s; 3 waves of 8 take ~0.7 s


def test_generate_repeatedly_and_inside_a_running_loop():
    with ScriptedServer(lambda body: body["messages"][-1]["content"].upper()) as server:
        model = make_model(server)
        assert [a.text for a in model.generate([ask("a")], GREEDY)] == ["A"]
        assert [a.text for a in model.generate([ask("b"), ask("c")], GREEDY)] == ["B", "C"]

        async def from_async_code():
            return model.generate([ask("d")], GREEDY)

        assert [a.text for a in asyncio.run(from_async_code())] == ["D"]
        assert model.generate([], GREEDY) == []


def test_api_key_never_leaks(tmp_path, caplog, capfd):
    secret = "sk-vidcli-leakcheck-7f3a9c2e51d04b6b"

    def hostile(body: dict):
        # A server that echoes the key back in its error messages, as some do.
        auth = "Incorrect API key provided: " + secret
        turn = body["messages"][-1]["content"]
        if turn == "auth":
            return error(401, auth)
        if turn == "flaky":
            return error(503, auth, retry_after=0)
        return "fine"

    caplog.set_level(logging.DEBUG)
    with ScriptedServer(hostile) as server:
        model = load_chat_model(
            "openai:scripted-model", base_url=server.base_url, api_key=secret, cache_dir=tmp_path, max_retries=2
        )
        model.inner.backoff_base = 0.001
        answers = model.generate([ask("flaky"), ask("ok")], GREEDY)
        with pytest.raises(BackendUnavailable) as refused:
            model.generate([ask("auth")], GREEDY)
        sent_auth = {r.headers["authorization"] for r in server.requests}
    assert sent_auth == {f"Bearer {secret}"}  # the key was really in play
    assert answers[0].error.startswith("HTTP 503") and answers[1].text == "fine"
    out, err = capfd.readouterr()
    stored = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert stored, "the successful reply should have been cached"
    for text in [a.error or "" for a in answers] + [str(refused.value), caplog.text, out, err, repr(model.inner),
                                                     *stored]:
        assert secret not in text
    assert "HTTP 401" in str(refused.value) and "***" in str(refused.value)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_stop_the_run_naming_the_endpoint(status):
    with ScriptedServer(default=error(status, "invalid key")) as server:
        plain = server.base_url
        url = plain.replace("http://", "http://user:hunter2@")
        model = OpenAIChatModel("m", base_url=url, api_key="k", backoff_base=0.01)
        with pytest.raises(BackendUnavailable) as info:
            model.generate([ask("a"), ask("b")], GREEDY)
        assert server.count <= 2  # not retried
    message = str(info.value)
    assert message.startswith(f"{plain}: HTTP {status}: invalid key")
    assert "hunter2" not in message and "--on-error" not in message and "OPENAI_API_KEY" in message


def test_an_unreachable_server_stops_the_run_after_the_retries():
    with ScriptedServer() as server:
        url = server.base_url  # the server is gone once the block ends: nothing listens there
    model = OpenAIChatModel("m", base_url=url, max_retries=2, backoff_base=0.01)
    with pytest.raises(BackendUnavailable, match=f"^cannot reach {url}: connection error.*gave up after 3 attempts"):
        model.generate([ask("q")], GREEDY)


def test_the_same_failure_over_and_over_stops_the_run():
    with ScriptedServer(default=error(404, "no such model")) as server:
        model = OpenAIChatModel("m", base_url=server.base_url, max_identical_failures=3)
        first = model.generate([ask("a"), ask("b")], GREEDY)  # two in a row: still per record
        assert [a.error for a in first] == ["HTTP 404: no such model"] * 2
        with pytest.raises(BackendUnavailable, match="the last 3 requests to openai:m all failed with: HTTP 404"):
            model.generate([ask("c")], GREEDY)
    with ScriptedServer([error(404, "x"), error(404, "x"), "ok", error(404, "x"), error(404, "x")]) as server:
        model = OpenAIChatModel("m", base_url=server.base_url, max_identical_failures=3, concurrency=1)
        answers = model.generate([ask(str(i)) for i in range(5)], GREEDY)  # a success breaks the run of failures
    assert [a.ok for a in answers] == [False, False, True, False, False]


def test_load_chat_model_openai_resolution(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    model = load_chat_model("openai:some/model", use_cache=False, concurrency=3)
    assert isinstance(model, OpenAIChatModel)
    assert (model.spec, model.model, model.base_url, model.concurrency) == (
        "openai:some/model", "some/model", "http://127.0.0.1:9/v1", 3
    )
    assert model._api_key == PLACEHOLDER_API_KEY
    cached = load_chat_model("openai:m", base_url="http://127.0.0.1:8/v1", api_key="k", cache_dir="/tmp/x")
    assert isinstance(cached, CachedChatModel) and cached.inner.base_url == "http://127.0.0.1:8/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(InputError, match="OPENAI_API_KEY is not set"):
        load_chat_model("openai:gpt-4o-mini")


@pytest.mark.parametrize("spec", ["gpt-4o", "openai:", "hf:", "embed", "vllm:qwen", ""])
def test_bad_specs_name_the_valid_forms(spec):
    with pytest.raises(InputError) as info:
        load_chat_model(spec)
    message = str(info.value)
    assert "openai:MODEL" in message and "hf:PATH_OR_ID" in message and "\n" not in message


def test_importing_backends_stays_light():
    code = (
        "import sys, vidcli.backends, vidcli.backends.jsonreply, vidcli.backends.cache;"
        "print(sorted(m for m in ('torch','transformers','openai','httpx2') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.replace("'", '"')) == []


@pytest.mark.server
@pytest.mark.slow
def test_against_transformers_serve(transformers_server, tmp_path):
    base_url, model_path = transformers_server
    model = OpenAIChatModel(model_path, base_url=base_url, concurrency=2, timeout=60, backoff_base=0.01)
    conversations = [ask("Is the dog red?"), ask("Describe the camera motion."), ask("Is the dog red?")]
    first = model.generate(conversations, Sampling(max_tokens=6))
    # A random tiny model may stop at once: the transport is what is checked here.
    assert all(a.ok and isinstance(a.text, str) for a in first), [a.error for a in first]
    assert first[0].text == first[2].text  # greedy decoding of the same prompt
    assert [a.text for a in model.generate(conversations[:1], Sampling(max_tokens=6))] == [first[0].text]
    # The server serves one model: asking for another is a 400, reported in its own words.
    [wrong] = OpenAIChatModel("not-this-one", base_url=base_url, backoff_base=0.01).generate([ask("hi")], GREEDY)
    assert wrong.error.startswith("HTTP 400: Server is pinned to")


def test_unexpected_error_stays_in_its_own_reply(monkeypatch):
    real_attempt = OpenAIChatModel._attempt

    async def breaks_on_boom(self, client, messages, params):
        if messages[-1]["content"] == "boom":
            raise RuntimeError("kaput")
        return await real_attempt(self, client, messages, params)

    monkeypatch.setattr(OpenAIChatModel, "_attempt", breaks_on_boom)
    with ScriptedServer(default="fine") as server:
        answers = make_model(server).generate([ask("a"), ask("boom"), ask("b")], GREEDY)
    assert [a.text for a in answers] == ["fine", None, "fine"]
    assert answers[1].error == "unexpected error: RuntimeError: kaput"
