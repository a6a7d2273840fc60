#!/usr/bin/env bash
# Issue #15's GPU checks as one script for the GPU machine (the device tool: run ../shared/device/prepare.sh
# here first, then `run` with carry [".device"] and the command `. .device/env.sh && bash scripts/gpu_study.sh`).
#   1. the CUDA tests (tests/test_cuda.py: bf16, channels_last, data on the GPU, caches under bf16, OOM,
#      torch.compile, --parallel over GPUs where there are two);
#   2. bench speed on studies/speed-gpu.yaml: all 60,000 JPEG CIFAR-10 images at 224 px (lab recipe against one
#      bf16 forward pass, fine-tuning against model-only with and without compile, the prefix cache);
#   3. ablations.yaml's whole grid projected in GPU-hours from those measured rates.
# Everything lands in $OUT (the device tool brings it back) or reports/speed-gpu.
set -uo pipefail
out=${OUT:-reports/speed-gpu}
mkdir -p "$out"
data=${BENCH_DATA:-../shared/data/cifar10-jpeg.tar.gz}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -25 | tee "$out/cuda-tests.txt"
timeout 420 bench speed studies/speed-gpu.yaml --set data.path="$(realpath "$data")" --device cuda --out "$out" \
  2>&1 | tail -40 | tee "$out/speed-log.txt"
python3 scripts/project_hours.py ablations.yaml --speed "$out/speed.csv" 2>&1 | tee "$out/projection.txt"
