"""Key-info elements and the coverage judges: scripted LLM (both modes), real MiniLM, failures."""
from __future__ import annotations

import re

import pytest

from vidcli.backends import load_chat_model
from vidcli.decompose.reade import count_elements, parse_key_info
from vidcli.rewards.coverage import (
    ELEMENT_SAMPLING,
    NUMBER_SAMPLING,
    EmbedJudge,
    LLMJudge,
    group_elements,
    load_judge,
    parse_fraction,
    parse_yes_no,
)
from vidcli.testing.server import ScriptedServer, error

KEY_INFO = {
    "user": {"objects": [{"name": "woman", "attributes": ["yellow raincoat"]}], "actions": ["the woman waves"],
             "camera": [], "style": []},
    "supplementary": {"objects": [{"name": "woman", "attributes": ["short black hair", "round glasses"]}],
                      "actions": [], "camera": ["slow dolly in"], "style": []},
    "imaginative": {"objects": [{"name": "oak trees", "attributes": []}], "actions": [], "camera": [],
                    "style": ["cheerful mood"]},
}
CAPTION = "A woman in a yellow raincoat waves. She has short black hair. The camera slowly dollies in."
SUPPORTED = {"woman", "woman: yellow raincoat", "the woman waves", "woman: short black hair",
             "camera: slow dolly in", "style: cheerful mood"}


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"] if body["messages"][-1]["role"] == "user" else ""


def element_script(body: dict) -> str:
    """Answers each element question from SUPPORTED, read off the prompt's 'Fact:' line."""
    fact = re.search(r"^Fact: (.*)$", body["messages"][1]["content"], re.MULTILINE)
    return "Yes." if fact and fact.group(1) in SUPPORTED else "No."


def chat_judge(server: ScriptedServer, mode: str = "elements", **kwargs) -> LLMJudge:
    model = load_chat_model("openai:judge", base_url=server.base_url, max_retries=1, use_cache=False)
    return LLMJudge(model, mode, **kwargs)


def tasks() -> list[tuple[str, list[str]]]:
    info = parse_key_info(KEY_INFO)
    return [(CAPTION, group_elements(info[g])) for g in ("user", "supplementary", "imaginative")]


def test_elements_are_names_attributes_and_phrases_as_count_elements_counts():
    info = parse_key_info(KEY_INFO)
    assert group_elements(info["user"]) == ["woman", "woman: yellow raincoat", "the woman waves"]
    assert group_elements(info["supplementary"]) == [
        "woman", "woman: short black hair", "woman: round glasses", "camera: slow dolly in"]
    assert group_elements(info["imaginative"]) == ["oak trees", "style: cheerful mood"]
    for group in info.values():
        assert len(group_elements(group)) == count_elements(group)


@pytest.mark.parametrize("reply,expected", [
    ("Yes", True), ("no.", False), ("**Yes**", True), ("Answer: yes", True), ("The answer is no", False),
    ("<think>yes or no? the caption says it</think>Yes", True),
])
def test_yes_no_parsing(reply, expected):
    assert parse_yes_no(reply) is expected


@pytest.mark.parametrize("reply", ["maybe", "", "It mentions yes, no and more", "<think>cut off by the limit"])
def test_unreadable_yes_no(reply):
    with pytest.raises(ValueError):
        parse_yes_no(reply)


@pytest.mark.parametrize("reply,expected", [
    ("0.7", 0.7), ("70%", 0.7), ("Coverage: 0.7", 0.7), ("7/10", 0.7), ("1", 1.0), ("0", 0.0), (".25", 0.25),
    ("About 70 % (7 of 10 items)", 0.7), ("<think>maybe 0.2</think>0.5.", 0.5),
])
def test_fraction_parsing(reply, expected):
    assert parse_fraction(reply) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("reply", ["garbage", "1.5", "-0.2", "70", "0.6 or 0.7", "3 of 4 items", "60% or 70%", "5/4"])
def test_unreadable_fractions_are_failures(reply):
    with pytest.raises(ValueError):
        parse_fraction(reply)


def test_elements_mode_fractions_one_batch_and_deduplicated_questions():
    with ScriptedServer(element_script) as server:
        verdicts = chat_judge(server).coverage(tasks())
        bodies = [r.body for r in server.requests]
    assert [v.fraction for v in verdicts] == [1.0, 0.75, 0.5]
    assert verdicts[1].supported == [True, True, False, True]
    assert all(v.error is None for v in verdicts)
    # "woman" is in U and S of the same caption: asked once; 3 + 3 + 2 distinct questions.
    assert len(bodies) == 8
    assert all(CAPTION in b["messages"][1]["content"] for b in bodies)
    assert {(b["temperature"], b["max_tokens"]) for b in bodies} == {(ELEMENT_SAMPLING.temperature,
                                                                     ELEMENT_SAMPLING.max_tokens)}


def test_number_mode_reads_one_number_per_element_set_with_paper_sampling():
    def script(body):
        text = user_text(body)
        return "Coverage: 0.5" if "oak trees" in text else "75%" if "round glasses" in text else "1"

    with ScriptedServer(script) as server:
        verdicts = chat_judge(server, "number").coverage(tasks() + [(CAPTION, [])])
        bodies = [r.body for r in server.requests]
    assert [v.fraction for v in verdicts] == [1.0, 0.75, 0.5, 1.0]  # an empty set is covered vacuously
    assert len(bodies) == 3  # the empty set asks nothing
    assert all(b["temperature"] == NUMBER_SAMPLING.temperature == 0.3 for b in bodies)
    assert all(b["max_tokens"] == NUMBER_SAMPLING.max_tokens == 50 for b in bodies)
    assert "- woman: round glasses" in user_text(next(b for b in bodies if "round glasses" in user_text(b)))


def test_number_mode_garbage_is_retried_with_a_correction_then_a_failure():
    with ScriptedServer(default="I would rather not say.") as server:
        (verdict,) = chat_judge(server, "number").coverage([(CAPTION, ["woman"])])
        bodies = [r.body for r in server.requests]
    assert verdict.fraction is None
    assert "unreadable judge reply after 2 attempt(s)" in verdict.error and "rather not say" in verdict.error
    assert len(bodies) == 2
    assert bodies[1]["messages"][-2] == {"role": "assistant", "content": "I would rather not say."}
    assert "one number between 0 and 1" in bodies[1]["messages"][-1]["content"]


def test_one_failed_element_fails_its_set_only():
    def script(body):
        if "Fact: oak trees" in body["messages"][1]["content"]:
            return "Perhaps."
        return element_script(body)

    with ScriptedServer(script) as server:
        verdicts = chat_judge(server, attempts=1).coverage(tasks())
    assert [v.fraction for v in verdicts[:2]] == [1.0, 0.75]
    assert verdicts[2].fraction is None and verdicts[2].error.startswith("element 'oak trees': unreadable")


def test_server_errors_are_verdict_errors_not_exceptions():
    with ScriptedServer(default=error(500, "judge overloaded", retry_after=0)) as server:
        judge = chat_judge(server)
        verdicts = judge.coverage(tasks())
        (contra,) = judge.contradictions([CAPTION])
        count = server.count
    assert all(v.fraction is None and "HTTP 500: judge overloaded" in v.error for v in verdicts)
    assert contra.value is None and "judge call failed: HTTP 500" in contra.error
    assert count == 2 * 9  # 8 element questions + 1 contradiction question, each tried twice


def test_contradiction_question():
    def script(body):
        return "Yes" if "noon at midnight" in user_text(body) else "No"

    with ScriptedServer(script) as server:
        answers = chat_judge(server).contradictions([CAPTION, "It is noon at midnight.", CAPTION])
        assert server.count == 2  # the repeated caption is asked once
    assert [a.value for a in answers] == [False, True, False]


@pytest.fixture(scope="module")
def embed_judge() -> EmbedJudge:
    return load_judge("embed", device="cpu")


def test_embed_judge_with_minilm(embed_judge):
    caption = ("A golden retriever runs across a sunny park chasing a red ball. The camera tracks it from the left, "
               "and children play on swings in the background.")
    mentioned = ["golden retriever", "the dog chases a red ball", "children play on swings", "camera: tracking shot"]
    absent = ["blue car", "style: snowy winter night", "a woman playing violin"]
    verdicts = embed_judge.coverage([(caption, mentioned), (caption, absent), (caption, mentioned + absent),
                                     (caption, [])])
    assert verdicts[0].fraction == 1.0
    assert verdicts[1].fraction == 0.0
    assert verdicts[2].fraction == pytest.approx(4 / 7)
    assert verdicts[3].fraction == 1.0 and verdicts[3].supported == []
    # The batched judge applies exactly the embedder's own rule.
    expected = [ok for ok, _ in embed_judge.embedder.support(mentioned + absent, caption)]
    assert verdicts[2].supported == expected


def test_embed_judge_threshold_and_no_contradictions(embed_judge):
    strict = EmbedJudge(embed_judge.embedder, threshold=0.999)
    (verdict,) = strict.coverage([("A golden retriever runs.", ["golden retriever", "a cat"])])
    assert verdict.supported == [False, False]
    assert embed_judge.detects_contradiction is False
    with pytest.raises(NotImplementedError):
        embed_judge.contradictions(["x"])
    with pytest.raises(ValueError, match="embed judge only"):
        load_judge("openai:m", threshold=0.4, base_url="http://127.0.0.1:9")


@pytest.fixture(scope="module")
def tiny_llm():
    from vidcli.testing import ensure_tiny_models

    return ensure_tiny_models("llm")["llm"]


def test_hf_judge_reads_the_local_model_reply(tiny_llm):
    """hf:PATH goes through the local transformers backend; whatever the random tiny model
    says, the verdict is what its reply parses to, or a recorded failure."""
    from vidcli.prompts import render

    judge = load_judge(f"hf:{tiny_llm}", attempts=1, use_cache=False, device="cpu")
    (verdict,) = judge.coverage([(CAPTION, ["woman"])])
    raw = judge.model.generate([render("judge_element", caption=CAPTION, element="woman")], ELEMENT_SAMPLING)[0]
    assert raw.ok
    try:
        expected = 1.0 if parse_yes_no(raw.text) else 0.0
    except ValueError:
        expected = None
    assert verdict.fraction == expected
    assert (verdict.error is None) == (expected is not None)
    if verdict.error:
        assert verdict.error.startswith("element 'woman': unreadable judge reply after 1 attempt(s)")
