#!/usr/bin/env bash
# One device call that re-verifies the GPU side: Triton kernels and models compiled and tested on the GPU, then
# the benchmark tables. Logs go to $OUT (or ./gpu_logs).
#   bash benchmarks/gpu_check.sh            # = tests table
#   bash benchmarks/gpu_check.sh all        # tests table block layer generation (~5 min on an H100)
#   steps: tests | sweep (tile sweep + table) | table | block | layer | generation
#          anchor (start building mamba_ssm's kernel in the background: benchmarks/build_mamba_ssm.py; needs
#          .anchor/src carried) | anchor-wait (wait for it) | gputests (every GPU test but the lanes kernel's, which the
#          lanes step runs; in 4 processes at once) | alltests (every GPU test, the lanes kernel's too, in 12
#          processes; the 2^20-step ones alone after them) | split (L split tables)
#          | gpusplit (the L split's GPU tests) | fwdsweep (forward configs vs mamba_ssm and attention)
#          | fastflip (the backward's fast flip: its GPU tests, then fwd+bwd with flips / flips + shift)
#          | normstep (the selective-copying step with PyTorch's RMSNorm, then with the fused Triton add + norm in
#            row tiles; the norm GPU tests first) | dnastep (the 1.4M DNA model's step at (1, 2^20) and
#            (1024, 2^10), the training split at 16-128 programs per SM, then all with the fused add + norm)
#          | table1steps (steps/s of every Table 1 row on the selective-copying setting, CUDA-graphed, and the
#            mixers' GPU tests first) | gluon (the Gluon inference forward: its GPU tests, then forward times
#            against the Triton kernel, mamba_ssm and flash attention) | decodeprof (one decode step's kernels and memory floor, Mamba vs GPT, 1.4B at batch 128: profile_decode.py)
#          | ncu (Nsight Compute on one forward and one backward launch at (8, 1536, 4096), ours and mamba_ssm's)
#          | ncugluon (the same for the forward as the Triton and as the Gluon kernel: their stall reasons side by side)
#          | compilestep (trainer.compile under CUDA graphs: the trainer's GPU test of it, then the selective-copying
#            step CUDA-graphed plain / compiled, alternately, twice, then the profile of 8 compiled eager steps)
#          | graphcheck (the graphed step's deferred non-finite check: the trainer's CUDA-graph GPU tests, then the
#            selective-copying and induction-heads steps compiled and graphed, --graph-check sync / deferred twice)
#          | ncubwd (Nsight Compute on one backward launch at NCU_SHAPE, default 64x128x4112: stall reasons, and the stall
#            samples of every SASS instruction as CSV in $OUT/ncubwd_sass.csv)
#          | nculanes (Nsight Compute on the lanes forward at (64, 1536, 2048) and (16, 2048, 2048): every stall reason
#            per issued instruction, and at the first shape the stall samples of each SASS instruction as CSV)
#          | seqpairs (lanes_seq_pairs: its GPU test, the lanes forward with and without it (and at 8-step chunks) twice,
#            then the 130M prefill at batch 64 off / on twice)
#          | lanescross (the chunked forward, the lanes forward everywhere and the default where the rule
#            lanes_min_warps_per_sm decides between them: at 1.9-4.8 lanes warps per SM, against SDPA flash)
#          | lanesmisc (the lanes forward at 2 warps per program and under a 224-register cap against the default,
#            at three shapes, then the 130M prefill at batch 64 each way)
#          | xprojcf (X_PROJ_CHANNELS_FIRST: its GPU test, the 130M prefill at batch 64 with x_proj time-major /
#            channels-first alternately, twice, then the selective-copying step both ways)
#          | prefillgap (the 130M prefill's wall time at batch 64 and 1 taken apart: eager, graph replay, generate's
#            host preamble, bench_generation's mark; the GPT's eager forward and mark)
#          | scprof (the selective-copying step, CUDA-graphed and eager, then the profile of 8 eager steps)
#          | headline (issue 9's generation rows at the current defaults, twice: the 130M prefill at batch 1 and 64
#            with a graphed prefill, the 1.4B decode at batch 128 with fp32 and bf16 states)
#          | lanestc8 (the lanes forward at 4 and at 8 steps per iteration, twice, at (16, 2048, 2048), (64, 1536, 2048))
#          | lanes (the lanes forward's GPU tests, then the default (fast math, B / C pairs) and its plain variants
#            against the chunked forward) | prefill (the 130M prefill with the chunked forward, then the default)
#          | prefillprof (the 130M prompt forward at batch 64, Mamba and GPT, kernels grouped by kind)
#          | embedstep (the selective-copying step with the embedding's weight gradient as one GEMM, off then on)
#          | decodestep (1.4B decode at batch 1 / 128: the default, the dt GEMM threshold given again (its timing
#            run before it was the default), bf16 SSM states, both)
#          | decodekernels (the decode step's state-update and conv-update launch configs: bench_decode_kernels.py)
#          | decoderows (the state update's row-block kernel, dt by a tensor-core product: its GPU tests, then its
#            launch configs at 1.4B against the GEMM path, then 1.4B decode at batch 128 with bf16 states)
#          | convsweep (the parallel conv's tiles, forward and backward, against their floors: bench_conv_configs.py)
#          | projgrad (PROJECT_CHANNELS_INPUT_GRAD: the Mamba block's compile test both ways, the layer's rows, then the
#            DNA step without and with it)
#          | scstep (the selective-copying step with PROJECT_CHANNELS_INPUT_GRAD off, then on)
#          | decodelinear (the decode projections' split-K kernel: its tests and the generation tests on the GPU, then
#            the 1.4B projections at batch 128 and 1 against F.linear, weights from HBM) | decodegen (generation at
#            DECODE_SIZES (1.4b) x DECODE_BATCHES (1), projections by cuBLAS, then by decode_linear's rule)
#          | splitpasses (the L split's no-carry passes as scans or reductions: their tests on the GPU, per-pass
#            times and tiles (bench_split_passes.py), then the DNA step both ways)
#          | tailsteps (BWD_CONFIG tail_launch, a length just past whole chunks as two launches per pass: its GPU
#            tests, the scan's fwd+bwd at selective copying's (64, 128, 4112) one launch / two, then the
#            selective-copying step both ways)
#          | blaslt (the 1.4B decode at batch 128 with every F.linear by cuBLAS, PyTorch's default, then by cuBLASLt
#            (TORCH_BLAS_PREFER_CUBLASLT=1): the projections alone, then generation for both models)
#          | pdl (programmatic dependent launch, SEQMAMBA_PDL=1: the decode / norm tests on CUDA with it, then 1.4B
#            generation at batch $PDL_BATCHES (128) and the selective-copying step, off / on alternately)
#          | pdltests (every GPU test but the lanes kernel's with SEQMAMBA_PDL=1, in 4 processes)
#          | twopass (decode_linear's two-pass split sum: its tests on the GPU, then the 1.4B x_proj / dt_proj /
#            out_proj at batch 128 and 64, every config with the last arriver's sum and with the second launch)
#          | decoderule (the decode tests on CUDA, then 1.4B generation at batch 128 with decode_linear's rule (two-pass
#            from 64 rows) and with every projection by cuBLAS (the rule of the eighteenth session at batch 128);
#            bf16 states; 130M at batch 64 both ways; 130M's projections at batch 64 / 128, kernel against F.linear)
#          | lanesreg (FWD_CONFIG lanes_maxnreg / lanes_chunk, more resident warps for the lanes forward: its GPU test
#            uncapped, capped and at 2 steps per chunk, the lanes forward at caps 224 / 200 / 184 / 168 (9-12
#            resident warps per SM instead of 8) and at lanes_chunk 2 (12), then the 130M prefill at batch 64 as
#            is / capped at $LANES_CAP (200) / chunk 2, twice)
#          | convtaps (the causal conv's taps from aligned columns, COLUMN_TAPS: the conv tests on CUDA, the conv's
#            forward and backward at the default tiles both ways and the column taps' tiles, then the 130M prefill
#            at batch 64 shifted loads / columns alternately, its profile with columns, the selective-copying step
#            both ways)
#          | convfused (the conv's one-kernel backward: the conv GPU tests; the default tiles two / one kernel twice at
#            four shapes; every tile one-kernel at two; the selective-copying step two / one kernel alternately, twice)
#          | inner (ops/mamba_inner.py: its GPU tests with the block's compile, layout and conv tests and the trainer's
#            graphed / compiled ones; the selective-copying step separate ops / one node alternately, twice)
#          | dnalinear (the 1.4M DNA step, gpu_dna.py's throughput rows, dt_proj by the GEMMs / the one pass)
#          | lanessplit-tests (the lanes forward's L split: its GPU tests) | lanessplit-bench (the forward with the
#            split at several warp targets against the default, mamba_ssm and flash attention; the first pass alone)
#          | lanessplit-final (the 130M prefill at batch 1) | lanessplit-table (the default against no lanes split at
#            issue 9's rows and the DNA widths)
#          | batchfast (BWD_CONFIG batch_fastest: its GPU test, then the table's fwd+bwd off / on, twice)
#          | stepprof (the scan's fwd+bwd kernel by kernel, ours and mamba_ssm's: profile_scan_step.py at STEPPROF_SHAPES)
#          | trainfwd (the chunked training forward under the inference forward's register cap and / or with its fast
#            softplus: kernel times (profile_scan_step.py) and the scan table's fwd+bwd at (8, 1536, 4096 / 16384),
#            (2, 1536, 65536) for each)
#          | lanestrain-tests (the default training forward's lanes / chunked choice, the lanes forward and backward, the
#            model's and trainer's GPU tests) | lanestrain (FWD_CONFIG lanes_training off / on, twice: the scan table's
#            rows at LANESTRAIN_SHAPES)
#          | splitwarps (the lanes split's warp target 12 / 16 / 24 per SM at the long rows, against mamba_ssm)
#          | onemufu-tests (the lanes kernels' GPU tests for the one-MUFU softplus, the split's, the edge lengths')
#          | fastsp (the chunked forward's softplus as the one-MUFU polynomial, FWD_CONFIG fast_softplus, the default,
#            against libdevice's, at (8, 1536, 4096 / 16384), with flash attention)
#          | trainedge (the scan's GPU edge-length tests, real width both layouts, and the default training forward's
#            lanes / chunked choice) | issue9table (the scan table, every row, with mamba_ssm and flash attention)
#          | onemufu (the default's one-MUFU softplus against the two-MUFU one at issue 9's rows, the split's and the
#            prefill's shapes, with mamba_ssm and flash attention)
#          | lanessplit-ends (the split's first pass at 4-step chunks / a register cap against the default)
#          | lanestests (every GPU test of the lanes forward, the split's too, in 12 processes)
#          | lanessplit-rule (the split's rule at 1-4 sequences against no split; the 130M prefill at batch 1 both ways)
#          | chanlin (ops/channel_linear.py, dt_proj's one pass each way: its GPU tests and the inner node's;
#            bench_channel_linear.py against the batched GEMMs with its tile sweep; Nsight Compute on one launch of
#            the backward) | chanlinstep (its and the inner node's GPU tests, the benchmark's dt_proj rows,
#            the selective-copying step bmm / one pass alternately, twice)
set -o pipefail
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
# A mamba_ssm build on PYTHONPATH is measured beside ours; the anchor step builds one in .anchor/build.
export PYTHONPATH=.:.anchor/src:.anchor/build${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
NCU_SECTIONS="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
  --section SchedulerStats --section InstructionStats --section ComputeWorkloadAnalysis"
ncu_runs() {  # ncu_runs "IMPLS" "KERNELS": one launch of each kernel (fwd / bwd) of each implementation
  for impl in $1; do for k in $2; do
    timeout 90 ncu --clock-control none $NCU_SECTIONS -k "regex:selective_scan_${k}" --launch-skip 2 \
      --launch-count 1 python benchmarks/ncu_scan.py --impl $impl > "$OUT/ncu_${impl}_${k}.txt" 2>&1
    grep -E "Duration|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|Executed Ipc A|Theoretical Occ|Stall" \
      "$OUT/ncu_${impl}_${k}.txt" | head -20 | sed "s/^/$impl $k: /"; done; done
}
gen_row() {  # gen_row LOG LABEL SIZE BATCH ARGS...: one bench_generation.py row (Mamba and GPT at SIZE, BATCH), its
  # JSON in $OUT/gen_LABEL.json and its table line, tagged LABEL, appended to $OUT/LOG.log
  local log=$1 label=$2 size=$3 batch=$4; shift 4
  timeout 150 python benchmarks/bench_generation.py --sizes "$size" --batch-sizes "$batch" --max-batch "$batch" \
    --out "$OUT/gen_$label.json" "$@" 2>&1 | grep -E "^ +[^ ]+ +[0-9]+ \|" | sed "s/^/$label /" | tee -a "$OUT/$log.log"
}
switch_steps() {  # switch_steps LOG SWITCH VALUE...: the selective-copying step, compiled and CUDA-graphed, with
  # bench_train_step's --SWITCH at each VALUE in turn, twice; its rows appended to $OUT/LOG.log. 150 s per run: a
  # mode's first run on a fresh machine compiles cold (~60-90 s; at 90 s both "off" runs of the twenty-eighth
  # session's inner call timed out)
  local log=$1 switch=$2; shift 2
  for run in 1 2; do for value in "$@"; do
    timeout 150 python benchmarks/bench_train_step.py --out "$OUT/${log}_${value}_$run" --cases selective_copying \
      --modes compiled-graph --steps 300 --$switch $value 2>&1 | grep -E "^selective_copying  " \
      | sed "s/^/$switch $value run $run: /" | tee -a "$OUT/$log.log"
  done; done
}
config_rows() {  # config_rows LOG VARIABLE KEY SHAPES VALUE...: the scan table's rows (bench_selective_scan.py at SHAPES,
  # its --shapes) with VARIABLE (SEQMAMBA_SCAN_FWD_CONFIG / _BWD_CONFIG) = KEY=VALUE for each VALUE in turn, twice;
  # appended to $OUT/LOG.log under a line naming the run and value
  local log=$1 variable=$2 key=$3 shapes=$4; shift 4
  for run in 1 2; do for value in "$@"; do
    echo "== run $run $key=$value" | tee -a "$OUT/$log.log"
    env "$variable=$key=$value" timeout 200 python benchmarks/bench_selective_scan.py --shapes "$shapes" --no-decode \
      --no-reference 2>&1 | grep -E "^\| [0-9]" | tee -a "$OUT/$log.log"
  done; done
}
par_pytest() {  # par_pytest SHARDS SECONDS LOG PYTEST_ARGS...: the selected tests in SHARDS processes at once, round
  # robin (Triton / ptxas compiles are CPU-bound and single-threaded: the lanes kernel takes ~25 s per
  # specialisation, so one process ran out of a 240-s budget after 8 tests); each shard's log in $OUT/LOG_<i>.log
  local shards=$1 limit=$2 log=$3; shift 3
  python -m pytest --collect-only -q "$@" 2>/dev/null | grep "::" > "$OUT/$log.ids"
  for i in $(seq 0 $(( shards - 1 ))); do
    awk -v n="$shards" -v i="$i" 'NR % n == i' "$OUT/$log.ids" > "$OUT/$log.ids_$i"
    [ -s "$OUT/$log.ids_$i" ] && (timeout "$limit" xargs -d "\n" -a "$OUT/$log.ids_$i" python -m pytest -q -rf \
      > "$OUT/${log}_$i.log" 2>&1; echo "shard $i exit $?" >> "$OUT/${log}_$i.log") &
  done
  wait
  echo "$(wc -l < "$OUT/$log.ids") tests in $shards shards:"; grep -hE "passed|failed|FAILED|error|shard" "$OUT/${log}"_*.log
  # one file back instead of 2 per shard (the device returns a limited number of files)
  for i in $(seq 0 $(( shards - 1 ))); do [ -f "$OUT/${log}_$i.log" ] && { echo "=== shard $i"; cat "$OUT/${log}_$i.log"; }; done \
    > "$OUT/${log}_shards.txt"
  rm -f "$OUT/$log".ids* "$OUT/${log}"_[0-9]*.log
}
steps=${*:-tests table}
[ "$steps" = all ] && steps="tests table block layer generation"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
for step in $steps; do
  case $step in
    tests) timeout 240 python -m pytest -q -x tests/test_triton_ops.py tests/test_gpu_ops.py tests/test_generation.py \
             tests/test_layer_norm.py tests/test_mamba_lm.py 2>&1 | tail -25 | tee "$OUT/tests.log" ;;
    sweep) timeout 330 python benchmarks/bench_selective_scan.py --sweep 2>&1 | tee "$OUT/bench.log" ;;
    table) timeout 420 python benchmarks/bench_selective_scan.py 2>&1 | tee "$OUT/table.log" ;;
    block) timeout 150 python benchmarks/bench_selective_scan.py --layout block 2>&1 | tee "$OUT/block.log" ;;
    layer) timeout 120 python benchmarks/bench_mamba_layer_layout.py 2>&1 | tee "$OUT/layer.log" ;;
    generation) timeout 150 python benchmarks/bench_generation.py 2>&1 | tee "$OUT/generation.log" ;;
    anchor) prebuilt=.anchor/prebuilt/selective_scan_cuda.so.xz  # an earlier call's build (anchor-wait's), if carried
            python benchmarks/build_mamba_ssm.py $([ -f $prebuilt ] && echo --prebuilt $prebuilt) \
              > "$OUT/anchor_build.log" 2>&1 &
            anchor_pid=$! ;;
    anchor-wait) [ -n "$anchor_pid" ] && { wait "$anchor_pid" 2>/dev/null; rc=$?  # 127: an earlier step's wait took it
                   echo "anchor build exit $rc"; tail -3 "$OUT/anchor_build.log"
                   so=$(ls .anchor/build/selective_scan_cuda*.so 2>/dev/null | head -1)
                   [ -n "$so" ] && [ ! -f .anchor/prebuilt/selective_scan_cuda.so.xz ] \
                     && xz -T0 -c "$so" > "$OUT/selective_scan_cuda.so.xz"; } ;;
    gputests) par_pytest 4 420 gputests -m gpu tests/ -k "not lanes" 2>&1 | tee "$OUT/gputests.log" ;;
    alltests) par_pytest 12 420 alltests -m "gpu and not bigmem" tests/ 2>&1 | tee "$OUT/alltests.log"
              # the 2^20-step tests need 30-60 GB each: alone, after the shards (in the eleventh session's first
              # run, with them among 12 processes, 2 of the 163 failed and passed when rerun in 2 processes)
              timeout 180 python -m pytest -q -rf -m bigmem tests/ 2>&1 | tail -4 | tee -a "$OUT/alltests.log" ;;
    lanestests) par_pytest 12 240 lanestests -m gpu tests/test_gpu_ops.py -k "gpu_lanes" 2>&1 \
                  | tee "$OUT/lanestests.log" ;;
    lanessplit-tests) par_pytest 8 300 lanessplit -m gpu tests/test_gpu_ops.py -k "lanes_split" 2>&1 \
                        | tee "$OUT/lanessplit_tests.log" ;;
    lanessplit-bench) timeout 400 python benchmarks/bench_scan_forward_configs.py --json "$OUT/lanessplit.json" \
                        --configs default "lanes split 8" "lanes split 12" "lanes split 16" "lanes split 24" \
                        "lanes split 32" "lanes split 12, min 512" "lanes split 12, pass 1 alone" \
                        --shapes ${LANESSPLIT_SHAPES:-8x1536x2048 8x1536x4096 8x1536x16384 2x1536x65536 1x1536x262144 \
                        1x1536x1048576 1x256x1048576 16x2048x2048} 2>&1 | tee "$OUT/lanessplit.log" ;;
    lanessplit-rule) timeout 300 python benchmarks/bench_scan_forward_configs.py --json "$OUT/lanessplit_rule.json" \
                       --configs default "no lanes split" "lanes split 8" "lanes split 16" "lanes split 24" \
                       --shapes 1x1536x2048 1x1536x4096 1x1536x16384 4x1536x4096 4x1536x16384 1x256x65536 \
                       1x256x1048576 2x768x65536 2>&1 | tee "$OUT/lanessplit_rule.log"
                     for run in 1 2; do for split in 0 12; do  # the 130M prefill at batch 1: (1, 1536, 2048)
                       SEQMAMBA_SCAN_FWD_CONFIG="lanes_split_warps_per_sm=$split" gen_row lanessplit_gen \
                         "run${run}_split$split" 130m 1 --cg-prefill --repeats 2; done; done ;;
    lanessplit-final) gen_row lanessplit_final "130m_b1" 130m 1 --cg-prefill --repeats 2 ;;
    lanessplit-table) timeout 300 python benchmarks/bench_scan_forward_configs.py --json "$OUT/lanessplit_table.json" \
                        --configs default "no lanes split" --shapes 1x1536x2048 1x1536x16384 8x1536x4096 \
                        8x1536x16384 2x1536x65536 1x1536x262144 1x1536x1048576 2x768x65536 1x256x65536 \
                        1x256x1048576 2>&1 | tee "$OUT/lanessplit_table.log" ;;
    lanessplit-ends) timeout 300 python benchmarks/bench_scan_forward_configs.py --json "$OUT/lanessplit_ends.json" \
                       --configs ${LANESSPLIT_ENDS_CONFIGS:-default "split ends tc4" "split ends reg152" \
                       "lanes split 12, pass 1 alone" "split ends tc4, pass 1 alone"} \
                       --shapes ${LANESSPLIT_SHAPES:-2x1536x65536 1x1536x262144 1x1536x1048576 2x768x65536 \
                       1x256x1048576} 2>&1 | tee "$OUT/lanessplit_ends.log" ;;
    onemufu-warm) for cfg in default "two-MUFU softplus"; do  # compiles only, in the background (onemufu-tests waits)
                    timeout 300 python benchmarks/bench_scan_forward_configs.py --configs "$cfg" \
                      --shapes 1x1536x65536 16x2048x2048 8x1536x4096 > "/tmp/warm_${cfg// /_}.log" 2>&1 &
                  done ;;
    onemufu-tests) par_pytest 6 ${ONEMUFU_TESTS_TIMEOUT:-240} onemufutests tests/test_gpu_ops.py tests/test_triton_ops.py \
                     -k "one_mufu or gpu_lanes_split or (gpu_lanes_forward_and_backward and (bf16-640 or fp32-40-state) \
                     and (-1] or -9] or -4100])) or lanes_split_forward_matches or fast_math_softplus" \
                     2>&1 | tee "$OUT/onemufu_tests.log" ;;
    fastsp) timeout ${FASTSP_TIMEOUT:-200} python benchmarks/bench_scan_forward_configs.py --json "$OUT/fastsp.json" \
              --configs default "chunked libdevice softplus" --shapes ${FASTSP_SHAPES:-8x1536x4096 8x1536x16384} \
              2>&1 | tee -a "$OUT/fastsp.log" ;;
    trainedge) par_pytest 12 ${TRAINEDGE_TIMEOUT:-180} trainedge -m gpu tests/test_gpu_ops.py \
                 -k "edge_lengths or default_training or real_chunking" 2>&1 | tee "$OUT/trainedge.log" ;;
    issue9table) timeout ${ISSUE9TABLE_TIMEOUT:-300} python benchmarks/bench_selective_scan.py --attention --no-reference \
                   2>&1 | tee "$OUT/issue9table.log" ;;
    batchfast) timeout 150 python -m pytest -q -m gpu tests/test_gpu_ops.py -k batch_fastest 2>&1 | tail -3 \
                 | tee "$OUT/batchfast.log"
               config_rows batchfast SEQMAMBA_SCAN_BWD_CONFIG batch_fastest "${BATCHFAST_SHAPES:-0,1,2,3,6}" 0 1 ;;
    stepprof) timeout ${STEPPROF_TIMEOUT:-120} python benchmarks/profile_scan_step.py \
                --shapes ${STEPPROF_SHAPES:-8x1536x4096 8x1536x16384} 2>&1 | tee "$OUT/stepprof.log" ;;
    trainfwd) for cfg in "" ${TRAINFWD_CONFIGS:-maxnreg_inference_only=1,fast_softplus_training=0 \
                fast_softplus_training=0}; do  # the chunked training forward: the default, then without the cap / fast
                echo "== FWD_CONFIG ${cfg:-default}" | tee -a "$OUT/trainfwd.log"
                SEQMAMBA_SCAN_FWD_CONFIG="$cfg" timeout 150 python benchmarks/profile_scan_step.py --impls triton \
                  --shapes ${TRAINFWD_SHAPES:-8x1536x4096 8x1536x16384 2x1536x65536} 2>&1 | grep -E "ms" \
                  | tee -a "$OUT/trainfwd.log"
                SEQMAMBA_SCAN_FWD_CONFIG="$cfg" timeout 150 python benchmarks/bench_selective_scan.py --shapes 1,2,3 \
                  --no-decode --no-reference 2>&1 | grep -E "^\| [0-9]" | tee -a "$OUT/trainfwd.log"
              done ;;
    lanestrain-tests) par_pytest 6 ${LANESTRAIN_TESTS_TIMEOUT:-240} lanestraintests -m gpu tests/test_gpu_ops.py \
                        tests/test_mamba_lm.py tests/test_trainer.py -k "default_training or (gpu_lanes_forward_and_backward \
                        and (bf16-640 or fp32-40-state)) or test_mamba_lm or test_trainer" 2>&1 | tee "$OUT/lanestrain_tests.log" ;;
    lanestrain) config_rows lanestrain SEQMAMBA_SCAN_FWD_CONFIG lanes_training \
                  "${LANESTRAIN_SHAPES:-6,32x1536x2048,64x1536x2048}" 0 1 ;;
    splitwarps) timeout ${SPLITWARPS_TIMEOUT:-300} python benchmarks/bench_scan_forward_configs.py \
                  --json "$OUT/splitwarps.json" --configs default "lanes split 16" "lanes split 24" \
                  --shapes ${SPLITWARPS_SHAPES:-1x1536x1048576 1x1536x262144 2x1536x65536} 2>&1 | tee "$OUT/splitwarps.log" ;;
    onemufu) timeout ${ONEMUFU_TIMEOUT:-300} python benchmarks/bench_scan_forward_configs.py --json "$OUT/onemufu.json" \
               --configs default "two-MUFU softplus" "lanes split 12, pass 1 alone" "two-MUFU softplus, pass 1 alone" \
               --shapes ${ONEMUFU_SHAPES:-2x1536x65536 1x1536x262144 1x1536x1048576 1x256x1048576 \
               16x2048x2048 64x1536x2048 8x1536x4096 8x1536x16384} 2>&1 | tee -a "$OUT/onemufu.log" ;;
    gpusplit) timeout 150 python -m pytest -q -m gpu tests/test_gpu_ops.py -k split 2>&1 | tail -8 | tee "$OUT/gpusplit.log" ;;
    fastflip) timeout 150 python -m pytest -q -m gpu tests/test_gpu_ops.py -k fast_flip 2>&1 | tail -6 | tee "$OUT/fastflip.log"
              timeout 240 python benchmarks/bench_scan_backward_configs.py --block-d 1 --T 256 --maxnreg 168 \
                --shapes 8x1536x4096 64x128x4112 1x1536x262144 16x2048x2048 --dout contiguous layer \
                --dout-copy on --fast-flip on shift 2>&1 | tee -a "$OUT/fastflip.log" ;;
    fwdsweep) timeout 330 python benchmarks/bench_scan_forward_configs.py --json "$OUT/fwdsweep.json" 2>&1 | tee "$OUT/fwdsweep.log" ;;
    split) timeout 200 python benchmarks/bench_selective_scan.py --split-l --extras-only 2>&1 | tee "$OUT/split.log" ;;
    normstep) timeout 120 python -m pytest -q -m gpu tests/test_layer_norm.py 2>&1 | tail -4 | tee "$OUT/normstep.log"
              for fused in false true; do
                timeout 150 python benchmarks/bench_train_step.py --out "$OUT/step_fused_$fused" --cases selective_copying \
                  --overrides model.fused_add_norm=$fused 2>&1 | tail -3 | tee -a "$OUT/normstep.log"; done ;;
    dnastep) for fused in "" --fused-add-norm; do
               timeout 200 python benchmarks/gpu_dna.py --out "$OUT/dna$fused" --skip train,kmer,chunked \
                 --split-per-sm 32 64 128 $fused 2>&1 | tail -12 | tee -a "$OUT/dnastep.log"; done ;;
    dnalinear) for impl in bmm triton; do  # the DNA step with dt_proj by the GEMMs / the one pass (ops/channel_linear.py)
                 timeout 200 python benchmarks/gpu_dna.py --out "$OUT/dna_$impl" --skip train,kmer,chunked \
                   --fused-add-norm --channel-linear $impl 2>&1 | tail -8 | sed "s/^/$impl: /" | tee -a "$OUT/dnalinear.log"
               done ;;
    table1steps) timeout 120 python -m pytest -q -m gpu tests/test_mixers_table1.py 2>&1 | tail -4 | tee "$OUT/table1steps.log"
                 timeout 300 python benchmarks/bench_train_step.py --out "$OUT/table1" --cases selective_copying \
                   --table1 --steps 300 2>&1 | tail -16 | tee -a "$OUT/table1steps.log" ;;
    gluon) timeout 200 python -m pytest -q -m gpu tests/test_gpu_ops.py -k gluon 2>&1 | tail -4 | tee "$OUT/gluon.log"
           timeout 300 python benchmarks/bench_scan_forward_configs.py --configs default "no cap" gluon "gluon, no cap" \
             "gluon 1x1024" "where-sum last" --json "$OUT/gluon.json" 2>&1 | tail -12 | tee -a "$OUT/gluon.log" ;;
    decodeprof) timeout 200 python benchmarks/profile_decode.py --size 1.4b --batch 128 2>&1 | tee "$OUT/decodeprof.log" ;;
    embedstep) timeout 120 python -m pytest -q -m gpu tests/test_mamba_lm.py -k one_hot 2>&1 | tail -3 | tee "$OUT/embedstep.log"
               for rows in 0 64; do  # the second run also profiles 8 eager steps (where the step goes now)
                 timeout 150 python benchmarks/bench_train_step.py --out "$OUT/step_embed_$rows" --cases selective_copying \
                   --embedding-gemm-rows $rows $([ $rows = 64 ] && echo --profile) 2>&1 | tail -45 \
                   | tee -a "$OUT/embedstep.log"; done ;;
    lanesmisc) timeout 150 python benchmarks/bench_scan_forward_configs.py --configs default "lanes 2 warps" \
                 "lanes reg224" --shapes 64x1536x2048 32x1536x2048 16x2048x2048 --json "$OUT/lanesmisc.json" \
                 2>&1 | grep -v "^  " | tee -a "$OUT/lanesmisc.log"
               for cfg in "" lanes_num_warps=2 lanes_maxnreg=224 ""; do  # the 130M prefill at batch 64
                 label=${cfg:-default}
                 SEQMAMBA_SCAN_FWD_CONFIG="$cfg" gen_row lanesmisc "prefill_${label/=/_}" 130m 64 --cg-prefill \
                   --repeats 2; done ;;
    xprojcf) timeout 150 python -m pytest -q -rf -m gpu tests/test_gpu_ops.py -k "x_proj_channels_first" 2>&1 | tail -3 \
               | tee "$OUT/xprojcf.log"
             for layout in time-major channels-first time-major channels-first; do  # the 130M prefill at batch 64
               gen_row xprojcf "prefill_$layout" 130m 64 --cg-prefill --repeats 2 --x-proj-layout $layout; done
             for layout in time-major channels-first; do  # the selective-copying step
               timeout 150 python benchmarks/bench_train_step.py --out "$OUT/sc_$layout" --cases selective_copying \
                 --x-proj-layout $layout 2>&1 | tail -3 | sed "s/^/$layout: /" | tee -a "$OUT/xprojcf.log"; done ;;
    scprof) timeout 200 python benchmarks/bench_train_step.py --out "$OUT/scprof" --cases selective_copying --profile \
              2>&1 | tail -45 | tee "$OUT/scprof.log" ;;
    prefillgap) for batch in 64 1; do  # the 130M prompt forward's wall time taken apart (bench_prefill_gap.py)
                  timeout 150 python benchmarks/bench_prefill_gap.py --size 130m --batch $batch 2>&1 \
                    | tee -a "$OUT/prefillgap.log"; done ;;
    headline) for run in 1 2; do  # issue 9's generation targets at the current defaults: 130M prefill, 1.4B decode
                for batch in 1 64; do gen_row headline "run${run}_130m_b$batch" 130m $batch --cg-prefill --repeats 2; done
                gen_row headline "run${run}_1.4b_fp32" 1.4b 128
                gen_row headline "run${run}_1.4b_bf16" 1.4b 128 --ssm-state-dtype bfloat16
              done ;;
    decodestep) for opt in "" "--decode-dt-proj-max-bytes 16777216" "--ssm-state-dtype bfloat16" \
                   "--decode-dt-proj-max-bytes 16777216 --ssm-state-dtype bfloat16"; do  # 1.4B decode, each lever
                  echo "== $opt" | tee -a "$OUT/decodestep.log"
                  timeout 140 python benchmarks/bench_generation.py --sizes 1.4b --batch-sizes 1 128 --max-batch 128 \
                    $opt 2>&1 | grep -E "^ *1.4b" | tee -a "$OUT/decodestep.log"; done ;;
    decoderows) timeout 120 python -m pytest -q tests/test_triton_ops.py -k "row_blocks or state_update" 2>&1 | tail -2 \
                  | tee "$OUT/decoderows_tests.log"
                timeout 200 python benchmarks/bench_decode_kernels.py --kernels state --sizes 1.4b \
                  --json "$OUT/decoderows.json" 2>&1 | tee "$OUT/decoderows.log" | grep -E "b128|^  "
                timeout 140 python benchmarks/bench_generation.py --sizes 1.4b --batch-sizes 128 --max-batch 128 \
                  --ssm-state-dtype bfloat16 2>&1 | grep -E "^ *1.4b" | tee -a "$OUT/decoderows.log" ;;
    convsweep) timeout 400 python benchmarks/bench_conv_configs.py --json "$OUT/convsweep.json" 2>&1 \
                 | tee "$OUT/convsweep.log" | sed -n '/best per shape/,$p' ;;
    decodekernels) timeout 300 python benchmarks/bench_decode_kernels.py --json "$OUT/decodekernels.json" 2>&1 \
                     | tee "$OUT/decodekernels.log" | grep -E '^gemm|^  ' ;;
    prefillprof) timeout 200 python benchmarks/profile_decode.py --phase prefill --size 130m --batch 64 --top 15 2>&1 \
                   | tee "$OUT/prefillprof.log" ;;
    ncu) ncu_runs "triton mamba_ssm" "fwd bwd" ;;
    ncugluon) ncu_runs "triton gluon" fwd ;;
    compilestep) timeout 200 python -m pytest -q -rf -m gpu tests/test_trainer.py -k "mamba_induction_heads_model" 2>&1 \
                   | tail -2 | tee "$OUT/compilestep.log"
                 for run in 1 2; do  # the step plain and compiled, both CUDA-graphed
                   timeout 150 python benchmarks/bench_train_step.py --out "$OUT/compilestep_$run" \
                     --cases selective_copying --modes graph compiled-graph --steps 300 2>&1 \
                     | grep -E "^selective_copying" | sed "s/^/run $run: /" | tee -a "$OUT/compilestep.log"; done
                 timeout 150 python benchmarks/bench_train_step.py --out "$OUT/compileprof" --cases selective_copying \
                   --modes compiled --steps 100 --profile --overrides trainer.compile=true trainer.cuda_graph=false 2>&1 | tail -45 \
                   > "$OUT/compileprof.log" ;;
    convfused) timeout 150 python -m pytest -q -rf -m gpu tests/test_gpu_ops.py -k conv 2>&1 | tail -3 \
                 | tee "$OUT/convfused.log"
               timeout 100 python benchmarks/bench_conv_configs.py --tiles default --backward two-kernels one-kernel \
                 two-kernels one-kernel 2>&1 | grep -E "^[0-9]" | tee -a "$OUT/convfused.log"
               timeout 120 python benchmarks/bench_conv_configs.py --shapes 64x128x4112 64x1536x2048 \
                 --backward one-kernel 2>&1 | tail -6 | tee -a "$OUT/convfused.log"
               switch_steps convfused conv-backward two-kernels one-kernel ;;
    inner) timeout 200 python -m pytest -q -rf -m gpu tests/test_gpu_ops.py -k "mamba or conv" 2>&1 | tail -4 \
             | tee "$OUT/inner.log"
           timeout 150 python -m pytest -q -rf -m gpu tests/test_trainer.py -k "cuda_graph or compiled" 2>&1 | tail -3 \
             | tee -a "$OUT/inner.log"
           switch_steps inner mamba-inner off on ;;
    chanlin) timeout 150 python -m pytest -q -rf -m gpu tests/test_gpu_ops.py -k "channel_linear or mamba_inner" 2>&1 \
               | tail -4 | tee "$OUT/chanlin.log"
             timeout 240 python benchmarks/bench_channel_linear.py --sweep 2>&1 | tee -a "$OUT/chanlin.log"
             # Nsight Compute on one launch of the backward at the selective-copying dt_proj
             timeout 60 ncu --clock-control none $NCU_SECTIONS -k regex:_linear_bwd --launch-skip 0 --launch-count 1 \
               python benchmarks/bench_channel_linear.py --cases "sc dt_proj" --impls dot --check-only \
               > "$OUT/ncu_dot.txt" 2>&1
             grep -E "Duration|Registers Per|Achieved Occupancy|Theoretical Occ|DRAM Throughput|Memory Throughput|No Eligible|Stall" \
               "$OUT/ncu_dot.txt" | head -14 | sed "s/^/ncu dot: /" | tee -a "$OUT/chanlin.log" ;;
    chanlinstep) timeout 150 python -m pytest -q -rf -m gpu tests/test_gpu_ops.py -k "channel_linear or mamba_inner" \
                   2>&1 | tail -2 | tee "$OUT/chanlin.log"
                 timeout 60 python benchmarks/bench_channel_linear.py --cases "sc dt_proj" "dna dt_proj" 2>&1 \
                   | tee -a "$OUT/chanlin.log"
                 switch_steps chanlin channel-linear bmm triton ;;
    graphcheck) timeout 240 python -m pytest -q -rf -m gpu tests/test_trainer.py -k "cuda_graph or compiled" 2>&1 \
                  | tail -3 | tee "$OUT/graphcheck.log"
                for case in selective_copying induction_heads; do for check in sync deferred sync deferred; do
                  timeout 90 python benchmarks/bench_train_step.py --out "$OUT/gc_${case}_$check" --cases $case \
                    --modes compiled-graph --steps 400 --graph-check $check 2>&1 | grep -E "^$case  " \
                    | sed "s/^/$check: /" | tee -a "$OUT/graphcheck.log"; done; done ;;
    ncubwd) timeout 150 ncu --clock-control none $NCU_SECTIONS --section SourceCounters \
              --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
              -k regex:selective_scan_bwd --launch-skip 2 --launch-count 1 -o "$OUT/bwd" \
              python benchmarks/ncu_scan.py --shape ${NCU_SHAPE:-64x128x4112} > "$OUT/ncubwd.log" 2>&1
            ncu -i "$OUT/bwd.ncu-rep" --print-details all > "$OUT/ncubwd.txt" 2>&1 || ncu -i "$OUT/bwd.ncu-rep" > "$OUT/ncubwd.txt" 2>&1
            grep -E "Duration|Issue Slots Busy|No Eligible|stalled_(long|short|wait|not_sel)" "$OUT/ncubwd.txt" | head -12
            ncu -i "$OUT/bwd.ncu-rep" --page source --print-source sass --csv > "$OUT/ncubwd_sass.csv" 2>&1
            head -c 400 "$OUT/ncubwd_sass.csv"; echo; rm -f "$OUT/bwd.ncu-rep" ;;
    nculanes) for shape in ${NCU_SHAPES:-64x1536x2048 16x2048x2048}; do
                timeout 120 ncu --clock-control none $NCU_SECTIONS --section SourceCounters --section MemoryWorkloadAnalysis \
                  --section MemoryWorkloadAnalysis_Tables \
                  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
                  -k regex:_selective_scan_fwd_lanes --launch-skip 2 --launch-count 1 -o "$OUT/lanes_$shape" \
                  python benchmarks/ncu_scan.py --shape $shape > "$OUT/nculanes_$shape.log" 2>&1
                ncu -i "$OUT/lanes_$shape.ncu-rep" --print-details all > "$OUT/nculanes_$shape.txt" 2>&1 \
                  || ncu -i "$OUT/lanes_$shape.ncu-rep" > "$OUT/nculanes_$shape.txt" 2>&1
                ncu -i "$OUT/lanes_$shape.ncu-rep" --page raw --csv > "$OUT/nculanes_raw_$shape.csv" 2>&1
                grep -E "Duration|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|Executed Ipc A|L1/TEX|Mem Pipes|stalled_" \
                  "$OUT/nculanes_$shape.txt" | head -60 | sed "s/^/$shape: /"
              done
              ncu -i "$OUT/lanes_64x1536x2048.ncu-rep" --page source --print-source sass --csv \
                > "$OUT/nculanes_sass.csv" 2>&1; head -c 600 "$OUT/nculanes_sass.csv"; echo
              rm -f "$OUT"/lanes_*.ncu-rep ;;
    lanestc8) for run in 1 2; do
                timeout 150 python benchmarks/bench_scan_forward_configs.py --configs "lanes tc4" "lanes tc8" \
                  --shapes 16x2048x2048 64x1536x2048 --json "$OUT/lanestc8_$run.json" 2>&1 | tee -a "$OUT/lanestc8.log"
              done ;;
    seqpairs) par_pytest 3 200 seqpairstests -m gpu tests/test_gpu_ops.py -k "fast_math_and_bf16_pairs and (seqpairs or default)" \
                2>&1 | grep -E "tests in|passed|failed|FAILED|exit" | tee "$OUT/seqpairs.log"
              for run in 1 2; do
                timeout 200 python benchmarks/bench_scan_forward_configs.py --configs "lanes tc4" "lanes seq pairs tc4" \
                  default --shapes 16x2048x2048 64x1536x2048 --json "$OUT/seqpairs_$run.json" 2>&1 \
                  | tee -a "$OUT/seqpairs.log" | grep -v "^  "
              done
              for cfg in lanes_seq_pairs=0 lanes_seq_pairs=1 lanes_seq_pairs=0 lanes_seq_pairs=1; do  # 130M prefill, b64
                export SEQMAMBA_SCAN_FWD_CONFIG="$cfg"; gen_row seqpairs "prefill_${cfg/=/_}" 130m 64
              done; unset SEQMAMBA_SCAN_FWD_CONFIG ;;
    lanescross) timeout 300 python benchmarks/bench_scan_forward_configs.py --configs chunked lanes default \
                  --shapes 8x1536x2048 8x1536x4096 8x1536x16384 10x2048x2048 64x128x4112 --json "$OUT/lanescross.json" \
                  2>&1 | tee "$OUT/lanescross.log" | grep -v "^  " ;;
    lanes) par_pytest 6 300 lanes_tests -m gpu tests/test_gpu_ops.py -k lanes 2>&1 | tee "$OUT/lanes_tests.log"
           timeout 330 python benchmarks/bench_scan_forward_configs.py --configs chunked default lanes "lanes plain" \
             --shapes 8x1536x2048 8x1536x4096 10x2048x2048 12x2048x2048 16x2048x2048 64x128x4112 64x1536x2048 \
             --json "$OUT/lanes.json" 2>&1 | tee "$OUT/lanes.log" | grep -v "^  " ;;
    prefill) for cfg in lanes=false ""; do  # the 130M prefill, chunked forward then the default
               SEQMAMBA_SCAN_FWD_CONFIG="$cfg" timeout 150 python benchmarks/bench_generation.py --sizes 130m \
                 --batch-sizes 64 1024 --max-batch 1024 --cg-prefill --repeats 2 2>&1 | grep -E "^ *130m" | tee -a "$OUT/prefill.log"; done ;;
    projgrad) timeout 120 python -m pytest -q -rf -m gpu tests/test_gpu_ops.py -k "mamba_block_under_torch_compile" 2>&1 \
                | tail -3 | tee "$OUT/projgrad.log"
              timeout 120 python benchmarks/bench_mamba_layer_layout.py 2>&1 | grep "fwd+bwd" | tee -a "$OUT/projgrad.log"
              for flag in off on; do  # the DNA step, in_proj's input gradient as bmm gives it / time-major
                timeout 120 python benchmarks/gpu_dna.py --out "$OUT/dna_$flag" --skip train,kmer,chunked \
                  --project-channels-grad $flag 2>&1 | grep -E "^ +[0-9]+ x" | sed "s/^/$flag /" | tee -a "$OUT/projgrad.log"; done ;;
    scstep) for flag in off on; do  # the selective-copying step (CUDA-graphed and eager), in_proj's input gradient both ways
              timeout 150 python benchmarks/bench_train_step.py --out "$OUT/sc_$flag" --cases selective_copying \
                --project-channels-grad $flag 2>&1 | tail -3 | sed "s/^/project grad $flag: /" | tee -a "$OUT/scstep.log"; done ;;
    splitpasses) timeout 200 python -m pytest -q -rf tests/test_triton_ops.py tests/test_gpu_ops.py -k "split or segment" 2>&1 \
                   | tail -4 | tee "$OUT/splitpasses.log"
                 timeout 200 python benchmarks/bench_split_passes.py --json "$OUT/splitpasses.json" 2>&1 \
                   | tee -a "$OUT/splitpasses.log"
                 for passes in scan reduction; do  # the DNA step both ways
                   timeout 120 python benchmarks/gpu_dna.py --out "$OUT/dna_$passes" --skip train,kmer,chunked \
                     --split-passes $passes 2>&1 | grep -E "^ +[0-9]+ x" | sed "s/^/$passes /" | tee -a "$OUT/splitpasses.log"
                 done ;;
    decodelinear) timeout 150 python -m pytest -q -rf tests/test_decode_linear.py tests/test_generation.py 2>&1 \
                    | tail -4 | tee "$OUT/decodelinear.log"
                  timeout 300 python benchmarks/bench_decode_kernels.py --kernels linear --sizes 1.4b --batches 128 1 \
                    --json "$OUT/decodelinear.json" 2>&1 | tee -a "$OUT/decodelinear.log" ;;
    decodegen) for impl in cublas triton; do  # generation with the projections by cuBLAS / by decode_linear's rule
                 for size in ${DECODE_SIZES:-1.4b}; do for batch in ${DECODE_BATCHES:-1}; do
                   gen_row decodegen "${impl}_${size}_b$batch" "$size" "$batch" --decode-linear $impl
                 done; done
               done ;;
    tailsteps) timeout 200 python -m pytest -q -rf tests/test_gpu_ops.py tests/test_triton_ops.py -k tail_launch 2>&1 \
                 | tail -4 | tee "$OUT/tailsteps.log"
               timeout 150 python benchmarks/bench_scan_backward_configs.py --shapes 64x128x4112 8x1536x4112 \
                 --block-d 1 --T 256 --maxnreg 168 --fast-flip on --dout-copy on --tail-launch off on 2>&1 \
                 | grep -E "fwd\+bwd|device" | tee -a "$OUT/tailsteps.log"
               for tail in false true; do
                 SEQMAMBA_SCAN_BWD_CONFIG="tail_launch=$tail" timeout 150 python benchmarks/bench_train_step.py \
                   --cases selective_copying --steps 300 --out "$OUT/ts_tail_$tail" 2>&1 \
                   | grep -E "^selective_copying" | sed "s/^/tail_launch=$tail /" | tee -a "$OUT/tailsteps.log"
               done ;;
    blaslt) for lt in 0 1; do  # every F.linear by cuBLAS (PyTorch's default) / by cuBLASLt, both models alike
              TORCH_BLAS_PREFER_CUBLASLT=$lt timeout 120 python benchmarks/bench_decode_kernels.py --kernels linear \
                --sizes 1.4b --batches 128 --no-sweep 2>&1 | grep -E "^linear" | sed "s/^/cublaslt=$lt /" \
                | tee -a "$OUT/blaslt.log"
              TORCH_BLAS_PREFER_CUBLASLT=$lt timeout 150 python benchmarks/bench_generation.py --sizes 1.4b \
                --batch-sizes 128 --max-batch 128 --out "$OUT/gen_lt$lt.json" 2>&1 | grep -E "^ +[^ ]+ +[0-9]+ \|" \
                | sed "s/^/cublaslt=$lt /" | tee -a "$OUT/blaslt.log"
            done ;;
    pdl) SEQMAMBA_PDL=1 timeout 200 python -m pytest -q -rf tests/test_decode_linear.py tests/test_generation.py \
           tests/test_layer_norm.py 2>&1 | tail -4 | sed "s/^/pdl=1 tests: /" | tee "$OUT/pdl.log"
         for batch in ${PDL_BATCHES:-128}; do for pdl in ${PDL_ORDER:-0 1}; do
           SEQMAMBA_PDL=$pdl gen_row pdl "pdl${pdl}_b$batch" 1.4b "$batch"
         done; done
         for pdl in ${PDL_ORDER:-0 1}; do
           SEQMAMBA_PDL=$pdl timeout 150 python benchmarks/bench_train_step.py --cases selective_copying --steps 300 \
             --out "$OUT/ts_pdl$pdl" 2>&1 | grep -E "^selective_copying" | sed "s/^/pdl=$pdl /" | tee -a "$OUT/pdl.log"
         done ;;
    decoderule) timeout 200 python -m pytest -q -rf tests/test_decode_linear.py tests/test_generation.py 2>&1 | tail -3 \
                  | tee "$OUT/decoderule.log"
              gen_row decoderule rule_1.4b_b128 1.4b 128
              gen_row decoderule cublas_1.4b_b128 1.4b 128 --decode-linear cublas
              gen_row decoderule rule_bf16_1.4b_b128 1.4b 128 --ssm-state-dtype bfloat16
              gen_row decoderule rule_130m_b64 130m 64
              gen_row decoderule cublas_130m_b64 130m 64 --decode-linear cublas
              timeout 100 python benchmarks/bench_decode_kernels.py --kernels linear --sizes 130m --batches 64 128 \
                --no-sweep 2>&1 | tail -12 | tee -a "$OUT/decoderule.log" ;;
    lanesreg) par_pytest 3 200 lanesregtests -m gpu tests/test_gpu_ops.py -k "fast_math_and_bf16_pairs" 2>&1 \
                | grep -E "tests in|passed|failed|FAILED|exit" | tee "$OUT/lanesreg.log"
              timeout 300 python benchmarks/bench_scan_forward_configs.py --configs default "lanes reg224" "lanes reg200" \
                "lanes reg184" "lanes reg168" "lanes tc2" --shapes 16x2048x2048 32x1536x2048 64x1536x2048 \
                --json "$OUT/lanesreg.json" 2>&1 | tee -a "$OUT/lanesreg.log" | grep -v "^  "
              for cfg in lanes_chunk=4 "lanes_maxnreg=${LANES_CAP:-200}" lanes_chunk=2 lanes_chunk=4 \
                         "lanes_maxnreg=${LANES_CAP:-200}" lanes_chunk=2; do  # the 130M prefill at batch 64
                export SEQMAMBA_SCAN_FWD_CONFIG="$cfg"; gen_row lanesreg "prefill_${cfg/=/_}" 130m 64
              done; unset SEQMAMBA_SCAN_FWD_CONFIG ;;
    convtaps) timeout 200 python -m pytest -q -rf tests/test_gpu_ops.py tests/test_triton_ops.py -k "conv" 2>&1 | tail -3 \
                | tee "$OUT/convtaps.log"
              timeout 120 python benchmarks/bench_conv_configs.py --taps shifted columns --tiles default \
                --json "$OUT/convtaps_default.json" 2>&1 | sed -n '/best per shape/,$p' | tee -a "$OUT/convtaps.log"
              timeout 200 python benchmarks/bench_conv_configs.py --taps columns --shapes 64x1536x2048 \
                --json "$OUT/convtaps_tiles.json" 2>&1 | sed -n '/best per shape/,$p' | tee -a "$OUT/convtaps.log"
              for taps in shifted columns; do
                gen_row convtaps "prefill_$taps" 130m 64 --cg-prefill --conv-taps $taps
              done
              timeout 200 python benchmarks/profile_decode.py --phase prefill --size 130m --batch 64 --top 8 2>&1 \
                | grep -E "GPU time|conv|^Mamba|^Transformer" | tee -a "$OUT/convtaps.log"
              for taps in shifted columns; do
                timeout 150 python benchmarks/bench_train_step.py --cases selective_copying --steps 300 \
                  --out "$OUT/ts_$taps" --conv-taps $taps 2>&1 | grep -E "^selective_copying" | sed "s/^/$taps /" \
                  | tee -a "$OUT/convtaps.log"
              done ;;
    pdltests) SEQMAMBA_PDL=1 par_pytest 4 420 pdltests -m gpu tests/ -k "not lanes" 2>&1 | tee "$OUT/pdltests.log" ;;
    twopass) timeout 150 python -m pytest -q -rf tests/test_decode_linear.py 2>&1 | tail -3 | tee "$OUT/twopass.log"
             timeout 400 python benchmarks/bench_decode_kernels.py --kernels linear --sizes 1.4b --batches 128 64 \
               --gemms x_proj dt_proj out_proj --json "$OUT/twopass.json" >> "$OUT/twopass.log" 2>&1
             python - "$OUT/twopass.json" <<'PY' | tee -a "$OUT/twopass.log"  # the best of each kind per projection
import json, sys
best = {}
for r in json.load(open(sys.argv[1]))["rows"]:
    label = r["config"]["label"]
    kind = "F.linear" if label == "F.linear" else "2pass" if "2pass" in label else "last arriver"
    key = (r["gemm"], r["batch"], kind)
    if r["matches_default"] and r["repeatable"] and (key not in best or r["us"] < best[key][0]):
        best[key] = (r["us"], label)
for (gemm, batch, kind), (us, label) in sorted(best.items()):
    print(f"{gemm:8s} b{batch:<4d} {kind:13s} {us:7.2f} us  {label}")
PY
             ;;
    *) echo "unknown step: $step" >&2; exit 2 ;;
  esac
done
bash benchmarks/pack_out.sh "$OUT" logs.tgz  # more than the 8 files the device returns: all in one archive
