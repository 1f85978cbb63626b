#!/usr/bin/env bash
# The GPU check of issue 21, for one lent GPU machine (under 8 minutes on an H200):
#   1. training and prediction images/s of EfficientNet-Lite0 and Lite2 (benchmarks/gpu_speed.py);
#   2. the default recipe's 10 epochs on HAM10000 on the GPU (bf16, 14 loader workers), its
#      wall time and its lesion-grouped hold-out figures.
# Prepare here first: .venv/bin/python benchmarks/gpu_prepare.py   (writes .gpu/, git-ignored)
# Then, with the device tool: command "bash benchmarks/gpu_check.sh", carry [".gpu"],
# timeout_s 540. What comes back under $OUT: gpu.txt, speed.txt, train.txt, metrics.json,
# history.csv.
# GPU_CHECK_SMOKE=1 runs it on this machine's CPU with tiny sizes (to try the script), and
# GPU_CHECK_DATA=DIR trains on another dataset than .gpu/data/ham10000.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
PY=${PY:-python3}
if [ ! -d .gpu ]; then echo "no .gpu/: run benchmarks/gpu_prepare.py first" >&2; exit 2; fi
if [ -z "${GPU_CHECK_SMOKE:-}" ]; then
  $PY -m pip install --quiet --no-index --no-deps --target .gpu/site .gpu/wheels/*.whl
  export PYTHONPATH="$PWD/src:$PWD/.gpu/site"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
  SPEED_ARGS=(--workers 14) ; TRAIN_ARGS=(--device cuda --precision bf16-mixed --num-workers 14)
else
  SPEED_ARGS=(--smoke) ; TRAIN_ARGS=(--device cpu --epochs 1 --image-size 64 --num-workers 0)
fi
export PYTHONUNBUFFERED=1
$PY -c "import torch, timm, lightning; print('torch', torch.__version__, 'timm', timm.__version__,
'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
$PY benchmarks/gpu_speed.py --weights-dir .gpu/weights --data "${GPU_CHECK_DATA:-.gpu/data/ham10000}" \
  "${SPEED_ARGS[@]}" 2>&1 | tee "$OUT/speed.txt"
DATA=${GPU_CHECK_DATA:-.gpu/data/ham10000}
RUN=$(mktemp -d)/ham-default
start=$(date +%s)
$PY -m dermlearn.cli train "$DATA" --out "$RUN" --quiet \
  --weights .gpu/weights/efficientnet_lite0.safetensors "${TRAIN_ARGS[@]}" 2>&1 | tee "$OUT/train.txt"
echo "wall: $(( $(date +%s) - start )) s (training, calibration and the OOD fit)" | tee -a "$OUT/train.txt"
cp "$RUN/metrics.json" "$RUN/history.csv" "$OUT/" 2>/dev/null
echo "results in $OUT"
