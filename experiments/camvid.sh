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

run() {  # scenario method [name suffix, extra options...]
  local name="$1_$2${3:+_$3}"
  .venv/bin/strata experiment "${COMMON[@]}" --scenario "$1" --method "$2" "${@:4}" --out "$OUT/$name.json" \
    > "$OUT/$name.log" 2>&1 && echo "done $name" || echo "FAILED $name (see $OUT/$name.log)"
}

# Variants beyond the protocol: the ILT authors kept old labels in new steps ("keep"); MiB's form
# of L'_D with a larger weight; MiB's classifier init is part of mib already.
extras() {
  for m in ft ld ef+ld mib; do run 8-3 "$m" keep --old-labels keep; done
  run 8-3 ld mibform10 --ld-form mib --lambda-d 10
  run 8-3 ef+ld mibform10 --ld-form mib --lambda-d 10
}

if [ "${EXTRAS_ONLY:-}" = 1 ]; then extras; exit; fi
run 8-3 ft  # trains and caches the shared step-0 model first
queue_a() { for m in ld le ef ef+ld ld+le mib joint; do run 8-3 "$m"; done; extras; }
queue_b() { for m in ft ld le ef ef+ld ld+le mib joint; do run 8-1 "$m"; done; }
queue_a & queue_b & wait
