#!/usr/bin/env bash
# Issue 18, round 19, on the GPU machine (one call, < 9 min):
#   PART=a bash examples/gpu_round19.sh   # the packed decode kernel's tests (the combine now reduces 128 parts at a
#                                         # time), then decode steps (CUDA-graph replays, 8k / 32k / 128k cached
#                                         # keys) packed, not packed (the default), and not packed with every length
#                                         # tuned on the 8k proxy (INTERP_SHORT_TUNE_LEN=8192, round 18's tuning),
#                                         # then a torch.profiler split of a packed 9x64 step at 8k and 128k
#   PART=b ...                            # (< 5 min) the same without the 8k-proxy run and the profile
#   PART=c ...                            # (< 9 min) part b, plus the packed kernel with fewer parts
#                                         # (INTERP_STATS_PARTS=132: 1 program per SM instead of 4)
#   PART=d ...                            # (< 4 min) the packed tests and packed decode steps only (the general
#                                         # kernel's figures: decode_pack_round19.log, another machine)
# Every row is printed as it is measured. Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b|c|d) ;; *) echo "usage: PART=a|b|c|d bash examples/gpu_round19.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
decode() {
  echo "# $*"
  env "$@" timeout 170 python3 -m interp.kernels.bench --shapes 32x128/8 9x64/3 4x256/1 --lengths --long-lengths \
    --graph-lengths --methods sdpa ours-none ours-all --decode-lengths 8192 32768 131072 2>&1 | grep -v Warn
}
if [ "$PART" = b ] || [ "$PART" = c ]; then
  (cd tests && INTERP_DECODE_PACK=1 timeout 100 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short \
     test_stats_decode.py) 2>&1 | tail -4 | tee "$OUT/tests_decode_pack_round19.log"
  { decode INTERP_DECODE_PACK=1; decode INTERP_DECODE_PACK=0; } 2>&1 | tee "$OUT/decode_round19.log"
fi
if [ "$PART" = c ]; then
  decode INTERP_DECODE_PACK=1 INTERP_STATS_PARTS=132 2>&1 | tee "$OUT/decode_parts132_round19.log"
fi
if [ "$PART" = a ]; then
  (cd tests && INTERP_DECODE_PACK=1 timeout 120 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short \
     test_stats_decode.py) 2>&1 | tail -4 | tee "$OUT/tests_decode_pack_round19.log"
  { decode INTERP_DECODE_PACK=1; decode INTERP_DECODE_PACK=0; decode INTERP_DECODE_PACK=0 INTERP_SHORT_TUNE_LEN=8192
  } 2>&1 | tee "$OUT/decode_round19.log"
  (cd examples && for n in 8192 131072; do
     INTERP_DECODE_PACK=1 timeout 60 python3 decode_profile_gpu.py --shape 9x64/3 --n $n 2>&1 | grep -v Warn; done) \
    2>&1 | tee "$OUT/decode_profile_round19.log"
fi
if [ "$PART" = d ]; then
  (cd tests && INTERP_DECODE_PACK=1 timeout 90 python3 -m pytest -q -n 16 -p no:cacheprovider -rf --tb=short \
     test_stats_decode.py) 2>&1 | tail -4 | tee "$OUT/tests_decode_pack_round20.log"
  decode INTERP_DECODE_PACK=1 2>&1 | tee "$OUT/decode_packed_round20.log"
fi
