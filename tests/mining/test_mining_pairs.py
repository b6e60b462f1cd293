"""Clip embeddings, scene windows, threshold, sub-clusters, pair scoring and the hold-out split."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vidcli.errors import MediaError  # noqa: E402
from vidcli.media import write_video  # noqa: E402
from vidcli.mining.pairs import (  # noqa: E402
    PairOptions,
    holdout_split,
    mine_pairs,
    percentile_threshold,
    scene_windows,
    score_pairs,
    sub_clusters,
    within_window_similarities,
)
from vidcli.mining.shots import Clip, detect_shots  # noqa: E402
from vidcli.mining.synthetic import make_film  # noqa: E402

# Hand-made similarity matrices of four clips (both positive definite, unit diagonal).
VISUAL = np.array([[1, .9, .6, .2], [.9, 1, .7, .3], [.6, .7, 1, .25], [.2, .3, .25, 1]])
CAPTION = np.array([[1, .8, .85, .1], [.8, 1, .45, .1], [.85, .45, 1, .1], [.1, .1, .1, 1]])


def embeddings_for(sim: np.ndarray) -> np.ndarray:
    """Unit vectors whose Gram matrix is ``sim``."""
    return np.linalg.cholesky(sim)


# ------------------------------------------------------------------ hand-computed pieces


def test_scene_windows_by_count_span_and_video():
    clips = [Clip("a.mp4", 0, 10), Clip("a.mp4", 10, 20), Clip("a.mp4", 20, 30), Clip("a.mp4", 30, 200),
             Clip("b.mp4", 0, 5), Clip("b.mp4", 5, 10)]
    assert scene_windows(clips, window=2, max_window_s=180) == [[0, 1], [2, 3], [4, 5]]
    # Clip 3 would make its window span 180 s > 100 s: it starts its own.
    assert scene_windows(clips, window=2, max_window_s=100) == [[0, 1], [2], [3], [4, 5]]
    # A new video always starts a new window.
    assert scene_windows(clips, window=10, max_window_s=1000) == [[0, 1, 2, 3], [4, 5]]
    with pytest.raises(ValueError):
        scene_windows(clips, window=0)


def test_threshold_is_a_percentile_of_within_window_similarities():
    values = within_window_similarities(VISUAL, [[0, 1, 2, 3]])
    assert sorted(values) == pytest.approx([.2, .25, .3, .6, .7, .9])
    # Sorted values, linear interpolation: position 0.75 * 5 = 3.75 → .6 + .75 * (.7 - .6).
    assert percentile_threshold(values, 75) == pytest.approx(0.675)
    assert percentile_threshold(values, 50) == pytest.approx(0.45)  # .3 + .5 * (.6 - .3)
    # Two windows: only pairs inside a window count.
    assert sorted(within_window_similarities(VISUAL, [[0, 1], [2, 3]])) == pytest.approx([.25, .9])
    assert percentile_threshold(np.array([]), 75) is None


def test_sub_clusters_are_connected_components():
    # Edges at ≥ .675: 0-1 (.9) and 1-2 (.7); 0 and 2 join through 1; 3 is alone and dropped.
    assert sub_clusters(VISUAL, [0, 1, 2, 3], 0.675) == [[0, 1, 2]]
    assert sub_clusters(VISUAL, [0, 1, 2, 3], 0.8) == [[0, 1]]
    assert sub_clusters(VISUAL, [2, 3], 0.8) == []
    assert sub_clusters(VISUAL, [0, 1, 2, 3], 0.2) == [[0, 1, 2, 3]]


def test_pair_scores_by_hand():
    pairs = score_pairs([0, 1, 2], VISUAL, CAPTION, floor=0.45, min_caption_sim=0.5, keep=5)
    # (0,2): .85 * (1 - .6) = .34; (0,1): .8 * (1 - .9) = .08; (1,2) has caption .45 < .5.
    assert [(i, j) for i, j, _ in pairs] == [(0, 2), (0, 1)]
    assert pairs[0][2] == pytest.approx({"caption_sim": .85, "visual_sim": .6, "score": .34})
    assert pairs[1][2]["score"] == pytest.approx(.08)
    # The visual floor drops (0,2) (.6 < .65); keep caps the count.
    assert [(i, j) for i, j, _ in score_pairs([0, 1, 2], VISUAL, CAPTION, floor=.65, min_caption_sim=.5, keep=5)] \
        == [(0, 1)]
    assert len(score_pairs([0, 1, 2], VISUAL, CAPTION, floor=0, min_caption_sim=0, keep=1)) == 1


def test_mine_pairs_on_a_tiny_matrix():
    clips = [Clip("film.mp4", float(k), float(k + 1), caption=f"caption {k}") for k in range(4)]
    triplets, reports = mine_pairs(clips, embeddings_for(VISUAL), embeddings_for(CAPTION),
                                   PairOptions(window=4, pairs_per_cluster=1))
    assert len(reports) == 1
    report = reports[0]
    assert report.threshold == pytest.approx(0.675) and report.floor == pytest.approx(0.45)
    assert report.clusters == [[0, 1, 2]] and report.pairs == 1 and report.windows == 1
    (t,) = triplets
    assert t["source"] == {"video": "film.mp4", "start": 0.0, "end": 1.0, "caption": "caption 0"}
    assert t["target"] == {"video": "film.mp4", "start": 2.0, "end": 3.0, "caption": "caption 2"}
    assert t["subset"] == "icvg"
    assert t["scores"] == pytest.approx({"caption_sim": .85, "visual_sim": .6, "score": .34,
                                         "threshold": .675, "floor": .45})
    assert isinstance(t["id"], str) and t["id"]
    with pytest.raises(ValueError, match="embeddings"):
        mine_pairs(clips, embeddings_for(VISUAL)[:3], embeddings_for(CAPTION))


def test_mine_pairs_with_single_clip_windows_reports_no_threshold():
    clips = [Clip("a.mp4", 0, 1), Clip("b.mp4", 0, 1)]
    triplets, reports = mine_pairs(clips, np.eye(2), np.eye(2))
    assert triplets == [] and [r.threshold for r in reports] == [None, None]


# ------------------------------------------------------------------------- hold-out


def fake_triplets(counts: dict[str, int]) -> list[dict]:
    return [{"id": f"{v}-{k}", "source": {"video": v, "start": k, "end": k + 1},
             "target": {"video": v, "start": k + 1, "end": k + 2}} for v, n in counts.items() for k in range(n)]


def best_test_size(counts: dict[str, int], fraction: float) -> int:
    """By brute force: the test size closest to ``fraction`` of the triplets over every proper, non-empty
    subset of the videos (the larger on a tie)."""
    from itertools import combinations

    total, values = sum(counts.values()), list(counts.values())
    sizes = {sum(c) for r in range(1, len(values)) for c in combinations(values, r)}
    return min(sizes, key=lambda s: (abs(s - fraction * total), -s))


def test_holdout_split_groups_by_source_video_and_lands_closest_to_the_fraction():
    counts = {"a.mp4": 5, "b.mp4": 1, "c.mp4": 3, "d.mp4": 7, "e.mp4": 2, "f.mp4": 2}
    triplets = fake_triplets(counts)
    for fraction in (0.05, 0.25, 0.34, 0.5, 0.9):
        for seed in range(5):
            split = holdout_split(triplets, fraction, seed=seed)
            assert [t["id"] for t in split] == [t["id"] for t in triplets]
            test = {t["source"]["video"] for t in split if t["split"] == "test"}
            train = {t["source"]["video"] for t in split if t["split"] == "train"}
            assert test and train and not test & train
            assert sum(counts[v] for v in test) == best_test_size(counts, fraction), (fraction, seed)
    # 0.34 of 20 is 6.8: 7 triplets (0.35) is as close as whole videos get.
    assert best_test_size(counts, 0.34) == 7
    # The seed picks which videos make up the size.
    picks = {frozenset(t["source"]["video"] for t in holdout_split(triplets, 0.34, seed=s) if t["split"] == "test")
             for s in range(10)}
    assert len(picks) > 1
    assert holdout_split(triplets, 0.25, seed=3) == holdout_split(triplets, 0.25, seed=3)
    assert "split" not in triplets[0]  # the input is not modified
    assert {t["split"] for t in holdout_split(triplets, 0.0)} == {"train"}
    assert {t["split"] for t in holdout_split(triplets, 1.0)} == {"test"}
    # Even a large fraction keeps one video for training, and a tiny one holds one out.
    assert {t["split"] for t in holdout_split(triplets, 0.99)} == {"train", "test"}
    assert sum(t["split"] == "test" for t in holdout_split(triplets, 0.001)) == 1
    # One video cannot be split: it trains.
    assert {t["split"] for t in holdout_split(fake_triplets({"a.mp4": 4}), 0.5)} == {"train"}
    with pytest.raises(ValueError):
        holdout_split(triplets, 1.5)


# ------------------------------------------------------------------ clip embeddings


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
    from vidcli.testing import ensure_tiny_models

    return ensure_tiny_models("siglip", root=tmp_path_factory.mktemp("tiny"))["siglip"]


@pytest.fixture(scope="module")
def grey_ramp(tmp_path_factory):
    """20 frames at 10 fps; frame k is a flat grey of level 20 + 10k (its own index, readable)."""
    frames = np.stack([np.full((32, 32, 3), 20 + 10 * k, dtype=np.uint8) for k in range(20)])
    return str(write_video(tmp_path_factory.mktemp("ramp") / "ramp.mp4", frames, 10))


def test_clip_frames_are_the_centres_of_equal_parts(siglip, grey_ramp):
    from vidcli.mining.embed import ClipEmbedder

    embedder = ClipEmbedder(siglip, frames_per_clip=4)
    # [0.5, 1.3) in four parts of 0.2 s: centres 0.6, 0.8, 1.0, 1.2 → frames 6, 8, 10, 12.
    images = embedder.clip_frames(Clip(grey_ramp, 0.5, 1.3))
    levels = [np.asarray(im, dtype=float).mean() for im in images]
    assert np.round((np.array(levels) - 20) / 10).tolist() == [6, 8, 10, 12]


def test_clip_embedding_is_the_renormalised_mean_of_frame_embeddings(siglip, grey_ramp):
    from transformers import AutoModel, AutoProcessor

    from vidcli.mining.embed import ClipEmbedder

    clips = [Clip(grey_ramp, 0.0, 0.8), Clip(grey_ramp, 0.5, 1.3), Clip(grey_ramp, 1.0, 2.0)]
    embedder = ClipEmbedder(siglip, frames_per_clip=3, batch_size=64)
    got = embedder.embed_clips(clips)
    # The same in small batches that straddle clips.
    small = ClipEmbedder(siglip, frames_per_clip=3, batch_size=2).embed_clips(clips)
    np.testing.assert_allclose(small, got, atol=1e-5)
    # Independently: SiglipModel.forward's own normalised image embeddings, averaged.
    model, processor = AutoModel.from_pretrained(siglip).eval(), AutoProcessor.from_pretrained(siglip)
    for row, clip in zip(got, clips):
        inputs = processor(text=["a video"], images=embedder.clip_frames(clip), return_tensors="pt", padding=True)
        with torch.no_grad():
            frames = model(**inputs).image_embeds  # unit length per frame
        expected = torch.nn.functional.normalize(frames.mean(0), dim=0).numpy()
        np.testing.assert_allclose(row, expected, atol=1e-5)
        assert np.linalg.norm(row) == pytest.approx(1.0, abs=1e-5)
    assert got.shape == (3, model.config.vision_config.hidden_size)


def test_clip_of_a_missing_video_is_a_media_error(siglip, tmp_path):
    from vidcli.mining.embed import ClipEmbedder

    with pytest.raises(MediaError, match="missing.mp4"):
        ClipEmbedder(siglip).embed_clips([Clip(str(tmp_path / "missing.mp4"), 0, 1)])


# ------------------------------------------------------ the whole miner on synthetic films


def scene_at(film, start: float, end: float) -> str:
    middle = (start + end) / 2
    return next(s for (a, b), s in zip(film.shots, film.scenes) if a <= middle < b)


def test_mined_pairs_on_synthetic_films(siglip, tmp_path):
    from vidcli.backends.embed import Embedder
    from vidcli.mining.embed import ClipEmbedder

    films = {}
    clips: list[Clip] = []
    for seed in range(3):
        film = make_film(tmp_path / f"film{seed}.mp4", seed=seed)
        films[str(film.path)] = film
        for start, end in detect_shots(film.path):
            # Captions from the ground truth: what a captioner would say of the scene.
            clips.append(Clip(str(film.path), start, end, film.captions[scene_at(film, start, end)]))
    visual = ClipEmbedder(siglip).embed_clips(clips)
    caption = Embedder().embed([c.caption for c in clips]).numpy()
    options = PairOptions(window=8)
    triplets, reports = mine_pairs(clips, visual, caption, options)

    assert {r.video for r in reports} == set(films)
    assert all(r.pairs >= 1 for r in reports)
    index = {(c.video, c.start): k for k, c in enumerate(clips)}
    windows = scene_windows(clips, options.window, options.max_window_s)
    for report in reports:
        # The threshold reported is the 75th percentile of this video's within-window cosines.
        mine = [w for w in windows if clips[w[0]].video == report.video]
        sims = [float(visual[i] @ visual[j]) for w in mine for a, i in enumerate(w) for j in w[a + 1:]]
        assert report.threshold == pytest.approx(np.percentile(sims, 75), abs=1e-6)
    for t in triplets:
        src, tgt = t["source"], t["target"]
        film = films[src["video"]]
        assert tgt["video"] == src["video"]
        assert src["end"] <= tgt["start"]  # earlier clip is the source
        assert scene_at(film, src["start"], src["end"]) == scene_at(film, tgt["start"], tgt["end"])
        i, j = index[(src["video"], src["start"])], index[(tgt["video"], tgt["start"])]
        scores = t["scores"]
        assert scores["visual_sim"] == pytest.approx(float(visual[i] @ visual[j]), abs=1e-5)
        assert scores["score"] == pytest.approx(scores["caption_sim"] * (1 - scores["visual_sim"]))
        assert scores["visual_sim"] >= scores["floor"] and scores["caption_sim"] >= options.min_caption_sim
        report = next(r for r in reports if r.video == src["video"])
        assert scores["threshold"] == report.threshold

    # Without the caption check, the visual sub-clusters alone still favour the same
    # scene far above chance among clips that share a window.
    loose, _ = mine_pairs(clips, visual, caption, PairOptions(window=8, min_caption_sim=-1.0))
    same = [scene_at(films[t["source"]["video"]], t["source"]["start"], t["source"]["end"])
            == scene_at(films[t["target"]["video"]], t["target"]["start"], t["target"]["end"]) for t in loose]
    chance = [scene_at(films[clips[i].video], clips[i].start, clips[i].end)
              == scene_at(films[clips[j].video], clips[j].start, clips[j].end)
              for w in windows for a, i in enumerate(w) for j in w[a + 1:]]
    assert np.mean(same) >= 0.8 and np.mean(same) > np.mean(chance) + 0.2
