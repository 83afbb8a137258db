#!/usr/bin/env bash
# Round 25 on the GPU machine: attention logit soft-capping (Gemma 2) in the kernels.
#   PART=a bash examples/gpu_round25.sh   # (< 4 min) tests/test_softcap.py on the GPU, then every kernel-side GPU
#                                         # test (round 24's list): the SOFTCAP constexpr must leave the rest as it was
#   PART=b bash examples/gpu_round25.sh   # (< 5 min) soft-capped attention timed: interp (output only / every
#                                         # statistic) against FlexAttention with the same tanh score_mod and SDPA
#                                         # without the cap, Gemma 2 2B / 9B attention shapes, bf16 (softcap_gpu.py)
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b) ;; *) echo "usage: PART=a|b bash examples/gpu_round25.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
if [ "$PART" = a ]; then
  (cd tests && timeout 200 python3 -m pytest -q -n 16 -p no:cacheprovider -rfE --tb=short test_softcap.py) 2>&1 \
    | grep -v Warn | tail -30 | tee "$OUT/tests_softcap_round25.log"
  (cd tests && timeout 300 python3 -m pytest -q -n 16 -p no:cacheprovider -rfE --tb=line test_kernel_triton.py \
    test_stats_configs.py test_walk_runs.py test_layer_batch.py test_kernel_awkward.py test_walk_parts.py \
    test_stats_decode.py test_decode_fused.py test_kernel_backward.py test_gradients.py test_graphs.py) 2>&1 \
    | grep -v Warn | tail -30 | tee "$OUT/tests_round25.log"
else
  timeout 290 python3 examples/softcap_gpu.py --shapes 8x256/4 16x256/8 --lengths 2048 8192 32768 2>&1 \
    | grep -v Warn | tee "$OUT/softcap_round25.log"
fi
