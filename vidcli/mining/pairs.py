"""From embedded, captioned clips to (source, target) pairs: steps 3, 5 and 6 of the
``icvg`` miner (SPEC §7), and the hold-out split.

1. **Scene windows.** The clips of one video, in time order, are cut into consecutive,
   non-overlapping windows of at most ``window`` clips that span at most
   ``max_window_s`` seconds (first clip's start to last clip's end). Pairs never leave a
   window, so source and target stay within one stretch of the story: a shot and the
   shot that comes back to the same place a minute later, not the same street in
   another act.
2. **Threshold.** Per video, the cosine similarities of all clip pairs inside its
   windows form a distribution; the edge threshold is its ``edge_percentile``-th
   percentile (75: a clip is linked to the quarter of its window-mates that look most
   like it). Being relative to the video, it adapts to films that are visually uniform
   or varied. The value used is reported in every pair's ``scores.threshold``.
3. **Sub-clusters.** Inside a window, clips linked by a similarity at or above the
   threshold form a graph; its connected components are the visually coherent
   sub-clusters. Singletons yield nothing.
4. **Pair scoring.** Inside a sub-cluster, every ordered pair (earlier clip = source,
   later = target) scores ``caption_sim × (1 − visual_sim)``: the captions should say
   the same things (same people, same place) while the pictures differ (what the edit
   must produce). A pair is kept only if its own visual similarity reaches the
   consistency floor (the ``floor_percentile``-th percentile of the same distribution:
   components chain clips, so two members can share too little) and its caption
   similarity reaches ``min_caption_sim``; the ``pairs_per_cluster`` best survive.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from vidcli.mining.shots import Clip
from vidcli.records import content_id


@dataclass
class PairOptions:
    """Knobs of the pair miner (defaults as documented in the module docstring)."""

    window: int = 12
    max_window_s: float = 180.0
    edge_percentile: float = 75.0
    floor_percentile: float = 50.0
    min_caption_sim: float = 0.5
    pairs_per_cluster: int = 2


@dataclass
class VideoReport:
    """What the miner did with one video: the numbers it chose and what came out."""

    video: str
    clips: int
    windows: int
    threshold: float | None  # None: no window held two clips
    floor: float | None
    clusters: list[list[int]] = field(default_factory=list)  # clip indices (into the video's clips)
    pairs: int = 0


def scene_windows(clips: Sequence[Clip], window: int = 12, max_window_s: float = 180.0) -> list[list[int]]:
    """Indices of ``clips`` grouped into windows (see the module docstring).

    ``clips`` must be in time order within each video; a new window starts when the
    video changes, the window holds ``window`` clips, or the next clip would make it
    span more than ``max_window_s`` seconds.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    windows: list[list[int]] = []
    for k, clip in enumerate(clips):
        if windows:
            first = clips[windows[-1][0]]
            if (clip.video == first.video and len(windows[-1]) < window
                    and clip.end - first.start <= max_window_s):
                windows[-1].append(k)
                continue
        windows.append([k])
    return windows


def within_window_similarities(sim: np.ndarray, windows: Sequence[Sequence[int]]) -> np.ndarray:
    """Similarities of every unordered pair of distinct clips sharing a window."""
    values = [sim[i, j] for w in windows for a, i in enumerate(w) for j in w[a + 1 :]]
    return np.asarray(values, dtype=np.float64)


def percentile_threshold(values: np.ndarray, percentile: float) -> float | None:
    """The ``percentile``-th percentile (linear interpolation), or None with no values."""
    return float(np.percentile(values, percentile)) if len(values) else None


def sub_clusters(sim: np.ndarray, members: Sequence[int], threshold: float) -> list[list[int]]:
    """Connected components (of two clips or more) of the graph linking ``members``
    whose similarity is at least ``threshold``; each component in time order."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    idx = np.asarray(members)
    linked = sim[np.ix_(idx, idx)] >= threshold
    count, labels = connected_components(csr_matrix(linked), directed=False)
    groups = [sorted(idx[labels == c].tolist()) for c in range(count)]
    return sorted((g for g in groups if len(g) > 1), key=lambda g: g[0])


def score_pairs(cluster: Sequence[int], visual: np.ndarray, caption: np.ndarray, *, floor: float,
                min_caption_sim: float, keep: int) -> list[tuple[int, int, dict]]:
    """The ``keep`` best ordered pairs ``(source, target, scores)`` of a sub-cluster.

    ``visual`` and ``caption`` are cosine-similarity matrices; ``cluster`` lists clip
    indices in time order, so the earlier index is the source. Score =
    caption_sim × (1 − visual_sim); pairs below the visual ``floor`` or below
    ``min_caption_sim`` are dropped. Ties keep time order.
    """
    found = []
    for a, i in enumerate(cluster):
        for j in cluster[a + 1 :]:
            v, c = float(visual[i, j]), float(caption[i, j])
            if v < floor or c < min_caption_sim:
                continue
            found.append((i, j, {"caption_sim": c, "visual_sim": v, "score": c * (1.0 - v)}))
    found.sort(key=lambda p: -p[2]["score"])  # stable: equal scores stay in time order
    return found[:keep]


def _triplet(src: Clip, tgt: Clip, scores: dict) -> dict:
    def side(clip: Clip) -> dict:
        record = clip.as_record()
        if clip.caption is not None:
            record["caption"] = clip.caption
        return record

    record = {"source": side(src), "target": side(tgt), "subset": "icvg", "scores": scores}
    return {"id": content_id({"source": src.as_record(), "target": tgt.as_record()}), **record}


def mine_pairs(clips: Sequence[Clip], visual: np.ndarray, caption: np.ndarray,
               options: PairOptions | None = None) -> tuple[list[dict], list[VideoReport]]:
    """Triplet-shaped records (without instruction) for the pairs found in ``clips``.

    ``visual`` (n, d) and ``caption`` (n, d') are unit-length embeddings of the clips
    (rows in the order of ``clips``, which must be in time order within each video).
    Each record has ``id``, ``source``/``target`` (``{video, start, end, caption}``),
    ``subset: icvg`` and ``scores: {caption_sim, visual_sim, score, threshold, floor}``.
    Returns the records and one :class:`VideoReport` per video.
    """
    opts = options or PairOptions()
    visual = np.asarray(visual, dtype=np.float64)
    caption = np.asarray(caption, dtype=np.float64)
    if len(visual) != len(clips) or len(caption) != len(clips):
        raise ValueError(f"{len(clips)} clips but {len(visual)} visual and {len(caption)} caption embeddings")
    # Clipped: rounding can put the cosine of near-identical unit vectors just above 1.
    vis_sim, cap_sim = np.clip(visual @ visual.T, -1, 1), np.clip(caption @ caption.T, -1, 1)
    by_video: dict[str, list[list[int]]] = defaultdict(list)
    for w in scene_windows(clips, opts.window, opts.max_window_s):
        by_video[clips[w[0]].video].append(w)
    triplets: list[dict] = []
    reports: list[VideoReport] = []
    for video, windows in by_video.items():
        values = within_window_similarities(vis_sim, windows)
        threshold = percentile_threshold(values, opts.edge_percentile)
        floor = percentile_threshold(values, opts.floor_percentile)
        report = VideoReport(video, sum(len(w) for w in windows), len(windows), threshold, floor)
        reports.append(report)
        if threshold is None:
            continue
        for w in windows:
            for cluster in sub_clusters(vis_sim, w, threshold):
                report.clusters.append(cluster)
                for i, j, scores in score_pairs(cluster, vis_sim, cap_sim, floor=floor,
                                                min_caption_sim=opts.min_caption_sim,
                                                keep=opts.pairs_per_cluster):
                    scores.update(threshold=threshold, floor=floor)
                    triplets.append(_triplet(clips[i], clips[j], scores))
                    report.pairs += 1
    return triplets, reports


def holdout_split(triplets: Sequence[dict], fraction: float, seed: int = 0) -> list[dict]:
    """Copies of ``triplets`` with ``split`` set to ``train`` or ``test``, grouped by source video.

    Every triplet of a video goes where its video goes, so no source video is on both
    sides. The test side's size is the one closest to ``fraction`` of the triplets that
    whole videos can make (a subset sum over the videos' triplet counts; the larger on a
    tie), with at least one video on each side when ``0 < fraction < 1`` and there are
    two or more videos. Which videos make it up follows a shuffle seeded by ``seed``:
    among the subsets of that size, the one that takes the earliest videos of the
    shuffle. The fraction reached is ``test / len(triplets)`` of the result.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1], got {fraction}")
    counts: dict[str, int] = defaultdict(int)
    for t in triplets:
        counts[t["source"]["video"]] += 1
    videos = sorted(counts)
    random.Random(seed).shuffle(videos)
    test = set(_videos_closest_to(videos, counts, fraction * len(triplets), fraction))
    return [{**t, "split": "test" if t["source"]["video"] in test else "train"} for t in triplets]


def _videos_closest_to(videos: list[str], counts: dict[str, int], wanted: float, fraction: float) -> list[str]:
    """The videos whose counts sum closest to ``wanted`` (see :func:`holdout_split`)."""
    total = sum(counts.values())
    if fraction <= 0.0 or (fraction < 1.0 and len(videos) < 2):
        return []
    if fraction >= 1.0:
        return list(videos)
    # reachable[i]: bit s set when some of the first i videos hold s triplets together.
    reachable = [1]
    for video in videos:
        reachable.append(reachable[-1] | (reachable[-1] << counts[video]))
    sums = [s for s in range(1, total) if reachable[-1] >> s & 1]  # both sides keep a video
    best = min(sums, key=lambda s: (abs(s - wanted), -s))
    chosen = []
    for i in range(len(videos), 0, -1):  # leave out the later videos whenever the sum allows it
        if not reachable[i - 1] >> best & 1:
            chosen.append(videos[i - 1])
            best -= counts[videos[i - 1]]
    return chosen[::-1]
