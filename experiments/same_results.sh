#!/usr/bin/env bash
# Do two revisions train and score the same? Runs a small CamVid experiment per method on each
# revision's code (git worktrees, this checkout's .venv) and compares the result JSON, every IoU
# and loss, ignoring wall times. For refactors that must not change what is learnt.
# Usage: experiments/same_results.sh REV_A [REV_B=HEAD] [METHODS="mib ld joint"]
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?usage: experiments/same_results.sh REV_A [REV_B] [METHODS]}
B=${2:-HEAD}
METHODS=${3:-mib ld joint}
DATA=${DATA:-../shared/datasets/camvid}
PY=$PWD/.venv/bin/python
DATA=$(cd "$DATA" && pwd)
WORK=$(mktemp -d)
trap 'git worktree remove --force "$WORK/a" 2>/dev/null; git worktree remove --force "$WORK/b" 2>/dev/null; rm -rf "$WORK"' EXIT
git worktree add -q --detach "$WORK/a" "$A"
git worktree add -q --detach "$WORK/b" "$B"
mkdir -p "$WORK/out-a" "$WORK/out-b"

run() {  # checkout out method
  (cd "$1" && OMP_NUM_THREADS=1 PYTHONPATH="$1" "$PY" -m services.cli.main experiment --data "$DATA" --scenario 8-3 \
     --protocol overlapped --method "$3" --model lraspp_mobilenet_v3_large --image-size 96 --base-epochs 6 \
     --base-lr 0.05 --epochs 4 --lr 0.01 --batch-size 8 --seed 0 --no-pretrained --limit-images 96 \
     --cache-dir "$2/cache" --device cpu --quiet --out "$2/$3.json" > "$2/$3.log" 2>&1)
}
for m in $METHODS; do
  run "$WORK/a" "$WORK/out-a" "$m" & run "$WORK/b" "$WORK/out-b" "$m"; wait
done
"$PY" - "$WORK" $METHODS <<'PY'
import json, sys
work, methods, same = sys.argv[1], sys.argv[2:], True
for m in methods:
    a, b = (json.load(open(f"{work}/out-{s}/{m}.json")) for s in "ab")
    for r in (a, b):
        for step in r["steps"]:
            step["training"].pop("seconds")
    same &= a == b
    mious = " ".join(f"step {s['step']}: old/new/all " + "/".join("-" if s[k] is None else f"{100 * s[k]:.1f}"
                     for k in ("miou_old", "miou_new", "miou_all")) for s in b["steps"])
    print(f"{m:6} {'identical' if a == b else 'DIFFERENT'}  ({mious})")
sys.exit(0 if same else 1)
PY
