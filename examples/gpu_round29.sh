#!/usr/bin/env bash
# Round 29 on the GPU machine (H100), as it ran:
#   PART=c bash examples/gpu_round29.sh   # (~1 min) at ef864df only, where tile configs 17 / 18 were the ROLES=2
#                                         # trial configs (two programs per query block; dropped since): pinned
#                                         # beside configs 0 and 13 at 9x64/3 and 32x128/8, 1k / 2k, graph replays
#   PART=s bash examples/gpu_round29.sh   # (~2 min) round 28's sinks changes timed and profiled
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in c|s) ;; *) echo "usage: PART=c|s bash examples/gpu_round29.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
if [ "$PART" = c ]; then
  for shape in 9x64/3 32x128/8; do
    INTERP_STATS_TRIAL_CONFIGS=1 timeout 100 python3 examples/stats_configs_gpu.py --shape $shape --graph \
      --lengths 1024 2048 --configs 0 13 17 18 2>&1 | grep -v Warn | tee -a "$OUT/roles_configs_round29.log"
  done
else
  timeout 110 python3 examples/sinks_gpu.py --shapes 64x64/8 --lengths 2048 8192 32768 --windows 0 128 2>&1 \
    | grep -v Warn | tee "$OUT/sinks_round29.log"
  timeout 45 python3 examples/sinks_profile_gpu.py --n 2048 --window 128 2>&1 | grep -v Warn \
    > "$OUT/sinks_profile_round29.log"
fi
