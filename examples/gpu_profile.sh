#!/usr/bin/env bash
# Nsight Compute counters for the Triton forward kernel (fallback path) and the statistics kernel at 8k tokens,
# 32x128 GQA 32/8, fp16. Uses the first (default) tile config so no autotuning launches are profiled.
set -uo pipefail
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1
M=gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__occupancy_limit_registers,launch__grid_size,launch__block_size
INTERP_AUTOTUNE=0 timeout 500 ncu --clock-control none -k regex:"attention_fwd_kernel|attention_stats_kernel" --launch-skip 4 \
  --metrics "$M" python3 examples/profile_kernels.py --n 8192 > "$OUT/ncu.log" 2>&1
grep -E "^  [a-z_]+_kernel \(|duration|pct|registers|grid_size" "$OUT/ncu.log" | awk '!seen[$0]++' | tail -60
