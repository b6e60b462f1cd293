"""The exact toy judge: right on every element, over the real HTTP interface."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from vidcli.prompts import render
from vidcli.rewards.coverage import group_elements
from vidcli.toyworld.judge import judge_reply, supported
from vidcli.toyworld.language import caption, key_info_group, scene_facts
from vidcli.toyworld.scene import Scene, Thing, random_scene
from vidcli.toyworld.scene import render as draw

SCENE = Scene((Thing("ball", "red", "left", 20.0, 10.0), Thing("square", "blue", "still", 10.0, 24.0)),
              tone="dark", pattern="striped", camera="right", phase=2.0)


def ask(template: str, **values) -> str:
    return judge_reply({"model": "toy", "messages": render(template, **values)})


def test_elements_are_judged_by_their_facts():
    text = caption(SCENE)
    assert ask("judge_element", caption=text, element="ball: red") == "yes"
    assert ask("judge_element", caption=text, element="ball: blue") == "no"
    assert ask("judge_element", caption=text, element="the ball moves to the left") == "yes"
    assert ask("judge_element", caption=text, element="the square moves left") == "no"
    assert ask("judge_element", caption=text, element="camera: pans right") == "yes"
    assert ask("judge_element", caption=text, element="camera: static") == "no"
    assert ask("judge_element", caption=text, element="triangle") == "no"
    assert ask("judge_element", caption=text, element="background") == "yes"  # no fact: judged by its words
    style = "style: flat colours on a simple synthetic scene"
    assert ask("judge_element", caption="A ball.", element=style) == "no"
    assert ask("judge_element", caption="A ball in flat colours.", element=style) == "yes"
    assert ask("judge_element", caption="A ball. The lighting is soft.", element="lighting: soft") == "yes"


def test_every_element_of_a_scenes_key_info_is_supported_by_its_caption_only():
    rng = np.random.default_rng(7)
    for _ in range(30):
        scene, other = random_scene(rng), random_scene(rng)
        elements = group_elements(key_info_group(scene_facts(scene), caption(scene)))
        assert all(supported(caption(scene), e) for e in elements)
        for fact in set(scene_facts(scene)) - set(scene_facts(other)):
            element = group_elements(key_info_group([fact]))[-1]  # "ball: red", not the bare "ball"
            assert not supported(caption(other), element), (element, caption(other))


def test_coverage_number_and_contradiction():
    items = ["ball: red", "ball: blue", "square", "camera: static"]
    reply = ask("judge_coverage_number", caption=caption(SCENE), count=str(len(items)),
                elements="\n".join(f"- {i}" for i in items))
    assert float(reply) == pytest.approx(0.5)
    assert ask("judge_contradiction", caption="A red ball rolls. The ball is blue.") == "yes"
    assert ask("judge_contradiction", caption=caption(SCENE)) == "no"


def test_ta_questions_are_answered_from_the_pixels(toy_judge):
    """Through HTTP and the real openai backend: the frames go as JPEG images, the oracle reads them."""
    from PIL import Image

    from vidcli.backends.base import Sampling
    from vidcli.backends.openai_chat import OpenAIChatModel

    frames = [Image.fromarray(f) for f in draw(SCENE)]
    model = OpenAIChatModel("toy", base_url=toy_judge, api_key="x")
    verdicts = []
    for condition in ("the ball moves left", "the ball moves right; the square is blue"):
        question = render("question_ta", aspect="motion", condition=condition)[0]["content"]
        content = [{"type": "video", "video": frames, "fps": 8.0}, {"type": "text", "text": question}]
        reply = model.generate([[{"role": "user", "content": content}]], Sampling(temperature=0.0, max_tokens=64))[0]
        verdicts.append(json.loads(reply.text)["answer"])
    assert verdicts == ["Yes", "No"]


def test_an_unknown_request_is_refused_with_400(toy_judge):
    body = json.dumps({"model": "toy", "messages": [{"role": "user", "content": "hello"}]}).encode()
    request = urllib.request.Request(f"{toy_judge}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400 and "toy judge" in caught.value.read().decode()
