"""``vidcli interpret``: a request (flags or JSONL records) → reasoning, six-part caption and prompt.

Records are interpreted one by one (a batch only shares the forward pass), so
``--input ... --shard I/N`` runs need no merge step: their outputs, concatenated, are the
unsharded output -- with greedy decoding; a sampled run (--temperature > 0 --seed S)
seeds each generation batch, and shards batch different records.
"""
from __future__ import annotations

import json

import click

from vidcli.commands.common import backend_options, input_output_options, reports_errors, result_settings
from vidcli.interpreter.engine import flag_request, interpret_batch, interpret_one, load_engine
from vidcli.interpreter.format import PROMPT_STYLES
from vidcli.shard import shard_option

EXAMPLES = """\b
Examples:
  vidcli interpret --model ckpt/grpo --text "make her wave in a park" --identity face.png
  vidcli interpret --model ckpt/sft --video clip.mp4 --text "add a red kite" --json
  vidcli interpret --model Qwen/Qwen2.5-Omni-7B --audio song.wav --camera cam.txt --text "a concert"
  vidcli interpret --model ckpt/grpo --input requests.jsonl -o interpreted.jsonl --batch-size 16
  vidcli interpret --backend openai:gpt-4o --depth depth.mp4 --text "a cat walks" --prompt-style full
  # the prompt is the only thing on stdout, so it drops into another command:
  prompt="$(vidcli interpret --model ckpt/grpo --text "a quiet street at dusk" --camera cam.txt)"
  # each job of `sbatch --array=0-7` (I=$SLURM_ARRAY_TASK_ID); `cat part*.out.jsonl` is the whole output:
  vidcli interpret --model ckpt/grpo --shard $I/8 --input requests.jsonl -o part$I.out.jsonl
"""

# Each condition flag is named after the condition type it adds.
_CONDITION_FLAGS = ("identity", "image", "video", "depth", "pose", "camera", "audio")


def _flag_record(text: str | None, flags: dict) -> dict:
    conditions = []
    for kind in _CONDITION_FLAGS:
        value = flags[kind]
        for path in (value if isinstance(value, tuple) else [value] if value else []):
            conditions.append({"type": kind, "path": path})
    return {"instruction": text or "", "conditions": conditions}


@click.command("interpret", epilog=EXAMPLES)
@click.option("--text", "-t", default=None, help="The user's request (may be left out when conditions are given).")
@click.option("--identity", multiple=True, type=click.Path(dir_okay=False), help="Identity image. Repeatable.")
@click.option("--image", multiple=True, type=click.Path(dir_okay=False), help="Reference image. Repeatable.")
@click.option("--video", type=click.Path(dir_okay=False), default=None, help="Source video.")
@click.option("--depth", type=click.Path(dir_okay=False), default=None, help="Depth video.")
@click.option("--pose", type=click.Path(dir_okay=False), default=None, help="Human-pose video.")
@click.option("--camera", type=click.Path(dir_okay=False), default=None,
              help="Camera trajectory (RealEstate10K text or JSON).")
@click.option("--audio", type=click.Path(dir_okay=False), default=None,
              help="Audio clip (or a video's audio track); needs a model that takes audio.")
@click.option("--input", "input_files", multiple=True, type=click.Path(allow_dash=True),
              help="JSONL request records ('instruction', 'conditions'); adds 'output'. Repeatable; '-' = stdin.")
@click.option("--json", "as_json", is_flag=True,
              help="Flags mode: print the whole output object (think, answer, prompt, raw, format_ok) as JSON.")
@click.option("--prompt-style", type=click.Choice(PROMPT_STYLES), default="dense", show_default=True,
              help="Generator prompt: the dense part, the six parts as one paragraph, or the full structured text.")
@click.option("--model", "model_path", default=None, metavar="PATH",
              help="Interpreter checkpoint (sft/grpo output) or any compatible HF image-text-to-text model.")
@click.option("--backend", "backend_spec", default=None, metavar="openai:MODEL",
              help="Ask an OpenAI-compatible server instead (cameras are sent as motion descriptions).")
@click.option("--frames", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Frames sampled evenly from each video (source, depth, pose).")
@click.option("--max-new-tokens", type=click.IntRange(1, 32768), default=768, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="0 = greedy.")
@click.option("--top-p", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0, show_default=True)
@click.option("--seed", type=int, default=None,
              help="Seed for sampling (temperature > 0); each generation batch starts from it.")
@click.option("--max-prompt-tokens", type=click.IntRange(1), default=None,
              help="Refuse a request whose prompt is longer (local models).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto",
              show_default=True, help="Weights dtype for --model.")
@click.option("--load-in-4bit", is_flag=True, help="Load --model quantised to 4 bits (bitsandbytes, CUDA).")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own code (off by default).")
@shard_option
@backend_options
@input_output_options
@reports_errors
def command(text, identity, image, video, depth, pose, camera, audio, input_files, as_json, prompt_style,
            model_path, backend_spec, frames, max_new_tokens, temperature, top_p, seed, max_prompt_tokens, dtype,
            load_in_4bit, trust_remote_code, shard, base_url, concurrency, batch_size, no_cache, device, inputs, output,
            resume, on_error, rejects, media_root, allow_escape, quiet, verbose):
    """Interpret a video request: reason, then write a six-part caption and a generator prompt.

    \b
    Flags mode: --text and the condition flags make one request; the generator
    prompt goes to stdout (--json: the whole output object). Records mode
    (--input FILE or INPUT...): each record's 'instruction' and 'conditions' are
    interpreted in batches and written back with an 'output' field: {think,
    answer: {dense, main_object, background, movement, style, camera}, prompt, raw,
    format_ok, format_problem}.
    Conditions reach the model in a fixed order: identity, image, video, depth,
    pose, camera, audio. An output that breaks the <think>/<answer> format is kept
    with format_ok false; its prompt is then the raw answer text.
    A camera trajectory goes through the checkpoint's camera encoder; a model
    without one, and an OpenAI-compatible server (--backend), get its motion
    description in words instead ("moderate dolly in, slight pan left"). A server
    gets images and video frames as image parts; audio needs a local audio model.
    """
    from vidcli.log import setup_logging

    setup_logging(verbose, quiet)
    flags = dict(identity=identity, image=image, video=video, depth=depth, pose=pose, camera=camera, audio=audio)
    sources = tuple(inputs) + tuple(input_files)
    has_flags = text is not None or any(flags.values())
    if sources and has_flags:
        raise click.UsageError("give either --input records or --text/condition flags, not both")
    if not sources and not has_flags:
        raise click.UsageError("nothing to interpret: give --text and/or condition flags, or --input FILE")
    if not sources and (output != "-" or resume or shard is not None):
        raise click.UsageError("-o/--resume apply to --input records (and so does --shard); "
                               "flags mode prints to stdout")
    if (model_path is None) == (backend_spec is None):
        raise click.UsageError("give exactly one of --model PATH or --backend openai:MODEL")
    if backend_spec is not None and not backend_spec.startswith("openai:"):
        raise click.UsageError("--backend takes openai:MODEL; for a local model use --model PATH")
    if backend_spec is not None and max_prompt_tokens is not None:
        raise click.UsageError("--max-prompt-tokens needs a local tokenizer: use it with --model")
    # Flags mode reads its media before the (slow) model load, so a wrong path fails fast.
    request = None if sources else flag_request(_flag_record(text, flags), frames)
    engine = load_engine(model_path, backend_spec, dtype=dtype, device=device, load_in_4bit=load_in_4bit,
                     trust_remote_code=trust_remote_code, base_url=base_url, concurrency=concurrency,
                     no_cache=no_cache, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens,
                     generation=dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                     seed=seed))
    try:
        if sources:
            _run_records(engine, sources, prompt_style, frames, output=output, resume=resume, on_error=on_error,
                         rejects=rejects, media_root=media_root, allow_escape=allow_escape, quiet=quiet,
                         shard=shard)
        else:
            result = interpret_one(engine, request, prompt_style)
            if not result["format_ok"]:
                click.echo(f"vidcli interpret: warning: the output does not follow the answer format "
                           f"({result['format_problem']}); printing the raw answer text", err=True)
            click.echo(json.dumps(result, ensure_ascii=False) if as_json else result["prompt"])
    finally:
        engine.close()


def _run_records(engine, sources, style, frames, *, output, resume, on_error, rejects, media_root, allow_escape,
                 quiet, shard) -> None:
    from vidcli.interpreter.messages import request_from_record
    from vidcli.stream import run_records

    def load(record, base_dir):
        return request_from_record(record, base_dir, media_root=media_root, allow_escape=allow_escape,
                                   video_frames=frames)

    run_records(sources, output, lambda batch: interpret_batch(batch, engine, style, load),
                command="interpret", batch_size=engine.records_per_batch, resume=resume, on_error=on_error,
                rejects=rejects, progress=not quiet, shard=shard, media_root=media_root,
                settings=result_settings())
