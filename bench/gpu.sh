#!/usr/bin/env bash
# The GPU figures of issue 14 (bench/bench_gpu.py: (a) train images/s fp32 vs bf16 + channels_last per
# architecture, (b) the teacher's overhead, (c) the data pipeline against preloaded tensors with the
# GPU's utilisation, (d) /segment with dynamic batching, (e) peak memory) in one call of a lent GPU
# machine, under 8 minutes with the install. Its python3 holds PyTorch; the API's packages for (d)
# come as wheels (bench/gpu_wheels.sh, run here first). Results land in $OUT (the device tool's
# folder), or BENCH_OUT, or a new temporary folder: gpu.md, gpu.json, gpu.log, env.txt, segment-*.json.
#
#   bash bench/gpu_wheels.sh                       # here, once: .whl/ (ignored by git)
#   device run: command "bash bench/gpu.sh", carry [".whl"], timeout_s 560
#   bash bench/gpu.sh --smoke                      # here: every part on tiny sizes on the CPU (~3 min)
#
# Extra arguments go to bench_gpu.py (e.g. --parts train,teacher --budget train=200).
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
OUT=${BENCH_OUT:-${OUT:-$(mktemp -d /tmp/strata-gpu-XXXXXX)}}
mkdir -p "$OUT"
if [ -z "${PY:-}" ]; then  # this checkout's venv where there is one (a developer's machine), else python3
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
# The python process stops here at the latest (each part also has its own budget inside): with the
# install and start-up, the call ends inside 8 minutes and the tool's 10-minute limit.
LIMIT_S=${LIMIT_S:-440}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
{
  date -u
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  echo "cpus $(nproc); /dev/shm (the loader workers' batches): $(df -h /dev/shm 2>/dev/null | awk 'NR==2 {print $2}')"
  "$PY" -c "import sys, torch, torchvision; print(sys.version.split()[0], 'torch', torch.__version__,
'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
} > "$OUT/env.txt" 2>&1

api_ok() { "$PY" -c "import fastapi, uvicorn, sqlalchemy, alembic, pydantic_settings, celery, minio, api.main" 2>>"$OUT/env.txt"; }
if ! api_ok; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    # Installed beside the image's packages, not over them; PYTHONPATH reaches the API subprocess too.
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/strata-site \
        .whl/*.whl >>"$OUT/env.txt" 2>&1; then
      export PYTHONPATH=$PWD:/tmp/strata-site
    fi
  fi
  if api_ok; then echo "the API's packages: installed from .whl" >> "$OUT/env.txt"
  else echo "the API's packages: missing (run bench/gpu_wheels.sh here and carry .whl): part (d) will fail" \
    | tee -a "$OUT/env.txt"; fi
fi
echo "set-up took $(( $(date +%s) - started )) s" | tee -a "$OUT/env.txt"

timeout -k 15 "$LIMIT_S" "$PY" bench/bench_gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu.log"
code=${PIPESTATUS[0]}
[ "$code" = 124 ] && echo "bench/gpu.sh: stopped after $LIMIT_S s; gpu.md holds what was measured" | tee -a "$OUT/gpu.log"
echo "bench/gpu.sh: exit $code after $(( $(date +%s) - started )) s; results in $OUT" | tee -a "$OUT/gpu.log"
exit "$code"
