#!/usr/bin/env bash
# The CamVid results of docs/results.md: scenarios 8-3 and 8-1, overlapped, every method.
# CPU-sized: LR-ASPP MobileNetV3 from scratch at 96 px. Two queues run side by side, one torch
# thread each; the step-0 model is trained once and shared (strata experiment caches it).
# Usage: experiments/camvid.sh [OUT_DIR]   (needs ../shared/datasets/camvid)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets/camvid}
OUT=${1:-var/results/camvid}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
COMMON=(--data "$DATA" --protocol overlapped --model lraspp_mobilenet_v3_large --image-size 96
        --base-epochs 30 --base-lr 0.05 --epochs 10 --lr 0.01 --batch-size 8 --seed 0 --no-pretrained
        --cache-dir var/exp/cache --quiet)

run() {  # scenario method
  .venv/bin/strata experiment "${COMMON[@]}" --scenario "$1" --method "$2" --out "$OUT/$1_$2.json" \
    > "$OUT/$1_$2.log" 2>&1 && echo "done $1 $2" || echo "FAILED $1 $2 (see $OUT/$1_$2.log)"
}

run 8-3 ft  # trains and caches the shared step-0 model first
queue_a() { for m in ld le ef ef+ld ld+le mib joint; do run 8-3 "$m"; done; }
queue_b() { for m in ft ld le ef ef+ld ld+le mib joint; do run 8-1 "$m"; done; }
queue_a & queue_b & wait
