"""What ``vidcli score`` scores with and how its records flow: the judges and VLMs a run loads
(:func:`build_setup`), the stream stage that scores a batch (:func:`scoring_stage`), and
``--merge``, which summarises records scored already (:func:`merge_scored`)."""
from __future__ import annotations

import logging
from dataclasses import replace

from vidcli.errors import InputError
from vidcli.scoring import METRICS, ScoreSetup, score_batch

log = logging.getLogger("vidcli")
RVE_MAX_TOKENS = 256  # four integers and a short reason


def build_setup(metrics, judge, judge_mode, threshold, temperature, max_tokens, attempts, weights,
                backend) -> ScoreSetup:
    """The ReaDe reward with its coverage judge, when a metric needs one (vqa, rve: :func:`build_video_setup`)."""
    from vidcli.backends.base import Sampling
    from vidcli.rewards.coverage import ELEMENT_SAMPLING, NUMBER_SAMPLING, load_judge
    from vidcli.rewards.reade import ReadeReward, RewardWeights

    if not any(METRICS[name].needs_judge for name in metrics):
        return ScoreSetup()
    base = NUMBER_SAMPLING if judge_mode == "number" else ELEMENT_SAMPLING
    sampling = Sampling(temperature=base.temperature if temperature is None else temperature,
                        max_tokens=max_tokens or base.max_tokens)
    coverage_judge = load_judge(judge, mode=judge_mode, threshold=threshold, sampling=sampling,
                                attempts=attempts, **backend)
    if not coverage_judge.detects_contradiction:
        log.warning("judge %s cannot detect contradictions: 'contra' is null and rewards are computed "
                    "without the contradiction term (contra_available: false)", judge)
    return ScoreSetup(reward=ReadeReward(coverage_judge, RewardWeights(*weights)))


def build_video_setup(metrics, setup: ScoreSetup, *, vlm, judge, frames, video_field, reference_field, overall,
                      temperature, max_tokens, attempts, media_root, allow_escape, backend) -> ScoreSetup:
    """The VLM (vqa), the VLM judge (rve) and where their videos are, added to ``setup``."""
    from pathlib import Path

    from vidcli.backends import load_chat_model
    from vidcli.backends.base import Sampling
    from vidcli.scoring.rve import RveJudge
    from vidcli.scoring.vqa import VideoInputs, load_vlm

    if "vqa" not in metrics and "rve" not in metrics:
        return setup
    setup.videos = VideoInputs(video_field=video_field, reference_field=reference_field, frames=frames,
                               media_root=Path(media_root) if media_root else None, allow_escape=allow_escape)
    if "vqa" in metrics:
        setup.vlm = load_vlm(vlm, device=backend["device"])
    if "rve" in metrics:
        sampling = Sampling(temperature=0.0 if temperature is None else temperature,
                            max_tokens=max_tokens or RVE_MAX_TOKENS)
        model = load_chat_model(judge, base_url=backend["base_url"], concurrency=backend["concurrency"],
                                use_cache=backend["use_cache"], batch_size=backend["batch_size"],
                                device=backend["device"])
        setup.rve_judge = RveJudge(model, sampling, attempts=attempts, overall=overall)
    return setup


def summary_records(output: str, collected: list[dict]) -> list[dict]:
    """Everything in the output: read back from a file (so --resume covers earlier runs too)."""
    from vidcli.jsonl import STDIO, read_sources

    if output == STDIO:
        return collected
    return [src.record for src in read_sources([output]) if src.record is not None]


def summary_keys(metrics: list[str]) -> list[str]:
    """The score keys the summary covers for these metrics."""
    return list(dict.fromkeys(key for name in metrics for key in METRICS[name].keys))


def merge_scored(inputs: tuple[str, ...], output: str) -> list[dict]:
    """``--merge``: the scored records of every input, written unchanged to ``output``."""
    from vidcli.jsonl import RecordWriter
    from vidcli.shard import read_shard_outputs

    records = read_shard_outputs(inputs or ("-",))
    with RecordWriter(output) as writer:
        for record in records:
            writer.write(record)
    return records


def scoring_stage(setup: ScoreSetup, metrics: list[str], collect: list[dict] | None = None):
    """The stream stage of ``score``: a batch of sources → outcomes. A score that failed is logged
    (the record keeps it in 'errors'); scored records are also appended to ``collect`` when given
    (stdout: the summary cannot read them back)."""
    from vidcli.stream import Outcome

    written_keys = {key for name in metrics for key in METRICS[name].keys + METRICS[name].notes}

    def process(batch):
        outcomes = []
        batch_setup = setup
        if setup.videos is not None:  # relative video paths resolve against each record's file
            batch_setup = replace(setup, videos=setup.videos.for_batch([src.base_dir for src in batch]))
        for result in score_batch([src.record for src in batch], metrics, batch_setup):
            if isinstance(result, InputError):
                outcomes.append(Outcome.fail("input", result.message))
                continue
            for failure in result.get("errors", []):
                if failure.get("stage") == "score" and failure.get("metric") in written_keys:
                    log.warning("id=%s: %s: %s", result["id"], failure["metric"], failure["message"])
            if collect is not None:
                collect.append(result)
            outcomes.append(Outcome.ok(result))
        return outcomes

    return process


def close_setup(setup: ScoreSetup) -> None:
    """Close the judges' backends (their servers, caches)."""
    if setup.reward is not None:
        setup.reward.judge.close()
    if setup.rve_judge is not None:
        setup.rve_judge.close()
