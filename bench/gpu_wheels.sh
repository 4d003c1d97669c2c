#!/usr/bin/env bash
# Here, before bench/gpu.sh runs on a lent GPU machine: download the wheels of the API's packages that
# the machine's image lacks (it has PyTorch, torchvision, numpy, pillow, httpx, anyio, h11, click, ...
# but no FastAPI, pydantic, SQLAlchemy, Celery; and nothing can be downloaded there), for its Python
# (3.12, x86-64), at the versions installed in this checkout's .venv, into .whl/ (ignored by git).
# Part (d) of bench/gpu.sh (/segment on the GPU) needs them; parts (a)-(c) do not.
#   bash bench/gpu_wheels.sh            # then the device call carries .whl (see bench/gpu.sh)
# DEVICE_PYTHON=3.13 bash bench/gpu_wheels.sh   if the machine's python3 is another version.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}
# What the API process and bench_segment's set-up (migrations, keys, the store) import is NAMES (downloaded)
# plus DEVICE_HAS (the GPU machine's image holds them: the device tool's package list, read 2026-11);
# tests/bench/test_gpu_bench.py holds the two lists to the imports of this checkout.
# shellcheck disable=SC2034  # read by the test, not here
DEVICE_HAS=(
  torch torchvision triton cuda-bindings cuda-pathfinder numpy pillow onnx onnxruntime protobuf ml-dtypes sympy
  mpmath httpx anyio h11 idna certifi click markupsafe pyyaml prometheus-client python-dateutil six
  typing-extensions urllib3 tqdm rich pygments setuptools
)
NAMES=(
  fastapi starlette annotated-doc opentelemetry-api uvicorn python-multipart
  pydantic pydantic_core pydantic-settings annotated-types typing-inspection python-dotenv
  SQLAlchemy greenlet alembic Mako
  celery kombu amqp billiard vine tzlocal
  argon2-cffi argon2-cffi-bindings cffi pycparser
  minio pycryptodome pycocotools defusedxml ujson
)
mkdir -p .git/info .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
specs=$("$PY" - "${NAMES[@]}" <<'EOF'
import importlib.metadata as md
import sys

print(" ".join(f"{name}=={md.version(name)}" for name in sys.argv[1:]))
EOF
)
rm -f .whl/*.whl  # one version of each: two would stop the install there
platforms=()
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl $specs
ls .whl/*.whl | wc -l | xargs echo "bench/gpu_wheels.sh: wheels in .whl:"
du -sh .whl
