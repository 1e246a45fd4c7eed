#!/usr/bin/env bash
# The paper's synthetic runs (issue 13) on a GPU, in segments that fit one command each.
#
#   bash benchmarks/gpu_paper_synthetic.sh ih [SECONDS]   # induction heads, experiment=paper/induction_heads
#   bash benchmarks/gpu_paper_synthetic.sh sc [SECONDS]   # selective copying, experiment=paper/selective_copying
#   bash benchmarks/gpu_paper_synthetic.sh sc SECONDS h3_s4d   # a Table 1 row: model.ssm_cfg.layer=<arch>_<inner>
#   bash benchmarks/gpu_paper_synthetic.sh sc SECONDS h3_s4d trainer.max_steps=20000   # more overrides after it
#                                             (e.g. every row to the same 20K steps, to compare them at equal steps)
#
# Each call trains for at most SECONDS (default 420; trainer.time_limit_s pauses cleanly with last.pt) in
# the fixed run directory $RUNS/<task> (default outputs/paper/<task>), resuming from its last.pt when
# there is one (trainer.resume=auto): bring that directory back after a command, send it with the next.
# When a run reaches max_steps, the last weights are scored: induction heads at every length 2^6 .. 2^20
# (eval_last/extrapolation.*), selective copying on its held-out set. With $OUT set, the run directory
# (without its TensorBoard events) is packed into $OUT/<run dir name>.tgz; unpack it under $RUNS to continue.
set -u
what=${1:?usage: gpu_paper_synthetic.sh ih|sc [SECONDS]}
limit=${2:-420}
layer=${3:-}
shift $(( $# < 3 ? $# : 3 ))
extra=("$@")  # further Hydra overrides, passed to both the run and the final eval
RUNS=${RUNS:-outputs/paper}
case "$what" in
  ih) task=induction_heads; log_every=2048; run_eval="eval.max_log2_len=10" ;;  # best.pt: a quick look
  sc) task=selective_copying; log_every=200; run_eval="" ;;
  *) echo "unknown run '$what' (expected ih or sc)" >&2; exit 2 ;;
esac
row=""
if [ -n "$layer" ]; then  # a Table 1 row gets its own run directory
  [ "$what" = sc ] || { echo "a mixer layer is for selective copying (sc) only" >&2; exit 2; }
  task_dir="${task}_$layer"; row="+model.ssm_cfg.layer=$layer"
else
  task_dir="$task"
fi
dir="$RUNS/$task_dir"
python -m seqmamba.cli run "experiment=paper/$task" trainer.resume=auto "trainer.time_limit_s=$limit" \
  trainer.progress=false "trainer.log_every=$log_every" "hydra.run.dir=$dir" $run_eval $row "${extra[@]}" 2>&1 \
  | grep -v Warning | tail -40
status=${PIPESTATUS[0]}
if [ "$dir/eval_results.json" -nt "$dir/eval_last/eval_results.json" ]; then
  # finished (in this call, or resumed past an earlier end with a larger max_steps): the paper reports the last
  # weights (the run verb scored best.pt, the first to peak at 256)
  python -m seqmamba.cli eval "experiment=paper/$task" "ckpt=$dir/checkpoints/last.pt" $row "${extra[@]}" \
    "hydra.run.dir=$dir/eval_last" 2>&1 | grep -v Warning | tail -25
fi
if [ -n "${OUT:-}" ]; then  # one archive: the device returns only a few files per command
  mkdir -p "$OUT"
  tar -C "$RUNS" --exclude=tensorboard -czf "$OUT/$task_dir.tgz" "$task_dir" && ls -l "$OUT/$task_dir.tgz"
fi
exit "$status"
