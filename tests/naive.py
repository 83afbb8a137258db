"""A naive float64 attention that materialises the whole pattern: the ground truth the reference is tested
against (and nothing else uses it)."""

import torch


def visibility(lq, lk, causal, sliding_window):
    """[q, k] bool: which keys each (end-aligned) query may see."""
    qpos = torch.arange(lq)[:, None] + lk - lq
    kpos = torch.arange(lk)[None, :]
    allowed = torch.ones(lq, lk, dtype=torch.bool)
    if causal:
        allowed &= kpos <= qpos
    if sliding_window is not None:
        allowed &= qpos - kpos < sliding_window
    return allowed


def naive_attention(q, k, v, *, causal=True, scale=None, sliding_window=None, attention_mask=None, key_bias=None,
                    sink_tokens=4, local_window=64, span=None, attn_mask=None):
    """attn_mask: a dense [b|1, h|1, lq, lk] mask, bool (True = may attend) or float (added; -inf hides)."""
    b, h, lq, d = q.shape
    hk, lk = k.shape[1], k.shape[2]
    g = h // hk
    scale = d ** -0.5 if scale is None else scale
    qd, kd, vd = q.double(), k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)
    s = qd @ kd.transpose(-1, -2) * scale
    if key_bias is not None:
        s = s + key_bias.double()
    off = lk - lq
    qpos = torch.arange(lq)[:, None] + off
    kpos = torch.arange(lk)[None, :]
    allowed = visibility(lq, lk, causal, sliding_window)[None, None].expand(b, 1, lq, lk)
    qvalid = torch.ones(b, lq, dtype=torch.bool)
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]
        qvalid = attention_mask.bool()[:, off:]
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        allowed = allowed & attn_mask
    elif attn_mask is not None:
        s = s + attn_mask.double()
        allowed = allowed & ~torch.isneginf(attn_mask)
    s = s.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    out = p @ vd
    seen = allowed.any(-1).expand(b, h, lq)
    lse = torch.logsumexp(s, -1)
    ent = -(torch.special.xlogy(p, p)).sum(-1)
    mp, am = p.max(-1)
    am = am.masked_fill(~seen, -1)
    dist = qpos - kpos
    local = ((dist >= 0) & (dist < local_window)).double()
    stats = dict(lse=lse, max_prob=mp, argmax=am, entropy=ent, sink_mass=p[..., :sink_tokens].sum(-1),
                 local_mass=(p * local).sum(-1))
    if span is not None:
        st, en = span
        stats["span_mass"] = p[..., st:en].sum(-1)
    pv = p * qvalid[:, None, :, None]
    stats["key_mass"] = pv.sum(-2)
    cnt = (allowed & qvalid[:, None, :, None]).sum(-2).double().expand(b, h, lk)
    stats["key_count"] = cnt
    stats["key_mean"] = torch.where(cnt > 0, stats["key_mass"] / cnt.clamp_min(1), torch.nan)
    return out, stats


def lowp_attention(q, k, v, *, causal=True, scale=None, sliding_window=None, attention_mask=None, key_bias=None,
                   **_):
    """Plain attention computed in the input dtype (scores and P @ V in that dtype, softmax in float32): its error
    against the float64 result is the yardstick for a fused kernel's error."""
    b, h, lq, d = q.shape
    g = h // k.shape[1]
    lk = k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    kr, vr = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ kr.transpose(-1, -2)).float() * scale
    if key_bias is not None:
        s = s + key_bias.float()
    allowed = visibility(lq, lk, causal, sliding_window)[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    p = torch.softmax(s.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    return p.to(q.dtype) @ vr


def naive_output(q, k, v, *, causal=True, scale=None, sliding_window=None, attention_mask=None, key_bias=None,
                 lowp=False):
    """The attention output alone, differentiable with respect to q, k, v and key_bias (float64 by default; with
    lowp=True scores and P @ V in the input dtype, softmax in float32 — the yardstick for low-precision gradients).
    Rows that see no key give 0 and zero gradients (softmax over a row of -inf would give NaN)."""
    b, h, lq, d = q.shape
    g = h // k.shape[1]
    lk = k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    if not lowp:
        q, k, v = q.double(), k.double(), v.double()
        key_bias = key_bias.double() if key_bias is not None else None
    kr, vr = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ kr.transpose(-1, -2)).to(torch.float32 if lowp else torch.float64) * scale  # [b, h, lq, lk]
    if key_bias is not None:
        s = s + key_bias.to(s.dtype)[:, :, None, :]
    allowed = visibility(lq, lk, causal, sliding_window)[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    s = s.masked_fill(~allowed, float("-inf"))
    seen = torch.isfinite(s).any(-1, keepdim=True)
    p = torch.softmax(torch.where(seen, s, 0.0), -1) * seen
    return p.to(q.dtype) @ vr
