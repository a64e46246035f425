#!/usr/bin/env bash
# The GPU check in one go (under 8 minutes; every step has its own timeout):
#
#   1. setup        mlflow/hydra from the offline wheels in .whl/ when they are missing
#                   (docs/performance.md, "The GPU check": how to build that folder); what ran
#   2. bench        the shipped measuring step on the real networks (random weights) at
#                   N_SMALL vectors: fp32 and each switch, images/s and agreement with fp32
#   3. screen       a screening run on the device ...
#   4. select       ... a few of its vectors recorded (failed ones too) ...
#   5. verify       ... and re-measured: the exactness check, max |recorded r - re-measured r|
#   6. bench_large  fp32 and LARGE_SWITCHES at N_LARGE vectors, if the time left allows
#   7. compile      the torch.compile switch (minutes to compile), if the time left allows
#
# The report is $OUT/device_check.json (./device_check.json when OUT is unset), rewritten
# after every step, so a check cut short still reports what ran.
#
# Every size is an environment variable, so the same script runs on a CPU with tiny
# sizes (tests/test_device_check.py):
#   DEVICE=cpu MODELS=synthetic N_SMALL=2 N_LARGE=3 SCREEN_N=4 FIT_N=600 scripts/device_check.sh
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-real}              # real: StyleGAN-v9 + merged CNN, random weights | synthetic
N_SMALL=${N_SMALL:-200}             # vectors (x IMAGES edits) of the first benchmark
N_LARGE=${N_LARGE:-2000}            # vectors of the second, when time allows
IMAGES=${IMAGES:-50}                # edits per vector on the real networks (2..50)
SWITCHES=${SWITCHES:-bf16,fp16,channels_last,tf32,nondeterministic}
LARGE_SWITCHES=${LARGE_SWITCHES:-bf16}
SCREEN_N=${SCREEN_N:-40}            # vectors screened, then verified
SELECT=${SELECT:-[0,1,2]}           # cases recorded and re-measured
FIT_N=${FIT_N:-2000}                # faces sampled to fit the (SVM) directions of the screen
BUDGET_S=${BUDGET_S:-450}           # no step starts unless its timeout ends within this
COMPILE_STEP=${COMPILE_STEP:-auto}  # auto: the compile step on CUDA only | 1 | 0
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-.}
REPORT=${REPORT:-$OUT_DIR/device_check.json}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/ohlora-device-check.XXXXXX")}

if [ -z "${PYTHON:-}" ] && [ "$DEVICE" = cpu ] && [ -x "$ROOT/.venv/bin/python" ]; then
  PY=$ROOT/.venv/bin/python         # this checkout's environment, on a CPU-only machine
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}  # before CUDA starts
unset MLFLOW_TRACKING_URI           # the check's own store, under $WORK
export PYTHONUNBUFFERED=1

case "$MODELS" in
  real) MODEL_ARGS="generator=stylegan_v9 scorer=ohlora_cnn generator.allow_random_init=true scorer.allow_random_init=true" ;;
  synthetic) MODEL_ARGS="" ;;
  *) echo "device_check: MODELS must be real or synthetic, got $MODELS" >&2; exit 2 ;;
esac
STEPS=$WORK/steps
STORE=$WORK/store
COMMON="$MODEL_ARGS device=$DEVICE tracking.root=$STORE tracking.progress=false"
mkdir -p "$STEPS"
: > "$STEPS/ORDER"
START=$(date +%s)

cat > "$WORK/settings.json" <<JSON
{"device": "$DEVICE", "models": "$MODELS", "n_small": $N_SMALL, "n_large": $N_LARGE,
 "images": $IMAGES, "switches": "$SWITCHES", "large_switches": "$LARGE_SWITCHES",
 "screen_n": $SCREEN_N, "select": "$SELECT", "fit_n": $FIT_N, "budget_s": $BUDGET_S,
 "work": "$WORK", "cublas_workspace_config": "$CUBLAS_WORKSPACE_CONFIG"}
JSON

cat > "$WORK/probe.py" <<'PYTHON'
"""What the check runs on (environment.json); fails when a needed package is missing."""
import json
import os
import platform
import sys

import torch

info = {
    "python": platform.python_version(),
    "torch": torch.__version__,
    "cuda_available": torch.cuda.is_available(),
    "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "cpu_count": os.cpu_count(),
    "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
}
import hydra  # noqa: E402
import mlflow  # noqa: E402

import ohlora_eval  # noqa: E402,F401

info["mlflow"], info["hydra"] = mlflow.__version__, hydra.__version__
with open(sys.argv[1], "w") as fh:
    fh.write(json.dumps(info))
print(json.dumps(info))
PYTHON

report() {
  "$PY" -m ohlora_eval.bench.device_report "$WORK" "$REPORT" \
    || echo "device_check: could not write $REPORT" >&2
}

skip() {  # skip NAME REASON
  echo "$1" >> "$STEPS/ORDER"
  echo "$2" > "$STEPS/$1.skipped"
  echo "[device_check] $1: skipped ($2)" >&2
  report
}

step() {  # step NAME TIMEOUT_S COMMAND...: under its timeout if the budget allows, logged
  local name=$1 limit=$2 now t0
  shift 2
  now=$(( $(date +%s) - START ))
  if [ $(( now + limit )) -gt "$BUDGET_S" ]; then
    skip "$name" "not started: ${now}s spent and its ${limit}s timeout would pass BUDGET_S=${BUDGET_S}s"
    return 0
  fi
  echo "$name" >> "$STEPS/ORDER"
  echo "[device_check] $name (timeout ${limit}s) ..." >&2
  t0=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" > "$STEPS/$name.log" 2>&1
  echo $? > "$STEPS/$name.rc"
  awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f\n", (b - a) / 1e9 }' \
    > "$STEPS/$name.seconds"
  echo "[device_check] $name: exit $(cat "$STEPS/$name.rc")" >&2
  report
}

rc_of() { cat "$STEPS/$1.rc" 2>/dev/null || echo none; }

setup() {
  if ! "$PY" -c "import mlflow, hydra, omegaconf" 2>/dev/null; then
    if ! ls "$ROOT"/.whl/*.whl > /dev/null 2>&1; then
      echo "mlflow/hydra are missing and $ROOT/.whl has no wheels (docs/performance.md: The GPU check)"
      return 3
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" \
      "$ROOT"/.whl/*.whl || return 4
    echo "installed $(ls "$ROOT"/.whl/*.whl | wc -l) wheels into $WORK/site"
  fi
  PYTHONPATH="$WORK/site:$PYTHONPATH" "$PY" "$WORK/probe.py" "$WORK/environment.json"
}

bench() {  # bench OUTNAME VECTORS SWITCHES [EXTRA FLAG]
  local sizes=(--switch-real-vectors "$2" --switch-images "$IMAGES")
  if [ "$MODELS" = synthetic ]; then sizes=(--switch-vectors "$2" --fit-n "$FIT_N"); fi
  "$PY" -m ohlora_eval.bench --device "$DEVICE" --skip-synthetic --skip-real --skip-sweep --skip-scale \
    --switch-models "$MODELS" --switches "$3" "${sizes[@]}" ${4:+"$4"} --out "$WORK/$1.json"
}

screen() {
  # shellcheck disable=SC2086  # COMMON is a list of overrides
  "$PY" -m ohlora_eval $COMMON sampling.n_vectors="$SCREEN_N" review.page=false \
    directions.method=svm directions.grouped=false directions.n="$FIT_N" \
    tracking.grids.passed=0 tracking.grids.best=0
}

select_cases() {
  local run_id
  run_id=$(grep -oE 'run [0-9a-f]{32}( \([^)]*\))? in experiment' "$STEPS/screen.log" | head -1 | cut -d' ' -f2)
  if [ -z "$run_id" ]; then echo "no screening run id in the screen step's log"; return 5; fi
  # shellcheck disable=SC2086
  "$PY" -m ohlora_eval.select $COMMON run_id="$run_id" "cases=$SELECT" allow_failed=true \
    name=device-check
}

verify() {
  "$PY" -m ohlora_eval.verify model=device-check@final device="$DEVICE" \
    tracking.root="$STORE" tracking.progress=false
}

export -f setup bench screen select_cases verify
export PY ROOT WORK STEPS STORE DEVICE MODELS IMAGES FIT_N COMMON SCREEN_N SELECT

step setup 90 bash -c setup
if [ "$(rc_of setup)" != 0 ]; then
  for s in bench screen select verify bench_large compile; do skip "$s" "setup failed"; done
  echo "device_check: setup failed (see $REPORT)" >&2
  exit 1
fi
if [ -d "$WORK/site" ]; then export PYTHONPATH="$WORK/site:$PYTHONPATH"; fi

step bench 150 bash -c "bench bench_small $N_SMALL $SWITCHES"
step screen 150 bash -c screen
if [ "$(rc_of screen)" = 0 ]; then step select 60 bash -c select_cases
else skip select "the screen step did not finish"; fi
if [ "$(rc_of select)" = 0 ]; then step verify 120 bash -c verify
else skip verify "nothing was selected"; fi
step bench_large 150 bash -c "bench bench_large $N_LARGE $LARGE_SWITCHES"
if [ "$COMPILE_STEP" = 1 ] || { [ "$COMPILE_STEP" = auto ] && [ "$DEVICE" = cuda ]; }; then
  step compile 120 bash -c "bench bench_compile $N_SMALL compile --compile-on-cpu"
else
  skip compile "COMPILE_STEP=$COMPILE_STEP on $DEVICE (torch.compile on a CPU takes minutes)"
fi
echo "device_check: report $REPORT ($(( $(date +%s) - START ))s)" >&2
