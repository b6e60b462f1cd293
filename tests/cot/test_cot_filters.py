"""make-cot's filter pass (exclude, dedup, balance) and the step helpers it relies on."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from tests.cli.helpers import read_jsonl, write_jsonl
from vidcli.cot import steps
from vidcli.cot.filters import (
    FilterOptions,
    balance,
    deduplicate,
    filter_file,
    filter_records,
    group_of,
    normalise,
    overlapping,
    read_instructions,
)
from vidcli.errors import InputError


@pytest.fixture(scope="module")
def embedder():
    from vidcli.backends.embed import Embedder

    return Embedder()


WAVE = ["make her wave at the camera in a park", "make her wave at the camera in the park",
        "a quiet street at dusk", "a quiet street at night"]


def test_normalise_ignores_case_punctuation_and_spacing():
    assert normalise("  Make her WAVE,  at the camera!\n") == "make her wave at the camera"
    assert normalise("Café: déjà-vu") == "café déjà vu"


def test_dedup_without_embedder_keeps_first_of_identical_normalised_texts():
    texts = ["A red ball.", "a red ball", "A blue ball", "A  RED ball!"]
    assert deduplicate(texts) == [0, 2]


def test_dedup_with_minilm_collapses_near_identical_and_keeps_different(embedder):
    sims = embedder.similarity(WAVE, WAVE)
    # The library's own cosines decide what counts as near-identical at 0.95:
    assert sims[0, 1] >= 0.95 and sims[2, 3] < 0.95
    assert deduplicate(WAVE, embedder, 0.95) == [0, 2, 3]
    # The threshold is inclusive and applies to the pair's cosine exactly.
    pair = float(sims[0, 1])
    assert deduplicate(WAVE[:2], embedder, pair - 1e-4) == [0]
    assert deduplicate(WAVE[:2], embedder, min(1.0, pair + 1e-3)) == [0, 1]


def test_overlapping_by_text_or_embedding(embedder):
    evaluation = ["Make her wave at the camera in the park!"]
    assert overlapping(WAVE, evaluation) == [False, True, False, False]  # normalised text only
    assert overlapping(WAVE, evaluation, embedder, 0.95) == [True, True, False, False]
    assert overlapping(WAVE, [], embedder) == [False] * 4


def test_group_of_fields_and_condition_types():
    identity = {"conditions": [{"type": "identity", "path": "a.png"}, {"type": "camera", "path": "c.txt"}]}
    assert group_of(identity, "condition_type") == "camera+identity"  # the full set, not the first
    twice = {"conditions": [{"type": "identity", "path": "a.png"}, {"type": "identity", "path": "b.png"}]}
    assert group_of(twice, "condition_type") == "identity"
    assert group_of({"conditions": []}, "condition_type") == "text"
    assert group_of({"instruction": "x"}, "condition_type") == "text"
    assert group_of({"condition_type": "pose", **identity}, "condition_type") == "pose"  # a real field wins
    assert group_of({"meta": {"source": "film"}}, "meta.source") == "film"
    assert group_of({"meta": {"n": 3}}, "meta.n") == "3"
    assert group_of({"meta": {}}, "meta.source") == "(missing)"


def test_balance_downsamples_every_group_to_the_smallest_with_a_seed():
    groups = ["a"] * 5 + ["b"] * 2 + ["c"] * 3
    kept = balance(groups, seed=7)
    assert Counter(groups[i] for i in kept) == {"a": 2, "b": 2, "c": 2}
    assert kept == sorted(kept) and {5, 6} <= set(kept)  # the smallest group is kept whole
    assert balance(groups, seed=7) == kept
    # The same draw as random.Random(seed).sample over the groups in name order.
    rng = random.Random(7)
    expected = sorted(rng.sample(range(0, 5), 2) + rng.sample(range(5, 7), 2) + rng.sample(range(7, 10), 2))
    assert kept == expected
    assert balance([], seed=0) == []


def test_balance_only_the_groups_asked_for():
    groups = ["a"] * 5 + ["b"] * 2 + ["c"] * 3
    kept = balance(groups, seed=7, only={"a", "c"})
    assert Counter(groups[i] for i in kept) == {"a": 3, "b": 2, "c": 3}  # b passes untouched


def four_types(text_only: int = 1, combos: int = 0) -> list[dict]:
    rows = [{"id": f"{kind}{i}", "instruction": f"{kind} request {i}", "conditions": [{"type": kind, "path": "x"}]}
            for kind in ("identity", "depth", "camera", "pose") for i in range(3)]
    rows += [{"id": f"t{i}", "instruction": f"text request {i}"} for i in range(text_only)]
    rows += [{"id": f"m{i}", "instruction": f"mixed request {i}",
              "conditions": [{"type": "identity", "path": "a"}, {"type": "camera", "path": "c"}]}
             for i in range(combos)]
    return rows


def test_a_single_text_only_record_does_not_cut_the_condition_types():
    kept, report = filter_records(four_types(text_only=1), FilterOptions(balance_by="condition_type", dedup=False))
    assert Counter(group_of(r, "condition_type") for r in kept) == {"identity": 3, "depth": 3, "camera": 3,
                                                                     "pose": 3, "text": 1}
    assert report.unbalanced == 0
    dropped, report = filter_records(four_types(text_only=2), FilterOptions(balance_by="condition_type",
                                                                             text_only="drop", dedup=False))
    assert {r["id"] for r in dropped} == {r["id"] for r in four_types(text_only=0)}
    assert report.unbalanced == 2 and report.written == 12


def test_multi_condition_records_form_their_own_group():
    records = four_types(text_only=0, combos=2)
    kept, _ = filter_records(records, FilterOptions(balance_by="condition_type", dedup=False))
    assert Counter(group_of(r, "condition_type") for r in kept) == {"identity": 2, "depth": 2, "camera": 2,
                                                                     "pose": 2, "camera+identity": 2}
    # Asked for the four single types only, the two mixed records pass through.
    opts = FilterOptions(balance_by="condition_type", balance_groups=["identity", "depth", "camera", "pose"],
                         dedup=False)
    kept, _ = filter_records(records, opts)
    assert Counter(group_of(r, "condition_type") for r in kept) == {"identity": 3, "depth": 3, "camera": 3,
                                                                     "pose": 3, "camera+identity": 2}


def test_filter_records_order_and_counts(embedder):
    records = [{"id": str(i), "instruction": t, "conditions": [{"type": kind, "path": "x"}]}
               for i, (t, kind) in enumerate([
                   ("make her wave at the camera in a park", "identity"),
                   ("make her wave at the camera in the park", "identity"),  # duplicate of 0
                   ("a quiet street at dusk", "camera"),
                   ("a ball rolls over the grass", "camera"),
                   ("two dancers spin on a stage", "pose"),
                   ("a cat sleeps on a sofa", "identity"),
               ])]
    opts = FilterOptions(exclude=["A BALL ROLLS OVER THE GRASS."], balance_by="condition_type", seed=3)
    kept, report = filter_records(records, opts, embedder)
    assert (report.read, report.excluded, report.duplicates) == (6, 1, 1)
    # Left after exclude+dedup: identity 0, 5; camera 2; pose 4 -> one each.
    assert Counter(group_of(r, "condition_type") for r in kept) == {"identity": 1, "camera": 1, "pose": 1}
    assert report.unbalanced == 1 and report.written == 3 == len(kept)
    assert {"2", "4"} <= {r["id"] for r in kept}


def test_exclude_first_keeps_the_twin_of_an_evaluation_item(embedder):
    # Record 0 overlaps the evaluation set and record 1 duplicates record 0: excluding
    # first keeps record 1, where deduplicating first would lose both.
    records = [{"id": "0", "instruction": WAVE[0]}, {"id": "1", "instruction": WAVE[1]}]
    kept, _ = filter_records(records, FilterOptions(exclude=[WAVE[0]]), None)
    assert [r["id"] for r in kept] == ["1"]


def test_filter_file_writes_atomically_and_reads_eval_sets(tmp_path):
    generated = write_jsonl(tmp_path / "gen.jsonl", [{"id": "a", "instruction": "x"}, {"id": "b", "instruction": "X!"}])
    report = filter_file(str(generated), str(tmp_path / "out.jsonl"), FilterOptions())
    assert report.duplicates == 1 and [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["a"]
    assert not (tmp_path / "out.jsonl.partial").exists()
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [{"instruction": "one"}, {"prompt": "two"}])
    with pytest.raises(InputError) as info:
        read_instructions(str(evaluation))
    assert str(info.value).startswith(f"{evaluation}:2: ") and "'instruction'" in str(info.value)


def test_camera_clauses_keep_only_camera_talk():
    caption = "The camera pans slowly left, a dog runs across the yard and the shot ends on a static close-up."
    assert steps.camera_clauses(caption) == "The camera pans slowly left, the shot ends on a static close-up"
    assert steps.camera_clauses("A dog runs across the yard.") == ""


def test_gold_parts_and_text_field_checks():
    gold = {p: f"{p} text" for p in ("dense", "main_object", "background", "movement", "style", "camera")}
    assert steps.parse_gold_parts({**gold, "extra": "x"}) == gold
    with pytest.raises(ValueError, match="style"):
        steps.parse_gold_parts({**gold, "style": "  "})
    check = steps.text_field("intent")
    check({"intent": "ok"})
    for bad in ({"intent": ""}, {"other": "x"}, ["intent"]):
        with pytest.raises(ValueError, match='"intent"'):
            check(bad)
    think = steps.think_text({"intent": "I", "nontext": "N", "alignment": "A", "supplement": "S"})
    assert think == ("Step 1 - Textual intent: I\n\nStep 2 - Non-textual understanding: N\n\n"
                     "Step 3 - Multimodal alignment: A\n\nStep 4 - Supplementary completion: S")
