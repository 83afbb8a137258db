#!/usr/bin/env bash
# Round 29 on the GPU machine.
#   PART=a bash examples/gpu_round29.sh   # (< 10 min) the statistic-split probe at 1k-8k (examples/roles_probe_gpu.py),
#                                         # then round 28's untimed sinks changes: tests, timing, a profile
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a) ;; *) echo "usage: PART=a bash examples/gpu_round29.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
if [ "$PART" = a ]; then
  timeout 280 python3 examples/roles_probe_gpu.py 2>&1 | grep -v Warn | tee "$OUT/roles_probe_round29.log"
  (cd tests && timeout 100 python3 -m pytest -q -n 16 -p no:cacheprovider -p no:logging -rfE --tb=short \
    test_sinks.py) 2>&1 | grep -v Warn | tail -8 | tee "$OUT/tests_sinks_round29.log"
  timeout 120 python3 examples/sinks_gpu.py --shapes 64x64/8 --lengths 2048 8192 32768 --windows 0 128 2>&1 \
    | grep -v Warn | tee "$OUT/sinks_round29.log"
  for n in 2048 8192; do
    timeout 40 python3 examples/sinks_profile_gpu.py --n $n --window 128 2>&1 | grep -v Warn \
      | tee -a "$OUT/sinks_profile_round29.log"
  done
fi
