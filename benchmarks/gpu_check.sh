#!/usr/bin/env bash
# One device call: Triton kernel tests compiled on the GPU, then the launch-config sweep and the benchmark
# table. Logs go to $OUT (or ./gpu_logs). Usage: bash benchmarks/gpu_check.sh [sweep|tests|table ...]; sweep = config sweep + table
set -o pipefail
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
steps=${*:-sweep tests}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
for step in $steps; do
  case $step in
    tests) timeout 220 python -m pytest -q -x tests/test_triton_ops.py tests/test_gpu_ops.py 2>&1 | tail -25 | tee "$OUT/tests.log" ;;
    sweep) timeout 330 python benchmarks/bench_selective_scan.py --sweep 2>&1 | tee "$OUT/bench.log" ;;
    table) timeout 300 python benchmarks/bench_selective_scan.py 2>&1 | tee "$OUT/table.log" ;;
  esac
done
