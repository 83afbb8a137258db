#!/usr/bin/env bash
# Issue 18, round 11 (< 9 min): 1. the kernel tests on the GPU with the key statistics finalized inside the kernel
# (the last program of each head converts the fixed-point sums: no torch ops after it) and the compiled kernel's
# launcher called directly (INTERP_RAW_LAUNCH=1); 2. device time of every statistic at 1k / 2k (CUDA-graph replays,
# configs 10 and 0 pinned), this commit against the one before the launch trims and the in-kernel finalize
# (BEFORE=dir: kernels/*.py of that commit, swapped in for the second run and restored after); 3. host time of a
# single 1k call, this commit (with and without the raw launcher) against BEFORE; 4. whole models, every statistic
# batched over layers, against HF's SDPA forward.
#   mkdir -p .exp/before/kernels && for f in direct_launch launcher triton_stats; do
#     git show c2a0867:kernels/$f.py > .exp/before/kernels/$f.py; done   # .exp/ listed in .git/info/exclude
#   BEFORE=.exp/before bash examples/gpu_round11.sh        # run with carry=[".exp"]; logs under ${OUT:-out/gpu}
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
(cd tests && INTERP_RAW_LAUNCH=1 timeout 170 python3 -m pytest -q -n 8 -p no:cacheprovider -rf --tb=short \
  test_direct_launch.py test_kernel_triton.py test_layer_batch.py test_graphs.py test_stats_configs.py 2>&1 \
  | grep -E "FAILED|passed|failed|error" | tail -12) | tee "$OUT/tests_round11.log"
short() { (cd examples && timeout 60 python3 stats_configs_gpu.py --lengths 1024 2048 --graph --configs 10 0 2>&1 \
  | grep -v Warn); }
split() { (cd examples && timeout 40 python3 host_split_gpu.py --tokens 1024 --reps 150 2>&1 | grep -v Warn); }
short > "$OUT/short_round11.log"
split > "$OUT/host_split_round11.log"
INTERP_RAW_LAUNCH=1 split > "$OUT/host_split_round11_raw.log"
if [ -n "${BEFORE:-}" ]; then
  swap
  short > "$OUT/short_round11_before.log"
  split > "$OUT/host_split_round11_before.log"
  restore
fi
grep -E "N=|\[" "$OUT"/short_round11*.log
grep -E "ours all|whole call|_direct_stats|_launch_stats|triton_stats" "$OUT"/host_split_round11*.log | head -40
whole_models round11  # (examples/gpu_setup.sh)
