#!/usr/bin/env bash
# Round 26 on the GPU machine.
#   PART=a bash examples/gpu_round26.sh   # (< 8 min) every kernel-side GPU test (round 24's list) and the
#                                         # soft-capping and static-cache tests, in one run with a limit long
#                                         # enough for a cold compile cache
#   PART=b bash examples/gpu_round26.sh   # (< 9 min) the first EAP call in a fresh process (empty Triton cache),
#                                         # SmolLM2 shape, 30 layers, with autotuning as shipped and INTERP_AUTOTUNE=0
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b) ;; *) echo "usage: PART=a|b bash examples/gpu_round26.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
if [ "$PART" = a ]; then
  (cd tests && timeout 450 python3 -m pytest -q -n 16 -p no:cacheprovider -rfE --tb=line test_kernel_triton.py \
    test_stats_configs.py test_walk_runs.py test_layer_batch.py test_kernel_awkward.py test_walk_parts.py \
    test_stats_decode.py test_decode_fused.py test_kernel_backward.py test_gradients.py test_graphs.py \
    test_softcap.py test_static_cache.py) 2>&1 | grep -v Warn | tail -30 | tee "$OUT/tests_round26.log"
else
  for tune in 1 0; do
    INTERP_AUTOTUNE=$tune TRITON_CACHE_DIR=$(mktemp -d) timeout 250 python3 examples/first_call_gpu.py \
      --lengths 16 20 24 2>&1 | grep -v Warn | tee -a "$OUT/first_call_round26.log"
  done
fi
