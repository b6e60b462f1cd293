#!/usr/bin/env bash
# ReaDe end to end: key-info → CoT data → camera pre-training → CoT SFT → GRPO → interpret → score.
#
#   TINY=1 bash recipes/reade.sh                      # a few minutes on CPU, offline (tiny models)
#   REQUESTS=data/train.jsonl EVAL=data/test.jsonl CAMERA_DATA=data/re10k-captions.jsonl \
#   LLM=openai:gpt-4o JUDGE=openai:Qwen3-30B-A3B-Instruct JUDGE_BASE_URL=http://judge:8000/v1 \
#   LAUNCH="accelerate launch --num_processes 8 -m vidcli" bash recipes/reade.sh
#
# Every stage is skipped when its output is complete and resumed when it was interrupted,
# so rerunning the recipe after a crash continues where it stopped.
#
# Environment (defaults in brackets):
#   OUT           output folder [runs/reade]
#   REQUESTS      training requests {instruction, conditions, gold} [examples/requests.jsonl]
#   RL_REQUESTS   GRPO requests (need gold for key-info) [$REQUESTS]
#   EVAL          test requests with gold [$REQUESTS]
#   EXCLUDE       evaluation set whose instructions are kept out of the CoT data [none]
#   CAMERA_DATA   camera-to-text pairs for the encoder {conditions:[{type:camera,path}], caption}
#                 [examples/camera_captions.jsonl]
#   BASE_MODEL    interpreter to start from [Qwen/Qwen2.5-Omni-7B]
#   LLM           teacher for key-info and CoT steps 1, 3, 4 [openai:gpt-4o]
#   VLM           describes the image and video conditions (CoT step 2, and the key-info's S) [$LLM]
#   JUDGE         coverage judge of the GRPO reward and of scoring: openai:MODEL, hf:PATH, or
#                 embed (offline matcher) [openai:Qwen3-30B-A3B-Instruct]
#   JUDGE_MODE    number (the paper's: one coverage number per element set) | elements [number]
#   JUDGE_BASE_URL endpoint of an openai: judge [$OPENAI_BASE_URL]
#   FINETUNE      sft and grpo weights: full | lora | qlora [full; with lora, raise GRPO_LR]
#   GENERATOR     optional text-to-video checkpoint: interpreted prompts are rendered with
#                 `vidcli generate` into $OUT/generated.videos/ [none]
#   FEEDBACK_GENERATOR  optional text-to-video checkpoint for GRPO's generator-in-the-loop
#                 reward (`grpo --reward video-feedback`, scored by FEEDBACK_VLM) [none: off]
#   FEEDBACK_VLM  the frozen VLM of that reward [Qwen/Qwen2.5-VL-7B-Instruct]
#   VIDEO_WEIGHT  weight of that reward [1.0]
#   LAUNCH        how training commands run [vidcli]
# Paper hyper-parameters (SPEC §4-5) are the flag defaults; the ones below can be changed:
#   SFT_LR [1e-5]  SFT_BATCH [6]  SFT_ACCUM [2]  SFT_WARMUP [200]  SFT_EPOCHS [1]
#   GRPO_LR [2.5e-6; paper per condition: identity 2.5e-6, depth 1.5e-6, camera 1.5e-6, pose 1e-6]
#   G [8]  GRPO_BATCH [1]  GRPO_ACCUM [2]  GRPO_WARMUP [50]  BETA [0.001]  EPSILON [0.2]
#   MAX_COMPLETION [768]  GRPO_STEPS [one epoch]
set -euo pipefail
RECIPE=reade
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT="${OUT:-runs/reade}"
REQUESTS="${REQUESTS:-$EXAMPLES_DIR/requests.jsonl}"
RL_REQUESTS="${RL_REQUESTS:-$REQUESTS}"
EVAL="${EVAL:-$REQUESTS}"
CAMERA_DATA="${CAMERA_DATA:-$EXAMPLES_DIR/camera_captions.jsonl}"

tiny=()        # extra flags of the training and inference stages in TINY mode
data_tiny=()   # extra flags of make-cot in TINY mode
dec_tiny=()    # extra flags of decompose in TINY mode
if [ "${TINY:-0}" = 1 ]; then
  tiny_setup
  BASE_MODEL="${BASE_MODEL:-$TINY_VLM}"
  JUDGE="${JUDGE:-openai:teacher}"
  JUDGE_MODE="${JUDGE_MODE:-elements}"
  SFT_BATCH="${SFT_BATCH:-2}"; SFT_ACCUM="${SFT_ACCUM:-1}"; SFT_WARMUP="${SFT_WARMUP:-1}"; SFT_LR="${SFT_LR:-1e-4}"
  G="${G:-2}"; GRPO_ACCUM="${GRPO_ACCUM:-1}"; GRPO_WARMUP="${GRPO_WARMUP:-1}"; MAX_COMPLETION="${MAX_COMPLETION:-24}"
  GRPO_STEPS="${GRPO_STEPS:-2}"
  tiny=(--video-frames 4 --save-every 0)
  data_tiny=(--frames 4 --dedup-embedder none)
  dec_tiny=(--frames 4)
fi
BASE_MODEL="${BASE_MODEL:-Qwen/Qwen2.5-Omni-7B}"
LLM="${LLM:-openai:gpt-4o}"
VLM="${VLM:-$LLM}"
JUDGE="${JUDGE:-openai:Qwen3-30B-A3B-Instruct}"
JUDGE_MODE="${JUDGE_MODE:-number}"
JUDGE_BASE_URL="${JUDGE_BASE_URL:-${OPENAI_BASE_URL:-}}"
judge=(--judge "$JUDGE")         # grpo's reward
score_judge=(--judge "$JUDGE")   # the evaluation
if [ "$JUDGE" != embed ]; then
  judge+=(--judge-mode "$JUDGE_MODE"); score_judge+=(--judge-mode "$JUDGE_MODE")
  [ -n "$JUDGE_BASE_URL" ] && judge+=(--judge-base-url "$JUDGE_BASE_URL") && score_judge+=(--base-url "$JUDGE_BASE_URL")
fi
exclude=()
[ -n "${EXCLUDE:-}" ] && exclude=(--exclude "$EXCLUDE")
feedback=()
if [ -n "${FEEDBACK_GENERATOR:-}" ]; then
  feedback=(--reward video-feedback --generator "$FEEDBACK_GENERATOR"
            --vlm "hf:${FEEDBACK_VLM:-Qwen/Qwen2.5-VL-7B-Instruct}" --video-weight "${VIDEO_WEIGHT:-1.0}")
fi
grpo_steps=()
[ -n "${GRPO_STEPS:-}" ] && grpo_steps=(--max-steps "$GRPO_STEPS")

# 1. Key-info (U/S/Z) of the RL and test requests: what the GRPO reward and the score check.
#    S is extracted from descriptions of the conditions (the VLM's, and the trajectories' own words).
stage "decompose (reade, RL requests)" "$OUT/data/rl.jsonl" \
  vidcli decompose --schema reade --llm "$LLM" --vlm "$VLM" "${dec_tiny[@]}" -q "$RL_REQUESTS"
stage "decompose (reade, test requests)" "$OUT/data/eval.jsonl" \
  vidcli decompose --schema reade --llm "$LLM" --vlm "$VLM" "${dec_tiny[@]}" -q "$EVAL"

# 2. Four-step CoT training data.
stage "make-cot" "$OUT/data/cot.jsonl" \
  vidcli make-cot --llm "$LLM" --vlm "$VLM" "${exclude[@]}" "${data_tiny[@]}" -q "$REQUESTS"

# 3. Stage 1a: the camera encoder alone, on camera-to-text pairs.
train "sft --stage camera" "$OUT/camera" \
  sft --stage camera --model "$BASE_MODEL" --lr "${SFT_LR:-1e-5}" --batch-size "${SFT_BATCH:-6}" \
  --grad-accum "${SFT_ACCUM:-2}" --warmup-steps "${SFT_WARMUP:-200}" "${tiny[@]}" -q "$CAMERA_DATA"

# 4. Stage 1b: CoT SFT (instruction dropout 0.4, assistant-only loss).
train "sft --stage cot" "$OUT/sft" \
  sft --model "$OUT/camera" --finetune "${FINETUNE:-full}" --lr "${SFT_LR:-1e-5}" \
  --batch-size "${SFT_BATCH:-6}" --grad-accum "${SFT_ACCUM:-2}" --warmup-steps "${SFT_WARMUP:-200}" \
  --epochs "${SFT_EPOCHS:-1}" "${tiny[@]}" -q "$OUT/data/cot.jsonl"

# 5. Stage 2: GRPO with the multi-dimensional reward.
train "grpo" "$OUT/grpo" \
  grpo --model "$OUT/sft" --finetune "${FINETUNE:-full}" "${judge[@]}" -G "${G:-8}" \
  --lr "${GRPO_LR:-2.5e-6}" --batch-size "${GRPO_BATCH:-1}" --grad-accum "${GRPO_ACCUM:-2}" \
  --warmup-steps "${GRPO_WARMUP:-50}" --beta "${BETA:-0.001}" --epsilon "${EPSILON:-0.2}" \
  --max-completion-tokens "${MAX_COMPLETION:-768}" "${feedback[@]}" "${grpo_steps[@]}" "${tiny[@]}" -q \
  "$OUT/data/rl.jsonl"

# 6. Inference on the test requests, then their scores.
interp=()
[ "${TINY:-0}" = 1 ] && interp=(--max-new-tokens "$MAX_COMPLETION" --frames 4)
stage "interpret" "$OUT/interpreted.jsonl" \
  vidcli interpret --model "$OUT/grpo" "${interp[@]}" -q --input "$OUT/data/eval.jsonl"
stage "score" "$OUT/scored.jsonl" \
  vidcli score --metric format,coverage,reward "${score_judge[@]}" --by conditions.type \
  --summary "$OUT/summary.json" "$OUT/interpreted.jsonl"

# 7. Optional: render the prompts (interpret | generate | score).
if [ -n "${GENERATOR:-}" ]; then
  stage "generate" "$OUT/generated.jsonl" \
    vidcli generate --model "$GENERATOR" -q "$OUT/interpreted.jsonl"
fi
say "done: scores in $OUT/scored.jsonl, summary in $OUT/summary.json"
