#!/usr/bin/env bash
# Issue 18, round 12b (< 6 min): the key statistics finalized inside the kernel or by two torch ops after it
# (`launcher.FINALIZE_MAX_LEN`, 8192 by default after round 12), side by side at 2k-128k in alternating rounds
# (examples/finalize_ab_gpu.py), after the kernel tests with this commit (the torch form included).
#   bash examples/gpu_round12b.sh        # logs under ${OUT:-out/gpu}
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
(cd tests && timeout 120 python3 -m pytest -q -n 8 -p no:cacheprovider -rf --tb=short test_kernel_triton.py \
  test_layer_batch.py 2>&1 | grep -E "FAILED|passed|failed|error" | tail -12) \
  | tee "$OUT/tests_round12b.log"
(cd examples && timeout 200 python3 finalize_ab_gpu.py --lengths 2048 8192 32768 131072 --rounds 3 2>&1 \
  | grep -v Warn) | tee "$OUT/finalize_ab_round12b.log"
