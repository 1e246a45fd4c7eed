#!/usr/bin/env bash
# Table 1's rows (issue 13) side by side: several selective-copying rows trained at once, spread over the
# visible GPUs, each one `gpu_paper_synthetic.sh sc SECONDS <row> ...` in its own run directory (resumable).
#
#   bash benchmarks/gpu_table1_rows.sh SECONDS "nogate_s4d h3_s6 ..." [hydra overrides]
#
# The paper-config step of these 2-layer D 64 models does not fill an H200 (small kernels, graph replays with
# gaps), so the rows share the GPUs, round-robin; with MPS available (nvidia-cuda-mps-control) their kernels
# also overlap instead of time-slicing. Each row logs to $OUT/<row>.log and packs its run directory into
# $OUT/selective_copying_<row>.tgz (see gpu_paper_synthetic.sh), to be unpacked under outputs/paper/ to continue
# (more than 8 files come back as $OUT/rows.tar holding them all).
set -u
limit=${1:?usage: gpu_table1_rows.sh SECONDS "ROW ..." [overrides]}
rows=${2:?usage: gpu_table1_rows.sh SECONDS "ROW ..." [overrides]}
shift 2
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export OUT
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | wc -l); [ "$gpus" -ge 1 ] || gpus=1
if [ "${MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control > /dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d && sleep 1
  if timeout 60 python -c "import torch; x = torch.ones(4, device='cuda'); assert x.sum().item() == 4" 2> "$OUT/mps.err"; then
    echo "MPS on"
  else
    echo "MPS failed, rows time-slice the GPUs:"; tail -2 "$OUT/mps.err"
    echo quit | nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
fi
i=0
for row in $rows; do
  CUDA_VISIBLE_DEVICES=$(( i % gpus )) bash benchmarks/gpu_paper_synthetic.sh sc "$limit" "$row" "$@" \
    > "$OUT/$row.log" 2>&1 &
  i=$(( i + 1 ))
done
wait
for row in $rows; do  # per row: its last in-run evaluation, and where it paused or finished
  echo "== $row: $(grep -E 'val/acc=' "$OUT/$row.log" | tail -1 | sed 's/.* - //') $(grep -E -o '(paused|finished) at step [0-9]+' "$OUT/$row.log" | tail -1)"
done
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && echo quit | nvidia-cuda-mps-control
# The device returns at most 8 files from $OUT: with 4 rows (a log and an archive each, plus mps.err) one row's
# archive was left behind (sixteenth session), so more than 8 files go back as one archive of them all.
bash "$(dirname "$0")/pack_out.sh" "$OUT" rows.tar
exit 0
