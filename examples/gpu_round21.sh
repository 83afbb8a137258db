#!/usr/bin/env bash
# Issue 18, round 21, on the GPU machine (one call, < 8 min): the kernel tests with the fused decode walk on (the
# default), the decode benchmark (fused, as a call takes it), the fused walk's tiles and parts side by side with
# the packed walk after cuDNN (examples/decode_fused_gpu.py), and a profile of fused steps at 128k.
#   bash examples/gpu_round21.sh
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
source examples/gpu_setup.sh
(cd tests && timeout 170 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short test_stats_decode.py test_decode_fused.py \
   test_kernel_triton.py test_walk_parts.py test_kernel_backward.py test_kernel_awkward.py) 2>&1 | tail -8 | tee "$OUT/tests_round21.log"
timeout 150 python3 -m interp.kernels.bench --shapes 32x128/8 9x64/3 4x256/1 --lengths --long-lengths \
  --graph-lengths --methods sdpa ours-none ours-all --decode-lengths 8192 32768 131072 2>&1 | grep -v Warn \
  | tee "$OUT/decode_round21b.log"
timeout 200 python3 examples/decode_fused_gpu.py --tiles 32x4 64x8 32x8 --parts 2 8 2>&1 | grep -v Warn \
  | tee "$OUT/decode_fused_round21.log"
timeout 60 python3 examples/decode_fused_gpu.py --lengths --profile 131072 2>&1 | grep -v Warn \
  | tee "$OUT/decode_fused_profile_round21.log"
