#!/usr/bin/env bash
# Round 29 on the GPU machine.
#   PART=a bash examples/gpu_round29.sh   # (< 10 min) the ROLES=2 trial configs (17, 18) pinned beside configs 0
#                                         # and 13 at 1k-4k (graph replays), round 28's untimed sinks changes
#                                         # (timing, a profile), then the config and sinks tests
#   PART=b bash examples/gpu_round29.sh   # the statistic-split probe on two streams (examples/roles_probe_gpu.py)
#   PART=c bash examples/gpu_round29.sh   # (~3 min) PART=a's first step alone, 9x64/3 and 32x128/8 at 1k / 2k
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b|c) ;; *) echo "usage: PART=a|b|c bash examples/gpu_round29.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
if [ "$PART" = a ]; then
  for run in "9x64/3 100" "32x128/8 100" "4x256/1 60"; do
    set -- $run
    INTERP_STATS_TRIAL_CONFIGS=1 timeout $2 python3 examples/stats_configs_gpu.py --shape $1 --graph \
      --lengths 1024 2048 4096 --configs 0 13 17 18 2>&1 | grep -v Warn | tee -a "$OUT/roles_configs_round29.log"
  done
  timeout 70 python3 examples/sinks_gpu.py --shapes 64x64/8 --lengths 2048 8192 32768 --windows 0 128 2>&1 \
    | grep -v Warn | tee "$OUT/sinks_round29.log"
  timeout 30 python3 examples/sinks_profile_gpu.py --n 2048 --window 128 2>&1 | grep -v Warn \
      | tee -a "$OUT/sinks_profile_round29.log"
  (cd tests && INTERP_STATS_TRIAL_CONFIGS=1 timeout 60 python3 -m pytest -q -n 16 -p no:cacheprovider \
    -p no:logging -rfE --tb=short test_stats_configs.py -k "roles or every_autotune_candidate") 2>&1 \
    | grep -v Warn | tail -6 | tee "$OUT/tests_round29.log"
elif [ "$PART" = c ]; then
  for shape in 9x64/3 32x128/8; do
    INTERP_STATS_TRIAL_CONFIGS=1 timeout 100 python3 examples/stats_configs_gpu.py --shape $shape --graph \
      --lengths 1024 2048 --configs 0 13 17 18 2>&1 | grep -v Warn | tee -a "$OUT/roles_configs_round29.log"
  done
else
  timeout 200 python3 examples/roles_probe_gpu.py 2>&1 | grep -v Warn | tee "$OUT/roles_probe_round29.log"
fi
