# Throwaway device script (this session): the lanes forward's timing (forward, forward + backward, the 130M prefill)
# and its GPU tests.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p .anchor/build && xz -dc .anchor/selective_scan_cuda.so.xz > .anchor/build/selective_scan_cuda.so
export PYTHONPATH=.:.anchor/src:.anchor/build:/tmp/site PYTHONUNBUFFERED=1
R=$OUT; export OUT=$R/w; mkdir -p $OUT
timeout 240 python benchmarks/bench_scan_forward_configs.py --train --configs default lanes \
  --shapes 8x1536x4096 16x2048x2048 32x1536x2048 64x1536x2048 64x128x4112 8x1536x16384 --json $OUT/lanes.json 2>&1 | tee $OUT/lanes.log | grep -v "^  "
for cfg in "" "lanes=1"; do
  SEQMAMBA_SCAN_FWD_CONFIG="$cfg" timeout 100 python benchmarks/bench_generation.py --sizes 130m --batch-sizes 64 --cg-prefill \
    --repeats 2 2>&1 | tail -4 | tee -a $OUT/prefill.log; done
timeout 200 python -m pytest -q -x -m gpu tests/test_gpu_ops.py -k "lanes" 2>&1 | tail -4 | tee $OUT/lanestests.log
tar czf $R/logs.tgz -C $OUT .
