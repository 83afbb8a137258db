#!/usr/bin/env bash
# Issue 18, round 22, on the GPU machine: the round-21b defaults (fused decode walk at every head dim, 2 programs
# per SM) under the GPU tests, a million keys, bf16, and one benchmark table of the current kernels.
#   PART=a bash examples/gpu_round22.sh   # (< 10 min) the kernel, walk-parts, backward, awkward and decode tests;
#                                         # the 1M-token prefill and the 1M-key decode step (-m slow); decode steps
#                                         # side by side in fp16 and bf16 (examples/decode_fused_gpu.py)
#   PART=b bash examples/gpu_round22.sh   # (< 10 min) the benchmark (prefill 1k-128k, graph replays at 1k / 2k,
#                                         # decode steps 8k-128k) in fp16, then in bf16
#   PART=c bash examples/gpu_round22.sh   # (< 4 min) after 6d353c9 (the fused walk's carried max): the 1M-key probe
#                                         # and test, the decode tests, decode steps side by side (speed unchanged?)
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b|c) ;; *) echo "usage: PART=a|b|c bash examples/gpu_round22.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
if [ "$PART" = a ]; then
  (cd tests && timeout 280 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short test_stats_decode.py \
    test_decode_fused.py test_kernel_triton.py test_walk_parts.py test_kernel_backward.py test_kernel_awkward.py) \
    2>&1 | tail -8 | tee "$OUT/tests_round22.log"
  (cd tests && timeout 130 python3 -m pytest -q -p no:cacheprovider -rf --tb=short -m slow \
    test_kernel_triton.py::test_million_tokens test_decode_fused.py::test_decode_step_over_a_million_keys --durations 2) \
    2>&1 | tail -8 | tee "$OUT/tests_million_round22.log"
  timeout 150 python3 examples/decode_fused_gpu.py --dtypes fp16 bf16 --tiles 64x8 2>&1 | grep -v Warn \
    | tee "$OUT/decode_fused_round22.log"
elif [ "$PART" = c ]; then
  timeout 60 python3 examples/decode_million_probe.py 2>&1 | grep -v Warn | tee "$OUT/decode_million_probe_round22c.log"
  (cd tests && timeout 100 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short test_stats_decode.py \
    test_decode_fused.py && timeout 60 python3 -m pytest -q -p no:cacheprovider -rf --tb=short -m slow \
    test_decode_fused.py::test_decode_step_over_a_million_keys) 2>&1 | tail -6 | tee "$OUT/tests_round22c.log"
  timeout 100 python3 examples/decode_fused_gpu.py 2>&1 | grep -v Warn | tee "$OUT/decode_fused_round22c.log"
else
  for dt in float16 bfloat16; do bench_table $dt round22; done
fi
