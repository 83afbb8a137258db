#!/usr/bin/env bash
# Issue 18, round 10e (< 2.5 min; not run yet: no device time was left in round 10): the kernel tests with the
# compiled kernel's launcher called directly (INTERP_RAW_LAUNCH=1, kernels/direct_launch.py) and the layer batch on
# the GPU, then the host time of a 1k statistics call with it (examples/host_split_gpu.py). If the tests pass, the
# raw launch can become the default.
#   bash examples/gpu_round10e.sh        # logs under ${OUT:-out/gpu}
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
(cd tests && INTERP_RAW_LAUNCH=1 timeout 95 python3 -m pytest -q -n 8 -p no:cacheprovider -rf --tb=short test_direct_launch.py \
  test_kernel_triton.py test_layer_batch.py 2>&1 | grep -E "FAILED|passed|failed|error" | tail -12) \
  | tee "$OUT/tests_round10e.log"
(cd examples && INTERP_RAW_LAUNCH=1 timeout 35 python3 host_split_gpu.py --tokens 1024 --reps 100 2>&1 | grep -v Warn) \
  > "$OUT/host_split_round10e.log"
grep -E "ours all|whole call|_direct_stats|_launch_stats|triton_stats|DirectLauncher" "$OUT/host_split_round10e.log"
