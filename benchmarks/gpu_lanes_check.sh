# Throwaway device script (this session): the lanes forward's timing and GPU tests, then gpu_check.sh normstep.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p .anchor/build && xz -dc .anchor/selective_scan_cuda.so.xz > .anchor/build/selective_scan_cuda.so
export PYTHONPATH=.:.anchor/src:.anchor/build:/tmp/site PYTHONUNBUFFERED=1
R=$OUT; export OUT=$R/w; mkdir -p $OUT
timeout 150 python benchmarks/bench_scan_forward_configs.py --configs default lanes \
  --shapes 8x1536x4096 16x2048x2048 64x128x4112 --json $OUT/lanes.json 2>&1 | tee $OUT/lanes.log | tail -7
timeout 150 python -m pytest -q -x -m gpu tests/test_gpu_ops.py -k "lanes and (bf16-640 or fp32-40)" 2>&1 | tail -3 | tee $OUT/lanestests.log
bash benchmarks/gpu_check.sh normstep 2>&1 | tail -12
tar czf $R/logs.tgz -C $OUT .
