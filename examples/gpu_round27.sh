#!/usr/bin/env bash
# Round 27 on the GPU machine.
#   PART=a bash examples/gpu_round27.sh   # (< 8 min) learned attention sinks (GPT-OSS s_aux) on the GPU:
#                                         # tests/test_sinks.py, then their cost and exactness at GPT-OSS's
#                                         # attention shape (examples/sinks_gpu.py, bf16, full and 128-token window)
#   PART=b bash examples/gpu_round27.sh   # (< 9 min) the first EAP call in a fresh process (empty Triton cache),
#                                         # SmolLM2 shape, 30 layers, with autotuning as shipped and INTERP_AUTOTUNE=0
#   PART=c bash examples/gpu_round27.sh   # (< 5 min) value head dims unlike the query/key ones (DeepSeek MLA):
#                                         # tests/test_mla.py and the kernel tests on the GPU
#   PART=d bash examples/gpu_round27.sh   # (< 6 min) after the one-pass sinks rescale: test_sinks.py and
#                                         # test_mla_kernels.py, then part a's timing again
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b|c|d) ;; *) echo "usage: PART=a|b|c|d bash examples/gpu_round27.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
if [ "$PART" = a ]; then
  (cd tests && timeout 240 python3 -m pytest -q -n 16 -p no:cacheprovider -p no:logging -rfE --tb=short \
    test_sinks.py) 2>&1 | grep -v Warn | tail -40 | tee "$OUT/tests_sinks_round27.log"
  timeout 200 python3 examples/sinks_gpu.py --shapes 64x64/8 --lengths 2048 8192 32768 --windows 0 128 2>&1 \
    | grep -v Warn | tee "$OUT/sinks_round27.log"
elif [ "$PART" = b ]; then
  for tune in 1 0; do
    INTERP_AUTOTUNE=$tune TRITON_CACHE_DIR=$(mktemp -d) timeout 250 python3 examples/first_call_gpu.py \
      --lengths 16 20 24 2>&1 | grep -v Warn | tee -a "$OUT/first_call_round27.log"
  done
elif [ "$PART" = d ]; then
  (cd tests && timeout 200 python3 -m pytest -q -n 16 -p no:cacheprovider -p no:logging -rfE --tb=short \
    test_sinks.py test_mla_kernels.py) 2>&1 | grep -v Warn | tail -20 | tee "$OUT/tests_sinks_round27b.log"
  timeout 200 python3 examples/sinks_gpu.py --shapes 64x64/8 --lengths 2048 8192 32768 --windows 0 128 2>&1 \
    | grep -v Warn | tee "$OUT/sinks_round27b.log"
else
  (cd tests && timeout 280 python3 -m pytest -q -n 16 -p no:cacheprovider -p no:logging -rfE --tb=short \
    test_mla.py test_kernel_triton.py test_kernel_backward.py) 2>&1 | grep -v Warn | tail -40 \
    | tee "$OUT/tests_mla_round27.log"
fi
