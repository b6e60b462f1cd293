#!/usr/bin/env bash
# ReViSE end to end: mine triplets → revise-tune (USO) → generate edits → score rve.
#
#   TINY=1 bash recipes/revise.sh                     # a few minutes on CPU, offline (tiny models)
#   EDITS=data/edit-pairs.jsonl FILMS=data/films.jsonl LLM=openai:gpt-4o JUDGE=openai:gpt-4o \
#   LAUNCH="accelerate launch --num_processes 8 -m vidcli" bash recipes/revise.sh
#
# Every stage is skipped when its output is complete and resumed when it was interrupted.
#
# Environment (defaults in brackets):
#   OUT            output folder [runs/revise]
#   EDITS          literal edit pairs for RAVE triplets {source, target, instruction}
#                  [examples/edits.jsonl]
#   FILMS          optional long videos {id, video} for ICVG triplets [none]
#   RAVE_EXAMPLES  few-shot rewrites per reasoning type [examples/rave_examples.jsonl]
#   LLM            writes the reasoning instructions [openai:gpt-4o]
#   CAPTIONER      icvg clip captioner [$LLM]
#   EMBEDDER       icvg clip embedder [hf:google/siglip-base-patch16-224]
#   HOLDOUT        fraction of source videos held out as the test split [0.02]
#   BASE_MODEL     Wan diffusers folder whose DiT becomes the editor
#                  [Wan-AI/Wan2.1-T2V-1.3B-Diffusers]
#   VLM            frozen critic [Qwen/Qwen2.5-VL-7B-Instruct]
#   JUDGE          rve judge for the benchmark scores [openai:gpt-4o]
#   LAUNCH         how revise-tune runs [vidcli]
# Paper hyper-parameters (SPEC §8):
#   OBJECTIVE [uso]  LAMBDA [0.25]  SIGMA_MAX [0.5]  CFG_DROP [0.2]  LR [3e-6]
#   BATCH [1]  ACCUM [8] (batch 8)  CLIP [0.1]  HEIGHT [288]  WIDTH [512]  FRAMES [49]
#   INFER_STEPS [50]  REVISE_STEPS [one epoch]
set -euo pipefail
RECIPE=revise
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT="${OUT:-runs/revise}"
EDITS="${EDITS:-$EXAMPLES_DIR/edits.jsonl}"
RAVE_EXAMPLES="${RAVE_EXAMPLES:-$EXAMPLES_DIR/rave_examples.jsonl}"

tiny=()
if [ "${TINY:-0}" = 1 ]; then
  tiny_setup
  BASE_MODEL="${BASE_MODEL:-$TINY_WAN}"
  VLM="${VLM:-$TINY_VLM}"
  JUDGE="${JUDGE:-openai:teacher}"
  HOLDOUT="${HOLDOUT:-0}"; EVAL_SPLIT="${EVAL_SPLIT:-train}"
  HEIGHT="${HEIGHT:-32}"; WIDTH="${WIDTH:-32}"; FRAMES="${FRAMES:-5}"; ACCUM="${ACCUM:-1}"
  SIGMA_MAX="${SIGMA_MAX:-0.8}"; LR="${LR:-1e-3}"; INFER_STEPS="${INFER_STEPS:-2}"; REVISE_STEPS="${REVISE_STEPS:-2}"
  tiny=(--frames-critic 3 --critic-tokens 8 --save-every 0)
fi
BASE_MODEL="${BASE_MODEL:-Wan-AI/Wan2.1-T2V-1.3B-Diffusers}"
VLM="${VLM:-Qwen/Qwen2.5-VL-7B-Instruct}"
LLM="${LLM:-openai:gpt-4o}"
JUDGE="${JUDGE:-openai:gpt-4o}"
revise_steps=()
[ -n "${REVISE_STEPS:-}" ] && revise_steps=(--max-steps "$REVISE_STEPS")
size=(--height "${HEIGHT:-288}" --width "${WIDTH:-512}")

# 1. Triplets: RAVE rewrites of literal edits, and ICVG pairs mined from films when given.
stage "mine-triplets (rave)" "$OUT/data/rave.jsonl" \
  vidcli mine-triplets --mode rave --llm "$LLM" --examples "$RAVE_EXAMPLES" --holdout "${HOLDOUT:-0.02}" \
  -q "$EDITS"
parts=("$OUT/data/rave.jsonl")
if [ -n "${FILMS:-}" ]; then
  stage "mine-triplets (icvg)" "$OUT/data/icvg.jsonl" \
    vidcli mine-triplets --mode icvg --llm "$LLM" --vlm "${CAPTIONER:-$LLM}" \
    --embedder "${EMBEDDER:-hf:google/siglip-base-patch16-224}" --holdout "${HOLDOUT:-0.02}" \
    --report "$OUT/data/icvg.report.json" -q "$FILMS"
  parts+=("$OUT/data/icvg.jsonl")
fi
split_done=1
for part in "${parts[@]}"; do [ "$part" -nt "$OUT/data/test.jsonl" ] && split_done=0; done
if [ ! -e "$OUT/data/test.jsonl" ] || [ "$split_done" = 0 ]; then  # (re)split when a part is new
  cat "${parts[@]}" > "$OUT/data/triplets.jsonl"
  select_records split train "$OUT/data/triplets.jsonl" > "$OUT/data/train.jsonl.tmp"
  select_records split "${EVAL_SPLIT:-test}" "$OUT/data/triplets.jsonl" > "$OUT/data/test.jsonl.tmp"
  mv "$OUT/data/train.jsonl.tmp" "$OUT/data/train.jsonl"
  mv "$OUT/data/test.jsonl.tmp" "$OUT/data/test.jsonl"
fi

# 2. Self-reflective learning: flow matching + lambda * reasoning loss from the frozen critic.
train "revise-tune" "$OUT/editor" \
  revise-tune --model "$BASE_MODEL" --vlm "$VLM" --objective "${OBJECTIVE:-uso}" \
  --reason-weight "${LAMBDA:-0.25}" --sigma-max "${SIGMA_MAX:-0.5}" --cfg-drop "${CFG_DROP:-0.2}" \
  --lr "${LR:-3e-6}" --batch-size "${BATCH:-1}" --grad-accum "${ACCUM:-8}" --max-grad-norm "${CLIP:-0.1}" \
  "${size[@]}" --frames "${FRAMES:-49}" "${revise_steps[@]}" "${tiny[@]}" -q "$OUT/data/train.jsonl"

# 3. Edited videos for the test triplets (source video + reasoning instruction).
stage "generate (edit)" "$OUT/edited.jsonl" \
  vidcli generate --model "$OUT/editor" --steps "${INFER_STEPS:-50}" "${size[@]}" --num-frames "${FRAMES:-49}" \
  -q "$OUT/data/test.jsonl"

# 4. Judge scores 0-10 (EA, PC, GN, GR) and the per-record overall, by reasoning type.
stage "score rve" "$OUT/scored.jsonl" \
  vidcli score --metric rve --judge "$JUDGE" --by reasoning_type --summary "$OUT/summary.json" \
  "$OUT/edited.jsonl"
say "done: scores in $OUT/scored.jsonl, summary in $OUT/summary.json"
