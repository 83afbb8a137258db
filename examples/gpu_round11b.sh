#!/usr/bin/env bash
# Issue 18, round 11b (< 3 min; < 5 with TESTS=1): 1. with TESTS=1, the kernel tests with this commit's defaults
# (the raw launcher on; round 11 ran them with INTERP_RAW_LAUNCH=1); 2. the in-kernel key finalize at long inputs,
# where its serial loop (one program per head converts Lk sums) could show: every statistic at 8k / 32k, config 0
# pinned, this commit against BEFORE (c2a0867's kernels/*.py swapped in), ROUNDS (default 2) times in alternating order.
#   BEFORE=.exp/before bash examples/gpu_round11b.sh     # carry=[".exp"]; .exp/before as for gpu_round11.sh
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
[ "${TESTS:-0}" = 1 ] && (cd tests && timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider -rf --tb=short \
  test_direct_launch.py test_kernel_triton.py test_layer_batch.py 2>&1 | grep -E "FAILED|passed|failed|error" \
  | tail -12) \
  | tee "$OUT/tests_round11b.log"
long() { (cd examples && timeout 70 python3 stats_configs_gpu.py --lengths 8192 32768 --configs 0 2>&1 \
  | grep -v Warn); }
for i in $(seq "${ROUNDS:-2}"); do
  long > "$OUT/long_round11b_after$i.log"
  swap; long > "$OUT/long_round11b_before$i.log"; restore
done
grep -H -E "N=|\[" "$OUT"/long_round11b_*.log
