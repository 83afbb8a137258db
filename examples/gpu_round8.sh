#!/usr/bin/env bash
# Issue 18, the next GPU call (< 10 min), in order of what decides the most:
#  1. the warp-specialisation probe on the key-by-query walk: checked against torch, WS off / on on identical work;
#  2. every statistics config pinned, stats "query" and "all", fp16 at 8k / 32k (which tiles the per-query path wants);
#  3. where a wrapped model's eager time goes (host syncs, host ops, kernels), the Llama-3-8B and SmolLM2 shapes.
#   bash examples/gpu_round8.sh            # logs under ${OUT:-out/gpu}
set -uo pipefail
OUT=${OUT:-out/gpu}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 150 python3 examples/ws_probe_gpu.py --n 8192 32768 2>&1 | grep -v Warning | tee "$OUT/ws_probe.log"
timeout 240 python3 examples/stats_configs_gpu.py --lengths 8192 32768 --stats query all --configs 0 1 4 9 10 \
  2>&1 | grep -v Warning | tee "$OUT/stats_configs_query_all.log"
(cd examples && timeout 150 python3 model_overhead_gpu.py --tokens 1024 4096 --reps 10 2>&1 | grep -v Warning \
  >"$OUT/overhead.log"; grep -E "^==|sync|File|CUDA runtime" "$OUT/overhead.log" | head -30)
