#!/usr/bin/env bash
# DNA on one GPU (issue 11): demo genomes, hg38 pretraining, Great Apes at 2^10 / 2^12 / 2^14, chunked
# inference check, 2^20 x 1 and 2^10 x 1024 training throughput. Logs, plots, JSON under $OUT.
#   OUT=gpu_logs bash benchmarks/gpu_dna.sh [extra gpu_dna.py flags]
set -o pipefail
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# hydra-core, omegaconf, antlr4 and pyfaidx come as wheels in .whl/ (no network on the GPU machine)
python -c "import hydra, omegaconf, pyfaidx" 2>/dev/null || \
  pip install -q --no-index --find-links .whl hydra-core omegaconf pyfaidx 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 560 python benchmarks/gpu_dna.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_dna.log"
