"""``vidcli mine-triplets``: reasoning-informed editing triplets (ReViSE data, icvg and rave).

On a cluster: N jobs run ``--shard I/N`` (each mines 1/N of the input records by id and
writes its triplets, all split=train), then one ``--merge --holdout F`` over their outputs
draws the hold-out split over the whole set, exactly as one unsharded run draws it
(:func:`~vidcli.mining.triplets.write_triplets`).
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
  vidcli mine-triplets --mode icvg --vlm openai:gpt-4o --llm openai:gpt-4o \\
      --embedder hf:google/siglip-base-patch16-224 films.jsonl -o icvg.jsonl --report icvg.report.json
  vidcli mine-triplets --mode icvg --vlm hf:Qwen/Qwen2.5-VL-7B-Instruct --llm openai:gpt-4o \\
      --embedder hf:/models/siglip --video a.mp4 --video b.mp4 --holdout 0.05 --export-clips clips/ -o icvg.jsonl
  vidcli mine-triplets --mode rave --llm openai:gpt-4o --examples examples/rave_examples.jsonl \\
      edits.jsonl -o rave.jsonl
  # killed half-way? continue: finished videos are skipped, cached replies not asked again
  vidcli mine-triplets --mode icvg ... --resume films.jsonl -o icvg.jsonl
  # each job of `sbatch --array=0-7` (I=$SLURM_ARRAY_TASK_ID), then one merge that draws the split:
  vidcli mine-triplets --mode icvg ... --shard $I/8 films.jsonl -o part$I.icvg.jsonl
  vidcli mine-triplets --merge --holdout 0.05 part*.icvg.jsonl -o icvg.jsonl
"""


def _video_inputs(videos: tuple[str, ...], folder: str) -> str:
    """A JSONL file of ``{id, video}`` records for ``--video`` paths (absolute, so ids are stable)."""
    import json
    import os

    from vidcli.records import content_id

    path = os.path.join(folder, "videos.jsonl")
    with open(path, "w", encoding="utf-8") as handle:
        for video in videos:
            record = {"video": os.path.abspath(video)}
            handle.write(json.dumps({"id": content_id(record), **record}) + "\n")
    return path


# Options of the whole-set step only: changing them re-splits the same generated records.
FINISH_OPTIONS = ("holdout", "seed", "export_clips")

@click.command("mine-triplets", epilog=EXAMPLES)
@click.option("--mode", type=click.Choice(["icvg", "rave"]), default=None,
              help="icvg: mine clip pairs from long videos; rave: rewrite literal edit instructions "
                   "(required, except with --merge).")
@click.option("--llm", "llm_spec", default=None, metavar="SPEC",
              help="Text model that writes the instructions: openai:MODEL or hf:PATH (required, except with --merge).")
@click.option("--vlm", "vlm_spec", default=None, metavar="SPEC",
              help="icvg: the clip captioner (openai:MODEL or hf:PATH).")
@click.option("--embedder", "embedder_spec", default=None, metavar="hf:PATH",
              help="icvg: SigLIP-style image-text model for clip embeddings.")
@click.option("--video", "videos", multiple=True, type=click.Path(dir_okay=False),
              help="icvg: a video to mine (repeatable), instead of or besides INPUT records {id, video}.")
@click.option("--types", default=None, metavar="T1,T2",
              help="Allowed reasoning types [icvg: camera,causal,emotional,commonsense; "
                   "rave: temporal,spatial,physical,semantic]; the LLM picks one per triplet.")
@click.option("--examples", "examples_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="rave: few-shot JSONL of {reasoning_type, literal, implicit} (required for rave).")
@click.option("--holdout", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Fraction of triplets marked split=test, whole source videos at a time: the test split is "
                   "the size closest to it that whole videos make (the fraction reached is logged).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --holdout video shuffle.")
@click.option("--export-clips", type=click.Path(file_okay=False), default=None,
              help="Cut every source and target clip to DIR/<id>.<side>.mp4 and add its path as 'clip'.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="icvg: write a JSON report (per video: clips, windows, threshold, floor, sub-clusters, pairs).")
@click.option("--generated", type=click.Path(dir_okay=False), default=None,
              help="Generation-stage file (icvg: one record per video) [default: OUT.generated.jsonl].")
@click.option("--detector", type=click.Choice(["histogram+adaptive", "adaptive", "content", "histogram", "hash"]),
              default="histogram+adaptive", show_default=True,
              help="icvg: PySceneDetect shot detector(s); the default finds cuts between fast-moving shots at 8 fps "
                   "as well as between two framings of one set (tests/bench/bench_shots.py).")
@click.option("--min-clip-s", type=click.FloatRange(0.0), default=1.0, show_default=True,
              help="icvg: shots shorter than this are not mined.")
@click.option("--caption-frames", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--embed-frames", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--window", type=click.IntRange(2), default=12, show_default=True, help="icvg: clips per scene window.")
@click.option("--edge-percentile", type=click.FloatRange(0, 100), default=75.0, show_default=True)
@click.option("--floor-percentile", type=click.FloatRange(0, 100), default=50.0, show_default=True)
@click.option("--min-caption-sim", type=click.FloatRange(-1, 1), default=0.5, show_default=True)
@click.option("--pairs-per-cluster", type=click.IntRange(1), default=2, show_default=True)
@click.option("--attempts", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Tries per request when a model reply is not the JSON asked for.")
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--max-tokens", type=click.IntRange(16, 32768), default=512, show_default=True)
@shard_option
@merge_option("INPUTS are the outputs of --shard runs: draw the --holdout split over all their triplets "
              "(and --export-clips) into OUT. No model is called.")
@backend_options
@input_output_options
@reports_errors
def command(mode, llm_spec, vlm_spec, embedder_spec, videos, types, examples_file, holdout, seed, export_clips,
            report, generated, detector, min_clip_s, caption_frames, embed_frames, window, edge_percentile,
            floor_percentile, min_caption_sim, pairs_per_cluster, attempts, temperature, max_tokens, shard, merge,
            base_url, concurrency, batch_size, no_cache, device, inputs, output, resume, on_error, rejects,
            media_root, allow_escape, quiet, verbose):
    """Mine (source clip, target clip, implicit instruction) triplets.

    \b
    icvg: INPUT records {id, video} (or --video): shots → VLM captions → SigLIP
    embeddings → pairs inside visually coherent sub-clusters (the per-video threshold
    is logged and reported) → the LLM writes an implicit instruction and its type.
    rave: INPUT records {id, source: {video, start?, end?, caption?}, target: {...},
    instruction}: the LLM rewrites the literal instruction into an implicit cue;
    'literal_instruction' keeps the original.

    \b
    Output: one triplet per line: {id, source: {video, start, end, caption?, clip?},
    target: {...}, instruction, reasoning_type, subset, split, scores}, times in
    seconds. Generation goes to OUT.generated.jsonl (resumable; icvg: one line per
    video, so a video's triplets are written together); OUT is rebuilt from it.

    \b
    --shard I/N mines 1/N of the input records (by id). The hold-out split needs
    every triplet, so shard runs take no --holdout (all their triplets are 'train');
    one --merge --holdout F run over the shard outputs splits them as an unsharded
    run would.
    """
    import json
    import logging
    import tempfile

    from vidcli.backends import load_chat_model
    from vidcli.backends.base import Sampling
    from vidcli.log import setup_logging
    from vidcli.mining.triplets import finish_triplets
    from vidcli.shard import check_merge
    from vidcli.stream import rejects_path_for, run_records, shard_suffix

    setup_logging(verbose, quiet)
    log = logging.getLogger("vidcli")
    check_merge(merge, shard, resume)
    if merge:
        _merge(inputs, videos, report, output, holdout=holdout, seed=seed, export_dir=export_clips)
        return
    if not (mode and llm_spec):
        raise click.UsageError("--mode and --llm are required (only --merge runs without them)")
    if shard is not None and holdout > 0:
        raise click.UsageError("--holdout splits the whole set: give it to the --merge run, not to --shard runs")
    if mode == "icvg" and not (vlm_spec and embedder_spec):
        raise click.UsageError("--mode icvg needs --vlm and --embedder")
    if mode == "icvg" and not embedder_spec.startswith("hf:"):
        raise click.UsageError(f"--embedder must be hf:PATH, got {embedder_spec!r}")
    if mode == "rave" and (examples_file is None or videos):
        raise click.UsageError("--mode rave needs --examples and takes edit-pair records, not --video")
    from vidcli.mining.rave import RAVE_TYPES
    from vidcli.mining.triplets import ICVG_TYPES

    known = ICVG_TYPES if mode == "icvg" else RAVE_TYPES
    allowed = tuple(t.strip() for t in types.split(",") if t.strip()) if types else known
    if not allowed or any(t not in known for t in allowed):
        raise click.UsageError(f"--types for {mode} must be among {', '.join(known)}")
    generated = generated or (f"vidcli-mine-triplets{shard_suffix(shard)}.generated.jsonl" if output == "-"
                              else output + ".generated.jsonl")
    common = dict(base_url=base_url, concurrency=concurrency, use_cache=not no_cache,
                  batch_size=batch_size, device=device)
    sampling = Sampling(temperature=temperature, max_tokens=max_tokens)
    stream = dict(command="mine-triplets", resume=resume, on_error=on_error,
                  rejects=rejects or rejects_path_for(output, "mine-triplets", shard), progress=not quiet, shard=shard,
                  media_root=media_root, settings=result_settings(exclude=FINISH_OPTIONS))
    with tempfile.TemporaryDirectory(prefix="vidcli-mine-") as scratch:
        sources = list(inputs) + ([_video_inputs(videos, scratch)] if videos else [])
        sources = sources or ["-"]
        llm = load_chat_model(llm_spec, **common)
        try:
            if mode == "icvg":
                from vidcli.mining.pairs import PairOptions
                from vidcli.mining.triplets import IcvgOptions

                pairs = PairOptions(window=window, edge_percentile=edge_percentile,
                                    floor_percentile=floor_percentile, min_caption_sim=min_caption_sim,
                                    pairs_per_cluster=pairs_per_cluster)
                opts = IcvgOptions(detector=detector, min_clip_s=min_clip_s, caption_frames=caption_frames,
                                   pairs=pairs, types=allowed, attempts=attempts, llm_sampling=sampling,
                                   vlm_sampling=sampling, media_root=media_root, allow_escape=allow_escape)
                stats = _run_icvg(sources, generated, llm, vlm_spec, embedder_spec[3:], embed_frames, opts,
                                  common, stream)
            else:
                from vidcli.mining.rave import RaveOptions, load_examples, rave_batch

                examples = load_examples(examples_file, allowed)
                opts = RaveOptions(types=allowed, attempts=attempts, llm_sampling=sampling,
                                   media_root=media_root, allow_escape=allow_escape)
                stats = run_records(sources, generated, lambda batch: rave_batch(batch, llm, examples, opts),
                                    batch_size=max(16, 4 * concurrency), **stream)
        finally:
            llm.close()
    log.info("mine-triplets: %d record(s) generated this run, %d already in %s, %d rejected",
             stats.written, stats.skipped_done, generated, stats.rejected)
    # --video files are named in the settings; the JSONL inputs are fingerprinted.
    done = finish_triplets(generated, output, mode=mode, holdout=holdout, seed=seed, export_dir=export_clips,
                           provenance=output_provenance(output, inputs or (() if videos else ("-",))))
    log.info("mine-triplets: %d triplet(s), %s, %d clip file(s) cut", done.triplets, _split_summary(done, holdout),
             done.clips_written)
    if report:
        with open(report, "w", encoding="utf-8") as handle:
            json.dump({"mode": mode, "triplets": done.triplets, "test": done.test,
                       "test_fraction": done.test_fraction, "holdout": holdout, "videos": done.videos},
                      handle, indent=2)


def _split_summary(done, holdout: float) -> str:
    """How many triplets the test split holds, and which fraction that is against the one asked for."""
    return (f"{done.test} in the test split ({done.test_fraction:.3f} of them for --holdout {holdout:g}, "
            "whole source videos at a time)")


def _merge(inputs, videos, report, output, *, holdout, seed, export_dir) -> None:
    """``--merge``: the shard outputs' triplets, split over the whole set, into ``output``."""
    import logging

    from vidcli.mining.triplets import write_triplets
    from vidcli.shard import read_shard_outputs

    if videos or report:
        raise click.UsageError("--merge reads shard outputs (INPUT...): --video and --report belong to --shard runs")
    done = write_triplets(read_shard_outputs(inputs or ("-",)), output, holdout=holdout, seed=seed,
                          export_dir=export_dir)
    logging.getLogger("vidcli").info("mine-triplets --merge: %d triplet(s), %s, %d clip file(s) cut",
                                     done.triplets, _split_summary(done, holdout), done.clips_written)


def _run_icvg(sources, generated, llm, vlm_spec, embedder_path, embed_frames, opts, common, stream):
    """The icvg generation stage (models loaded here, so rave never imports torch)."""
    from vidcli.backends import load_chat_model, load_embedder
    from vidcli.mining.embed import ClipEmbedder
    from vidcli.mining.triplets import IcvgModels, mine_icvg_batch
    from vidcli.stream import run_records

    vlm = load_chat_model(vlm_spec, **common)
    try:
        clip_embedder = ClipEmbedder(embedder_path, device=common["device"], frames_per_clip=embed_frames)
        models = IcvgModels(vlm=vlm, llm=llm, clip_embedder=clip_embedder,
                            text_embedder=load_embedder("embed", device=common["device"]))
        # A few videos per batch: their pairs' instructions are asked together, concurrently.
        return run_records(sources, generated, lambda batch: mine_icvg_batch(batch, models, opts),
                           batch_size=4, **stream)
    finally:
        vlm.close()
