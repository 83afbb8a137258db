#!/usr/bin/env bash
# Issue 18, round 16 (prepared in round 15's session, which had no device time left for it), on the GPU machine:
#   PART=a bash examples/gpu_round16.sh   # (< 5 min) the trial config 15 (64x32 key-by-query tiles, 168 registers:
#                                         # three CTAs per SM at head_dim 256) against config 1 / config 0
#   PART=b ...                            # (< 3 min) output only at 9x64: which kernels run beside SDPA's (1.07x at
#                                         # 128k in bench_round15.log)
#   PART=c ...                            # (< 5 min) short calls as CUDA-graph replays, the bundled shapes and 32x128,
#                                         # with the configs the autotuner took at 1k (short_shapes_round15.log)
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b|c) ;; *) echo "usage: PART=a|b|c bash examples/gpu_round16.sh" >&2; exit 2;; esac
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
