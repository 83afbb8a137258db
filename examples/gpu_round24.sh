#!/usr/bin/env bash
# Issue 18, round 24, on the GPU machine.
#   PART=a bash examples/gpu_round24.sh   # (< 4 min) every kernel-side GPU test at this commit (kernels, configs,
#                                         # walk runs, layer batches, awkward inputs, parts, decode, backward,
#                                         # gradients, graphs), then each autotune candidate
#                                         # with the trial configs in (round 24's two-warpgroup key-by-query tiles)
#   PART=b bash examples/gpu_round24.sh   # (< 6 min) those trial configs timed, pinned, beside the configs the
#                                         # autotuner takes today (4x256: config 1; 32x128 and 9x64: config 0).
#                                         # Run at c4c220d, where they were trial configs 17-19; refuted and dropped
#                                         # since, so at later commits these indices no longer exist
#   PART=c bash examples/gpu_round24.sh   # (< 4 min) whole models at this commit (round 16's command): the sweeps
#                                         # since then put more checks on the host path of every call
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b|c) ;; *) echo "usage: PART=a|b|c bash examples/gpu_round24.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
if [ "$PART" = a ]; then
  # (the first run also took tests/test_bad_input*.py: CPU tests that load the bundled real models, which the GPU
  # machine lacks; they errored and the 330 s limit cut the run: docs/gpu/tests_round24_cut.log)
  (cd tests && timeout 420 python3 -m pytest -q -n 16 -p no:cacheprovider -rfE --tb=line test_kernel_triton.py \
    test_stats_configs.py test_walk_runs.py test_layer_batch.py test_kernel_awkward.py test_walk_parts.py \
    test_stats_decode.py test_decode_fused.py test_kernel_backward.py test_gradients.py test_graphs.py) 2>&1 \
    | grep -v Warn | tail -60 | tee "$OUT/tests_round24.log"
  (cd tests && INTERP_STATS_TRIAL_CONFIGS=1 timeout 150 python3 -m pytest -q -n 16 -p no:cacheprovider -rf \
    --tb=short test_stats_configs.py::test_every_autotune_candidate) 2>&1 | tail -6 \
    | tee "$OUT/tests_trial_configs_round24.log"
elif [ "$PART" = c ]; then
  whole_models round24
else
  export INTERP_STATS_TRIAL_CONFIGS=1
  { timeout 130 python3 examples/stats_configs_gpu.py --shape 4x256/1 --lengths 8192 32768 --configs 1 17 18 19
    timeout 130 python3 examples/stats_configs_gpu.py --shape 32x128/8 --lengths 8192 32768 --configs 0 17 18 19
    timeout 80 python3 examples/stats_configs_gpu.py --shape 9x64/3 --lengths 8192 --configs 0 17 18 19
  } 2>&1 | grep -v Warn | tee "$OUT/trial_configs_round24.log"
fi
