#!/usr/bin/env bash
# SC09 audio on one GPU (issue 12): demo speech, classifier, SaShiMi training, recurrent generation of
# 64 x 16000 samples, FID / IS / mIS / AM table. Logs, WAVs, spectrogram PNG, JSON under $OUT.
#   OUT=gpu_logs bash benchmarks/gpu_audio.sh [extra gpu_audio.py flags]
set -o pipefail
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# hydra-core, omegaconf, antlr4, soundfile and cffi come as wheels in .whl/ (no network on the GPU machine)
python -c "import hydra, omegaconf, soundfile" 2>/dev/null || \
  pip install -q --no-index --find-links .whl hydra-core omegaconf soundfile cffi 2>&1 | tail -2
# torchaudio (mu-law, mel spectrograms) is not in the GPU image: its 2.11.0 wheel (cp312) is in .whl/ too
python -c "import torchaudio" 2>/dev/null || \
  pip install -q --no-index --no-deps --find-links .whl torchaudio==2.11.0 2>&1 | tail -2
python -c "import torchaudio.functional as F, torch; F.mu_law_encoding(torch.zeros(4), 256)" || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout 560 python benchmarks/gpu_audio.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_audio.log"
