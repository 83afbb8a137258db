#!/usr/bin/env bash
# Issue 18, round 9 (next GPU call, < 8 min): 1. the Gluon walk with its products overlapped
# (examples/gluon_walk_probe_gpu.py), checked against float64 (three runs per variant: races would show as
# differences) and timed beside SDPA, the same walk in Triton (examples/gqa_pack_probe_gpu.py, one head per program)
# and the same Gluon kernel without the overlap, at 8k and 32k. If it wins by a margin, the statistics pass gets a
# Gluon walk for its unmasked key blocks.
#   bash examples/gpu_round9.sh            # logs under ${OUT:-out/gpu}
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
timeout 200 python3 examples/gluon_walk_probe_gpu.py --n 8192 32768 2>&1 | grep -v Warning | tee "$OUT/gluon_walk.log"
# 2. the 1k-2k tiles (device time: CUDA-graph replays): config 0 (the default), 10 (the autotuner's 1k pick in round
#    7) and the two trial key-by-query configs with 32-query tiles (13: 190 registers, 14: capped at 128), each checked
#    against the reference first; then the trial configs through the kernel tests
INTERP_STATS_TRIAL_CONFIGS=1 timeout 150 python3 examples/stats_configs_gpu.py --lengths 1024 2048 --stats all \
  --graph --configs 0 10 13 14 2>&1 | grep -v Warning | tee "$OUT/stats_configs_short.log"
(cd tests && INTERP_STATS_TRIAL_CONFIGS=1 timeout 200 python3 -m pytest -q -n 8 -p no:cacheprovider -rf --tb=line \
  test_stats_configs.py 2>&1 | grep -E "FAILED|passed|failed") | tee "$OUT/tests_trial_round9.log"
