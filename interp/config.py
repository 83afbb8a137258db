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
    # the value / output head dim: hook_v's, hook_z's and W_O's per-head width. None (the default) means d_head;
    # it differs in multi-head latent attention (DeepSeek-V2/V3: q/k heads of 192, v / z heads of 128)
    d_head_v: int | None = None
    # per layer: the attention chunk of a chunked layer (Llama 4's attention_chunk_size: a query sees only the keys
    # of its own chunk), or None; () given means None for every layer
    layer_chunks: tuple = ()

    def __post_init__(self):
        if self.d_head_v is None:
            object.__setattr__(self, "d_head_v", self.d_head)
        if not self.layer_chunks:
            object.__setattr__(self, "layer_chunks", (None,) * self.n_layers)

    @property
    def is_mla(self) -> bool:
        """Multi-head latent attention (or any model whose value head dim differs from its q/k head dim)."""
        return self.d_head_v != self.d_head

    @classmethod
    def from_hf(cls, config) -> "ModelConfig":
        c = config.get_text_config() if hasattr(config, "get_text_config") else config
        n_heads = c.num_attention_heads
        n_layers = c.num_hidden_layers
        d_model = c.hidden_size
        d_head, d_head_v = head_dims(c, d_model // n_heads)
        windows = [None] * n_layers
        layer_types = getattr(c, "layer_types", None)
        sw = getattr(c, "sliding_window", None)
        if layer_types is not None and sw:
            windows = [sw if t == "sliding_attention" else None for t in layer_types]
        elif sw and getattr(c, "use_sliding_window", False):
            windows = [sw] * n_layers
        chunk = _positive_int(getattr(c, "attention_chunk_size", None))
        chunks = [chunk if t == "chunked_attention" else None for t in layer_types or [None] * n_layers]
        archs = getattr(config, "architectures", None) or [type(config).__name__]
        return cls(
            n_layers=n_layers, n_heads=n_heads, n_kv_heads=getattr(c, "num_key_value_heads", None) or n_heads,
            d_head=d_head, d_head_v=d_head_v, d_model=d_model, d_vocab=c.vocab_size,
            n_ctx=getattr(c, "max_position_embeddings", None) or 2048, layer_windows=tuple(windows),
            layer_chunks=tuple(chunks),
            is_causal=bool(getattr(c, "is_causal", not getattr(c, "is_encoder_decoder", False)))
            and "Bert" not in archs[0],
            architecture=archs[0],
            d_mlp=getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * d_model,
        )


def _positive_int(x) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and x > 0 else None


def head_dims(c, default: int) -> tuple[int, int]:
    """(q/k head dim, value head dim) of a text config. Multi-head latent attention (DeepSeek-V2/V3, MiniCPM3, Kimi,
    GLM-4 MoE Lite: `qk_nope_head_dim` + `qk_rope_head_dim`) keeps its q/k head dim in `qk_head_dim` (nope + rope) and
    its value head dim in `v_head_dim`; its `head_dim` is the rope part alone (or, in some, q/k's). Elsewhere
    `head_dim` (or d_model / heads) serves both, unless the config gives a `v_head_dim` of its own (MiMo-V2-Flash)."""
    nope = _positive_int(getattr(c, "qk_nope_head_dim", None))
    rope = _positive_int(getattr(c, "qk_rope_head_dim", None))
    if nope is not None and rope is not None:
        d_head = _positive_int(getattr(c, "qk_head_dim", None)) or nope + rope
    else:
        d_head = _positive_int(getattr(c, "head_dim", None)) or default
    return d_head, _positive_int(getattr(c, "v_head_dim", None)) or d_head


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
    """W_O split by head: [head, d_head, d_model] (for hook_result). d_head: the value / z head dim (ModelConfig's
    d_head_v, which differs from the q/k head dim in multi-head latent attention)."""
    proj = find_child(attn, OUT_PROJ_NAMES)
    if isinstance(proj, nn.Linear) and proj.in_features == n_heads * d_head:
        return proj.weight.T.reshape(n_heads, d_head, proj.out_features)
    w = getattr(proj, "weight", None)  # GPT-2's Conv1D: y = x @ weight + bias, weight [d_in, d_out]
    if type(proj).__name__ == "Conv1D" and w is not None and w.dim() == 2 and w.shape[0] == n_heads * d_head:
        return w.reshape(n_heads, d_head, w.shape[1])
    if proj is not None and w is not None and w.dim() == 2:
        raise ValueError(f"the output projection of {type(attn).__name__} ({type(proj).__name__}, weight "
                         f"{tuple(w.shape)}) does not read {n_heads} heads x {d_head} (the value / z head dim)")
    raise ValueError(f"hook_result needs a Linear (or GPT-2 Conv1D) output projection in {type(attn).__name__}; "
                     "none found")
