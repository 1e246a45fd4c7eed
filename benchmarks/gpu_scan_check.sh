#!/usr/bin/env bash
# One device call for issue 9 (scan correctness at edge lengths, speed against attention and the exp floor, L split
# across programs). Logs go to $OUT (or ./gpu_logs); the tables are printed again at the end. ~4-5 min on an H200.
#   bash benchmarks/gpu_scan_check.sh
# (a) the GPU tests of the ops with every op buffer NaN-filled (SEQMAMBA_DEBUG_NAN_FILL=1);
# (b) the scan table (+ mamba_ssm when it is on PYTHONPATH), the split-L forward at (1, 256, 2^20), and the scan
#     against SDPA flash attention at (8, 12 heads, L, 64) causal for L = 1024..16384, each row with the forward's
#     share of its exp floor;
# (c) the interpreter tests of the ops, compiled on the GPU (as far as 45 s allow).
set -o pipefail
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 SEQMAMBA_DEBUG_NAN_FILL=1
start=$SECONDS
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

timeout 120 python -m pytest -m gpu tests/test_gpu_ops.py tests/test_triton_ops.py -q -rfE --durations=10 \
  > "$OUT/tests_gpu.log" 2>&1; echo "gpu tests exit $? (124 = timed out)" | tee -a "$OUT/tests_gpu.log"
tail -30 "$OUT/tests_gpu.log"

# The table runs without the NaN fill (it costs a launch per buffer).
SEQMAMBA_DEBUG_NAN_FILL=0 timeout 125 python benchmarks/bench_selective_scan.py --split-l --attention \
  > "$OUT/table.log" 2>&1; echo "table exit $? (124 = timed out)" | tee -a "$OUT/table.log"

timeout 45 python -m pytest tests/test_triton_ops.py tests/test_layer_norm.py -q -x -rfE \
  > "$OUT/tests_ops_compiled.log" 2>&1; echo "ops tests compiled on the GPU exit $? (124 = timed out)" \
  | tee -a "$OUT/tests_ops_compiled.log"

echo; echo "==== summary ($((SECONDS - start)) s) ===="
cat "$OUT/gpu.txt"
grep -E "passed|failed|error|exit" "$OUT/tests_gpu.log" | tail -3
grep -E "passed|failed|error|exit" "$OUT/tests_ops_compiled.log" | tail -3
grep -E "^GPU:|^split L|^scan \(|^\||^decode|^table exit" "$OUT/table.log"
