#!/usr/bin/env bash
# One device call that re-verifies the GPU side: Triton kernels and models compiled and tested on the GPU, then
# the benchmark tables. Logs go to $OUT (or ./gpu_logs).
#   bash benchmarks/gpu_check.sh            # = tests table
#   bash benchmarks/gpu_check.sh all        # tests table block layer generation (~5 min on an H100)
#   steps: tests | sweep (tile sweep + table) | table | block | layer | generation
set -o pipefail
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
# A mamba_ssm build on PYTHONPATH (e.g. PYTHONPATH=.anchor, an ignored folder) is measured beside ours.
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
steps=${*:-tests table}
[ "$steps" = all ] && steps="tests table block layer generation"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
for step in $steps; do
  case $step in
    tests) timeout 240 python -m pytest -q -x tests/test_triton_ops.py tests/test_gpu_ops.py tests/test_generation.py \
             tests/test_layer_norm.py tests/test_mamba_lm.py 2>&1 | tail -25 | tee "$OUT/tests.log" ;;
    sweep) timeout 330 python benchmarks/bench_selective_scan.py --sweep 2>&1 | tee "$OUT/bench.log" ;;
    table) timeout 420 python benchmarks/bench_selective_scan.py 2>&1 | tee "$OUT/table.log" ;;
    block) timeout 150 python benchmarks/bench_selective_scan.py --layout block 2>&1 | tee "$OUT/block.log" ;;
    layer) timeout 120 python benchmarks/bench_mamba_layer_layout.py 2>&1 | tee "$OUT/layer.log" ;;
    generation) timeout 150 python benchmarks/bench_generation.py 2>&1 | tee "$OUT/generation.log" ;;
    *) echo "unknown step: $step" >&2; exit 2 ;;
  esac
done
