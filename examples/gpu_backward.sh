#!/usr/bin/env bash
# The backward pass on a GPU, in one command (for the `device` tool or any CUDA machine): gradient tests on real
# hardware (slow cases included) and the forward + backward benchmark against SDPA and FlexAttention.
#   bash examples/gpu_backward.sh [bench_backward args...]      # logs under ${OUT:-out/gpu}
#   STEP=tests|bench|profile selects one part (default: tests and bench)
set -uo pipefail
OUT=${OUT:-out/gpu}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
STEP=${STEP:-all}
if [ "$STEP" = all ] || [ "$STEP" = tests ]; then
  (cd tests && INTERP_AUTOTUNE=0 timeout 300 python3 -m pytest -q -p no:cacheprovider -n 8 -m "slow or not slow" \
     test_kernel_backward.py 2>&1 | tee "$OUT/backward_tests.log" | tail -5)
fi
if [ "$STEP" = all ] || [ "$STEP" = bench ]; then
  timeout 480 python3 -m interp.kernels.bench_backward --json "$OUT/backward_bench.json" "$@" 2>&1 \
    | tee "$OUT/backward_bench.log"
fi
if [ "$STEP" = profile ]; then  # Nsight Compute on the backward kernels at 8k, 32x128 GQA 32/8, first config (not run yet)
  M=gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__occupancy_limit_registers,launch__grid_size,launch__block_size,launch__shared_mem_per_block_dynamic
  INTERP_AUTOTUNE=0 timeout 400 ncu --clock-control none -k regex:"bwd_|attention_fwd" --launch-skip 8 --launch-count 8 \
    --metrics "$M" python3 -m interp.kernels.bench_backward --shapes 32x128/8 --lengths 8192 --methods ours \
    > "$OUT/backward_ncu.log" 2>&1
  grep -E "^  [a-z_]+ \(|^  [a-z_]+_kernel|duration|pct|registers|grid_size|shared_mem" "$OUT/backward_ncu.log" | tail -80
fi
