#!/usr/bin/env bash
# Issue 18, round 8: two GPU calls (< 10 min each), in order of what decides the most.
#   PART=a bash examples/gpu_round8.sh   # warp-specialisation probe (two tilings) + Nsight Compute, stats walk vs SDPA
#   PART=b bash examples/gpu_round8.sh   # GQA-packing probe, memory-side counters, trial key-by-query configs
#   PART=c bash examples/gpu_round8.sh   # kernel tests; heavy-first program order A/B (ab_old/, ab_new/)
#   PART=e bash examples/gpu_round8.sh   # the same with the order switched by length
#   PART=d bash examples/gpu_round8.sh   # every statistics config pinned ("query", "all"); wrapped-model host time
# Parts c and e compare the kernel files before and after the program-order change, swapped in one run: they need
#   mkdir -p ab_old ab_new; for f in triton_forward triton_stats launcher triton_backward launcher_backward; do
#     git show a17c4f8:kernels/$f.py >ab_old/$f.py; cp kernels/$f.py ab_new/; done      # (ab_*/ untracked: they travel)
# logs under ${OUT:-out/gpu}
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
kernel_tests() {  # the four kernel test files on the GPU, failures named; $1: seconds, $2: log name
  (cd tests && timeout "$1" python3 -m pytest -q -x -n 8 -p no:cacheprovider -rf --tb=line test_kernel_triton.py \
    test_kernel_awkward.py test_kernel_backward.py test_stats_configs.py 2>&1 | grep -E "FAILED|passed|failed") \
    | tee "$OUT/$2"
}
swap_ab() {  # ab new / old / new with the kernel files of ab_new/ and ab_old/; $1: log name
  { ab new; cp ab_old/*.py kernels/ && ab old; cp ab_new/*.py kernels/ && ab new; } 2>&1 | tee "$OUT/$1"
}
if [ "${PART:-a}" = a ]; then
  # 1. WS off / on on identical work, checked against torch (float64), two tilings (BLOCK_M:BLOCK_N:warps:stages)
  for T in 64:128:4:2 64:64:4:2; do
    echo "== ws_probe tiles $T"
    timeout 130 python3 examples/ws_probe_gpu.py --n 8192 32768 --tiles $T 2>&1 | grep -v Warning
  done | tee "$OUT/ws_probe.log"
  # 2. Nsight Compute at 8k: the statistics kernel (config 0, INTERP_AUTOTUNE=0) and cuDNN's SDPA kernel, same metrics
  M=gpu__time_duration.sum,launch__registers_per_thread,launch__grid_size,launch__block_size,sm__warps_active.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,sm__inst_issued.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,smsp__sass_inst_executed_op_local_ld.sum
  INTERP_AUTOTUNE=0 timeout 240 ncu --clock-control none -k regex:"attention_stats_kernel|sdpa|fmha|flash" \
    --launch-count 6 --section WarpStateStats --section SchedulerStats --metrics "$M" --page raw \
    python3 examples/profile_kernels.py --n 8192 >"$OUT/ncu_round8.log" 2>&1
  grep -E "^  [a-z_].*\(|duration|registers_per|grid_size|pct_of_peak|inst_executed.sum |local_ld|stalled.*ratio" \
    "$OUT/ncu_round8.log" | grep -v -E " 0$| 0\.0[0-9]*$" | head -150
elif [ "$PART" = b ]; then
  # 3. one K tile for the G query heads of a KV head (GQA packing) against one head per program: is the walk L2-bound?
  timeout 120 python3 examples/gqa_pack_probe_gpu.py --n 8192 32768 2>&1 | grep -v Warning | tee "$OUT/gqa_pack.log"
  # 4. memory side of the walk and of cuDNN's kernel at 8k (speed of light, L2 / L1 traffic)
  INTERP_AUTOTUNE=0 timeout 150 ncu --clock-control none -k regex:"attention_stats_kernel|sdpa" --launch-count 3 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis python3 examples/profile_kernels.py --n 8192 \
    >"$OUT/ncu_memory_round8.log" 2>&1
  grep -E "^  [a-z_].*\(|Throughput|Duration|Hit Rate|Bandwidth|Busy|ERROR" "$OUT/ncu_memory_round8.log" | head -60
  # 5. trial key-by-query configs pinned (13: 3 stages, 14: 128 registers = four CTAs per SM, 15: 1 stage) vs 0
  INTERP_STATS_TRIAL_CONFIGS=1 timeout 240 python3 examples/stats_configs_gpu.py --lengths 8192 32768 --stats all \
    --configs 0 13 14 15 2>&1 | grep -v Warning | tee "$OUT/stats_configs_trial.log"
elif [ "$PART" = c ]; then
  # 6. kernel tests on the GPU, then heavy-first program order A/B: the kernels before (ab_old/) and after (ab_new/)
  #    swapped in this run, config 0 pinned in both (INTERP_AUTOTUNE=0), new / old / new
  kernel_tests 240 tests_round8.log
  ab() {
    echo "== $1"
    INTERP_AUTOTUNE=0 timeout 100 python3 -m interp.kernels.bench --shapes 32x128/8 --lengths 1024 2048 8192 32768 \
      --methods sdpa ours-query ours-all 2>&1 | grep -E "^\| 32x128"
    INTERP_AUTOTUNE=0 timeout 80 python3 examples/cuda_graphs_gpu.py --tokens 1024 2048 --model-tokens --reps 200 \
      2>&1 | grep -v -i warn | tail -4
  }
  swap_ab ab_heavy_first.log
elif [ "$PART" = e ]; then
  # 7. the program order switched by length (heads-first, longest first up to 8192 queries; head by head above):
  #    kernel tests, then short graph-replayed calls and 256k per-query / per-key statistics, new / old / new
  kernel_tests 220 tests_round8e.log
  ab() {
    echo "== $1"
    INTERP_AUTOTUNE=0 timeout 60 python3 examples/cuda_graphs_gpu.py --tokens 1024 2048 --model-tokens --reps 200 \
      2>&1 | grep "^N="
    INTERP_AUTOTUNE=0 timeout 60 python3 -m interp.kernels.bench --shapes 32x128/8 --lengths --long-lengths 262144 \
      --long-methods sdpa ours-query ours-keymass 2>&1 | grep -E "^32x128"
  }
  swap_ab ab_order_round8e.log
else
  timeout 300 python3 examples/stats_configs_gpu.py --lengths 8192 32768 --stats query all --configs 0 1 4 9 10 \
    2>&1 | grep -v Warning | tee "$OUT/stats_configs_query_all.log"
  (cd examples && timeout 200 python3 model_overhead_gpu.py --tokens 1024 4096 --reps 10 2>&1 | grep -v Warning \
    >"$OUT/overhead.log"; grep -E "^==|sync|File|CUDA runtime" "$OUT/overhead.log" | head -30)
fi
