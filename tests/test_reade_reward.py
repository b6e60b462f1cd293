"""The full ReaDe reward against hand-computed numbers, fallbacks and the embed judge."""
from __future__ import annotations

import re

import pytest

from tests.test_rewards_coverage import KEY_INFO, SUPPORTED
from vidcli.backends import load_chat_model
from vidcli.interpreter.format import build_target
from vidcli.rewards.coverage import LLMJudge, load_judge
from vidcli.rewards.reade import ReadeReward, RewardWeights, judged_caption
from vidcli.testing.server import ScriptedServer, error

CAPTION = {
    "dense": "A woman in a yellow raincoat waves in a park.",
    "main_object": "A woman with short black hair.",
    "background": "A park with oak trees.",
    "movement": "She waves her right hand.",
    "style": "Bright and cheerful.",
    "camera": "The camera slowly dollies in.",
}
GOOD = build_target("The user wants her to wave; the identity image shows short black hair.", CAPTION)
# No think block (format 0.2) and a caption that contradicts itself.
CONTRADICTORY = ("<answer>1. Dense caption: A woman waves at noon at midnight.\n2. Main object caption: a woman.\n"
                 "3. Background caption: a park.\n4. Movement caption: waving.\n5. Style caption: cheerful.\n"
                 "6. Camera caption: static.</answer>")
NO_ANSWER = "<think>I am not sure what to draw.</think> Something with a woman."


def script(body: dict) -> str:
    prompt = body["messages"][1]["content"]
    fact = re.search(r"^Fact: (.*)$", prompt, re.MULTILINE)
    if fact:
        return "yes" if fact.group(1) in SUPPORTED else "no"
    return "yes" if "noon at midnight" in prompt else "no"


def reward_for(server: ScriptedServer, weights: RewardWeights = RewardWeights()) -> ReadeReward:
    model = load_chat_model("openai:judge", base_url=server.base_url, max_retries=1, use_cache=False)
    return ReadeReward(LLMJudge(model), weights)


def test_full_reward_equals_the_hand_computed_number():
    with ScriptedServer(script) as server:
        good, bad, none = reward_for(server).score_many([GOOD, CONTRADICTORY, NO_ANSWER], [KEY_INFO] * 3)
        prompts = [r.body["messages"][1]["content"] for r in server.requests]
    # U: woman, raincoat, waves -> 3/3. S: woman, hair, glasses (no), dolly -> 3/4. Z: oak trees (no), mood -> 1/2.
    assert good.parts == {"format": 1.0, "user": 1.0, "detail": 0.75, "supp": 0.5, "contra": 0.0}
    assert good.total == pytest.approx(1.0 + 1.0 * 1.0 + 1.0 * 0.75 + 0.8 * 0.5 - 0.7 * 0.0, abs=1e-9)
    assert good.ok and good.contra_available and good.answer_found
    assert bad.parts == {"format": 0.2, "user": 1.0, "detail": 0.75, "supp": 0.5, "contra": 1.0}
    assert bad.total == pytest.approx(0.2 + 1.0 + 0.75 + 0.8 * 0.5 - 0.7, abs=1e-9)
    assert bad.content == pytest.approx(1.45, abs=1e-9)
    # No <answer>: R_content = 0, the format reward (think only: 0.2) still counts, nothing is asked.
    assert none.parts == {"format": 0.2, "user": 0.0, "detail": 0.0, "supp": 0.0, "contra": 0.0}
    assert none.total == pytest.approx(0.2, abs=1e-9) and not none.answer_found and none.ok
    assert not any("not sure what to draw" in p or "Something with a woman" in p for p in prompts)
    # Only the answer is judged, without its part labels and without the reasoning.
    assert not any("identity image" in p or "Dense caption:" in p for p in prompts)
    assert len(prompts) == 2 * 8 + 2  # two captions x 8 distinct elements, one contradiction question each


def test_custom_weights():
    weights = RewardWeights(alpha=2.0, rho=0.5, gamma=0.0, lam=1.5)
    with ScriptedServer(script) as server:
        result = reward_for(server, weights).score(CONTRADICTORY, KEY_INFO)
    assert result.total == pytest.approx(0.2 + 2.0 * 1.0 + 0.5 * 0.75 + 0.0 * 0.5 - 1.5 * 1.0, abs=1e-9)


def test_empty_element_set_is_not_applicable_and_a_constant_for_training():
    info = {**KEY_INFO, "supplementary": {"objects": [], "actions": [], "camera": [], "style": []}}
    with ScriptedServer(script) as server:
        result, none = reward_for(server).score_many([GOOD, NO_ANSWER], [info, info])
    # Training keeps the reward on one scale: an empty S counts as covered (1.0) ...
    assert result.parts["detail"] == 1.0
    assert result.total == pytest.approx(1.0 + 1.0 + 1.0 + 0.8 * 0.5, abs=1e-9)
    # ... and the result says that the part did not apply, with or without an answer.
    assert result.not_applicable == {"detail": "no supplementary (S) elements: nothing in key_info to check"}
    assert none.not_applicable == result.not_applicable and result.ok


def test_contradiction_judge_failure_is_recorded_and_the_penalty_falls_back_to_zero():
    def failing_contra(body):
        return script(body) if "Fact:" in body["messages"][1]["content"] else error(500, "down", retry_after=0)

    with ScriptedServer(failing_contra) as server:
        result = reward_for(server).score(CONTRADICTORY, KEY_INFO)
    assert result.parts["contra"] is None and result.contra_available
    assert set(result.errors) == {"contra"} and "HTTP 500: down" in result.errors["contra"]
    assert not result.ok
    assert result.total == pytest.approx(0.2 + 1.0 + 0.75 + 0.4, abs=1e-9)  # no penalty term


def test_judge_down_gives_format_only_and_every_part_an_error():
    with ScriptedServer(default=error(503, "unavailable", retry_after=0)) as server:
        results = reward_for(server).score_many([GOOD, NO_ANSWER], [KEY_INFO, KEY_INFO])
    good, none = results
    assert set(good.errors) == {"user", "detail", "supp", "contra"}
    assert all(good.parts[p] is None for p in ("user", "detail", "supp", "contra"))
    assert good.total == pytest.approx(1.0, abs=1e-9)
    assert none.ok and none.total == pytest.approx(0.2, abs=1e-9)  # never asked, so nothing failed


def test_bad_arguments_raise():
    reward = ReadeReward(load_judge("openai:m", base_url="http://127.0.0.1:9"))
    with pytest.raises(ValueError, match="2 completions but 1 key-infos"):
        reward.score_many([GOOD, GOOD], [KEY_INFO])
    with pytest.raises(ValueError, match=r"key_infos\[1\]: missing group"):
        reward.score_many([GOOD, GOOD], [KEY_INFO, {"user": KEY_INFO["user"]}])


def test_judged_caption():
    assert judged_caption(GOOD) == " ".join(CAPTION.values())
    assert judged_caption("<answer>A plain caption without parts.</answer>") == "A plain caption without parts."
    assert judged_caption("<answer>Intro.\nStyle: noir.</answer>") == "Intro. noir."
    assert judged_caption(NO_ANSWER) is None and judged_caption("<answer> </answer>") is None


def test_embed_judge_reports_contradiction_unavailable():
    judge = load_judge("embed", device="cpu")
    (result,) = ReadeReward(judge).score_many([GOOD], [KEY_INFO])
    assert result.parts["contra"] is None and result.contra_available is False
    assert result.ok and "contra" not in result.errors
    user, detail, supp = (v.fraction for v in judge.coverage(
        [(judged_caption(GOOD), e) for e in (["woman", "woman: yellow raincoat", "the woman waves"],
                                             ["woman", "woman: short black hair", "woman: round glasses",
                                              "camera: slow dolly in"],
                                             ["oak trees", "style: cheerful mood"])]))
    assert (result.parts["user"], result.parts["detail"], result.parts["supp"]) == (user, detail, supp)
    assert user == 1.0  # every U element is stated in the caption
    assert result.total == pytest.approx(1.0 + user + detail + 0.8 * supp, abs=1e-9)
