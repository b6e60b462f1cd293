"""Metrics of ``vidcli score`` and their registry.

A metric is an entry of :data:`METRICS`: a name, the ``scores`` keys it writes, and a
function that scores a batch of records at once (so model-backed metrics send one
batch to their backend). A new metric (``vqa``, ``rve``) is one more entry; whatever it
needs that is expensive to build (a VLM, a judge) goes into :class:`ScoreSetup`, built
once per run by the command.

The interpreter metrics read the model's full text from ``output.raw`` (what
``vidcli interpret`` writes), or else from ``completion``; coverage and reward also
read ``key_info`` (from ``decompose --schema reade``):

- ``format``: R_format (1.0 / 0.2 / 0.0);
- ``coverage``: ``user``, ``detail``, ``supp`` (fractions of U, S, Z), ``contra``
  (1.0 / 0.0; ``null`` with ``contra_available: false`` under the embed judge). A
  fraction of an empty element set (S of a text-only request) is ``null``, not 1.0,
  with the reason in ``not_applicable`` ``{part: reason}``; the summary counts it
  under n/a and leaves it out of the mean and interval;
- ``reward``: the full ReaDe reward; ``null`` when any judged part failed, because an
  evaluation reports failures rather than the training fallback.

A judge failure leaves that key ``null`` and adds ``{stage: "score", metric: KEY,
message}`` to the record's ``errors``; the record is still written. A record the
metric cannot read at all (no text, no key-info) is an input error for the stream's
``--on-error`` handling.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from vidcli.errors import InputError

if TYPE_CHECKING:
    from vidcli.rewards.reade import ReadeReward
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.scoring.rve import RveJudge
    from vidcli.scoring.vqa import VideoInputs

STAGE = "score"


@dataclass
class ScoreSetup:
    """What the metrics of one run need, built once by the command."""

    reward: ReadeReward | None = None  # for coverage and reward
    vlm: VLMScorer | None = None  # for vqa
    rve_judge: RveJudge | None = None  # for rve
    videos: VideoInputs | None = None  # where vqa and rve find videos (set per batch: record folders)


@dataclass
class MetricOutput:
    """One record's values from one metric, and the keys that failed (key → reason)."""

    values: dict[str, float | bool | dict | None]  # a dict: a note such as not_applicable
    failures: dict[str, str] = field(default_factory=dict)


Compute = Callable[[list[dict], ScoreSetup, dict], list["MetricOutput | InputError"]]


@dataclass(frozen=True)
class Metric:
    """A registry entry. ``keys`` are the numeric scores (summarised); ``notes`` are
    other values it writes beside them (such as ``contra_available``)."""

    name: str
    keys: tuple[str, ...]
    description: str
    compute: Compute  # (records, setup, per-batch memo shared by metrics) -> one output per record
    notes: tuple[str, ...] = ()
    needs_judge: bool = False


def completion_text(record: dict) -> str:
    """The interpreter's full text: ``output.raw``, else ``completion``."""
    output = record.get("output")
    if isinstance(output, dict) and output.get("raw") is not None:
        if not isinstance(output["raw"], str):
            raise InputError(f"field 'output.raw' must be a string, got {type(output['raw']).__name__}")
        return output["raw"]
    if record.get("completion") is not None:
        if not isinstance(record["completion"], str):
            raise InputError(f"field 'completion' must be a string, got {type(record['completion']).__name__}")
        return record["completion"]
    raise InputError("missing field 'output.raw' or 'completion' (the interpreter's full text)")


def record_key_info(record: dict) -> dict:
    """The record's checked ``key_info``."""
    from vidcli.decompose.reade import parse_key_info

    if record.get("key_info") is None:
        raise InputError("missing field 'key_info' (add it with: vidcli decompose --schema reade)")
    try:
        return parse_key_info(record["key_info"])
    except ValueError as exc:
        raise InputError(f"field 'key_info': {exc}") from None


def _format(records: list[dict], setup: ScoreSetup, memo: dict) -> list[MetricOutput | InputError]:
    from vidcli.rewards.format import format_reward

    outputs: list[MetricOutput | InputError] = []
    for record in records:
        try:
            outputs.append(MetricOutput({"format": format_reward(completion_text(record))}))
        except InputError as exc:
            outputs.append(exc)
    return outputs


def _reade_results(records: list[dict], setup: ScoreSetup, memo: dict) -> list:
    """ReaDe reward results (or InputErrors) for the batch, computed once for coverage and reward."""
    if "reade" not in memo:
        results: list = []
        texts, infos, where = [], [], []
        for i, record in enumerate(records):
            try:
                text, info = completion_text(record), record_key_info(record)
            except InputError as exc:
                results.append(exc)
                continue
            texts.append(text)
            infos.append(info)
            where.append(i)
            results.append(None)
        for i, result in zip(where, setup.reward.score_many(texts, infos) if where else []):
            results[i] = result
        memo["reade"] = results
    return memo["reade"]


def _coverage(records: list[dict], setup: ScoreSetup, memo: dict) -> list[MetricOutput | InputError]:
    outputs: list[MetricOutput | InputError] = []
    for result in _reade_results(records, setup, memo):
        if isinstance(result, InputError):
            outputs.append(result)
            continue
        values = {part: None if part in result.not_applicable else result.parts[part]
                  for part in ("user", "detail", "supp", "contra")}
        notes = {"contra_available": result.contra_available}
        if result.not_applicable:
            notes["not_applicable"] = dict(result.not_applicable)
        outputs.append(MetricOutput({**values, **notes}, dict(result.errors)))
    return outputs


def _reward(records: list[dict], setup: ScoreSetup, memo: dict) -> list[MetricOutput | InputError]:
    outputs: list[MetricOutput | InputError] = []
    for result in _reade_results(records, setup, memo):
        if isinstance(result, InputError):
            outputs.append(result)
        elif result.ok:
            outputs.append(MetricOutput({"reward": result.total, "contra_available": result.contra_available}))
        else:
            failed = ", ".join(result.errors)
            outputs.append(MetricOutput({"reward": None, "contra_available": result.contra_available},
                                        {"reward": f"not computed: the judge failed on {failed}"}))
    return outputs


def _vqa(records: list[dict], setup: ScoreSetup, memo: dict) -> list[MetricOutput | InputError]:
    from vidcli.scoring.vqa import score_vqa

    return score_vqa(records, setup)


def _rve(records: list[dict], setup: ScoreSetup, memo: dict) -> list[MetricOutput | InputError]:
    from vidcli.scoring.rve import score_rve

    return score_rve(records, setup)


METRICS: dict[str, Metric] = {
    "format": Metric("format", ("format",), "R_format of the <think>/<answer> text (1.0, 0.2, 0.0)", _format),
    "coverage": Metric("coverage", ("user", "detail", "supp", "contra"),
                       "coverage of key-info U/S/Z and self-contradiction, by --judge", _coverage,
                       notes=("contra_available", "not_applicable"), needs_judge=True),
    "reward": Metric("reward", ("reward",), "the full ReaDe reward R_format + R_content", _reward,
                     notes=("contra_available",), needs_judge=True),
    # vqa and rve build their own models (--vlm; --judge as a VLM judge), not the coverage judge.
    "vqa": Metric("vqa", ("vqa_TA", "vqa_Phy", "vqa_VQ", "vqa"),
                  "p(desired verdict) of the DRF TA/Phy/VQ questions about a generated video, by --vlm", _vqa),
    "rve": Metric("rve", ("rve_EA", "rve_PC", "rve_GN", "rve_GR", "rve"),
                  "0-10 judge scores of an edited video (EA, PC, GN, GR, overall), by --judge", _rve),
}


def score_batch(records: list[dict], metrics: list[str], setup: ScoreSetup) -> list[dict | InputError]:
    """Each record with ``scores`` (and score ``errors``) added, or the InputError that stops it.

    Keys a metric rewrites replace earlier values and earlier score errors for them (a
    note it writes only sometimes, such as ``not_applicable``, is removed when it does
    not write it); all other scores and errors are kept.
    """
    memo: dict = {}
    per_metric = [METRICS[name].compute(records, setup, memo) for name in metrics]
    rewritten = {key for name in metrics for key in METRICS[name].keys + METRICS[name].notes}
    out: list[dict | InputError] = []
    for i, record in enumerate(records):
        outputs = [results[i] for results in per_metric]
        problem = next((o for o in outputs if isinstance(o, InputError)), None)
        if problem is not None:
            out.append(problem)
            continue
        scores = {k: v for k, v in (record.get("scores") or {}).items() if k not in rewritten}
        errors = [e for e in record.get("errors") or []
                  if not (isinstance(e, dict) and e.get("stage") == STAGE and e.get("metric") in rewritten)]
        for output in outputs:
            scores.update(output.values)
            errors += [{"stage": STAGE, "metric": key, "message": message} for key, message in output.failures.items()]
        updated = {**record, "scores": scores}
        if errors or "errors" in record:
            updated["errors"] = errors
        out.append(updated)
    return out
