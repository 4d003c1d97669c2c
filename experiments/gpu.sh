#!/usr/bin/env bash
# The GPU runs of docs/results.md (issue 8), made to fit one call of a lent GPU machine (one H200,
# 16 cores; its own python3 with PyTorch): everything at once, results in one archive.
#   A. CamVid 8-1 at full resolution (shorter side 360, 360 px crops) with DeepLabV3-MobileNetV3,
#      every method, seed 0;
#   B. the CPU recipe of experiments/camvid.sh (LR-ASPP, 160 px, 96 px crops) with seeds 0 and 1 for
#      mib, plop, frozen-old and joint on 8-3, 8-1 and 5-1: the spread over seeds;
#   C. bench/bench_train.py on CUDA.
# Usage (from the repository root, CamVid copied to var/camvid): bash experiments/gpu.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: experiments/gpu.sh OUT_DIR}
mkdir -p "$OUT/runs" "$OUT/full"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
PY=${PY:-python3}  # the GPU machine's own Python, which holds PyTorch
export DATA=${DATA:-var/camvid} STRATA="$PY -m services.cli.experiment"
DEVICE=${DEVICE:-cuda}
SMOKE_ARGS=${SMOKE_ARGS:-}  # e.g. "--limit-images 8 --base-epochs 1 --epochs 1" to try the script on a CPU
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$OUT/gpu.txt"

full() {  # A: full resolution, DeepLabV3-MobileNetV3; the base first, then every method at once
  local extra="--device $DEVICE $SMOKE_ARGS --workers 4 --model deeplabv3_mobilenet_v3_large --image-size 360 --crop-size 360"
  EXTRA="$extra" JOBS="8-1 ft" LANES=1 bash experiments/camvid.sh "$OUT/full"
  EXTRA="$extra" JOBS="8-1 joint|8-1 mib|8-1 plop|8-1 frozen-old|8-1 ld|8-1 ef+ld" LANES=6 \
    bash experiments/camvid.sh "$OUT/full"
}
seeds() {  # B: the CPU recipe, two seeds: the two bases first (so no two runs train the same one),
  # then the joint chain (the longest) and the methods
  local jobs="5-1 joint|8-1 mib|8-1 plop|8-1 frozen-old|8-3 mib|8-3 plop|8-3 frozen-old|5-1 mib|5-1 plop|5-1 frozen-old|8-1 joint|8-3 joint"
  for seed in 0 1; do
    (SEED=$seed EXTRA="--device $DEVICE $SMOKE_ARGS --workers 2" JOBS="8-3 ft|5-6 ft" LANES=2 bash experiments/camvid.sh "$OUT/runs"
     SEED=$seed EXTRA="--device $DEVICE $SMOKE_ARGS --workers 2" JOBS="$jobs" LANES=4 bash experiments/camvid.sh "$OUT/runs") &
  done
  wait
}
bench() {  # C
  [ -n "$SMOKE_ARGS" ] && return  # a smoke run on a CPU skips the benchmark
  $PY bench/bench_train.py --device "$DEVICE" --model deeplabv3_mobilenet_v3_large --image-size 512 --batch-size 8 \
    --methods ld,le,ld+le,mib,plop,frozen-old --repeats 3 > "$OUT/bench_train_cuda.txt" 2>&1
}
started=$(date +%s)
full > "$OUT/full.txt" 2>&1 &
seeds > "$OUT/seeds.txt" 2>&1 &
wait
bench
echo "all done in $(( $(date +%s) - started )) s" | tee -a "$OUT/gpu.txt"
