#!/usr/bin/env bash
# One device call for the Mamba block layout (issue 3) and generation (issue 4): block-layout correctness
# (bf16 fwd + bwd vs the reference), channel-tile config sweep, block vs contiguous scan times, then the
# Mamba vs Transformer generation table and a prefill kernel profile. Logs go to $OUT (or ./gpu_logs).
set -o pipefail
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 140 python benchmarks/bench_selective_scan.py --layout block --sweep 2>&1 | tee "$OUT/block.log"
timeout 110 python benchmarks/bench_generation.py 2>&1 | tee "$OUT/generation.log"
timeout 40 python - <<'PY' 2>&1 | grep -v Warning | tee "$OUT/prefill_profile.log"
import torch
from torch.profiler import profile, ProfilerActivity
from seqmamba.models import MambaLM
m = MambaLM(d_model=768, n_layer=24, vocab_size=50280, device="cuda", dtype=torch.bfloat16).eval()
ids = torch.randint(0, 50280, (64, 2048), device="cuda")
with torch.no_grad():
    m.prefill(ids, m.new_inference_params(64, 2048)); torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        m.prefill(ids, m.new_inference_params(64, 2048)); torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=70))
PY
