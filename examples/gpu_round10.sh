#!/usr/bin/env bash
# Issue 18, round 10 (next GPU call, < 10 min): 1. the host time of a 1k statistics call with the statistics kernel
# launched directly (kernels/direct_launch.py) and through Triton's JIT path, side by side on one machine
# (examples/host_split_gpu.py: "ours all" vs "all, JIT launch", and "all, no cuDNN" for the cuDNN call's share with
# the statistics kernel running); 2. the kernel tests with the direct launch (round 9
# ran only test_kernel_triton + test_stats_configs to the end; test_direct_launch.py included); 3. the 4-layer
# Llama-3-8B-shaped model and the 30-layer SmolLM2-shaped one at 1k, interleaved. host_split also issues each call
# behind a long sleep kernel (pure host time; a call that synchronises shows as 'waited') and times the sections of
# one call in place.
#   bash examples/gpu_round10.sh            # logs under ${OUT:-out/gpu}
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
(cd examples && timeout 90 python3 host_split_gpu.py --tokens 1024 2>&1 | grep -v Warn) | tee "$OUT/host_split_round10.log"
(cd tests && timeout 330 python3 -m pytest -q -n 8 -p no:cacheprovider -rf --tb=line test_kernel_triton.py \
  test_kernel_awkward.py test_kernel_backward.py test_stats_configs.py test_direct_launch.py test_graphs.py 2>&1 \
  | grep -E "FAILED|passed|failed|error" | tail -12) | tee "$OUT/tests_round10.log"
(cd examples && timeout 60 python3 model_overhead_gpu.py --shape llama3-8b --layers 4 --tokens 1024 4096 --reps 15 \
  --top 10 2>&1 | grep -v Warning >"$OUT/model_overhead_llama_round10.log")
grep "==" "$OUT/model_overhead_llama_round10.log"
(cd examples && timeout 75 python3 model_overhead_gpu.py --shape smollm2 --layers 30 --tokens 1024 --reps 10 \
  --top 10 2>&1 | grep -v Warning >"$OUT/model_overhead_smollm2_round10.log")
grep "==" "$OUT/model_overhead_smollm2_round10.log"
