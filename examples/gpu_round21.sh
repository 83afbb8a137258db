#!/usr/bin/env bash
# Issue 18, round 21, on the GPU machine: the fused decode walk (the default for decode steps with statistics).
#   PART=b bash examples/gpu_round21.sh   # (< 4 min) the decode tests, then decode steps side by side: SDPA, the
#                                         # packed walk after cuDNN, the fused walk and two of its tiles
#                                         # (examples/decode_fused_gpu.py), and a profile of fused steps at 128k
#   PART=a bash examples/gpu_round21.sh   # (< 9 min) part b with the kernel tests beside the decode ones, the
#                                         # decode benchmark (interp.kernels.bench) and more tiles and parts
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b) ;; *) echo "usage: PART=a|b bash examples/gpu_round21.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
tests="test_stats_decode.py test_decode_fused.py"
limit=170
[ "$PART" = a ] && tests="$tests test_kernel_triton.py test_walk_parts.py test_kernel_backward.py test_kernel_awkward.py" \
  && limit=300  # (round 21b: 170 s stopped these at ~96 %)
(cd tests && timeout $limit python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short $tests) 2>&1 | tail -8 \
  | tee "$OUT/tests_round21.log"
if [ "$PART" = a ]; then
  timeout 150 python3 -m interp.kernels.bench --shapes 32x128/8 9x64/3 4x256/1 --lengths --long-lengths \
    --graph-lengths --methods sdpa ours-none ours-all --decode-lengths 8192 32768 131072 2>&1 | grep -v Warn \
    | tee "$OUT/decode_round21b.log"
  more="--tiles 32x4 64x8 32x8 --parts 1 4 8"
else
  more="--tiles 64x8 --parts 4"
fi
timeout 200 python3 examples/decode_fused_gpu.py $more --profile 131072 2>&1 | grep -v Warn \
  | tee "$OUT/decode_fused_round21.log"
