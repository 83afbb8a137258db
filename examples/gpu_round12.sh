#!/usr/bin/env bash
# Issue 18, round 12 (< 10 min): 1. the kernel tests on the GPU with this commit's defaults (raw launcher on; the
# in-kernel key finalize with the review's fixes: 64-bit ticket address, correctly rounded key_mean); 2. the finalize
# at long inputs, where its serial loop (one program per head converts Lk sums) could show: every statistic at
# 8k / 32k, config 0 pinned, this commit / BEFORE (c2a0867's kernels/*.py) / this commit; 3. every config pinned on
# the bundled models' shapes (9x64 GQA 9/3, 4x256 MQA) at 8k / 32k, to see whether their 2.0-2.4x is a config choice.
#   BEFORE=.exp/before bash examples/gpu_round12.sh     # carry=[".exp"]; .exp/before as for gpu_round11.sh
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
(cd tests && timeout 170 python3 -m pytest -q -n 8 -p no:cacheprovider -rf --tb=short test_direct_launch.py \
  test_kernel_triton.py test_layer_batch.py test_graphs.py test_stats_configs.py 2>&1 \
  | grep -E "FAILED|passed|failed|error" | tail -12) | tee "$OUT/tests_round12.log"
long() { (cd examples && timeout 60 python3 stats_configs_gpu.py --lengths 8192 32768 --configs 0 2>&1 \
  | grep -v Warn); }
long > "$OUT/long_round12_after1.log"
if [ -n "${BEFORE:-}" ]; then swap; long > "$OUT/long_round12_before.log"; restore; fi
long > "$OUT/long_round12_after2.log"
grep -H -E "N=|\[" "$OUT"/long_round12_*.log
for shape in 9x64/3 4x256/1; do
  name=${shape%%/*}
  (cd examples && timeout 110 python3 stats_configs_gpu.py --shape "$shape" --lengths 8192 32768 2>&1 \
    | grep -v Warn) > "$OUT/shape_configs_${name}_round12.log"
  cat "$OUT/shape_configs_${name}_round12.log"
done
