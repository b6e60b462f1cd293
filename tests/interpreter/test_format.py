"""The interpreter's answer format, caption parsing, prompts and the format reward."""
from __future__ import annotations

import subprocess
import sys

import pytest

from vidcli.interpreter.format import (
    build_target,
    generator_prompt,
    parse_caption,
    parse_output,
    render_caption,
)
from vidcli.records import CAPTION_PARTS
from vidcli.rewards.format import format_checks, format_reward

PARTS = {
    "dense": "A red fox trots across a snowy clearing at dawn.",
    "main_object": "An adult red fox with a thick orange coat and a white-tipped tail.",
    "background": "A pine forest edge under pale pink light; snow covers the ground.",
    "movement": "The fox trots from left to right, pauses, and sniffs the snow.",
    "style": "Naturalistic wildlife footage, calm and cold",
    "camera": "Medium-wide shot at eye level; slow pan right following the fox.",
}

CANONICAL = """1. Dense caption: A red fox trots across a snowy clearing at dawn.

2. Main object caption: An adult red fox with a thick orange coat and a white-tipped tail.

3. Background caption: A pine forest edge under pale pink light; snow covers the ground.

4. Movement caption: The fox trots from left to right, pauses, and sniffs the snow.

5. Style caption: Naturalistic wildlife footage, calm and cold

6. Camera caption: Medium-wide shot at eye level; slow pan right following the fox."""


# ---------------------------------------------------------------------- render / parse


def test_render_is_the_canonical_text():
    assert render_caption(PARTS) == CANONICAL


def test_round_trip_is_exact_including_multiline_parts():
    parts = dict(PARTS, movement="The fox trots.\nThen it stops,\n  and sniffs the snow.")
    parsed = parse_caption(render_caption(parts))
    assert parsed.parts == parts
    assert parsed.complete and not parsed.missing and not parsed.duplicates


@pytest.mark.parametrize(
    "text",
    [
        # lower case, extra spaces, no numbers
        "dense caption:  A.\nmain object caption: B.\nBACKGROUND CAPTION : C.\n"
        "movement   caption: D.\nstyle caption:E.\ncamera caption: F.",
        # markdown bold around the label, with or without the number inside
        "**1. Dense caption:** A.\n**2. Main object caption:** B.\n**Background caption**: C.\n"
        "4. **Movement caption:** D.\n__Style caption:__ E.\n**6. Camera caption**: F.",
        # hyphenated / plural main object, labels without "caption", bullets, headings
        "- Dense: A.\n- Main-object caption: B.\n* Background: C.\n## Movement: D.\n"
        "Style: E.\nMain_objects: ignored duplicate\nCamera: F.",
        # all six parts on one line
        "1. Dense caption: A. 2. Main object caption: B. 3. Background caption: C. "
        "4. Movement caption: D. 5. Style caption: E. 6. Camera caption: F.",
        # wrong numbers and parts out of order still parse by label
        "6. Camera caption: F.\n1. Dense caption: A.\n1. Main object caption: B.\n"
        "1. Background caption: C.\n1. Movement caption: D.\n1. Style caption: E.",
    ],
)
def test_parse_accepts_small_variations(text):
    parsed = parse_caption(text)
    assert parsed.parts == dict(zip(CAPTION_PARTS, ["A.", "B.", "C.", "D.", "E.", "F."]))
    assert parsed.complete


def test_part_text_spanning_lines_with_blank_lines():
    text = "Dense caption:\nA fox\n\ntrots.\nMain object caption: fox\nBackground caption: snow"
    parsed = parse_caption(text)
    assert parsed.parts == {"dense": "A fox\n\ntrots.", "main_object": "fox", "background": "snow"}
    assert parsed.missing == ["movement", "style", "camera"]
    assert not parsed.complete


def test_labels_inside_prose_are_not_headers():
    text = ("1. Dense caption: A film in a noir style: deep shadows, the camera: still.\n"
            "2. Main object caption: a detective; lifestyle: grim.")
    parsed = parse_caption(text)
    assert parsed.parts["dense"] == "A film in a noir style: deep shadows, the camera: still."
    assert parsed.parts["main_object"] == "a detective; lifestyle: grim."
    assert set(parsed.parts) == {"dense", "main_object"}


def test_empty_duplicate_and_preamble_are_reported():
    text = "Here is the caption.\n1. Dense caption:\n2. Dense caption: again\n5. Style caption: warm"
    parsed = parse_caption(text)
    assert parsed.preamble == "Here is the caption."
    assert parsed.parts == {"dense": "", "style": "warm"}
    assert parsed.empty == ["dense"]
    assert parsed.duplicates == ["dense"]
    assert parsed.missing == ["main_object", "background", "movement", "camera"]


def test_render_refuses_bad_parts():
    with pytest.raises(ValueError, match="missing parts: camera"):
        render_caption({k: v for k, v in PARTS.items() if k != "camera"})
    with pytest.raises(ValueError, match="unknown caption parts: main object"):
        render_caption(dict(PARTS, **{"main object": "x"}))
    with pytest.raises(ValueError, match="'style' must be a string"):
        render_caption(dict(PARTS, style=3))


def test_render_empty_part_is_a_bare_label():
    text = render_caption(dict(PARTS, style=""))
    assert "\n\n5. Style caption:\n\n6. Camera caption:" in text
    assert parse_caption(text).empty == ["style"]


# ----------------------------------------------------------------------------- prompts


def test_generator_prompt_styles():
    assert generator_prompt(PARTS, "dense") == PARTS["dense"]
    assert generator_prompt(PARTS, "full") == CANONICAL
    structured = generator_prompt(dict(PARTS, background="A pine\n  forest"), "structured")
    assert structured == (
        "A red fox trots across a snowy clearing at dawn. "
        "An adult red fox with a thick orange coat and a white-tipped tail. "
        "A pine forest. "
        "The fox trots from left to right, pauses, and sniffs the snow. "
        "Naturalistic wildlife footage, calm and cold. "  # full stop added
        "Medium-wide shot at eye level; slow pan right following the fox."
    )


def test_generator_prompt_with_partial_captions():
    partial = {"dense": "", "camera": "Static shot"}
    assert generator_prompt(partial, "structured") == "Static shot."
    assert generator_prompt(partial, "full") == "6. Camera caption: Static shot"
    with pytest.raises(ValueError, match="no dense part"):
        generator_prompt(partial, "dense")
    with pytest.raises(ValueError, match="no non-empty part"):
        generator_prompt({}, "full")
    with pytest.raises(ValueError, match="unknown prompt style 'short'"):
        generator_prompt(PARTS, "short")


# ------------------------------------------------------------------- outputs / target


def test_build_target_parses_back():
    target = build_target("  The user wants a fox.\nAdd dawn light.  ", PARTS)
    assert target == (f"<think>\nThe user wants a fox.\nAdd dawn light.\n</think>\n"
                      f"<answer>\n{CANONICAL}\n</answer>")
    parsed = parse_output(target)
    assert parsed.think == "The user wants a fox.\nAdd dawn light."
    assert parsed.answer == CANONICAL
    assert parsed.caption.parts == PARTS
    assert parsed.think_ok and parsed.answer_ok
    assert build_target("why", CANONICAL + "\n") == target.replace(
        "The user wants a fox.\nAdd dawn light.", "why")


def test_build_target_refuses_what_would_not_parse_back():
    with pytest.raises(ValueError, match="reasoning text is empty"):
        build_target("   ", PARTS)
    with pytest.raises(ValueError, match="reasoning text contains the tag '</think>'"):
        build_target("a </think> b", PARTS)
    with pytest.raises(ValueError, match="caption text contains the tag '<answer>'"):
        build_target("ok", "<answer>x")


def test_problems_are_explained_and_blocks_extracted_anyway():
    text = f"<answer>{CANONICAL}</answer><think>late</think>"
    parsed = parse_output(text)
    assert parsed.think == "late" and parsed.caption.parts == PARTS
    assert parsed.think_problem == "the think block does not come before the answer"
    assert parsed.answer_ok
    swapped = CANONICAL.replace("3. Background", "X").replace("4. Movement", "3. Background")
    swapped = parse_output(f"<think>r</think><answer>{swapped.replace('X', '4. Movement')}</answer>")
    assert swapped.caption.complete and swapped.caption.order[2:4] == ["movement", "background"]
    assert swapped.answer_problem == ("caption parts out of order: movement comes before background "
                                      "(the order is dense, main_object, background, movement, style, camera)")
    twice = parse_output(f"<think>r</think><answer>{CANONICAL}\n\nCamera: again</answer>")
    assert twice.answer_problem == "caption part given twice: camera"
    missing = parse_output("<think>r</think><answer>1. Dense caption: x</answer>")
    assert missing.answer_problem == ("caption parts missing: main_object, background, "
                                      "movement, style, camera")
    unclosed = parse_output("<think>r</think><answer>" + CANONICAL)
    assert unclosed.answer is None and unclosed.caption is None
    assert unclosed.answer_problem == ("expected exactly one <answer>…</answer> block, "
                                       "found 1 '<answer>' and 0 '</answer>'")


A = f"<answer>{CANONICAL}</answer>"
T = "<think>The user asks for a fox at dawn.</think>"
ONE_LINE = ("1. Dense caption: A. 2. Main object caption: B. 3. Background caption: C. "
            "4. Movement caption: D. 5. Style caption: E. 6. Camera caption: F.")

# (completion, think_ok, answer_ok, reward)
CASES = [
    (T + A, True, True, 1.0),
    (f"\n  {T}\n\n{A}\n", True, True, 1.0),  # whitespace around blocks
    (f"Sure. {T} then {A} done", True, True, 1.0),  # text outside the blocks is free
    (f"{T}<answer>{ONE_LINE}</answer>", True, True, 1.0),
    (f"{T}<answer>\n**Dense caption:** A\n**Main object:** B\nBackground: C\n"
     f"Movement: D\nStyle: E\nCamera: F\n</answer>", True, True, 1.0),
    (A, False, True, 0.2),  # no think block
    ("<think>   \n </think>" + A, False, True, 0.2),  # whitespace-only think
    ("<think></think>" + A, False, True, 0.2),  # empty think
    (A + T, False, True, 0.2),  # think after answer
    (T + T + A, False, True, 0.2),  # two think blocks
    ("<think>a<think>b</think>c</think>" + A, False, True, 0.2),  # nested think
    ("<think>reasoning" + A, False, False, 0.0),  # unclosed think swallows the answer
    ("</think>reasoning<think>" + A, False, False, 0.0),  # reversed: the open tag swallows the answer
    ("</think>reasoning<think>" + A.replace("<answer>", "</think><answer>"), False, True, 0.2),
    (T, True, False, 0.2),  # no answer at all
    (T + "<answer></answer>", True, False, 0.2),  # empty answer
    (T + "<answer>A fox at dawn.</answer>", True, False, 0.2),  # plain caption
    (T + A.replace("Style caption: Naturalistic wildlife footage, calm and cold", "Style caption:"),
     True, False, 0.2),  # one part empty
    (T + A.replace("6. Camera caption", "6. Lens caption"), True, False, 0.2),  # part missing
    (T + A + A, True, False, 0.2),  # two answers
    (T + A.replace("1. Dense caption: A red fox trots across a snowy clearing at dawn.\n\n", "")
     .replace("6. Camera caption", "1. Dense caption: A red fox trots at dawn.\n\n6. Camera caption"),
     True, False, 0.2),  # dense moved to the fifth place: out of order
    (f"{T}<answer>6. Camera caption: F. 5. Style caption: E. 4. Movement caption: D. 3. Background caption: C. "
     f"2. Main object caption: B. 1. Dense caption: A.</answer>", True, False, 0.2),  # reversed
    (T + A.replace("6. Camera caption", "5. Style caption: colder\n\n6. Camera caption"),
     True, False, 0.2),  # a part given twice
    (T + "<answer>" + CANONICAL, True, False, 0.2),  # unclosed answer
    (T + f"<answer><answer>{CANONICAL}</answer></answer>", True, False, 0.2),  # nested answer
    (f"<think>r<answer>{CANONICAL}</answer></think>", False, False, 0.0),  # answer inside think
    (f"{T}<answer>{CANONICAL}<think>x</think></answer>", False, False, 0.0),  # think inside answer
    (f"<THINK>r</THINK><ANSWER>{CANONICAL}</ANSWER>", False, False, 0.0),  # tags are exact
    ("", False, False, 0.0),
    ("A fox trots across the snow.", False, False, 0.0),
]


@pytest.mark.parametrize("text,think_ok,answer_ok,reward", CASES)
def test_format_reward_table(text, think_ok, answer_ok, reward):
    assert format_checks(text) == (think_ok, answer_ok)
    assert format_reward(text) == reward


def test_format_modules_do_not_import_torch():
    code = ("import sys, vidcli.rewards.format, vidcli.interpreter.format; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
