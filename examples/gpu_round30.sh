#!/usr/bin/env bash
# Round 30 on the GPU machine (planned in the twenty-ninth session, which was lent no device machine):
#   PART=m bash examples/gpu_round30.sh   # (~3 min) the masks the kernels cannot read from positions (attn_mask,
#                                         # transformers mask functions, 4-D masks) on CUDA: their tests, with
#                                         # transformers 5.25.0 as on the CPU machines, and the HF feature and
#                                         # static-cache tests beside them
# Logs under ${OUT:-out/gpu}.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${PART:-}" in m) ;; *) echo "usage: PART=m bash examples/gpu_round30.sh" >&2; exit 2;; esac
source examples/gpu_setup.sh
python3 -m pip install -q "transformers==5.25.0" >>"$OUT/install.log" 2>&1
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)" | tee "$OUT/masks_round30.log"
(cd tests && timeout 400 python3 -m pytest -q -n 8 -p no:cacheprovider -p no:logging -rfE --tb=short \
  test_attn_mask.py test_hf_masks.py test_hf_features.py test_static_cache.py) 2>&1 | grep -v Warn | tail -30 \
  | tee -a "$OUT/masks_round30.log"
