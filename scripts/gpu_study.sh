#!/usr/bin/env bash
# The GPU checks as one device command (the device tool: run ../shared/device/prepare.sh here first, then `run`
# with carry [".device"], timeout_s 600 and the command `. .device/env.sh && bash scripts/gpu_study.sh`).
# Each part has its own time limit, and together they stay under one command's 600 s with the machine's start-up
# inside the 15 minutes; each part writes as it goes, so one cut short still returns what it measured:
#   tests  (150 s) tests/test_cuda.py, one line per test as it ends (per-test limit 60 s with pytest-timeout);
#   speed  (330 s) bench speed on studies/speed-gpu.yaml (60,000 JPEG CIFAR-10 images at 224 px), speed.csv and
#                  speed.md rewritten after every variant;
#   paper  (60 s)  studies/paper-cifar10.yaml's ResNet-20 for PAPER_EPOCHS epochs (8: 2,816 iterations) to time it;
#   then ablations.yaml and the paper study projected in GPU-hours from those rates (scripts/project_hours.py).
# PARTS="speed paper" (say) reruns only those parts in a retry. Everything lands in $OUT or reports/speed-gpu.
set -uo pipefail
out=${OUT:-reports/speed-gpu}
parts=${PARTS:-tests speed paper}
data=${BENCH_DATA:-../shared/data}/cifar10-jpeg.tar.gz
paper=${PAPER_STUDY:-studies/paper-cifar10.yaml}  # He et al.'s full recipe; timed on its first epochs
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv | tee "$out/gpu.txt"
git rev-parse HEAD > "$out/commit.txt" 2>/dev/null || true
has() { [[ " $parts " == *" $1 "* ]]; }

if has tests; then
  per_test=()
  python3 -c "import pytest_timeout" 2>/dev/null && per_test=(--timeout 60)
  timeout 150 python3 -m pytest -v -p no:cacheprovider "${per_test[@]}" tests/test_cuda.py > "$out/cuda-tests.txt" 2>&1
  echo "cuda tests: exit $? (124: cut at 150 s)"; grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" "$out/cuda-tests.txt" | tail -40
fi
if has speed; then
  timeout 330 python3 -m bench.cli speed studies/speed-gpu.yaml --set data.path="$(realpath "$data")" --device cuda \
    --out "$out" > "$out/speed-log.txt" 2>&1
  echo "speed: exit $? (124: cut at 330 s; speed.csv holds the variants that ended)"; tail -30 "$out/speed-log.txt"
fi
if has paper; then
  timeout 60 python3 -m bench.cli run "$paper" --only baseline --set data.path="$(realpath "$data")" \
    --set train.epochs="${PAPER_EPOCHS:-8}" --set train.schedule=constant --set 'train.milestones=[]' \
    --results "$out/paper-timing" --device cuda > "$out/paper-log.txt" 2>&1  # lr 0.1 throughout: the same work a step
  echo "paper timing: exit $? (124: cut at 60 s; history.csv holds the epochs that ended)"; tail -5 "$out/paper-log.txt"
  cat "$out"/paper-timing/runs/*/history.csv 2>/dev/null
fi
if [[ -f "$out/speed.csv" ]]; then
  timed=()
  compgen -G "$out/paper-timing/runs/*/history.csv" > /dev/null && timed=(--timed "$out/paper-timing")
  studies=(ablations.yaml "$paper")
  timeout 30 python3 scripts/project_hours.py "${studies[@]}" --speed "$out/speed.csv" "${timed[@]}" 2>&1 \
    | tee "$out/projection.txt"
fi
