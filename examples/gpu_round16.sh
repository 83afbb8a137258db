#!/usr/bin/env bash
# Issue 18, round 16 (prepared in round 15's session, which had no device time left for it), on the GPU machine:
#   PART=a bash examples/gpu_round16.sh   # (< 5 min) the trial config 15 (64x32 key-by-query tiles, 168 registers:
#                                         # three CTAs per SM at head_dim 256) against config 1 / config 0
#   PART=b ...                            # (< 3 min) output only at 9x64: which kernels run beside SDPA's (1.07x at
#                                         # 128k in bench_round15.log)
#   PART=c ...                            # (< 5 min) short calls as CUDA-graph replays, the bundled shapes and 32x128,
#                                         # with the configs the autotuner took at 1k (short_shapes_round15.log)
#   PART=d ...                            # (< 4 min) the new default config 13 (32x64 r128 T) against config 0 at 9x64
#                                         # 8k / 32k; every autotune candidate against the reference on the GPU
#   PART=e ...                            # (< 8 min) the benchmark, with CUDA-graph replays at 1k / 2k
#   PART=f ...                            # (< 5 min) the kernel tests with the autotuners' new timer, and the configs
#                                         # it picks at 1k / 2k / 8k for each shape
#   PART=g ...                            # (< 4 min) the same timer with Triton's kept for calls >= LONG_MS: its picks
#                                         # and each call's time at 1k-128k, then its tests
#   PART=h ...                            # (< 3 min) whole models with the new timer (as round 11)
#   BEFORE=.exp/r16before PART=i ...      # (< 4 min) 30-layer SmolLM2 shape at 1k / 4k: this tree, the kernels of
#                                         # 732470e (Triton's timer; carry .exp), this tree
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b|c|d|e|f|g|h|i) ;; *) echo "usage: PART=a|b|c|d|e|f|g|h|i bash examples/gpu_round16.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
cd examples
if [ "$PART" = a ]; then
  (INTERP_STATS_TRIAL_CONFIGS=1 timeout 200 python3 stats_configs_gpu.py --shape 4x256/1 --lengths 8192 32768 \
     --stats all --configs 1 15
   INTERP_STATS_TRIAL_CONFIGS=1 timeout 200 python3 stats_configs_gpu.py --lengths 8192 32768 --stats all \
     --configs 0 15) 2>&1 | tee "$OUT/trial_config_round16.log"
fi
if [ "$PART" = b ]; then
  timeout 170 python3 kernel_profile_gpu.py --reps 3 --shape 9x64/3 --tokens 32768 131072 --stats none all 2>&1 \
    | grep -v -i "warn" | tee "$OUT/output_only_9x64_round16.log"
fi
if [ "$PART" = c ]; then
  (timeout 100 python3 stats_configs_gpu.py --graph --lengths 1024 2048 --stats all --configs 9 10
   timeout 100 python3 stats_configs_gpu.py --graph --shape 9x64/3 --lengths 1024 2048 --stats all --configs 8 9 10
   timeout 100 python3 stats_configs_gpu.py --graph --shape 4x256/1 --lengths 1024 2048 --stats all --configs 1 9) \
    2>&1 | tee "$OUT/short_graph_round16.log"
fi
if [ "$PART" = d ]; then
  (timeout 150 python3 stats_configs_gpu.py --shape 9x64/3 --lengths 8192 32768 --stats all --configs 0 13
   cd ../tests && timeout 200 python3 -m pytest -q -p no:cacheprovider -x -k every_autotune_candidate \
     test_stats_configs.py) 2>&1 | tee "$OUT/config13_round16.log"
fi
if [ "$PART" = e ]; then
  timeout 480 python3 -m interp.kernels.bench --shapes 32x128/8 9x64/3 4x256/1 --lengths 1024 2048 8192 32768 131072 \
    --methods sdpa ours-none ours-all --long-lengths --per-stat-lengths --flex-lengths --graph-lengths 1024 2048 \
    2>&1 | tee "$OUT/bench_round16.log"
fi
if [ "$PART" = f ]; then
  (cd ../tests && timeout 240 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short test_device_bench.py \
     test_stats_configs.py test_kernel_triton.py test_walk_runs.py test_layer_batch.py test_kernel_awkward.py
   timeout 60 python3 - <<'PY'
import torch
from interp.kernels import attention_with_stats, launcher, triton_stats
for h, kv, d in [(32, 8, 128), (9, 3, 64), (4, 1, 256)]:
    for n in (1024, 2048, 8192):
        q, k, v = (torch.randn(1, x, n, d, device="cuda", dtype=torch.float16) for x in (h, kv, kv))
        launcher._tuned.clear()
        attention_with_stats(q, k, v, stats="all")
        picked = [triton_stats.config_tag(c) for c in launcher._tuned.values()]
        print(f"{h}x{d}/{kv} {n}: autotuned {picked}", flush=True)
PY
  ) 2>&1 | tee "$OUT/tests_round16.log"
fi
if [ "$PART" = g ]; then
  (timeout 200 python3 - <<'PY'
import torch, torch.nn.functional as F, triton
from interp.kernels import attention_with_stats, launcher, triton_stats
for h, kv, d, lengths in [(32, 8, 128, (1024, 2048, 8192, 32768, 131072)), (9, 3, 64, (1024, 2048, 8192, 32768)),
                          (4, 1, 256, (1024, 2048, 8192, 32768))]:
    for n in lengths:
        q, k, v = (torch.randn(1, x, n, d, device="cuda", dtype=torch.float16) for x in (h, kv, kv))
        attention_with_stats(q, k, v, stats="all")
        picked = triton_stats.config_tag(list(launcher._tuned.values())[-1])  # (32k+ reuse 8k's key)
        ours = triton.testing.do_bench(lambda: attention_with_stats(q, k, v, stats="all"))
        sdpa = triton.testing.do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                                enable_gqa=True))
        print(f"{h}x{d}/{kv} {n}: {ours:.3f} ms, {ours / sdpa:.2f}x SDPA; config {picked}", flush=True)
        del q, k, v
PY
   cd ../tests && timeout 60 python3 -m pytest -q -p no:cacheprovider -rf --tb=short test_device_bench.py
  ) 2>&1 | tee "$OUT/picks_round16.log"
fi
if [ "$PART" = h ]; then
  (cd .. && whole_models round16)  # (examples/gpu_setup.sh; this script runs in examples/)
fi
if [ "$PART" = i ]; then
  for tree in after before after; do
    [ $tree = before ] && (cd .. && swap)
    echo "# $tree"
    timeout 70 python3 model_overhead_gpu.py --shape smollm2 --layers 30 --tokens 1024 4096 --reps 6 --top 1 2>&1 \
      | grep -E "==" 
    [ $tree = before ] && (cd .. && restore)
  done 2>&1 | tee "$OUT/model_ab_round16.log"
fi
