"""``vidcli make-cot``: request records → four-step chain-of-thought training records (ReaDe stage 1).

On a cluster: N jobs run ``--shard I/N`` (generation and the per-record --exclude filter
of their 1/N of the requests), then one ``--merge`` over their outputs de-duplicates
and balances the whole set, with no model call; see :mod:`vidcli.cot.filters` for why
the result equals one unsharded run's.
"""
from __future__ import annotations

import click

from vidcli.commands.common import (
    backend_options,
    input_output_options,
    output_provenance,
    reports_errors,
    result_settings,
)
from vidcli.shard import merge_option, shard_option

EXAMPLES = """\b
Examples:
  vidcli make-cot --llm openai:gpt-4o --vlm openai:gpt-4o requests.jsonl -o cot.jsonl
  vidcli make-cot --llm openai:gpt-4o --vlm hf:Qwen/Qwen2.5-VL-7B-Instruct \\
      --exclude eval.jsonl --balance-by condition_type --seed 1 requests.jsonl -o cot.jsonl
  # killed half-way? continue (finished records and cached replies are not asked again):
  vidcli make-cot --llm openai:gpt-4o --vlm openai:gpt-4o --resume requests.jsonl -o cot.jsonl
  # re-filter without any model call: every id is already in cot.jsonl.generated.jsonl
  vidcli make-cot --llm openai:gpt-4o --resume --dedup-threshold 0.9 requests.jsonl -o cot.jsonl
  # each job of `sbatch --array=0-7` (I=$SLURM_ARRAY_TASK_ID), then one merge (dedup, --balance-by):
  vidcli make-cot --llm openai:gpt-4o --shard $I/8 requests.jsonl -o part$I.cot.jsonl
  vidcli make-cot --merge --balance-by condition_type part*.cot.jsonl -o cot.jsonl
"""


FILTER_OPTIONS = ("dedup_threshold", "dedup_embedder", "exclude_files", "balance_by", "seed")


def generated_path_for(output: str, shard=None) -> str:
    """Where the generation stage writes: ``OUT.generated.jsonl`` (a file in the
    current folder when OUT is stdout, one per shard)."""
    from vidcli.stream import shard_suffix

    return f"vidcli-make-cot{shard_suffix(shard)}.generated.jsonl" if output == "-" else output + ".generated.jsonl"


@click.command("make-cot", epilog=EXAMPLES)
@click.option("--llm", "llm_spec", default=None, metavar="SPEC",
              help="Teacher text model for gold splitting and steps 1, 3, 4: openai:MODEL or hf:PATH "
                   "(required, except with --merge).")
@click.option("--vlm", "vlm_spec", default=None, metavar="SPEC",
              help="Teacher vision model for step 2 (images, depth/pose/source videos): openai:MODEL or hf:PATH.")
@click.option("--frames", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Frames sampled (by timestamp, evenly over the clip) from each video for the VLM.")
@click.option("--camera-from-video", is_flag=True,
              help="Also let the VLM caption the original video of a camera condition (the condition's "
                   "'video', else the record's video condition) and keep its camera clauses.")
@click.option("--generated", type=click.Path(dir_okay=False), default=None,
              help="Generation-stage file, before filtering [default: OUT.generated.jsonl].")
@click.option("--dedup-threshold", type=click.FloatRange(0.0, 1.0), default=0.95, show_default=True,
              help="Instructions at or above this cosine similarity count as duplicates (and as "
                   "--exclude overlaps).")
@click.option("--dedup-embedder", type=click.Choice(["embed", "none"]), default="embed", show_default=True,
              help="embed: offline MiniLM embeddings; none: only identical normalised text counts.")
@click.option("--exclude", "exclude_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Evaluation-set JSONL ('instruction' field); overlapping instructions are dropped. Repeatable.")
@click.option("--balance-by", default=None, metavar="FIELD",
              help="Down-sample the groups of FIELD (dots reach into objects) to the smallest one's size. "
                   "condition_type: a record's full set of condition types ('depth', 'camera+identity'); "
                   "records without conditions are not balanced (see --text-only).")
@click.option("--balance-groups", default=None, metavar="G1,G2,...",
              help="The groups --balance-by balances; records of other groups pass untouched "
                   "[default: every group, but text-only ones for condition_type].")
@click.option("--text-only", type=click.Choice(["keep", "drop"]), default="keep", show_default=True,
              help="With --balance-by condition_type: keep records without conditions as they are, or drop them.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --balance-by sampling.")
@click.option("--attempts", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Tries per request when a model reply is not the JSON asked for.")
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--max-tokens", type=click.IntRange(16, 32768), default=1024, show_default=True)
@shard_option
@merge_option("INPUTS are the outputs of --shard runs: run only the filters (--exclude, dedup, "
              "--balance-by) over all of them into OUT. No model is called.")
@backend_options
@input_output_options
@reports_errors
def command(llm_spec, vlm_spec, frames, camera_from_video, generated, dedup_threshold, dedup_embedder,
            exclude_files, balance_by, balance_groups, text_only, seed, attempts, temperature, max_tokens, shard,
            merge, base_url,
            concurrency, batch_size, no_cache, device, inputs, output, resume, on_error, rejects, media_root,
            allow_escape, quiet, verbose):
    """Build chain-of-thought training records for the instruction interpreter.

    \b
    Needs 'instruction', 'gold' (six-part object, or plain text that the --llm splits;
    the text is kept in 'gold_text') and optional 'conditions' [{type, path, caption?}].
    Adds 'cot': {steps: {intent, nontext, alignment, supplement}, target, descriptions};
    target = <think> the four labelled steps </think><answer> six-part gold </answer>.

    \b
    Step 2 per condition: identity/image, depth, pose, video: --vlm describes it;
    camera: described from the trajectory file itself (no model); audio: the
    condition's 'caption' (the VLM backends read no audio).

    Records are generated into OUT.generated.jsonl (resumable), then filtered into
    OUT: --exclude overlaps, near-duplicate instructions, --balance-by. Filtered-out
    records are not errors; records whose steps fail or whose target breaks the
    answer format are (see --on-error).

    \b
    --shard I/N: generate 1/N of the requests (by id) and apply --exclude only;
    near-duplicates may sit in different shards, so de-duplication and --balance-by
    wait for one --merge run over all shard outputs, which writes the same records
    as one unsharded run.
    """
    import logging

    from vidcli.backends import load_chat_model, load_embedder
    from vidcli.backends.base import Sampling
    from vidcli.cot import CotOptions, make_cot_batch
    from vidcli.cot.filters import FilterOptions, filter_file, read_instructions, write_filtered
    from vidcli.log import setup_logging
    from vidcli.shard import check_merge, read_shard_outputs
    from vidcli.stream import rejects_path_for, run_records

    setup_logging(verbose, quiet)
    log = logging.getLogger("vidcli")
    check_merge(merge, shard, resume)
    if not merge and not llm_spec:
        raise click.UsageError("Missing option '--llm' (only --merge runs without a model).")
    if shard is not None and balance_by:
        raise click.UsageError("--balance-by needs the whole set: give it to the --merge run, not to --shard runs")
    if (balance_groups or text_only != "keep") and not balance_by:
        raise click.UsageError("--balance-groups and --text-only go with --balance-by")
    if text_only != "keep" and balance_by != "condition_type":
        raise click.UsageError("--text-only applies to --balance-by condition_type")
    groups = [g.strip() for g in balance_groups.split(",") if g.strip()] if balance_groups else None
    # Read the evaluation sets first: a bad one should stop the run before any model call.
    excluded = [text for path in exclude_files for text in read_instructions(path)]
    filters = FilterOptions(dedup_threshold=dedup_threshold, exclude=excluded, balance_by=balance_by,
                            balance_groups=groups, text_only=text_only, seed=seed, dedup=shard is None)
    if merge:
        records = read_shard_outputs(inputs or ("-",))
        embedder = load_embedder(dedup_embedder, device=device) if dedup_embedder != "none" else None
        write_filtered(records, output, filters, embedder, output_provenance(output, inputs or ("-",)))
        return
    generated = generated or generated_path_for(output, shard)
    common = dict(base_url=base_url, concurrency=concurrency, use_cache=not no_cache,
                  batch_size=batch_size, device=device)
    llm = load_chat_model(llm_spec, **common)
    vlm = load_chat_model(vlm_spec, **common) if vlm_spec else None
    opts = CotOptions(frames=frames, camera_from_video=camera_from_video, attempts=attempts,
                      llm_sampling=Sampling(temperature=temperature, max_tokens=max_tokens),
                      vlm_sampling=Sampling(temperature=temperature, max_tokens=max_tokens),
                      media_root=media_root, allow_escape=allow_escape)
    try:
        stats = run_records(inputs or ("-",), generated, lambda batch: make_cot_batch(batch, llm, vlm, opts),
                            command="make-cot", batch_size=max(16, 4 * concurrency), resume=resume,
                            on_error=on_error, rejects=rejects or rejects_path_for(output, "make-cot", shard),
                            progress=not quiet, shard=shard, media_root=media_root,
                            # The filters' options do not change the generated records: re-filtering
                            # with new ones resumes the same file.
                            settings=result_settings(exclude=FILTER_OPTIONS))
    finally:
        llm.close()
        if vlm is not None:
            vlm.close()
    log.info("make-cot: %d generated this run, %d already in %s, %d rejected",
             stats.written, stats.skipped_done, generated, stats.rejected)
    if shard is not None:
        log.info("make-cot: shard %s: de-duplication and --balance-by are left to the --merge run", shard)
    needs_embedder = dedup_embedder != "none" and (filters.dedup or excluded)
    embedder = load_embedder(dedup_embedder, device=device) if needs_embedder else None
    filter_file(generated, output, filters, embedder, output_provenance(output, inputs or ("-",)))
