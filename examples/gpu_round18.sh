#!/usr/bin/env bash
# Issue 18, round 18, on the GPU machine:
#   PART=a bash examples/gpu_round18.sh   # (< 7 min) decode steps (one query per head against 8k / 32k / 128k
#                                         # cached keys, CUDA-graph replays) with parts by default ("short": only
#                                         # calls of <= 128 queries against >= 1,024 keys part) and off (the old
#                                         # default). Every row is printed as it is measured, so a cut run keeps
#                                         # what it did.
#   PART=b ...                            # (< 3 min) the kernel and parts tests under the default
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b) ;; *) echo "usage: PART=a|b bash examples/gpu_round18.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
decode() {
  echo "# INTERP_STATS_PARTS=$1"
  INTERP_STATS_PARTS=$1 timeout "$2" python3 -m interp.kernels.bench --shapes 32x128/8 9x64/3 4x256/1 --lengths \
    --long-lengths --methods sdpa ours-none ours-all --decode-lengths 8192 32768 131072 2>&1 | grep -v Warn
}
if [ "$PART" = a ]; then
  decode short 200 2>&1 | tee "$OUT/decode_round18.log"
  decode off 170 2>&1 | tee -a "$OUT/decode_round18.log"
fi
if [ "$PART" = b ]; then
  (cd tests && timeout 150 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short \
     test_walk_parts.py test_kernel_triton.py) 2>&1 | tail -8 | tee "$OUT/tests_round18.log"
fi
