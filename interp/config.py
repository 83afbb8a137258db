"""Architecture facts the toolkit needs, read from a Hugging Face config, and where the blocks live."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_vocab: int
    n_ctx: int
    layer_windows: tuple  # per layer: sliding window size, or None for full attention
    is_causal: bool
    architecture: str
    d_mlp: int | None = None  # the MLP's hidden width (None where unknown, e.g. TransformerLens configs)

    @classmethod
    def from_hf(cls, config) -> "ModelConfig":
        c = config.get_text_config() if hasattr(config, "get_text_config") else config
        n_heads = c.num_attention_heads
        n_layers = c.num_hidden_layers
        d_model = c.hidden_size
        d_head = getattr(c, "head_dim", None) or d_model // n_heads
        windows = [None] * n_layers
        layer_types = getattr(c, "layer_types", None)
        sw = getattr(c, "sliding_window", None)
        if layer_types is not None and sw:
            windows = [sw if t == "sliding_attention" else None for t in layer_types]
        elif sw and getattr(c, "use_sliding_window", False):
            windows = [sw] * n_layers
        archs = getattr(config, "architectures", None) or [type(config).__name__]
        return cls(
            n_layers=n_layers, n_heads=n_heads, n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
            d_head=d_head, d_model=d_model, d_vocab=c.vocab_size,
            n_ctx=getattr(c, "max_position_embeddings", None) or 2048, layer_windows=tuple(windows),
            is_causal=bool(getattr(c, "is_causal", not getattr(c, "is_encoder_decoder", False)))
            and "Bert" not in archs[0],
            architecture=archs[0],
            d_mlp=getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * d_model,
        )


def find_blocks(model: nn.Module, n_layers: int) -> nn.ModuleList:
    """The ModuleList of transformer blocks: the longest ModuleList with exactly n_layers entries."""
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    if not candidates:
        raise ValueError(
            f"cannot find the {n_layers} transformer blocks in {type(model).__name__}: unsupported architecture "
            "(interp needs a Hugging Face model whose blocks sit in one nn.ModuleList)"
        )
    return max(candidates, key=lambda m: sum(p.numel() for p in m.parameters()))


def find_child(block: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    for n in names:
        sub = block
        for part in n.split("."):
            sub = getattr(sub, part, None)
            if sub is None:
                break
        if sub is not None:
            return sub
    return None


ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
OUT_PROJ_NAMES = ("o_proj", "out_proj", "dense", "c_proj", "output.dense")


def head_output_weight(attn: nn.Module, n_heads: int, d_head: int) -> torch.Tensor:
    """W_O split by head: [head, d_head, d_model] (for hook_result)."""
    proj = find_child(attn, OUT_PROJ_NAMES)
    if isinstance(proj, nn.Linear) and proj.in_features == n_heads * d_head:
        return proj.weight.T.reshape(n_heads, d_head, proj.out_features)
    w = getattr(proj, "weight", None)  # GPT-2's Conv1D: y = x @ weight + bias, weight [d_in, d_out]
    if type(proj).__name__ == "Conv1D" and w is not None and w.dim() == 2 and w.shape[0] == n_heads * d_head:
        return w.reshape(n_heads, d_head, w.shape[1])
    raise ValueError(f"hook_result needs a Linear (or GPT-2 Conv1D) output projection in {type(attn).__name__}; "
                     "none found")
