#!/usr/bin/env bash
# Run vidcli's data stage on the bundled examples.
#
#   bash examples/quickstart.sh                 # offline: tiny random-weight models
#   VIDCLI_LLM=openai:gpt-4o-mini bash examples/quickstart.sh
#   VIDCLI_LLM=hf:Qwen/Qwen2.5-7B-Instruct VIDCLI_VLM=hf:Qwen/Qwen2.5-VL-7B-Instruct bash examples/quickstart.sh
#
# Outputs go to ${OUT:-out/quickstart}.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-out/quickstart}"
mkdir -p "$out"

if [ -z "${VIDCLI_LLM:-}" ]; then
  tiny="$(python -m vidcli.testing tiny-models --only llm,vlm)"   # built once, then cached
  llm="hf:$(awk '$1 == "llm" {print $2}' <<<"$tiny")"
  vlm="hf:$(awk '$1 == "vlm" {print $2}' <<<"$tiny")"
  echo "quickstart: no VIDCLI_LLM set: using the TINY RANDOM-WEIGHT models ($llm, $vlm)" >&2
  echo "quickstart: they answer nonsense, so records land in the rejects files with their reasons" >&2
  extra=(--max-tokens 96 --attempts 2)
else
  llm="$VIDCLI_LLM"; vlm="${VIDCLI_VLM:-}"; extra=()
fi

vlm_args=()
[ -n "$vlm" ] && vlm_args=(--vlm "$vlm")

vidcli decompose --schema drf --llm "$llm" "${vlm_args[@]}" "${extra[@]}" --on-error skip \
  "$here/captions.jsonl" -o "$out/drf.jsonl"
vidcli decompose --schema reade --llm "$llm" "${extra[@]}" --on-error skip \
  "$here/requests.jsonl" -o "$out/keyinfo.jsonl"

for f in "$out/drf.jsonl" "$out/keyinfo.jsonl"; do
  n=$(wc -l < "$f"); r=0
  [ -f "$f.rejects.jsonl" ] && r=$(wc -l < "$f.rejects.jsonl")
  echo "quickstart: $f: $n record(s) written, $r rejected"
done
