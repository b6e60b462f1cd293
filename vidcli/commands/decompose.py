"""``vidcli decompose``: captions → checkable elements, questions and key-info.

Every record is decomposed on its own, so ``--shard I/N`` runs need no merge step: their
outputs, concatenated, are the unsharded output.
"""
from __future__ import annotations

import logging

import click

from vidcli.commands.common import backend_options, input_output_options, reports_errors, result_settings
from vidcli.shard import shard_option

EXAMPLES = """\b
Examples:
  vidcli decompose --llm openai:gpt-4o captions.jsonl -o decomposed.jsonl
  vidcli decompose --llm hf:Qwen/Qwen2.5-7B-Instruct --vlm hf:Qwen/Qwen2.5-VL-7B-Instruct \\
      --keep-consistent openvid.jsonl -o drf-train.jsonl
  cat requests.jsonl | vidcli decompose --schema reade --llm openai:gpt-4o --vlm openai:gpt-4o - > keyinfo.jsonl
  # make-cot output already holds the condition descriptions: no --vlm needed
  vidcli decompose --schema reade --llm openai:gpt-4o cot.jsonl -o keyinfo.jsonl
  # each job of `sbatch --array=0-7` (I=$SLURM_ARRAY_TASK_ID); `cat part*.dec.jsonl` is the whole output:
  vidcli decompose --llm openai:gpt-4o --shard $I/8 captions.jsonl -o part$I.dec.jsonl
"""


@click.command("decompose", epilog=EXAMPLES)
@click.option("--schema", type=click.Choice(["drf", "reade"]), default="drf", show_default=True,
              help="drf: eight element keys + TA/Phy/VQ questions. reade: U/S/Z key-info.")
@click.option("--llm", "llm_spec", required=True, metavar="SPEC",
              help="Text model that decomposes: openai:MODEL or hf:PATH.")
@click.option("--vlm", "vlm_spec", default=None, metavar="SPEC",
              help="Vision model (hf:PATH or openai:MODEL). drf: answers Phy/VQ questions on the record's real "
                   "video. reade: describes each image, depth, pose or video condition for S, with make-cot's "
                   "step-2 prompts (not needed when the record has make-cot's cot.descriptions).")
@click.option("--keep-consistent", is_flag=True,
              help="drf: keep only records whose real video gets the desired answer to every question.")
@click.option("--frames", type=click.IntRange(1, 64), default=10, show_default=True,
              help="Frames sampled uniformly from each video (the real one, or a condition) for the VLM.")
@click.option("--caption-field", default="caption", show_default=True,
              help="drf: field holding the caption ('prompt' is tried next).")
@click.option("--video-field", default="video", show_default=True, help="drf: field holding the real video path.")
@click.option("--attempts", type=click.IntRange(1, 10), default=3, show_default=True,
              help="Tries per record when a model reply is not the JSON asked for.")
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--max-tokens", type=click.IntRange(16, 32768), default=1024, show_default=True)
@shard_option
@backend_options
@input_output_options
@reports_errors
def command(schema, llm_spec, vlm_spec, keep_consistent, frames, caption_field, video_field, attempts,
            temperature, max_tokens, shard, base_url, concurrency, batch_size, no_cache, device,
            inputs, output, resume, on_error, rejects, media_root, allow_escape, quiet, verbose):
    """Decompose caption records into elements, questions and reference answers.

    \b
    --schema drf   needs 'caption' (or 'prompt'); adds 'elements' (environment, objects,
                   motion, spatial, color, lighting, text, camera) and 'questions' (TA per
                   non-empty key with a "Yes" reference; Phy and VQ with references from
                   --vlm on the real video in 'video', null without one).
    --schema reade needs 'instruction' and 'gold'; adds 'key_info' {user,
                   supplementary, imaginative}. S is extracted from a description of
                   each condition: make-cot's cot.descriptions when the record has
                   them; else a camera trajectory's motion words, an audio's or a
                   path-less condition's 'caption', and a --vlm description of each
                   image, depth, pose or video condition (make-cot's step-2 prompts).
                   A condition that cannot be described is the record's error.
    """
    from vidcli.backends import load_chat_model
    from vidcli.backends.base import Sampling
    from vidcli.decompose import DecomposeOptions, decompose_batch
    from vidcli.decompose.drf import undesired_questions
    from vidcli.log import setup_logging
    from vidcli.stream import run_records

    setup_logging(verbose, quiet)
    if keep_consistent and (schema != "drf" or not vlm_spec):
        raise click.UsageError("--keep-consistent needs --schema drf and --vlm")
    common = dict(base_url=base_url, concurrency=concurrency, use_cache=not no_cache,
                  batch_size=batch_size, device=device)
    llm = load_chat_model(llm_spec, **common)
    vlm = load_chat_model(vlm_spec, **common) if vlm_spec else None
    opts = DecomposeOptions(
        schema=schema, caption_fields=(caption_field, "prompt"), video_field=video_field, frames=frames,
        keep_consistent=keep_consistent, attempts=attempts,
        llm_sampling=Sampling(temperature=temperature, max_tokens=max_tokens),
        media_root=media_root, allow_escape=allow_escape,
    )
    undesired = []  # records written with a reference answer that teaches a defect

    def decompose(batch):
        outcomes = decompose_batch(batch, llm, vlm, opts)
        undesired.extend(o.record["id"] for o in outcomes if o.record and undesired_questions(o.record))
        return outcomes

    try:
        run_records(inputs or ("-",), output, decompose,
                    command="decompose", batch_size=max(16, 4 * concurrency), resume=resume,
                    on_error=on_error, rejects=rejects, progress=not quiet, shard=shard,
                    media_root=media_root, settings=result_settings())
    finally:
        llm.close()
        if vlm is not None:
            vlm.close()
    if undesired:
        logging.getLogger("vidcli").warning(
            "%d record(s) (e.g. %s) got an undesired reference answer on their real video (Phy or VQ: 'Yes, "
            "there is a defect'); training towards it teaches that defect. Those questions are marked "
            "'undesired': true; --keep-consistent drops such records.", len(undesired), undesired[0])
