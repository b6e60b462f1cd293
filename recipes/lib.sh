# Shared helpers of the recipes (sourced, not run). Each recipe sets `set -euo pipefail` first.
#
#   stage NAME OUTPUT COMMAND...   run a data stage unless OUTPUT is done: a data stage writes
#                                  OUTPUT.partial and publishes OUTPUT with OUTPUT.vidcli.json
#                                  (command, settings, input sha256) only when every record is
#                                  accounted for. Done = both there and the inputs unchanged;
#                                  an interrupted or failed run resumes from OUTPUT.partial
#                                  (the COMMAND gets --resume); a changed input starts afresh.
#   train NAME RUN_DIR COMMAND...  run a training stage unless RUN_DIR holds its final model
#                                  (RUN_DIR/vidcli.json, written last) made from unchanged
#                                  inputs; otherwise start or continue from the newest
#                                  complete checkpoint (--resume). A final model whose
#                                  inputs changed stops the recipe (move it aside to retrain).
#   tiny_setup                     TINY=1: build the tiny-model kit and start the offline
#                                  teacher server; sets TINY_LLM, TINY_VLM, TINY_WAN and
#                                  TEACHER_URL, points openai: backends at the teacher
#                                  (OPENAI_BASE_URL) and makes it the default LLM; its
#                                  replies are cached under one name (VIDCLI_CACHE_ENDPOINT).
#
# Training commands run through $LAUNCH, "vidcli" by default. For many GPUs:
#   LAUNCH="accelerate launch --num_processes 8 -m vidcli" bash recipes/NAME.sh
# (your accelerate config chooses DDP, FSDP or DeepSpeed; see README "Many GPUs").
# REPORT_TO=tensorboard (or wandb, or tensorboard,wandb) sends every training stage's scalars and
# media to those trackers, under RUN_DIR/logs (pip install -e ".[tracking]").

RECIPES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$RECIPES_DIR")"
EXAMPLES_DIR="$REPO_DIR/examples"
PYTHON="${PYTHON:-python}"
LAUNCH="${LAUNCH:-vidcli}"

say() { echo "[$RECIPE] $*" >&2; }

# done, resume, fresh or stale (see vidcli/provenance.py); the reason goes to stderr.
stage_state() { "$PYTHON" -m vidcli.provenance state "$1" 2>/dev/null; }

stage() {
  local name="$1" output="$2" state; shift 2
  state="$(stage_state "$output")"
  if [ "$state" = done ]; then
    say "$name: done already ($output)"
    return 0
  fi
  say "$name -> $output"
  mkdir -p "$(dirname "$output")"
  if [ "$state" = resume ]; then
    "$@" --resume -o "$output"
  else
    "$@" -o "$output"
  fi
}

train() {  # COMMAND without "vidcli": it runs as $LAUNCH COMMAND...
  local name="$1" run_dir="$2" state; shift 2
  state="$(stage_state "$run_dir")"
  if [ "$state" = done ]; then
    say "$name: done already ($run_dir)"
    return 0
  fi
  if [ "$state" = stale ]; then
    say "$name: $("$PYTHON" -m vidcli.provenance state "$run_dir" 2>&1 >/dev/null)"
    exit 1
  fi
  say "$name -> $run_dir"
  # shellcheck disable=SC2086 # LAUNCH is a command line on purpose
  $LAUNCH "$@" --resume -o "$run_dir" ${REPORT_TO:+--report-to "$REPORT_TO"}
}

# A JSONL file's records whose FIELD equals VALUE (e.g. the test split of triplets).
select_records() {
  "$PYTHON" -c '
import json, sys
field, value = sys.argv[1], sys.argv[2]
for line in open(sys.argv[3], encoding="utf-8"):
    if line.strip() and str(json.loads(line).get(field)) == value:
        sys.stdout.write(line)
' "$1" "$2" "$3"
}

tiny_setup() {
  local kit
  kit="$("$PYTHON" -m vidcli.testing tiny-models --only llm,vlm,wan)"   # built once, then cached
  TINY_LLM="$(awk '$1 == "llm" {print $2}' <<<"$kit")"
  TINY_VLM="$(awk '$1 == "vlm" {print $2}' <<<"$kit")"
  TINY_WAN="$(awk '$1 == "wan" {print $2}' <<<"$kit")"
  say "TINY=1: tiny random-weight models and an offline rule-based teacher server."
  say "TINY=1: every stage runs for real, but no number it prints means anything."
  local url_file="$OUT/.teacher.$$.url"   # per run: an earlier teacher's exit cannot remove it
  mkdir -p "$OUT"
  "$PYTHON" -m vidcli.testing teacher --url-file "$url_file" > "$OUT/teacher.log" 2>&1 &
  TEACHER_PID=$!
  trap 'kill "$TEACHER_PID" 2>/dev/null && wait "$TEACHER_PID" 2>/dev/null || true' EXIT
  local waited=0
  until [ -s "$url_file" ]; do
    if ! kill -0 "$TEACHER_PID" 2>/dev/null || [ "$waited" -ge 600 ]; then
      say "the teacher server did not start; see $OUT/teacher.log"; exit 1
    fi
    sleep 0.1; waited=$((waited + 1))
  done
  TEACHER_URL="$(cat "$url_file")"
  export TINY_LLM TINY_VLM TINY_WAN TEACHER_URL
  export OPENAI_BASE_URL="$TEACHER_URL" OPENAI_API_KEY="${OPENAI_API_KEY:-unused}"
  # The teacher gets a new port every run but answers alike: its replies share cache entries.
  export VIDCLI_CACHE_ENDPOINT="vidcli-testing-teacher"
  LLM="${LLM:-openai:teacher}"
}
