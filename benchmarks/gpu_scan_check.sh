#!/usr/bin/env bash
# One device call for issue 9 (scan correctness at edge lengths, speed against attention and the exp floor, L split
# across programs). Logs go to $OUT (or ./gpu_logs); the tables are printed again at the end. Under 5 min on an H200.
#   bash benchmarks/gpu_scan_check.sh
#   PYTHONPATH=<mamba_ssm build> bash benchmarks/gpu_scan_check.sh    # mamba_ssm timed beside ours
# (a) the GPU tests of the ops with every op buffer NaN-filled (SEQMAMBA_DEBUG_NAN_FILL=1);
# (b) the split-L forward at (1, 256, 2^20) against one pass, and the scan at (8, 1536, L) against SDPA flash
#     attention at (8, 12 heads, L, 64) causal for L = 1024..16384, each row with the forward's share of its exp
#     floor; then the scan table (with mamba_ssm when importable), also with the exp-floor share per row.
set -o pipefail
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 SEQMAMBA_DEBUG_NAN_FILL=1
start=$SECONDS
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"

timeout 120 python -m pytest -m gpu tests/test_gpu_ops.py tests/test_triton_ops.py -q -rfE --durations=10 \
  > "$OUT/tests_gpu.log" 2>&1; echo "gpu tests exit $? (124 = timed out)" | tee -a "$OUT/tests_gpu.log"
tail -25 "$OUT/tests_gpu.log"

# Timings without the NaN fill (it costs a launch per buffer).
SEQMAMBA_DEBUG_NAN_FILL=0 timeout 60 python benchmarks/bench_selective_scan.py --extras-only --split-l --attention \
  > "$OUT/extras.log" 2>&1; echo "split-L + attention exit $? (124 = timed out)" | tee -a "$OUT/extras.log"
SEQMAMBA_DEBUG_NAN_FILL=0 timeout 105 python benchmarks/bench_selective_scan.py > "$OUT/table.log" 2>&1
echo "table exit $? (124 = timed out)" | tee -a "$OUT/table.log"

echo; echo "==== summary ($((SECONDS - start)) s) ===="
cat "$OUT/gpu.txt"
grep -E " passed| failed|error|exit" "$OUT/tests_gpu.log" | tail -3
grep -E "^GPU:|^split L|^scan \(|^\||^decode|exit" "$OUT/extras.log" "$OUT/table.log" | sed 's/^[^:]*log://'
