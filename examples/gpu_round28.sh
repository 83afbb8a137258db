#!/usr/bin/env bash
# Round 28 on the GPU machine (written in a session without a GPU: nothing here has run on one yet).
#   PART=a bash examples/gpu_round28.sh   # (< 8 min) segments (Llama 4's chunked attention, packed sequences):
#                                         # tests/test_segments.py on the GPU, then their cost against SDPA on the
#                                         # same segments and exactness at Llama-4-Scout's attention shape
#                                         # (examples/segments_gpu.py, bf16: 8192-token chunks; packed 3000/5000/1500)
#   PART=b bash examples/gpu_round28.sh   # (< 6 min) round 27's part d: the one-pass sinks rescale re-timed
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in a|b) ;; *) echo "usage: PART=a|b bash examples/gpu_round28.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
if [ "$PART" = a ]; then
  (cd tests && timeout 150 python3 -m pytest -q -n 16 -p no:cacheprovider -p no:logging -rfE --tb=short \
    test_segments.py) 2>&1 | grep -v Warn | tail -20 | tee "$OUT/tests_segments_round28.log"
  timeout 200 python3 examples/segments_gpu.py --shapes 40x128/8 --lengths 16384 65536 131072 --chunk 8192 2>&1 \
    | grep -v Warn | tee "$OUT/segments_chunked_round28.log"
  timeout 120 python3 examples/segments_gpu.py --shapes 40x128/8 --lengths 16384 65536 --packed 3000 5000 1500 \
    2>&1 | grep -v Warn | tee "$OUT/segments_packed_round28.log"
else
  PART=d bash examples/gpu_round27.sh
fi
