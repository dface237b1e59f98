#!/usr/bin/env bash
# The GPU path in one go, on one GPU, in under 8 minutes, with no downloads:
#   1. the CUDA tests (pytest -m cuda: in-GPU cache batches, extraction under autocast + channels-last,
#      training and eval on the device);
#   2. benchmarks/gpu_check.py: extract-features with ViT-B-16 (random weights) on the shared clips
#      repeated to ~200 videos, one train-video epoch from a K400-sized cache in GPU memory
#      (VCS + transformer), eval of 20,000 videos x 12 views; one JSON of figures.
# Usage: benchmarks/gpu_check.sh [--dry-run] [--out FILE]   (--dry-run: same steps, tiny sizes, CPU)
# PYTHON selects the interpreter [python].
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DRY=()
OUT=gpu_check.json
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=(--dry-run) ;;
    --out) OUT=$2; shift ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --dry-run, --out FILE)" >&2; exit 2 ;;
  esac
  shift
done
echo "== pytest -m cuda" >&2
"$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda_paths.py >&2
PYTEST_RC=$?
echo "== figures -> $OUT" >&2
"$PYTHON" benchmarks/gpu_check.py "${DRY[@]}" --out "$OUT" --pytest-rc "$PYTEST_RC" || exit $?
exit "$PYTEST_RC"
