#!/usr/bin/env bash
# Issue 18, round 23, on the GPU machine.
#   PART=a bash examples/gpu_round23.sh   # (< 5 min) after 6d353c9 / c82cdee (the fused decode walk's carried log2
#                                         # max): the 1M-key probe and test, the decode tests, decode steps side by
#                                         # side (speed unchanged?), and the GPU-only HeadMask device test
#   PART=b bash examples/gpu_round23.sh   # (< 10 min) the benchmark with SDPA timed before and after the other
#                                         # methods (f5ba2f5), fp16 then bf16
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b) ;; *) echo "usage: PART=a|b bash examples/gpu_round23.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
if [ "$PART" = a ]; then
  timeout 60 python3 examples/decode_million_probe.py 2>&1 | grep -v Warn | tee "$OUT/decode_million_probe_round23.log"
  (cd tests && timeout 100 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short test_stats_decode.py \
    test_decode_fused.py test_gradients.py && timeout 60 python3 -m pytest -q -p no:cacheprovider -rf --tb=short \
    -m slow test_decode_fused.py::test_decode_step_over_a_million_keys --durations 1) 2>&1 | tail -8 \
    | tee "$OUT/tests_round23.log"
  timeout 100 python3 examples/decode_fused_gpu.py 2>&1 | grep -v Warn | tee "$OUT/decode_fused_round23.log"
else
  for dt in float16 bfloat16; do bench_table $dt round23; done
fi
