#!/usr/bin/env bash
# Issue 18, round 18, on the GPU machine:
#   PART=a bash examples/gpu_round18.sh   # (< 7 min) decode steps (one query per head against 8k / 32k / 128k
#                                         # cached keys, CUDA-graph replays) with parts by default ("short": only
#                                         # calls of <= 128 queries against >= 1,024 keys part) and off (the old
#                                         # default). Every row is printed as it is measured, so a cut run keeps
#                                         # what it did.
#   PART=b ...                            # (< 3 min) the kernel and parts tests under the default
#   PART=c ...                            # (< 8 min) decode steps per tile config, pinned (graph replays, checked
#                                         # against the reference): the tuner's 8k-proxy pick (6: 128x32), 32-query
#                                         # tiles (12, 13) and the 16-query trial tiles (15: 16x64 T, 16: 16x128 T)
#   PART=d ...                            # (< 8 min) decode steps autotuned at their own length (the default since
#                                         # round 18) against INTERP_SHORT_TUNE_LEN=8192 (every length on the 8k
#                                         # proxy), trial configs in the list
#   PART=e ...                            # (< 9 min) the packed decode kernel (INTERP_DECODE_PACK=1): its tests and
#                                         # the kernel tests with it on, then decode steps packed / not packed
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b|c|d|e) ;; *) echo "usage: PART=a|b|c|d|e bash examples/gpu_round18.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
decode() {
  echo "# INTERP_STATS_PARTS=$1 ${3:-}"
  env INTERP_STATS_PARTS=$1 ${3:-} timeout "$2" python3 -m interp.kernels.bench --shapes 32x128/8 9x64/3 4x256/1 \
    --lengths --long-lengths ${GRAPH:-} --methods sdpa ours-none ours-all --decode-lengths 8192 32768 131072 2>&1 \
    | grep -v Warn
}
if [ "$PART" = a ]; then
  decode short 200 2>&1 | tee "$OUT/decode_round18.log"
  decode off 170 2>&1 | tee -a "$OUT/decode_round18.log"
fi
if [ "$PART" = b ]; then
  (cd tests && timeout 150 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short \
     test_walk_parts.py test_kernel_triton.py) 2>&1 | tail -8 | tee "$OUT/tests_round18.log"
fi
if [ "$PART" = c ]; then
  (cd examples
   for s in 9x64/3 32x128/8 4x256/1; do
     INTERP_STATS_TRIAL_CONFIGS=1 timeout 150 python3 stats_configs_gpu.py --graph --decode --shape $s --lengths 8192 \
       131072 --stats all --configs 6 12 13 15 16 2>&1 | grep -v Warn
   done) 2>&1 | tee "$OUT/decode_configs_round18.log"
fi
if [ "$PART" = d ]; then
  export INTERP_STATS_TRIAL_CONFIGS=1 GRAPH=--graph-lengths  # (no prefill replays)
  decode short 250 INTERP_SHORT_TUNE_LEN=8192 2>&1 | tee "$OUT/decode_tune_round18.log"
  decode short 250 2>&1 | tee -a "$OUT/decode_tune_round18.log"
fi
if [ "$PART" = e ]; then
  (cd tests && INTERP_DECODE_PACK=1 timeout 150 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short \
     test_stats_decode.py test_kernel_triton.py test_walk_parts.py) 2>&1 | tail -8 \
    | tee "$OUT/tests_decode_pack_round18.log"
  export GRAPH=--graph-lengths  # (no prefill replays)
  decode short 180 INTERP_DECODE_PACK=1 2>&1 | tee "$OUT/decode_pack_round18.log"
  decode short 180 2>&1 | tee -a "$OUT/decode_pack_round18.log"
fi
