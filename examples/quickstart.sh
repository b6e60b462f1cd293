#!/usr/bin/env bash
# vidcli's main job on the bundled examples: interpret requests, then build data with decompose.
#
#   bash examples/quickstart.sh                                    # offline: tiny random-weight models
#   VIDCLI_MODEL=ckpt/grpo bash examples/quickstart.sh             # your interpreter checkpoint
#   VIDCLI_MODEL=Qwen/Qwen2.5-VL-7B-Instruct VIDCLI_LLM=openai:gpt-4o-mini bash examples/quickstart.sh
#
# Outputs go to ${OUT:-out/quickstart}.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-out/quickstart}"
mkdir -p "$out"

tiny=""
if [ -z "${VIDCLI_MODEL:-}" ] || [ -z "${VIDCLI_LLM:-}" ]; then
  tiny="$(python -m vidcli.testing tiny-models --only llm,vlm)"   # built once, then cached
  echo "quickstart: using TINY RANDOM-WEIGHT models for what is not set (VIDCLI_MODEL / VIDCLI_LLM):" >&2
  echo "quickstart: they run the whole pipeline but their text is nonsense." >&2
fi
tiny_path() { awk -v n="$1" '$1 == n {print $2}' <<<"$tiny"; }

model="${VIDCLI_MODEL:-$(tiny_path vlm)}"
llm="${VIDCLI_LLM:-hf:$(tiny_path llm)}"
vlm="${VIDCLI_VLM:-}"
[ -z "${VIDCLI_LLM:-}" ] && vlm="hf:$(tiny_path vlm)"
limits=()
[ -n "$tiny" ] && limits=(--max-new-tokens 48)

# 1. One request from flags: the generator prompt is the only thing on stdout.
echo "quickstart: interpret --video ball.mp4 --text 'make the ball bounce higher' (model: $model)" >&2
vidcli interpret --model "$model" --video "$here/media/ball.mp4" --text "make the ball bounce higher" \
  "${limits[@]}" > "$out/prompt.txt"
echo "quickstart: prompt -> $out/prompt.txt" >&2

# 2. Many requests from a JSONL file, batched; every record gets an `output` object.
vidcli interpret --model "$model" --input "$here/requests.jsonl" -o "$out/interpreted.jsonl" "${limits[@]}" -q

# 3. Data building: decompose captions (DRF schema) and requests (ReaDe key-info).
extra=()
[ -z "${VIDCLI_LLM:-}" ] && extra=(--max-tokens 96 --attempts 2)
vidcli decompose --schema drf --llm "$llm" ${vlm:+--vlm "$vlm"} "${extra[@]}" --on-error skip -q \
  "$here/captions.jsonl" -o "$out/drf.jsonl"
vidcli decompose --schema reade --llm "$llm" "${extra[@]}" --on-error skip -q \
  "$here/requests.jsonl" -o "$out/keyinfo.jsonl"

for f in "$out/interpreted.jsonl" "$out/drf.jsonl" "$out/keyinfo.jsonl"; do
  n=$(wc -l < "$f"); r=0
  [ -f "$f.rejects.jsonl" ] && r=$(wc -l < "$f.rejects.jsonl")
  echo "quickstart: $f: $n record(s) written, $r rejected"
done
