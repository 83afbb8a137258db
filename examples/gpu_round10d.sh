#!/usr/bin/env bash
# Issue 18, round 10d (< 5 min; not run yet: no device time was left in round 10): 1. the kernel tests with the
# leaner direct launch and the layer batch; 2. host time of single statistics calls at 1k, this commit's launch path
# against the one before it on the same machine (BEFORE=dir: a folder holding kernels/direct_launch.py and
# kernels/launcher.py of the earlier commit, copied in for the second run and restored after); 3. whole models
# (30-layer SmolLM2 shape at 1k and 4k, 4-layer Llama-3-8B shape at 4k), batched statistics against per-layer calls.
#   mkdir -p .exp/before/kernels && for f in direct_launch launcher; do
#     git show c2a0867:kernels/$f.py > .exp/before/kernels/$f.py; done   # .exp/ listed in .git/info/exclude
#   BEFORE=.exp/before bash examples/gpu_round10d.sh        # run with carry=[".exp"]; logs under ${OUT:-out/gpu}
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
(cd tests && timeout 110 python3 -m pytest -q -n 8 -p no:cacheprovider -rf --tb=short test_direct_launch.py \
  test_kernel_triton.py test_graphs.py test_layer_batch.py 2>&1 \
  | grep -E "FAILED|passed|failed|error" | tail -12) | tee "$OUT/tests_round10d.log"
split() { (cd examples && timeout 45 python3 host_split_gpu.py --tokens 1024 --reps 150 2>&1 | grep -v Warn); }
split > "$OUT/host_split_round10d.log"
if [ -n "${BEFORE:-}" ]; then
  mkdir -p /tmp/after/kernels && cp kernels/direct_launch.py kernels/launcher.py /tmp/after/kernels/
  cp "$BEFORE"/kernels/*.py kernels/ && split > "$OUT/host_split_round10d_before.log"
  cp /tmp/after/kernels/*.py kernels/
fi
grep -E "N=|ours all|whole call|_direct_stats|_launch_stats|triton_stats" "$OUT"/host_split_round10d*.log | head -40
for run in "smollm2 --layers 30 --tokens 1024 4096" "llama3-8b --layers 4 --tokens 4096"; do
  name=${run%% *}
  (cd examples && timeout 60 python3 model_overhead_gpu.py --shape $run --reps 6 --top 8 2>&1 | grep -v Warning \
    >"$OUT/model_overhead_${name}_round10d.log")
  grep -E "==|bit for bit" "$OUT/model_overhead_${name}_round10d.log"
done
