#!/usr/bin/env bash
# The CamVid tables of docs/results.md (issue 8): scenarios 8-3, 8-1 and 5-1, overlapped, old
# classes labelled background in later steps, every method, one recipe, seed 0.
# CPU-sized: LR-ASPP MobileNetV3-Large from scratch; images at 160 px on their shorter side
# (aspect kept), 96 px square training crops; median-frequency class weights to the power 0.5;
# from-scratch training (step 0, every joint step) 30 epochs at lr 0.05, incremental steps 10
# epochs at lr 0.01; batch 8. Two lanes run side by side, one torch thread each; every
# from-scratch model is cached (keyed by its data and recipe) and shared by all runs that need it.
# Usage: experiments/camvid.sh [OUT_DIR]   (needs ../shared/datasets/camvid; ~75 min on 2 cores)
#        SEED=1 JOBS="8-1 mib|8-1 joint" experiments/camvid.sh OUT_DIR   (a chosen subset)
set -euo pipefail
cd "${ROOT:-$(dirname "$0")/..}"  # ROOT: run from another copy of the repository
DATA=${DATA:-../shared/datasets/camvid}
OUT=${1:-var/results/camvid}
SEED=${SEED:-0}
LANES=${LANES:-2}
STRATA=${STRATA:-.venv/bin/strata}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 DATA OUT SEED STRATA
export RECIPE="--protocol overlapped --model lraspp_mobilenet_v3_large --no-pretrained --image-size 160
  --crop-size 96 --class-balance 0.5 --base-epochs 30 --base-lr 0.05 --epochs 10 --lr 0.01 --batch-size 8
  --cache-dir var/exp/cache --quiet ${EXTRA:-}"

run() {  # "scenario method [extra options...]"
  set -- $1
  local extra="${*:3}"
  local name="$1_$2${extra:+_$(tr -d ' -' <<< "$extra")}_s${SEED}"  # e.g. 8-1_mib_batchnormfrozen_s0
  $STRATA experiment --data "$DATA" $RECIPE --seed "$SEED" --scenario "$1" --method "$2" "${@:3}" \
    --out "$OUT/$name.json" > "$OUT/$name.log" 2>&1 && echo "done $name" || echo "FAILED $name (see $OUT/$name.log)"
}
export -f run

# Ordered so that the long chain of from-scratch models (5-1 joint: 5, 6, ..., 11 classes) starts
# at once while the other lane trains the 8-class base; 8-1 and 8-3 joint then find theirs cached.
DEFAULT_JOBS="5-1 joint|8-1 ft|8-3 ft|8-1 mib|8-1 frozen-old|8-1 plop|8-1 ld|8-1 ef+ld|8-3 mib|8-3 frozen-old|8-3 plop|8-3 ld|8-3 ef+ld|5-1 ft|5-1 mib|5-1 frozen-old|5-1 plop|5-1 ld|5-1 ef+ld|8-1 joint|8-3 joint"
tr '|' '\n' <<< "${JOBS:-$DEFAULT_JOBS}" | xargs -P "$LANES" -I{} bash -c 'run "{}"'
