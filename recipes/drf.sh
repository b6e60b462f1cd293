#!/usr/bin/env bash
# Diffusion-DRF end to end: decompose captions → drf-tune the DiT → generate → score vqa.
#
#   TINY=1 bash recipes/drf.sh                        # a few minutes on CPU, offline (tiny models)
#   CAPTIONS=data/openvid-5k.jsonl EVAL_CAPTIONS=data/eval.jsonl LLM=openai:gpt-4o \
#   LAUNCH="accelerate launch --num_processes 8 -m vidcli" bash recipes/drf.sh
#
# Every stage is skipped when its output is complete and resumed when it was interrupted.
#
# Environment (defaults in brackets):
#   OUT            output folder [runs/drf]
#   CAPTIONS       training captions with their real videos {caption, video} [examples/captions.jsonl]
#   EVAL_CAPTIONS  captions to generate and score after tuning [$CAPTIONS]
#   BASE_MODEL     diffusers text-to-video folder [Wan-AI/Wan2.1-T2V-1.3B-Diffusers]
#   VLM            frozen reward VLM, also the reference answerer and the scorer
#                  [Qwen/Qwen2.5-VL-7B-Instruct]
#   LLM            decomposer [openai:gpt-4o]
#   KEEP_CONSISTENT 1: train only on captions whose real video passes its own questions [1]
#   LAUNCH         how drf-tune runs [vidcli]
# Paper hyper-parameters (SPEC §6):
#   REWARD [rich]  DIMS [TA,Phy,VQ]  K [4]  NF [10]  STEPS [25 in training]  INFER_STEPS [30]
#   HEIGHT [288]  WIDTH [512]  FRAMES [49]  LR [1e-5]  GUIDANCE [5.0]  SHIFT [5.0]  FINETUNE [full]
#   VLM_DTYPE [bf16]  DRF_STEPS [one epoch]
set -euo pipefail
RECIPE=drf
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT="${OUT:-runs/drf}"
CAPTIONS="${CAPTIONS:-$EXAMPLES_DIR/captions.jsonl}"
EVAL_CAPTIONS="${EVAL_CAPTIONS:-$CAPTIONS}"

tiny=()
if [ "${TINY:-0}" = 1 ]; then
  tiny_setup
  BASE_MODEL="${BASE_MODEL:-$TINY_WAN}"
  VLM="${VLM:-$TINY_VLM}"
  REFERENCE_VLM="${REFERENCE_VLM:-openai:teacher}"
  K="${K:-1}"; NF="${NF:-3}"; STEPS="${STEPS:-2}"; INFER_STEPS="${INFER_STEPS:-2}"
  HEIGHT="${HEIGHT:-32}"; WIDTH="${WIDTH:-32}"; FRAMES="${FRAMES:-5}"; LR="${LR:-1e-3}"
  VLM_DTYPE="${VLM_DTYPE:-float32}"; DRF_STEPS="${DRF_STEPS:-2}"
  tiny=(--save-every 0)
fi
BASE_MODEL="${BASE_MODEL:-Wan-AI/Wan2.1-T2V-1.3B-Diffusers}"
VLM="${VLM:-Qwen/Qwen2.5-VL-7B-Instruct}"
LLM="${LLM:-openai:gpt-4o}"
REFERENCE_VLM="${REFERENCE_VLM:-hf:$VLM}"
consistent=()
[ "${KEEP_CONSISTENT:-1}" = 1 ] && consistent=(--keep-consistent)
drf_steps=()
[ -n "${DRF_STEPS:-}" ] && drf_steps=(--max-steps "$DRF_STEPS")
size=(--height "${HEIGHT:-288}" --width "${WIDTH:-512}")

# 1. Elements, TA/Phy/VQ questions and reference answers from the real videos.
stage "decompose (drf, training captions)" "$OUT/data/train.jsonl" \
  vidcli decompose --schema drf --llm "$LLM" --vlm "$REFERENCE_VLM" --frames "${NF:-10}" "${consistent[@]}" \
  -q "$CAPTIONS"
stage "decompose (drf, evaluation captions)" "$OUT/data/eval.jsonl" \
  vidcli decompose --schema drf --llm "$LLM" --vlm "$REFERENCE_VLM" --frames "${NF:-10}" -q "$EVAL_CAPTIONS"

# 2. Tune the DiT with the differentiable VLM reward (truncated rollout, last K steps).
train "drf-tune" "$OUT/tuned" \
  drf-tune --model "$BASE_MODEL" --vlm "$VLM" --reward "${REWARD:-rich}" --dims "${DIMS:-TA,Phy,VQ}" \
  --k-grad "${K:-4}" --frames-vlm "${NF:-10}" --steps "${STEPS:-25}" --guidance "${GUIDANCE:-5.0}" \
  --shift "${SHIFT:-5.0}" \
  "${size[@]}" --frames "${FRAMES:-49}" --lr "${LR:-1e-5}" --finetune "${FINETUNE:-full}" \
  --vlm-dtype "${VLM_DTYPE:-bf16}" --gradient-checkpointing "${drf_steps[@]}" "${tiny[@]}" -q "$OUT/data/train.jsonl"

# 3. Videos for the evaluation captions from the tuned generator (30 steps at inference).
stage "generate" "$OUT/generated.jsonl" \
  vidcli generate --model "$OUT/tuned" --steps "${INFER_STEPS:-30}" --guidance "${GUIDANCE:-5.0}" \
  "${size[@]}" --num-frames "${FRAMES:-49}" -q "$OUT/data/eval.jsonl"

# 4. How likely the VLM gives each question its desired verdict on the generated videos.
stage "score vqa" "$OUT/scored.jsonl" \
  vidcli score --metric vqa --vlm "hf:$VLM" --frames "${NF:-10}" --summary "$OUT/summary.json" \
  "$OUT/generated.jsonl"
say "done: scores in $OUT/scored.jsonl, summary in $OUT/summary.json"
