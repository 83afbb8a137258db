#!/usr/bin/env bash
# Issue 18, round 10c (< 6 min): the statistics of many layers in one pass (interp/layer_batch.py) on whole models,
# against the per-layer calls on the same machine (examples/model_overhead_gpu.py: "the same with a statistics call
# per layer"; equality of the two checked bit for bit), and its tests on the GPU.
#   bash examples/gpu_round10c.sh            # logs under ${OUT:-out/gpu}
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
(cd tests && timeout 120 python3 -m pytest -q -p no:cacheprovider -rf --tb=short test_layer_batch.py 2>&1 \
  | grep -E "FAILED|passed|failed|error|Error" | tail -12) | tee "$OUT/tests_layer_batch_round10.log"
for shape in "smollm2 --layers 30" "llama3-8b --layers 4"; do
  name=${shape%% *}
  (cd examples && timeout 120 python3 model_overhead_gpu.py --shape $shape --tokens 1024 4096 --reps 10 \
    --top 10 2>&1 | grep -v Warning >"$OUT/model_overhead_${name}_round10c.log")
  grep -E "==|bit for bit" "$OUT/model_overhead_${name}_round10c.log"
done
grep -A18 "host us per forward" "$OUT/model_overhead_smollm2_round10c.log" | head -40
