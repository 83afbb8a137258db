#!/usr/bin/env bash
# Issue 18, round 13. Logs under ${OUT:-out/gpu}.
#   PART=a bash examples/gpu_round13.sh   # (< 4 min) why the key-by-query walk (config 0) loses to config 10 at 1k-2k:
#       CUDA-graph replays of every statistic and of every statistic but the masses (their walks), configs 0 1 10;
#       Nsight Compute of the statistics kernel at 2k, configs 0 and 10 (instructions, issue, stalls, pipes)
#   PART=b ...                            # per-SASS-instruction counts at 2k (Nsight Compute source counters)
#   BEFORE=<dir> PART=c ...               # kernel tests; A/B against the kernels in <dir>/kernels: 1k-32k
#   BEFORE=<dir> PART=d ...               # A/B on the bundled models' shapes and on sliding windows
#   BEFORE=<dir> PART=e ...               # Gemma 3's windowed shape: each kernel's device time, A/B
#   BEFORE=<dir> PART=f ...               # the same for a 4096 window at head_dim 256 and a 512 one at 128
#   BEFORE=<dir> PART=g ...               # window tests on the GPU, then PART=f again (after the run threshold)
# (<dir>: the previous commit's kernels/*.py, e.g. under .exp/, passed with `carry`)
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
side() {  # $1: label; the rest: examples/stats_configs_gpu.py arguments
  local label=$1; shift; echo "== $label: $*"
  (cd examples && timeout 150 python3 stats_configs_gpu.py "$@" 2>&1 | grep -v Warn | tail -n +2)
}
ab() {  # this tree / the kernels in $BEFORE (swapped in) / this tree, one machine
  side after "$@"; swap; side before "$@"; restore; side after "$@"
}
case "${PART:-a}" in c|d|e|f|g) : "${BEFORE:?PART=$PART compares against the kernels in \$BEFORE/kernels: set BEFORE}";; esac
if [ "${PART:-a}" = a ]; then
  (cd examples && timeout 150 python3 stats_configs_gpu.py --lengths 1024 2048 --graph --configs 0 1 10 \
    --stats all nomass 2>&1 | grep -v Warn) | tee "$OUT/short_nomass_round13.log"
  M=gpu__time_duration.sum,launch__registers_per_thread,launch__grid_size,sm__warps_active.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,smsp__sass_inst_executed_op_local_ld.sum,smsp__sass_inst_executed_op_local_st.sum,sm__cycles_active.avg,smsp__thread_inst_executed_per_inst_executed.ratio
  for C in 0 10; do
    echo "== config $C, 2k, stats=all"
    timeout 100 ncu --clock-control none -k regex:attention_stats_kernel --launch-skip 3 --launch-count 1 \
      --section WarpStateStats --metrics "$M" --page raw python3 examples/profile_kernels.py --n 2048 --config $C \
      >"$OUT/ncu_2k_c${C}_round13.raw" 2>&1
    grep -E "duration|registers_per|grid_size|pct_of_peak|inst_executed.sum |local_(ld|st)|cycles_active.avg |per_inst_executed|issue_stalled_.*per_issue_active.ratio|ERROR" \
      "$OUT/ncu_2k_c${C}_round13.raw" | grep -v -E " 0$| 0\.0[0-9]*$" | head -60
  done | tee "$OUT/ncu_2k_round13.log"
fi
if [ "${PART:-a}" = b ]; then
  # per-SASS-instruction execution counts of the statistics kernel at 2k (config 0 every statistic / without the
  # masses, config 10 every statistic): which code outside the key loops the instructions go to
  for V in "0 all" "0 nomass" "10 all"; do
    set -- $V
    timeout 120 ncu --clock-control none -k regex:attention_stats_kernel --launch-skip 3 --launch-count 1 \
      --section SourceCounters -o "$OUT/src_c$1_$2" -f python3 examples/profile_kernels.py --n 2048 --config $1 \
      --stats $2 >"$OUT/src_c$1_$2.txt" 2>&1
    ncu -i "$OUT/src_c$1_$2.ncu-rep" --page source --csv --print-source sass >"$OUT/src_c$1_$2.csv" 2>&1
    python3 examples/ncu_source_segments.py "$OUT/src_c$1_$2.csv" --warps 4096  # 1024 programs x 4 warps
  done 2>&1 | tee "$OUT/src_round13.log"
  rm -f "$OUT"/*.ncu-rep.tmp
fi
if [ "${PART:-a}" = c ]; then
  # (< 7 min) the kernel tests, then this tree against the previous commit's kernels ($BEFORE, swapped in): short
  # calls (graph replays) and 8k / 32k, every statistic
  (cd tests && timeout 300 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short test_kernel_triton.py \
    test_stats_configs.py test_walk_runs.py test_layer_batch.py test_kernel_awkward.py 2>&1 \
    | grep -E "FAILED|passed|failed|error" | tail -15) | tee "$OUT/tests_round13.log"
  ab --lengths 1024 2048 --graph --configs 0 1 10 --stats all 2>&1 | tee "$OUT/ab_short_round13.log"
  ab --lengths 8192 32768 --configs 0 10 --stats all 2>&1 | tee "$OUT/ab_long_round13.log"
fi
if [ "${PART:-a}" = d ]; then
  # (< 5 min) the same A/B on sliding windows (the Triton forward alone, and every statistic) and on the bundled
  # models' plain causal shapes (each with the config the autotuner takes for it: round 12)
  { ab --shape 4x256/1 --lengths 8192 32768 --configs 1 --stats all
    ab --shape 9x64/3 --lengths 8192 32768 --configs 0 --stats all; } 2>&1 | tee "$OUT/ab_shapes_round13.log"
  export INTERP_AUTOTUNE=0
  { ab --shape 4x256/1 --window 512 --lengths 8192 32768 --configs 0 --stats none all
    ab --window 4096 --lengths 32768 --configs 0 --stats none all; } 2>&1 | tee "$OUT/ab_window_round13.log"
fi
if [ "${PART:-a}" = e ]; then
  # (< 3 min) Gemma 3's windowed shape: each kernel's own device time (torch.profiler), configs 0 and 1 pinned, this
  # tree / $BEFORE's kernels / this tree: is the statistics kernel or the forward slower with the window's interior?
  prof() { for C in 0 1; do echo "== $1 config $C"; (cd examples && timeout 100 python3 kernel_profile_gpu.py \
    --shape 4x256/1 --window 512 --tokens 8192 32768 --config $C --reps 20 2>&1 | grep -E "^N=|attention_(stats|fwd)_kernel|cudnn"); done; }
  { prof after; swap; prof before; restore; prof after; } 2>&1 | tee "$OUT/window_kernels_round13.log"
fi
if [ "${PART:-a}" = f ]; then
  # (< 3 min) window size against head_dim: 4x256 with a 4096 window (config 1), 32x128 with a 512 window (config 0)
  prof() { echo "== $1"; (cd examples && timeout 100 python3 kernel_profile_gpu.py --shape 4x256/1 --window 4096 \
      --tokens 32768 --config 1 --reps 10 2>&1 | grep -E "^N=|attention_(stats|fwd)_kernel"
    timeout 100 python3 kernel_profile_gpu.py --window 512 --tokens 8192 32768 --config 0 --reps 10 2>&1 \
      | grep -E "^N=|attention_(stats|fwd)_kernel"); }
  { prof after; swap; prof before; restore; prof after; } 2>&1 | tee "$OUT/window_sizes_round13.log"
fi
if [ "${PART:-a}" = g ]; then
  # (< 4 min) after the window-run threshold: its tests on the GPU (a long window splits), then PART=f's A/B again
  (cd tests && timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider -rf --tb=short test_walk_runs.py \
    test_kernel_triton.py -k "window or walk_runs or long_window" 2>&1 | grep -E "FAILED|passed|failed|error" | tail -8) \
    | tee "$OUT/tests_window_round13.log"
  PART=f bash "$0" >/dev/null 2>&1; cp "$OUT/window_sizes_round13.log" "$OUT/window_sizes_threshold_round13.log"
  cat "$OUT/window_sizes_threshold_round13.log"
fi
