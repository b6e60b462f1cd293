"""The offline teacher: every template recognised, every reply accepted by its stage, the real
commands run end to end on examples/ with zero rejects, and the server's command line."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from tests.cli.helpers import invoke, read_jsonl, write_jsonl
from vidcli.backends.jsonreply import extract_json
from vidcli.backends.openai_chat import to_openai_messages
from vidcli.cot import steps
from vidcli.decompose import drf, reade
from vidcli.interpreter.format import parse_output
from vidcli.mining.rave import RAVE_TYPES
from vidcli.mining.triplets import instruction_validator
from vidcli.prompts import render, render_text
from vidcli.rewards.coverage import parse_fraction, parse_yes_no
from vidcli.rewards.critic import critic_checks
from vidcli.testing.teacher import BANNER, REPLIES, identify, teacher_reply, teacher_server, template_names

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CAPTION = "A red ball rolls from the left edge to the right edge over green grass, static wide shot in daylight."


def frames(*colours) -> dict:
    return {"type": "video", "video": [Image.new("RGB", (32, 24), c) for c in colours], "fps": 2.0}


RED, BLUE = (210, 30, 30), (30, 60, 220)
STILL, CHANGING = frames(RED, RED, RED), frames(RED, BLUE, RED)


def user_turn(*parts) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


def text(name: str, **values) -> dict:
    return {"type": "text", "text": render_text(name, **values)}


def value_of(key):
    return lambda reply: extract_json(reply)[key]


# template → (conversation, check of the reply text). The checks are the stages' own parsers.
CASES = {
    "decompose_drf": (render("decompose_drf", caption=CAPTION),
                      lambda r: drf.parse_elements(extract_json(r))["color"] == ["red ball", "green grass"]),
    "decompose_reade": (render("decompose_reade", instruction="a ball rolls across a lawn", conditions="(none)",
                               gold=CAPTION),
                        lambda r: reade.parse_key_info(extract_json(r))["user"]["objects"][0]["name"] == "ball"),
    "cot_structure": (render("cot_structure", gold=CAPTION),
                      lambda r: steps.parse_gold_parts(extract_json(r))["camera"] == "Static wide shot in daylight."),
    "cot_intent": (render("cot_intent", instruction="a ball on grass", inputs="nothing else"),
                   lambda r: "a ball on grass" in value_of("intent")(r)),
    "cot_intent_inferred": (render("cot_intent_inferred", nontext="- Identity: The image shows a woman in red."),
                            lambda r: value_of("intent")(r).startswith("No text was given")
                            and "a woman in red" in value_of("intent")(r)),
    "cot_alignment": (render("cot_alignment", instruction="a ball", intent="The user wants a ball.",
                             nontext=steps.NO_CONDITIONS), lambda r: "text alone" in value_of("alignment")(r)),
    "cot_supplement": (render("cot_supplement", instruction="a ball", alignment="A ball rolls.",
                              gold="1. Dense caption: x\n\n3. Background caption: a lawn\n\n5. Style caption: plain"),
                       lambda r: "(a lawn)" in value_of("supplement")(r)),
    "cot_identity": (user_turn({"type": "image", "image": Image.new("RGB", (16, 16), RED)},
                               text("cot_identity", hint="")), lambda r: "red" in value_of("description")(r)),
    "cot_depth": (user_turn(CHANGING, text("cot_depth", hint="")), lambda r: "moved" in value_of("description")(r)),
    "cot_pose": (user_turn(STILL, text("cot_pose", hint=' The user described it as: "a dancer".')),
                 lambda r: "a dancer" in value_of("description")(r)),
    "cot_video": (user_turn(STILL, text("cot_video", hint="")),
                  lambda r: "barely changes" in value_of("description")(r)),
    "cot_camera_video": (user_turn(STILL, text("cot_camera_video")), lambda r: "fixed" in value_of("camera")(r)),
    "mine_caption": (user_turn(STILL, text("mine_caption")),
                     lambda r: value_of("caption")(r).startswith("A mostly red")),
    "mine_rave": (render("mine_rave", literal="melt the snowman", context="", types=", ".join(RAVE_TYPES),
                         type_notes="", examples=""),
                  lambda r: instruction_validator(RAVE_TYPES, "melt the snowman")(extract_json(r)) is None
                  and extract_json(r)["reasoning_type"] == "physical"),
    "mine_icvg": (render("mine_icvg", source="A man opens a door.", target="A man walks into a room.",
                         types="causal", type_notes=""),
                  lambda r: instruction_validator(("causal",))(extract_json(r)) is None),
    "question_ta": (user_turn(STILL, text("question_ta", aspect="colours", condition="red ball")),
                    lambda r: drf.parse_verdict(extract_json(r), "TA")["answer"] == "Yes"),
    "question_phy": (user_turn(STILL, STILL, text("question_phy", caption="a red ball rolls")),
                     lambda r: drf.parse_verdict(extract_json(r), "Phy")["answer"] == "No"),
    "question_phy_single": (user_turn(STILL, text("question_phy_single", caption="a red ball rolls")),
                            lambda r: drf.parse_verdict(extract_json(r), "Phy")["aspects"]["motion"] == "No"),
    "question_vq": (user_turn(STILL, STILL, text("question_vq")),
                    lambda r: drf.parse_verdict(extract_json(r), "VQ")["issue"] == "none"),
    "question_vq_single": (user_turn(STILL, text("question_vq_single")),
                           lambda r: drf.parse_verdict(extract_json(r), "VQ")["answer"] == "No"),
    "judge_rve": (render("judge_rve", instruction="make it blue", preservation="", scope="Rate EA, GN and GR only.",
                         reply_form='"EA": 0-10, "GN": 0-10, "GR": 0-10'),
                  lambda r: set(extract_json(r)) == {"EA", "GN", "GR", "reason"}),
    "judge_element": (render("judge_element", caption=CAPTION, element="ball: red"), lambda r: parse_yes_no(r)),
    "judge_coverage_number": (render("judge_coverage_number", caption=CAPTION, count="2",
                                     elements="- red ball\n- purple elephant"), lambda r: parse_fraction(r) == 0.5),
    "judge_contradiction": (render("judge_contradiction", caption=CAPTION), lambda r: parse_yes_no(r) is False),
    "interpreter_system": (render("interpreter_system", instruction="a red ball rolling"),
                           lambda r: parse_output(r).think_ok and parse_output(r).answer_ok),
    "critic_revise": (user_turn(frames(BLUE), frames(RED), text("critic_revise", instruction="make it blue",
                                                                 checks=critic_checks("rave"))),
                      lambda r: r.endswith("\nVerdict: Yes") and "rest of the scene is kept" in r),
    "critic_revise_verdict_first": (user_turn(frames(BLUE), frames(RED),
                                              text("critic_revise_verdict_first", instruction="make it blue",
                                                   checks=critic_checks("icvg"))),
                                    lambda r: r.startswith("Yes.") and "kept" not in r),
    "video_feedback_element": (user_turn(STILL, text("video_feedback_element", element="ball: red")),
                               lambda r: parse_yes_no(r)),
    "video_feedback_instruction": (user_turn(STILL, text("video_feedback_instruction", instruction="a ball")),
                                   lambda r: parse_yes_no(r)),
}


def ask(conversation: list[dict]):
    return teacher_reply({"model": "teacher", "messages": to_openai_messages(conversation)})


def test_every_template_has_a_rule_and_a_case():
    # A template added without teaching the teacher (and this test) fails here.
    assert set(REPLIES) == set(template_names()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_reply_is_recognised_and_accepted_by_its_stage(name):
    conversation, check = CASES[name]
    assert identify({"messages": to_openai_messages(conversation)})[0] == name
    reply = ask(conversation)
    assert isinstance(reply, str), reply
    assert check(reply), reply


def test_first_requests_arriving_together_are_all_recognised():
    # The server answers on many threads; the template table must be whole before anyone reads it.
    from vidcli.testing import teacher as testing_teacher

    testing_teacher._patterns.cache_clear()
    body = {"messages": to_openai_messages(CASES["judge_element"][0])}
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(lambda _: teacher_reply(body), range(32))) == ["yes"] * 32


def test_rve_scores_follow_the_frames():
    def scores(produced):
        conversation = render("judge_rve", instruction="make it blue", preservation="- PC ...\n", scope="Rate all.",
                              reply_form='"EA": 0-10, "PC": 0-10, "GN": 0-10, "GR": 0-10')
        conversation[-1]["content"] = [{"type": "text", "text": "Source clip:"}, STILL,
                                       {"type": "text", "text": "Produced video:"}, produced,
                                       {"type": "text", "text": conversation[-1]["content"]}]
        return extract_json(ask(conversation))

    unchanged, edited = scores(STILL), scores(frames(BLUE, BLUE, BLUE))
    assert (unchanged["EA"], unchanged["PC"]) == (3, 10)  # nothing edited: full preservation, poor accuracy
    assert edited["EA"] == 8 and edited["PC"] < unchanged["PC"]


def test_unknown_template_is_a_400_naming_its_text():
    reply = ask([{"role": "system", "content": "You are a pirate. " * 10}, {"role": "user", "content": "Arr?"}])
    assert reply.status == 400
    message = json.loads(reply.body)["error"]["message"]
    assert "You are a pirate. You are a pirate." in message and len(message) < 200
    # A known system text whose user turn is someone else's still counts as its template.
    system = render("judge_element", caption="x", element="y")[0]
    assert identify({"messages": [system, {"role": "user", "content": "other words"}]})[0] == "judge_element"


# ------------------------------------------------------------------ the real commands


@pytest.fixture(scope="module")
def teacher():
    with teacher_server() as server:
        yield server


def run(teacher, *args) -> None:
    result = invoke([*args, "--base-url", teacher.base_url, "--on-error", "skip", "-q"])
    assert result.exit_code == 0, result.stderr


def no_rejects(out: Path) -> None:
    rejects = out.with_name(out.name + ".rejects.jsonl")
    assert not rejects.exists() or not rejects.read_text().strip(), rejects.read_text()


def test_decompose_drf_with_vlm_references(teacher, tmp_path):
    out = tmp_path / "drf.jsonl"
    run(teacher, "decompose", "--llm", "openai:teacher", "--vlm", "openai:teacher", "--keep-consistent",
        "--frames", "4", str(EXAMPLES / "captions.jsonl"), "-o", str(out))
    records = read_jsonl(out)
    no_rejects(out)
    assert [r["id"] for r in records] == ["ball", "squares", "cut"]
    for record in records:
        assert record["consistent"] is True and record["elements"]["objects"]
        refs = {q["dim"]: q["reference"] for q in record["questions"]}
        assert refs["Phy"]["source"] == refs["VQ"]["source"] == "vlm" and refs["TA"]["answer"] == "Yes"
    assert records[0]["elements"]["color"] == ["red ball", "green grass", "blue sky"]


def test_decompose_reade_make_cot_and_coverage(teacher, tmp_path):
    keyinfo, cot, scored = tmp_path / "keyinfo.jsonl", tmp_path / "cot.jsonl", tmp_path / "scored.jsonl"
    requests = str(EXAMPLES / "requests.jsonl")
    run(teacher, "decompose", "--schema", "reade", "--llm", "openai:teacher", "--vlm", "openai:teacher", requests,
        "-o", str(keyinfo))
    run(teacher, "make-cot", "--llm", "openai:teacher", "--vlm", "openai:teacher", "--dedup-embedder", "none",
        requests, "-o", str(cot))
    for out in (keyinfo, cot):
        no_rejects(out)
    infos = {r["id"]: r["key_info"] for r in read_jsonl(keyinfo)}
    assert infos["req-identity"]["supplementary"]["objects"][0]["name"] == "woman"  # from the image's description
    assert infos["req-camera"]["supplementary"]["camera"] == ["strong dolly in, moderate pan left"]  # the trajectory
    cots = read_jsonl(cot)
    assert [r["id"] for r in cots] == ["req-identity", "req-camera"]
    assert cots[1]["gold_text"].startswith("A quiet street") and set(cots[1]["gold"]) >= {"dense", "camera"}
    for record in cots:
        assert set(record["cot"]["steps"]) == set(steps.STEP_KEYS) and parse_output(record["cot"]["target"]).answer_ok

    # The judge reads content: a completion unrelated to the request covers less of it.
    unrelated = "<think>x</think>\n<answer>\n1. Dense caption: A purple elephant juggles.\n\n2. Main object caption: " \
                "An elephant.\n\n3. Background caption: A circus.\n\n4. Movement caption: Juggling.\n\n" \
                "5. Style caption: Bright.\n\n6. Camera caption: Static.\n</answer>"
    records = [{"id": r["id"], "key_info": infos[r["id"]], "completion": r["cot"]["target"]} for r in cots]
    records.append({"id": "unrelated", "key_info": infos["req-identity"], "completion": unrelated})
    run(teacher, "score", "--metric", "coverage,reward", "--judge", "openai:teacher",
        str(write_jsonl(tmp_path / "in.jsonl", records)), "-o", str(scored))
    no_rejects(scored)
    scores = {r["id"]: r["scores"] for r in read_jsonl(scored)}
    assert all("errors" not in r for r in read_jsonl(scored))
    assert scores["req-identity"]["contra"] == 0.0 and scores["req-identity"]["reward"] is not None
    assert scores["req-identity"]["user"] > scores["unrelated"]["user"]
    assert scores["req-identity"]["detail"] == 1.0 and scores["unrelated"]["detail"] == 0.0


def test_mine_rave_and_rve_judge(teacher, tmp_path):
    triplets, scored = tmp_path / "rave.jsonl", tmp_path / "rve.jsonl"
    run(teacher, "mine-triplets", "--mode", "rave", "--llm", "openai:teacher",
        "--examples", str(EXAMPLES / "rave_examples.jsonl"), str(EXAMPLES / "edits.jsonl"), "-o", str(triplets))
    no_rejects(triplets)
    records = read_jsonl(triplets)
    assert {r["id"] for r in records} == {"edit-ball-right", "edit-day-night", "edit-swap-squares"}
    for record in records:
        assert record["subset"] == "rave" and record["split"] == "train" and record["reasoning_type"] in RAVE_TYPES
        assert record["literal_instruction"] and record["literal_instruction"] not in record["instruction"]
        record["output"] = {"video": record["target"]["video"]}  # the "edited" video: the target itself
    run(teacher, "score", "--metric", "rve", "--judge", "openai:teacher", "--frames", "4",
        str(write_jsonl(tmp_path / "edited.jsonl", records)), "-o", str(scored))
    no_rejects(scored)
    for record in read_jsonl(scored):
        assert "errors" not in record
        assert all(isinstance(record["scores"][k], float) for k in ("rve_EA", "rve_PC", "rve_GN", "rve_GR", "rve"))


# ------------------------------------------------------------------ the command line


def test_command_line_serves_until_sigterm(tmp_path):
    url_file = tmp_path / "teacher.url"
    process = subprocess.Popen([sys.executable, "-m", "vidcli.testing.teacher", "--url-file", str(url_file)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not url_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.05)
        url = url_file.read_text().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        models = json.loads(urllib.request.urlopen(url + "/models", timeout=5).read())
        assert models["data"][0]["id"] == "teacher"
        body = json.dumps({"model": "any", "messages": [{"role": "user", "content": "hi"}]}).encode()
        bad = urllib.request.Request(url + "/chat/completions", method="POST",
                                     headers={"Content-Type": "application/json"}, data=body)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(bad, timeout=5)
        assert caught.value.code == 400 and "'hi'" in json.loads(caught.value.read())["error"]["message"]
        port = url.rsplit(":", 1)[1].split("/")[0]
        taken = subprocess.run([sys.executable, "-m", "vidcli.testing.teacher", "--port", port],
                               capture_output=True, text=True, timeout=30)
        assert taken.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert stdout.strip() == url and BANNER in stderr
    assert not url_file.exists()  # a stale URL must not outlive the server
    assert not any(p.name.startswith("teacher.url.tmp") for p in tmp_path.iterdir())


def test_serving_until_signalled_gives_the_callers_signal_handlers_back():
    import threading

    from vidcli.testing.server import ScriptedServer, serve_until_signalled

    def mine(*_):
        pass

    listening = threading.Event()

    class Announcing(ScriptedServer):
        def start(self):
            started = super().start()
            listening.set()
            return started

    def stop_when_listening():
        listening.wait(30)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    before = {signum: signal.signal(signum, mine) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        # Served until SIGTERM (sent once the server listens), then the handlers are the caller's again.
        threading.Thread(target=stop_when_listening, daemon=True).start()
        assert serve_until_signalled(lambda host, port: Announcing(default="ok", host=host, port=port),
                                     "127.0.0.1", 0, None, "test server") == 0
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine

        def taken(host, port):
            raise OSError(98, "Address already in use")

        assert serve_until_signalled(taken, "127.0.0.1", 1, None, "test server") == 1
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
