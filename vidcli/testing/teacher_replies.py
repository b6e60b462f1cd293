"""The offline teacher's reply rules, one per vidcli prompt template (a test double, not a model).

Each rule gets the :class:`~vidcli.testing.teacher_reading.Request` recognised by
:mod:`vidcli.testing.teacher` and returns the reply text in the form its template asks
for: JSON with the fields the stage validates, a yes/no word, a number, or a
``<think>/<answer>`` completion. What the reply says is taken from the request itself
(its caption, instruction, key facts, frames), so downstream stages see records that
are well-formed and loosely on topic; nothing here judges anything.
"""
from __future__ import annotations

import json
import re
from typing import Callable

from vidcli.testing.teacher_reading import (
    LIGHT_WORDS, PLACE_WORDS, SPATIAL_WORDS, STYLE_WORDS, Request, brightness, camera_clauses, clauses, colour_name,
    colour_phrases, content_words, described_object, difference, first_words, flicker, has_word, last_time,
    motion_clauses, motion_sentence, objects, one_line, place_phrases, sentence, supports,
)


def _json(**fields) -> str:
    return json.dumps(fields, ensure_ascii=False)


def _drf(r: Request) -> str:
    caption = r.get("caption")
    things = [o["phrase"] for o in objects(caption) if not has_word(o["phrase"], PLACE_WORDS | LIGHT_WORDS)]
    quoted = re.findall(r'"([^"]+)"', caption)
    return json.dumps({
        "environment": place_phrases(caption, PLACE_WORDS),
        "objects": [f"the {t}" for t in things],
        "motion": motion_clauses(caption),
        "spatial": [c for c in clauses(caption) if has_word(c, SPATIAL_WORDS)],
        "color": colour_phrases(caption),
        "lighting": place_phrases(caption, LIGHT_WORDS) or [c for c in clauses(caption) if has_word(c, LIGHT_WORDS)],
        "text": [f'the text "{q}" is visible' for q in quoted],
        "camera": camera_clauses(caption),
    })


def _group(objs: list[dict], actions: list[str], camera: list[str], style: list[str]) -> dict:
    return {"objects": [{"name": o["name"], "attributes": o["attributes"]} for o in objs],
            "actions": actions, "camera": camera, "style": style}


def _gold_lines(gold: str) -> dict[str, str]:
    """A structured gold rendered as "part: text" lines, by part; {} for a plain caption."""
    lines = dict(re.findall(r"^(dense|main_object|background|movement|style|camera): (.*)$", gold, re.MULTILINE))
    return lines


def _reade(r: Request) -> str:
    instruction, gold = r.get("instruction"), r.get("gold")
    user_objs = objects(instruction)
    actions = motion_clauses(instruction) or ([] if user_objs else [one_line(instruction)])
    user = _group(user_objs, actions, camera_clauses(instruction), [])
    supp_objs, supp_actions, supp_camera = [], [], []
    for line in r.get("conditions").splitlines():  # "- Label: description", as step 2 writes them
        label, _, description = line.lstrip("- ").partition(": ")
        if not description:
            continue
        if label.lower().startswith("camera"):
            supp_camera.append(one_line(description.split(";")[0]))  # the trajectory's own words
        else:  # what the caption keeps of it (the camera words are kept: the caption follows the path)
            for obj in described_object(description):
                obj["attributes"] = [a for a in obj["attributes"] if supports(gold, f"{obj['name']} {a}")]
                supp_objs.append(obj)
            supp_actions += [c for c in motion_clauses(description) if supports(gold, c)]
    parts = _gold_lines(gold)
    # Z is the caption's element list as a whole: what it adds and what it repeats.
    imaginative_objs = objects(" ".join(parts.get(k, "") for k in ("main_object", "background")) or gold)
    actions = motion_clauses(parts.get("movement") or gold)
    camera = [one_line(parts["camera"])] if parts.get("camera") else camera_clauses(gold)
    style = [one_line(parts["style"])] if parts.get("style") else [c for c in clauses(gold) if has_word(c, STYLE_WORDS)]
    return json.dumps({"user": user, "supplementary": _group(supp_objs, supp_actions, supp_camera, []),
                       "imaginative": _group(imaginative_objs, actions, camera, style)})


def six_parts(text: str) -> dict[str, str]:
    """A six-part caption made only of what ``text`` says (neutral defaults elsewhere)."""
    things = [o["phrase"] for o in objects(text) if not has_word(o["phrase"], PLACE_WORDS | LIGHT_WORDS)]
    setting = place_phrases(text, PLACE_WORDS | LIGHT_WORDS)
    styles = [c for c in clauses(text) if has_word(c, STYLE_WORDS)]
    return {
        "dense": sentence(text),
        "main_object": sentence(f"the main subject{'s are' if len(things) > 1 else ' is'} "
                                + ", ".join(f"a {t}" for t in things)) if things else sentence(first_words(text, 12)),
        "background": sentence("the scene is set " + ", ".join(setting)) if setting
        else "A plain, neutral background; the setting is not described.",
        "movement": sentence("; ".join(motion_clauses(text))) or "Nothing is described as moving; the scene holds still.",
        "style": sentence("; ".join(styles)) or "Realistic footage with natural colours.",
        "camera": sentence("; ".join(camera_clauses(text))) or "No camera movement is described; a steady view.",
    }


def _structure(r: Request) -> str:
    return json.dumps(six_parts(r.get("gold")))


def _intent(r: Request) -> str:
    instruction = one_line(r.get("instruction"))
    return _json(intent=f'The user asks for "{instruction}", a brand-new video. Besides the text there is '
                        f"{r.get('inputs')}, which I look at later. The core objective is to show exactly what the "
                        "text names, with nothing it rules out.")


def _intent_inferred(r: Request) -> str:
    first = r.get("nontext").splitlines()[0].lstrip("- ")
    label, _, shown = first.partition(": ")
    return _json(intent=f"No text was given; from the inputs I infer the video they suggest. The {label.lower()} "
                        f"shows {first_words(shown, 20).rstrip('.')}, so the core objective is a video built "
                        "around it, filmed as the inputs indicate.")


def _alignment(r: Request) -> str:
    instruction, nontext = one_line(r.get("instruction")), r.get("nontext")
    if instruction.startswith("(none:"):  # the chain for a dropped instruction: never quote a request
        shown = first_words(nontext.splitlines()[0].lstrip("- ").partition(": ")[2], 20)
        return _json(alignment=f"No text was given, so nothing conflicts and the inputs decide ({shown}). "
                               "I will make the video the inputs suggest, keeping everything they show.")
    if nontext.startswith("No non-text inputs"):
        return _json(alignment="No non-text inputs were given, so the text alone decides. "
                               f'I will make a video of "{instruction}" exactly as the text asks.')
    labels = [line.lstrip("- ").split(": ", 1)[0].lower() for line in nontext.splitlines() if line.strip()]
    shown = first_words(nontext.splitlines()[0].lstrip("- ").partition(": ")[2], 20)
    return _json(alignment=f'The text asks for "{instruction}", and the inputs ({", ".join(labels)}) add what they show '
                           f"({shown}). Nothing in them conflicts with the text, so nothing is set aside. "
                           f'I will make a video of "{instruction}" that keeps what the inputs show.')


def _supplement(r: Request) -> str:
    from vidcli.interpreter.format import parse_caption

    parts = parse_caption(r.get("gold")).parts
    added = [f"the {name} ({one_line(parts[key]).rstrip('.')})"
             for key, name in (("background", "setting"), ("style", "style"), ("camera", "camera work"))
             if parts.get(key)]
    if not added:
        return _json(supplement="Nothing is missing from the interpretation.")
    return _json(supplement=f"To make the video complete, I add {', '.join(added)}.")


def _hinted(r: Request) -> str:
    hint = re.search(r'described it as: "(.*)"', r.get("hint"))
    return f", which the user describes as {one_line(hint.group(1))}" if hint else ""


def _describe_image(r: Request) -> str:
    frames = r.frames()
    return _json(description=f"The image shows one identity{_hinted(r)}, in mostly {colour_name(frames)} tones "
                             f"under {brightness(frames)} light.")


def _describe_video(kind: str) -> Callable[[Request], str]:
    def rule(r: Request) -> str:
        frames = r.frames()
        end = last_time(" ".join(r.texts))
        return _json(description=f"The {kind} shows a mostly {colour_name(frames)} picture{_hinted(r)}; "
                                 f"{motion_sentence(frames, end)}.")
    return rule


def _camera_video(r: Request) -> str:
    steady = flicker(r.frames()) <= 0.03
    return _json(camera="The camera stays fixed at eye level in a medium shot." if steady
                 else "The camera holds a medium shot at eye level while the scene changes in front of it.")


def _mine_caption(r: Request) -> str:
    frames = r.frames()
    return _json(caption=f"A mostly {colour_name(frames)} scene in {brightness(frames)} light; "
                         f"{motion_sentence(frames, last_time(' '.join(r.texts)))}.")


def _verdict_ta(r: Request) -> str:
    return _json(answer="Yes", explanation=f"The video shows the {r.get('aspect')} asked for: "
                                           f"{first_words(r.get('condition'), 35)}.")


def _verdict_phy(r: Request) -> str:
    aspects = dict.fromkeys(("liquid_flow", "deformation", "material", "motion", "interpenetration"), "No")
    return _json(aspects=aspects, answer="No",
                 explanation="Objects keep their shapes and materials, move smoothly and never pass through each other.")


def _verdict_vq(r: Request) -> str:
    return _json(answer="No", issue="none", explanation="The frames are clean: no blur, banding, noise or flicker stands out.")


def _types(r: Request) -> list[str]:
    return [t.strip() for t in r.get("types").split(",") if t.strip()]


_RAVE_CUES = {
    "physical": ("melt", "wet", "burn", "snow", "rain", "wind", "freeze", "light", "dry", "break"),
    "spatial": ("move", "left", "right", "remove", "place", "shift", "swap", "closer"),
    "temporal": ("later", "older", "night", "day", "season", "bare", "age", "dusk", "dawn"),
}
_CUE_SENTENCES = {
    "temporal": "Show this same place some time later, once things have run their course{about}.",
    "spatial": "Rearrange the space so everything sits where it would be needed next{about}.",
    "physical": "Let the weather and the light do their work on this scene for a while{about}.",
    "semantic": "Give this scene the purpose it is about to serve{about}.",
    "camera": "Look again so that what matters most is easier to see{about}.",
    "causal": "Let what was just set going here play out{about}.",
    "emotional": "Make this moment feel the way the people in it would remember it{about}.",
    "commonsense": "Show what would naturally come next in an ordinary day here{about}.",
}


def _pick_type(text: str, allowed: list[str]) -> str:
    said = content_words(text)
    for kind, cues in _RAVE_CUES.items():
        if kind in allowed and said & set(cues):
            return kind
    return allowed[sum(map(ord, text)) % len(allowed)]


def _rewrite(r: Request, text: str, literal: str | None) -> str:
    kind = _pick_type(text, _types(r))
    things = [o["name"] for o in objects(text)][:1]
    cue = _CUE_SENTENCES[kind].format(about=f", paying attention to the {things[0]}" if things else "")
    if literal is not None and one_line(literal).lower() in cue.lower():
        cue = _CUE_SENTENCES[kind].format(about="")
    return _json(reasoning_type=kind, instruction=cue)


def _rave(r: Request) -> str:
    return _rewrite(r, r.get("literal"), r.get("literal"))


def _icvg(r: Request) -> str:
    return _rewrite(r, f"{r.get('source')} {r.get('target')}", None)


def _rve(r: Request) -> str:
    criteria = re.findall(r'"(EA|PC|GN|GR)"', r.get("reply_form"))
    source, produced = r.frames(0), r.frames(1)
    change = difference(source, produced) if source and produced else 0.0
    scores = {"EA": 8 if change > 0.02 else 3, "PC": max(2, min(10, round(10 - 40 * change))),
              "GN": max(3, min(9, round(9 - 60 * flicker(produced)))), "GR": 7}
    reason = ("The produced video visibly differs from the source" if change > 0.02
              else "The produced video looks almost unchanged from the source") + "; motion is judged from frame changes."
    return json.dumps({**{c: scores[c] for c in criteria}, "reason": reason})


def _element(r: Request) -> str:
    return "yes" if supports(r.get("caption"), r.get("element")) else "no"


def _coverage_number(r: Request) -> str:
    items = [line[2:] for line in r.get("elements").splitlines() if line.startswith("- ")]
    covered = sum(supports(r.get("caption"), item) for item in items)
    return f"{covered / len(items):.2f}" if items else "1.00"


def _interpreter(r: Request) -> str:
    from vidcli.interpreter.format import build_target

    instruction = r.get("instruction") or "the video the inputs suggest"
    think = (f'The user asks for "{one_line(instruction)}". I keep to the text, take the looks, layout and '
             "motion from any inputs, and add a plain setting and a steady camera where nothing is said.")
    return build_target(think, six_parts(instruction))


def _critic_verdict(r: Request) -> tuple[str, str]:
    edited, original = r.frames(0), r.frames(1)
    if edited and original and difference(edited, original) <= 0.02:
        return "No", "The edited video looks the same as the original, so the edit was not made."
    kept = " the rest of the scene is kept," if "Preservation" in r.get("checks") else ""
    return "Yes", f"The edit is visible,{kept} and the motion stays smooth."


def _critic(r: Request) -> str:
    verdict, reason = _critic_verdict(r)
    return f"{reason}\nVerdict: {verdict}"


def _critic_verdict_first(r: Request) -> str:
    verdict, reason = _critic_verdict(r)
    return f"{verdict}. {reason}"


def _video_yes(r: Request) -> str:
    seen = "a picture" if r.frames() else "nothing"
    return f"Yes. The video shows {seen} consistent with the request."


REPLIES: dict[str, Callable[[Request], str]] = {
    "cot_alignment": _alignment, "cot_camera_video": _camera_video, "cot_depth": _describe_video("depth video"),
    "cot_identity": _describe_image, "cot_intent": _intent, "cot_intent_inferred": _intent_inferred,
    "cot_pose": _describe_video("pose video"),
    "cot_structure": _structure, "cot_supplement": _supplement, "cot_video": _describe_video("source video"),
    "critic_revise": _critic, "critic_revise_verdict_first": _critic_verdict_first,
    "decompose_drf": _drf, "decompose_reade": _reade,
    "interpreter_system": _interpreter, "judge_contradiction": lambda r: "no",
    "judge_coverage_number": _coverage_number, "judge_element": _element, "judge_rve": _rve,
    "mine_caption": _mine_caption, "mine_icvg": _icvg, "mine_rave": _rave,
    "question_phy": _verdict_phy, "question_phy_single": _verdict_phy, "question_ta": _verdict_ta,
    "question_vq": _verdict_vq, "question_vq_single": _verdict_vq,
    "video_feedback_element": _video_yes, "video_feedback_instruction": _video_yes,
}
