"""extract_json on realistic replies; generate_json's corrective retries against a server."""
from __future__ import annotations

import pytest

from vidcli.backends.base import Sampling
from vidcli.backends.cache import CachedChatModel, ReplyCache
from vidcli.backends.jsonreply import extract_json, generate_json
from vidcli.backends.openai_chat import OpenAIChatModel
from vidcli.errors import BackendUnavailable
from vidcli.testing.server import ScriptedServer, error

GREEDY = Sampling()

PARSED = [
    ('{"a": 1}', {"a": 1}),
    ('  [1, 2, 3]\n', [1, 2, 3]),
    ('```json\n{"main_object": "a dog", "camera": "static"}\n```', {"main_object": "a dog", "camera": "static"}),
    (
        'Sure! Here is the structured caption:\n\n```json\n{\n  "dense": "A cat naps.",\n  "style": "warm"\n}\n```\n'
        "Let me know if you need changes.",
        {"dense": "A cat naps.", "style": "warm"},
    ),
    ('```\n{"x": [1, {"y": 2}]}\n```', {"x": [1, {"y": 2}]}),
    ('The answer is {"answer": "yes", "reason": "it is"} as requested.', {"answer": "yes", "reason": "it is"}),
    # braces, brackets and escaped quotes inside strings must not end the object
    ('Result: {"text": "use {braces} and [brackets] }", "q": "say \\"hi}\\""} done', {"text": "use {braces} and [brackets] }", "q": 'say "hi}"'}),
    # two objects: the first complete one wins
    ('{"first": 1}\n{"second": 2}', {"first": 1}),
    # a bracketed aside that is not JSON is skipped
    ('Per [the instructions], here you go: {"ok": true}', {"ok": True}),
    # trailing commas are tolerated (only outside strings)
    ('{"elements": ["a", "b",], "note": "x,]",}', {"elements": ["a", "b"], "note": "x,]"}),
    # a ```json fence wins over an earlier untagged code block
    ('```\nprint(1)\n```\nand\n```json\n{"k": 1}\n```', {"k": 1}),
    ('{"nested": {"deep": {"deeper": [1, [2, [3]]]}}}', {"nested": {"deep": {"deeper": [1, [2, [3]]]}}}),
]


@pytest.mark.parametrize("text,expected", PARSED)
def test_extract_json_finds_the_value(text, expected):
    assert extract_json(text) == expected


def test_expect_skips_the_other_kind():
    text = 'Steps [1, 2] then {"done": true}'
    assert extract_json(text) == [1, 2]
    assert extract_json(text, expect=dict) == {"done": True}
    assert extract_json('{"a": [1]}', expect=list) == [1]


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "reply is empty"),
        (None, "reply is empty"),
        ("I cannot help with that request.", "no JSON object or array in reply"),
        ('Here: {"dense": "a dog running', "cut off"),
        ("{'single': 'quotes'}", "does not parse"),
        ('{"x": NaN}', "does not parse"),
        ("42", "no JSON object or array in reply"),
    ],
)
def test_extract_json_failures_say_why(text, reason):
    with pytest.raises(ValueError, match=reason):
        extract_json(text)


def _model(server: ScriptedServer) -> OpenAIChatModel:
    return OpenAIChatModel("m", base_url=server.base_url, backoff_base=0.001, max_retries=1)


def test_retry_carries_the_bad_reply_and_a_correction():
    def script(body: dict) -> str:
        # First ask: prose. After the correction: the JSON.
        return '{"answer": "yes"}' if len(body["messages"]) > 1 else "The answer is yes."

    with ScriptedServer(script) as server:
        [result] = generate_json(_model(server), [[{"role": "user", "content": "Answer in JSON."}]], GREEDY)
        second = server.requests[1].body["messages"]
    assert result.ok and result.value == {"answer": "yes"} and result.attempts == 2
    assert result.raw == '{"answer": "yes"}'
    assert second[0] == {"role": "user", "content": "Answer in JSON."}
    assert second[1] == {"role": "assistant", "content": "The answer is yes."}
    assert second[2]["role"] == "user"
    assert "no JSON object or array in reply" in second[2]["content"] and "only the JSON" in second[2]["content"]


def test_validation_failure_is_retried_with_its_reason():
    def needs_answer(value) -> None:
        if "answer" not in value:
            raise ValueError("missing key 'answer'")

    with ScriptedServer(['{"reply": "yes"}', '{"answer": "yes"}']) as server:
        [result] = generate_json(_model(server), [[{"role": "user", "content": "q"}]], GREEDY, validate=needs_answer)
        correction = server.requests[1].body["messages"][-1]["content"]
    assert result.value == {"answer": "yes"} and result.attempts == 2
    assert "missing key 'answer'" in correction


def test_bounded_attempts_then_a_clear_error():
    with ScriptedServer(default="no json, ever") as server:
        [result] = generate_json(_model(server), [[{"role": "user", "content": "q"}]], GREEDY, attempts=3)
        assert server.count == 3
        assert [len(r.body["messages"]) for r in server.requests] == [1, 3, 5]
    assert result.value is None and result.attempts == 3 and result.raw == "no json, ever"
    assert result.error == "reply was not valid JSON after 3 attempts: no JSON object or array in reply"


def test_only_failures_are_asked_again():
    def script(body: dict) -> str:
        first = body["messages"][0]["content"]
        if first == "good" or len(body["messages"]) > 1:
            return '{"id": "%s"}' % first
        return "oops"

    conversations = [[{"role": "user", "content": c}] for c in ("good", "bad1", "bad2")]
    with ScriptedServer(script) as server:
        results = generate_json(_model(server), conversations, GREEDY)
        retried = sorted(r.body["messages"][0]["content"] for r in server.requests[3:])
    assert [r.value for r in results] == [{"id": "good"}, {"id": "bad1"}, {"id": "bad2"}]
    assert [r.attempts for r in results] == [1, 2, 2]
    assert retried == ["bad1", "bad2"]


def test_transport_failure_ends_at_once():
    with ScriptedServer([error(404, "no such model")]) as server:
        [result] = generate_json(_model(server), [[{"role": "user", "content": "q"}]], GREEDY)
        assert server.count == 1
    assert (result.value, result.error, result.attempts) == (None, "HTTP 404: no such model", 1)


def test_a_refused_key_is_not_a_reply_problem():
    with ScriptedServer([error(401, "bad key")]) as server:
        with pytest.raises(BackendUnavailable, match="HTTP 401: bad key"):
            generate_json(_model(server), [[{"role": "user", "content": "q"}]], GREEDY)
        assert server.count == 1  # neither retried nor asked again with a follow-up


def test_cache_does_not_replay_the_bad_answer(tmp_path):
    script = ["prose only", '{"fixed": true}']
    with ScriptedServer(script, default=error(500, "no more")) as server:
        model = CachedChatModel(_model(server), ReplyCache(tmp_path))
        [first] = generate_json(model, [[{"role": "user", "content": "q"}]], GREEDY)
        [rerun] = generate_json(model, [[{"role": "user", "content": "q"}]], GREEDY)
        assert server.count == 2  # the rerun is served entirely from the cache
    assert first.value == rerun.value == {"fixed": True}
    assert rerun.attempts == 2
