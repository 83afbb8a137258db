#!/usr/bin/env bash
# Nsight Compute counters for the statistics kernel (attention_stats_kernel: one query-major pass over SDPA's
# log-sum-exp) at 8k tokens, 32x128 GQA 32/8, fp16, for stats="query" and stats="all" (examples/profile_kernels.py).
# INTERP_AUTOTUNE=0: the first fitting tile config, so no autotuning launches are profiled. Registers, occupancy,
# local-memory (spill) instructions and the busy share of each pipe. ncu reads counters on Firecracker machines only.
set -uo pipefail
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1
M=launch__registers_per_thread,launch__occupancy_limit_registers,gpu__time_duration.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__sass_inst_executed_op_local_ld.sum,smsp__sass_inst_executed_op_local_st.sum,launch__grid_size,launch__block_size
# CONFIGS: entries of the statistics kernel's config list to profile, one ncu run each (0: the first, key mass summed
# over the tile; 1: the same tile, summed per warp; 2: that capped at 128 registers; 3 and 4: the split-mass
# configs at <= 128 registers; docs/gpu/kspeed_notes.md rounds 4 and 5)
for C in ${CONFIGS:-0}; do
  INTERP_AUTOTUNE=0 timeout 330 ncu --clock-control none -k regex:attention_stats_kernel --launch-skip 3 \
    --metrics "$M" python3 examples/profile_kernels.py --n 8192 --config "$C" >"$OUT/ncu_stats_c$C.log" 2>&1
  echo "== config $C"
  grep -E "pinned|attention_stats_kernel \(|registers|duration|pct|local|grid|block_size|ERROR" "$OUT/ncu_stats_c$C.log" | head -60
done
