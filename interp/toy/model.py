"""Toy models are small Hugging Face Llama models (so they run through exactly the same attention path as real
models); attention-only variants replace each MLP by a module that adds nothing."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


class ZeroMLP(nn.Module):
    """An MLP that contributes nothing: makes a Llama block attention-only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def build_toy_model(spec: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=spec["vocab_size"], hidden_size=spec["d_model"], intermediate_size=spec.get("d_mlp", 4 * spec["d_model"]),
        num_hidden_layers=spec["n_layers"], num_attention_heads=spec["n_heads"],
        num_key_value_heads=spec.get("n_kv_heads", spec["n_heads"]), max_position_embeddings=spec["n_ctx"],
        tie_word_embeddings=False, bos_token_id=spec.get("bos", 0), eos_token_id=None, pad_token_id=None,
        rope_theta=10000.0,
    )
    cfg.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(spec.get("init_seed", 0))
    model = LlamaForCausalLM(cfg)
    if spec.get("attn_only", False):
        for layer in model.model.layers:
            layer.mlp = ZeroMLP()
    model.config.interp_toy = {k: v for k, v in spec.items()}
    return model


def load_checkpoint(weights: Path, spec_path: Path):
    from safetensors.torch import load_file

    if not weights.exists():
        raise ValueError(f"toy checkpoint {weights} is missing; recreate it with `python -m interp.toy.train`")
    spec = json.loads(spec_path.read_text())
    model = build_toy_model(spec)
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval()
