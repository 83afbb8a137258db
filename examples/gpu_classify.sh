#!/usr/bin/env bash
# `interp classify` on a GPU: the three toy models, and a randomly initialised 4-layer model with Llama-3-8B attention
# (32 heads, 8 KV heads, head dim 128; no tokenizer, so probes are random tokens) at 32k tokens of context.
set -uo pipefail
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1
python3 - <<'PY'
import torch
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=4,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                  rope_theta=500000.0, bos_token_id=1, architectures=["LlamaForCausalLM"])
torch.manual_seed(0)
LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained("/tmp/llama3-8b-shape-4l")
PY
/usr/bin/time -f "toys: %e s wall" python3 -m interp.cli classify toy-induction toy-needle toy-bigram-backcopy --device cuda \
  --out "$OUT/cls_toys" --no-progress 2>&1 | grep -v Warning | tail -8
/usr/bin/time -f "llama3-8b-shape 4 layers at 32k: %e s wall" python3 -m interp.cli classify /tmp/llama3-8b-shape-4l \
  --device cuda --dtype bfloat16 --context 32768 --prompts 1 --out "$OUT/cls_llama" --no-progress 2>&1 | grep -v Warning | tail -8
head -3 "$OUT/cls_llama/heads.csv"
