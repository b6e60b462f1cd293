"""``vidcli generate``: prompts → videos (text-to-video), or source clip + instruction → edited video."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import click

from vidcli.commands.common import input_output_options, reports_errors, result_settings
from vidcli.diffusion.batch import default_videos_dir, generate_batch
from vidcli.media_access import MediaAccess
from vidcli.shard import shard_option

log = logging.getLogger("vidcli")

PROMPT_FIELDS = ("output.prompt", "prompt", "caption")  # interpret, plain, decompose --schema drf
EDIT_FIELD = "instruction"

EXAMPLES = """\b
Examples:
  # the DRF chain: questions for the captions, a video per caption, the videos' VQA scores
  vidcli decompose --schema drf --llm openai:gpt-4o captions.jsonl -o decomposed.jsonl
  vidcli generate --model Wan2.1-T2V-1.3B-Diffusers decomposed.jsonl -o generated.jsonl
  vidcli score --metric vqa --vlm hf:Qwen/Qwen2.5-VL-7B-Instruct generated.jsonl -o scored.jsonl
  # the ReaDe chain: the interpreter's prompts (output.prompt) are what gets rendered
  vidcli interpret --model ckpt/grpo --input requests.jsonl -o interpreted.jsonl
  vidcli generate --model Wan2.1-T2V-1.3B-Diffusers interpreted.jsonl -o videos.jsonl
  # a drf-tune output (full or LoRA), the paper's 30 steps at its training size
  vidcli generate --model runs/drf decomposed.jsonl -o drf.jsonl --batch-size 4
  # plain {id, prompt} records on stdin, videos into a chosen folder
  echo '{"id": "cat", "prompt": "a cat on a piano"}' | vidcli generate --model runs/drf --videos-dir vids - > out.jsonl
  # edit with a revise-tune output: triplet records (source {video, start, end}, instruction)
  vidcli generate --model runs/revise triplets.jsonl -o edited.jsonl
  vidcli score --metric rve --judge openai:gpt-4o edited.jsonl -o rve.jsonl
  # eight GPUs, one shard each; --resume continues a killed job
  vidcli generate --model runs/drf --shard $I/8 --resume prompts.jsonl -o gen.$I.jsonl
"""

@click.command("generate", epilog=EXAMPLES)
@click.option("--model", "model_path", required=True, metavar="CKPT",
              help="A diffusers WanPipeline/CogVideoXPipeline folder, a drf-tune output (full or LoRA): "
                   "text-to-video; a revise-tune output: editing.")
@click.option("--videos-dir", type=click.Path(file_okay=False), default=None,
              help="Where the mp4 files go, one per record named by its id "
                   "[default: OUT-stem.videos/ beside OUT; ./videos for stdout].")
@click.option("--prompt-field", default=None, metavar="FIELD",
              help="Dotted field holding the text [default: output.prompt, else prompt, else caption; "
                   "editing: instruction].")
@click.option("--steps", type=click.IntRange(1), default=30, show_default=True,
              help="Denoising steps (Diffusion-DRF's inference setting).")
@click.option("--guidance", type=click.FloatRange(0), default=None,
              help="Classifier-free guidance scale; <= 1 turns it off "
                   "[default: the pipeline's: Wan 5.0, CogVideoX 6.0].")
@click.option("--num-frames", type=click.IntRange(1), default=None,
              help="Frames per video, 4k+1 [default: what the checkpoint's vidcli.json recorded for training, "
                   "else the pipeline's: Wan 81, CogVideoX 49].")
@click.option("--height", type=click.IntRange(16), default=None,
              help="Multiple of 16 [default: vidcli.json's training size, else the pipeline's: Wan 480].")
@click.option("--width", type=click.IntRange(16), default=None,
              help="Multiple of 16 [default: vidcli.json's training size, else the pipeline's: Wan 832].")
@click.option("--fps", type=click.FloatRange(0, min_open=True), default=None,
              help="Frame rate written into the mp4 [default: Wan 16, CogVideoX 8].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Each record's noise is seeded by (seed, record id): independent of batching, order, "
                   "sharding and --resume.")
@click.option("--negative-prompt", default=None, metavar="TEXT",
              help="Negative prompt for guidance (editing: the unconditional text) [default: empty text].")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True,
              help="Records per pipeline call.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda, cuda:N.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
              show_default=True, help="DiT and text encoder dtype (auto: bfloat16 on CUDA, float32 on CPU); "
                                      "the Wan VAE stays float32.")
@click.option("--fold-text-padding", is_flag=True, default=False,
              help="Wan: attend to each prompt's zero padding as one key weighted by its count instead of as "
                   "hundreds of identical keys; the same videos up to rounding, faster where a video has few "
                   "tokens (small sizes, CPU).")
@shard_option
@input_output_options
@reports_errors
def command(model_path, videos_dir, prompt_field, steps, guidance, num_frames, height, width, fps, seed,
            negative_prompt, batch_size, device, dtype, fold_text_padding, shard, inputs, output, resume, on_error,
            rejects, media_root, allow_escape, quiet, verbose):
    """Generate a video per record with a text-to-video checkpoint, or edit a source clip with an editor.

    \b
    Text-to-video: the prompt is 'output.prompt' (vidcli interpret), else 'prompt',
    else 'caption' (decompose --schema drf), or --prompt-field. Editing (a revise-tune
    --model): 'instruction' and 'source' {video, start, end} (seconds; start/end may be
    left out), as mine-triplets writes them; the source clip is sampled to
    --num-frames frames at the output size.
    Each video is written as VIDEOS_DIR/<id>.mp4 (to a temporary name, then renamed),
    then the record, with 'output.video' (relative to OUT's folder when inside it) and
    'output.generation' {model, mode, seed, steps, guidance, num_frames, height,
    width, fps, negative_prompt}; other 'output' fields are kept. --resume skips ids
    already in OUT; a video written before a crash is regenerated and replaced.
    """
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise click.BadParameter(f"{device!r}: use auto, cpu, cuda or cuda:N", param_hint="--device")
    from vidcli.diffusion.generate import default_settings, load_video_model
    from vidcli.jsonl import check_output, partial_name
    from vidcli.log import setup_logging
    from vidcli.stream import run_records

    setup_logging(verbose, quiet)
    if videos_dir:
        check_output(videos_dir, folder=True)
    model = load_video_model(model_path, device=device, dtype=dtype)
    if fold_text_padding:
        model.adapter.fold_text_padding()
    try:
        settings = default_settings(model, steps=steps, guidance=guidance, num_frames=num_frames, height=height,
                                    width=width, fps=fps, seed=seed, negative_prompt=negative_prompt)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    fields = (prompt_field,) if prompt_field else (EDIT_FIELD,) if model.mode == "edit" else PROMPT_FIELDS
    folder = Path(videos_dir) if videos_dir else default_videos_dir(output)
    log.info("generate: %s mode, %d steps, guidance %g, %d frames of %dx%d at %g fps; videos in %s", model.mode,
             settings.steps, settings.guidance, settings.num_frames, settings.width, settings.height, settings.fps,
             folder)
    access = MediaAccess(media_root, allow_escape)
    # With -o FILE the videos go into FOLDER.partial, published with OUT when every record is done.
    write_dir = folder if output == "-" else partial_name(folder)
    run_records(inputs or ("-",), output,
                lambda batch: generate_batch(batch, model, settings, fields, folder, output, access, write_dir,
                                              progress=not quiet),
                command="generate", batch_size=batch_size, resume=resume, on_error=on_error, rejects=rejects,
                progress=not quiet, shard=shard, media_root=media_root, settings=result_settings(),
                folder=None if output == "-" else str(folder))
