#!/usr/bin/env bash
# Issue 18, round 6, one GPU call: where a wrapped model's statistics time goes (host syncs, host ops, kernels),
# CUDA graphs on the Llama-3-8B shape, the tile configs the autotuner picks (with the two one-warpgroup configs of
# round 6), fp16 and bf16 benchmarks side by side with SDPA, and Nsight Compute's stall reasons for the stats kernel.
#   bash examples/gpu_round6.sh            # logs under ${OUT:-out/gpu}
set -uo pipefail
OUT=${OUT:-out/gpu}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
(cd examples && timeout 150 python3 model_overhead_gpu.py --tokens 1024 4096 --reps 10 2>&1 | grep -v Warning \
  >"$OUT/overhead.log"; grep -E "^==|sync|model.py|launcher|checks|File" "$OUT/overhead.log" | head -40)
(cd examples && timeout 120 python3 cuda_graphs_gpu.py --tokens 1024 --model-tokens 1024 4096 \
  --model-shape llama3-8b --reps 50 2>&1 | grep -v Warning | tee "$OUT/graphs_llama.log")
timeout 90 python3 -c "
import torch
from interp.kernels import attention_with_stats as a, launcher as L
for dt in (torch.float16, torch.bfloat16):
    for n in (1024, 8192, 32768):
        q = torch.randn(1, 32, n, 128, device='cuda', dtype=dt); k = torch.randn(1, 8, n, 128, device='cuda', dtype=dt)
        for s in ('all', 'query'):
            a(q, k, k, stats=s)
for key, c in L._tuned.items():  # in call order: all, query per length and dtype
    print('tuned', key[0], key[1], c)
" 2>&1 | grep -v Warning | tee "$OUT/tuned.log"
for dt in float16 bfloat16; do
  timeout 150 python3 -m interp.kernels.bench --dtype $dt --shapes 32x128/8 --lengths 1024 8192 32768 \
    --methods sdpa ours-none ours-query ours-all --per-stat-lengths --long-lengths --flex-lengths 2>&1 \
    | grep -v Warning | tee "$OUT/bench_$dt.log" | tail -8
done
INTERP_AUTOTUNE=0 timeout 120 ncu --clock-control none -k regex:attention_stats_kernel --launch-skip 3 \
  --section SchedulerStats --section WarpStateStats python3 examples/profile_kernels.py --n 8192 --config 2 \
  >"$OUT/ncu_stalls_c2.log" 2>&1
grep -E "Stall|Issue|Eligible|Warp Cycles|No Eligible|Active Warps" "$OUT/ncu_stalls_c2.log" | head -30
