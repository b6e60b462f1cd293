"""``vidcli score``: add ``scores`` to records and summarise them.

Scores are per record, so ``--shard I/N`` runs write exactly the unsharded run's records
between them; each prints the summary of its own share. ``--merge`` summarises records
that are scored already (the shard outputs, concatenated into OUT) without scoring
anything again.
"""
from __future__ import annotations

import logging

import click

from vidcli.commands.common import LocalModel, backend_options, input_output_options, reports_errors, result_settings
from vidcli.rewards.coverage import CHOOSE_A_JUDGE
from vidcli.scoring import METRICS
from vidcli.shard import merge_option, shard_option

log = logging.getLogger("vidcli")

EXAMPLES = """\b
Examples:
  vidcli score --metric format,coverage,reward --judge openai:Qwen3-30B-A3B-Instruct \\
      --base-url http://localhost:8000/v1 interpreted.jsonl -o scored.jsonl
  vidcli score --metric reward --judge openai:gpt-4o-mini --judge-mode number --by conditions.type \\
      --summary summary.json --plot by-condition.png interpreted.jsonl -o scored.jsonl
  vidcli interpret --model ckpt/grpo --input test.jsonl | vidcli score --metric format,coverage - > scored.jsonl
  vidcli score --metric vqa --vlm hf:Qwen/Qwen2.5-VL-7B-Instruct --frames 10 generated.jsonl -o scored.jsonl
  vidcli score --metric rve --judge openai:gpt-4o --overall viescore --by reasoning_type \\
      --summary rve.json edited.jsonl -o scored.jsonl
  # each job of `sbatch --array=0-7` (I=$SLURM_ARRAY_TASK_ID), then one summary (scoring nothing again):
  vidcli score --metric reward --judge openai:gpt-4o-mini --shard $I/8 interpreted.jsonl -o part$I.scored.jsonl
  vidcli score --merge --summary summary.json part*.scored.jsonl -o scored.jsonl
"""


def parse_metrics(values: tuple[str, ...]) -> list[str]:
    """``--metric`` values (comma lists, repeatable) as registry names, order kept, duplicates dropped."""
    names = list(dict.fromkeys(n.strip() for value in values for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise click.BadParameter(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                                 f"choose from {', '.join(METRICS)}", param_hint="--metric")
    return names


def _check_judge_flags(ctx: click.Context, metrics: list[str], judge: str | None, threshold: float | None) -> None:
    from click.core import ParameterSource

    if judge is None and any(METRICS[name].needs_judge for name in metrics):
        raise click.UsageError(CHOOSE_A_JUDGE)
    if judge == "embed":
        for name, flag in (("judge_mode", "--judge-mode"), ("judge_temperature", "--judge-temperature"),
                           ("judge_max_tokens", "--judge-max-tokens")):
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                raise click.UsageError(f"{flag} applies to LLM judges (openai:MODEL, hf:PATH), not to embed")
    elif threshold is not None:
        raise click.UsageError("--threshold applies to the embed judge only")


def _check_video_flags(metrics: list[str], vlm: str | None, judge: str | None) -> None:
    if "vqa" in metrics and not vlm:
        raise click.UsageError("--metric vqa needs --vlm hf:PATH (a local vision-language model)")
    if "rve" in metrics and judge in (None, "embed"):
        raise click.UsageError("--metric rve needs a VLM judge: --judge openai:MODEL or hf:PATH")


@click.command("score", epilog=EXAMPLES)
@click.option("--metric", "metric_values", multiple=True, metavar="NAME[,NAME...]",
              help="Metrics to compute (comma list or repeated; required, except with --merge, where they "
                   "only pick what is summarised [default there: every score in the records]). "
                   + "; ".join(f"{m.name}: {m.description}" for m in METRICS.values()) + ".")
@click.option("--judge", default=None, metavar="SPEC",
              help="coverage, reward (required there): openai:MODEL, hf:PATH, or embed (offline matcher for "
                   "smoke runs: no contradiction check, and close wording passes even when it contradicts). "
                   "rve: the VLM judge (openai:MODEL gets frames as images, or hf:PATH).")
@click.option("--judge-mode", type=click.Choice(["elements", "number"]), default="elements", show_default=True,
              help="LLM judges: elements = one yes/no per element; number = one coverage number per element set "
                   "(the paper's way).")
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), default=None,
              help="embed: cosine at which an element counts as supported [default: 0.5].")
@click.option("--judge-temperature", type=click.FloatRange(0.0, 2.0), default=None,
              help="LLM judges [default: 0.0 for elements, 0.3 for number].")
@click.option("--judge-max-tokens", type=click.IntRange(1, 8192), default=None,
              help="LLM judges: reply length limit [default: 16 for elements, 50 for number].")
@click.option("--attempts", type=click.IntRange(1, 10), default=2, show_default=True,
              help="Tries per judge question whose reply cannot be read.")
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Weight of R_user.")
@click.option("--rho", type=float, default=1.0, show_default=True, help="Weight of R_detail (over S).")
@click.option("--gamma", type=float, default=0.8, show_default=True, help="Weight of R_supp (over Z).")
@click.option("--lambda", "lam", type=float, default=0.7, show_default=True, help="Weight of the R_contra penalty.")
@click.option("--vlm", default=None, type=LocalModel(spec=True), metavar="[hf:]PATH",
              help="vqa: the local vision-language model whose verdict probabilities are read.")
@click.option("--frames", type=click.IntRange(1, 64), default=10, show_default=True,
              help="vqa, rve: frames taken from each video, spread uniformly.")
@click.option("--video-field", default="output.video", show_default=True, metavar="FIELD",
              help="vqa, rve: field (dotted path) holding the generated / edited video.")
@click.option("--reference-field", default="video", show_default=True, metavar="FIELD",
              help="vqa: field holding the real reference video for Phy and VQ questions.")
@click.option("--overall", type=click.Choice(["geometric", "viescore"]), default="geometric", show_default=True,
              help="rve: per-record overall = geometric mean of the sub-scores, or sqrt(min(EA,PC)*min(GN,GR)).")
@click.option("--by", "by_field", default=None, metavar="FIELD",
              help="Also summarise per value of this field (dotted path, e.g. conditions.type).")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False), default=None,
              help="Write the summary as JSON to this file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of per-group means with 95% intervals.")
@shard_option
@merge_option("INPUTS are scored records (the outputs of --shard runs): write them to OUT and summarise "
              "them all, scoring nothing.")
@backend_options
@input_output_options
@reports_errors
def command(metric_values, judge, judge_mode, threshold, judge_temperature, judge_max_tokens, attempts,
            alpha, rho, gamma, lam, vlm, frames, video_field, reference_field, overall, by_field, summary_path,
            plot_path, shard, merge, base_url, concurrency, batch_size,
            no_cache, device, inputs, output, resume, on_error, rejects, media_root, allow_escape, quiet, verbose):
    """Score interpreter outputs or videos and summarise: per metric n, mean, 95% CI, failures.

    \b
    Reads the model's full text from 'output.raw' (vidcli interpret), else from
    'completion'; coverage and reward also need 'key_info' (decompose --schema reade).
    Adds 'scores' {format, user, detail, supp, contra, contra_available, reward}. A
    judge failure leaves its score null, is listed in the record's 'errors' and counted
    under failures; the run goes on. The summary goes to stderr (not with --quiet).

    \b
    vqa: 'questions' (decompose --schema drf), the generated video in --video-field and
    the real one in --reference-field; scores p(Yes) for TA and p(No) for Phy and VQ
    (the desired verdicts) per question (vqa.DIM.KEY), per dimension and overall.
    rve: triplets ('source' {video, start, end}, 'instruction', 'subset') with the
    edited video in --video-field; the --judge rates EA, PC (not for icvg), GN, GR 0-10.
    """
    from vidcli.jsonl import STDIO
    from vidcli.log import setup_logging
    from vidcli.scoring.setup import (build_setup, build_video_setup, close_setup, merge_scored, scoring_stage,
                                      summary_keys, summary_records)
    from vidcli.scoring.summary import summarize
    from vidcli.shard import check_merge
    from vidcli.stream import run_records

    setup_logging(verbose, quiet)
    check_merge(merge, shard, resume)
    if merge:
        keys = summary_keys(parse_metrics(metric_values)) if metric_values else None
        _report(summarize(merge_scored(inputs, output), keys=keys, by=by_field), quiet, summary_path, plot_path)
        return
    if not metric_values:
        raise click.UsageError("Missing option '--metric' (only --merge runs without it).")
    metrics = parse_metrics(metric_values)
    _check_judge_flags(click.get_current_context(), metrics, judge, threshold)
    _check_video_flags(metrics, vlm, judge)
    backend = dict(base_url=base_url, concurrency=concurrency, use_cache=not no_cache, batch_size=batch_size,
                   device=device)
    setup = build_setup(metrics, judge, judge_mode, threshold, judge_temperature, judge_max_tokens, attempts,
                         (alpha, rho, gamma, lam), backend)
    setup = build_video_setup(metrics, setup, vlm=vlm, judge=judge, frames=frames,
                               video_field=video_field, reference_field=reference_field, overall=overall,
                               temperature=judge_temperature, max_tokens=judge_max_tokens, attempts=attempts,
                               media_root=media_root, allow_escape=allow_escape, backend=backend)
    collected: list[dict] = []
    try:
        run_records(inputs or ("-",), output, scoring_stage(setup, metrics, collected if output == STDIO else None),
                    command="score", batch_size=max(16, 4 * concurrency), resume=resume, on_error=on_error,
                    rejects=rejects, progress=not quiet, shard=shard, media_root=media_root,
                    settings=result_settings(exclude=("summary_path", "plot_path", "by_field")))
    finally:
        close_setup(setup)

    if shard is not None:
        log.info("score: the summary covers shard %s only; `vidcli score --merge` summarises all shards", shard)
    summary = summarize(summary_records(output, collected), keys=summary_keys(metrics), by=by_field)
    _report(summary, quiet, summary_path, plot_path)


def _report(summary: dict, quiet: bool, summary_path: str | None, plot_path: str | None) -> None:
    from vidcli.scoring.summary import format_summary, plot_summary, write_summary

    if not quiet:
        click.echo(format_summary(summary), err=True)
    if summary_path:
        write_summary(summary, summary_path)
    if plot_path:
        plot_summary(summary, plot_path)
