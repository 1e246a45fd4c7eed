python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p .anchor/build && xz -dc .anchor/selective_scan_cuda.so.xz > .anchor/build/selective_scan_cuda.so
export PYTHONPATH=.:.anchor/src:.anchor/build:/tmp/site PYTHONUNBUFFERED=1
R=$OUT; export OUT=$R/w; mkdir -p $OUT
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
timeout 330 python benchmarks/bench_scan_forward_configs.py --configs default lanes "lanes 2 warps" \
  --shapes 8x1536x4096 16x2048x2048 8x1536x16384 64x128x4112 8x1536x1024 2x1536x65536 --json $OUT/lanes.json 2>&1 | tee $OUT/lanes.log | tail -14
timeout 200 python -m pytest -q -x -m gpu tests/test_gpu_ops.py -k "lanes" 2>&1 | tail -8 | tee $OUT/lanestests.log
tar czf $R/logs.tgz -C $OUT .
