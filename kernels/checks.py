"""Input validation shared by every backend: shapes, dtypes, devices and option combinations.

Everything a user can get wrong is checked here, with a message that names the argument, what it was and what
is allowed, before any backend touches the tensors.
"""

from __future__ import annotations

import functools
import math
import numbers
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from .stats import normalize_stats, stats_request

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# key_bias values at or below this, or at the minimum of the bias's own dtype (float16's -65504: the mask value
# of float16 models), hide the key (treated as -inf)
MASK_BIAS = -1e30
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 256
# scale is used in float32 (the Triton kernels take scale * log2(e)): beyond these it turns 0 or inf there
MIN_SCALE = float(torch.finfo(torch.float32).tiny)
MAX_SCALE = float(torch.finfo(torch.float32).max) * math.log(2)
# appended to the shape errors a [batch, pos, head, d] tensor runs into (heads and positions swapped)
LAYOUT_HINT = ("; q, k, v are taken in SDPA's layout [batch, heads, seq, head_dim], while the model's hook_q / "
               "hook_k / hook_v are [batch, pos, head, d_head]: pass those as .transpose(1, 2)")


@dataclass
class AttnSpec:
    """A validated attention call. Query i sits at absolute key position i + q_offset (bottom-right aligned)."""

    batch: int
    heads: int
    kv_heads: int
    q_len: int
    k_len: int
    head_dim: int
    q_offset: int
    causal: bool
    scale: float
    sliding_window: int | None
    key_valid: torch.Tensor | None  # [batch, k_len] bool, True = a real token
    key_bias: torch.Tensor | None  # [batch, heads, k_len] float32, added to the scaled scores
    stats: tuple[str, ...]
    sink_tokens: int
    local_window: int
    span: torch.Tensor | None  # [batch, 2] int64: [start, end) per batch row
    softcap: float | None = None  # logit soft-capping (Gemma 2): scores -> softcap * tanh(scores / softcap)
    # learned attention sinks (GPT-OSS): [1 or batch, heads] float32, one logit per query head in every row's softmax
    # denominator (unscaled), whose probability is dropped (`sinks.py`)
    sinks: torch.Tensor | None = None
    # v's head dim where it differs from q/k's head_dim (multi-head latent attention: DeepSeek-V2/V3), else None
    v_head_dim: int | None = None
    # [batch, k_len] int64, never decreasing along a row: a query sees only the keys of its own segment (packed
    # sequences, chunked attention; `segments.py`); None when every row is one segment
    segment_ids: torch.Tensor | None = None
    # any other mask, dense or a mask function (`attn_mask.py`): applied by the reference backend only
    attn_mask: "AttnMask | None" = None

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads

    @property
    def value_dim(self) -> int:
        """The output's (and v's) head dim."""
        return self.head_dim if self.v_head_dim is None else self.v_head_dim


@functools.lru_cache(maxsize=256)
def _stat_names(stats, has_span: bool) -> tuple[str, ...]:
    """normalize_stats, once per distinct request: a group ("all", "query") given no span drops span_mass."""
    names = normalize_stats(stats)
    if "span_mass" in names and not has_span:
        named = stats == "span_mass" or (not isinstance(stats, str) and "span_mass" in stats)
        if named:
            raise ValueError("stats asks for span_mass but no span=(start, end) was given")
        names = tuple(n for n in names if n != "span_mass")
    return names


def _names(stats, has_span: bool) -> tuple[str, ...]:
    key = stats_request(stats)  # a list, a set, a generator (read once, here): a tuple of what it holds
    try:
        hash(key)
    except TypeError:  # a set, a list of lists...: no caching, normalize_stats says what is wrong
        return _stat_names.__wrapped__(key, has_span)
    return _stat_names(key, has_span)


@functools.lru_cache(maxsize=64)
def _span_tensor(start: int, end: int, batch: int, device) -> torch.Tensor:
    """[batch, 2] int64 on the device, made once per (span, batch, device): short calls skip the copy. Never an
    inference tensor (kept, one made inside torch.inference_mode() would be refused by autograd outside it)."""
    with torch.inference_mode(False):
        return torch.tensor([[start, end]], device=device, dtype=torch.int64).expand(batch, 2).contiguous()


def capturing(t: torch.Tensor | None = None) -> bool:
    """Whether a CUDA graph is being captured on the current stream, where a device sync is an error (always False
    for a CPU tensor, or without CUDA)."""
    if t is not None and not t.is_cuda:
        return False
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def weak_tag(registry: dict, obj, value=True) -> None:
    """registry[id(obj)] = (weak reference to obj, value), dropped when obj is freed (an id may be reused then)."""
    key = id(obj)

    def forget(ref, key=key):
        if registry.get(key, (None,))[0] is ref:
            del registry[key]

    registry[key] = (weakref.ref(obj, forget), value)


def weak_tag_of(registry: dict, obj, default=None):
    """The value `weak_tag` recorded for obj itself (not for an earlier object with the same id), else default."""
    entry = registry.get(id(obj))
    return entry[1] if entry is not None and entry[0]() is obj else default


_known_padded: dict = {}  # id(mask) -> (weak reference, True), for masks the model's mask function found padded


def mark_padded(mask: torch.Tensor) -> None:
    """Record that `mask` (made by the caller for this forward, e.g. interp.attention.interp_mask) hides keys, so
    the per-layer checks skip the device sync that asking costs. Only the answer "padded" is kept: were it ever
    wrong, the kernels would apply an all-true mask, which changes nothing but speed."""
    weak_tag(_known_padded, mask)


_checked_bias: dict = {}  # id(bias) -> (weak reference, True), for slices of a key bias this module already checked


def mark_checked_bias(bias: torch.Tensor) -> None:
    """Record that `bias`, float32, is a slice of a key bias `check_inputs` returned (finite, hidden keys already
    -inf), so that checking it again (each segment's piece of a call: `segments.py`) skips the device sync."""
    weak_tag(_checked_bias, bias)


def has_padding(mask: torch.Tensor) -> bool:
    """Does the bool padding mask hide any key? A device sync, except for masks marked by `mark_padded` (a model
    hands every layer the same mask: its mask function asks once per forward, the layers not again)."""
    if weak_tag_of(_known_padded, mask, False):
        return True
    return not bool(mask.all())


def _is_int(x) -> bool:
    """An integer (Python, NumPy, or a 0-d integer tensor), never a bool or a float that happens to be whole."""
    if isinstance(x, torch.Tensor):
        return x.dim() == 0 and not (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool)
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _int_option(name: str, value, minimum: int) -> int:
    if type(value) is int and value >= minimum:  # the common case, without the ABC checks below
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)  # a NumPy integer too
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def outside_0_1(mask: torch.Tensor) -> torch.Tensor:
    """The values of an integer mask other than 0 and 1, in order (none for a bool mask): a padding mask's check."""
    if mask.dtype == torch.bool:
        return mask.new_empty(0)
    return mask[(mask != 0) & (mask != 1)]


def span_rows(span, b: int, lk: int, device) -> torch.Tensor:
    """`span`: (start, end), or an integer tensor [2] or [batch, 2], with 0 <= start <= end <= k_len -> [batch, 2]
    int64 on `device` ([start, end) per batch row); a TypeError/ValueError naming what is wrong otherwise. A NumPy
    array is read as a tensor."""
    if isinstance(span, np.ndarray):
        if span.dtype.kind not in "iu":
            raise TypeError(f"span array must hold integer key positions, got dtype {span.dtype}")
        span = torch.from_numpy(span.astype(np.int64))
    if isinstance(span, torch.Tensor):
        if span.dtype.is_floating_point or span.dtype.is_complex or span.dtype == torch.bool:
            raise TypeError(f"span tensor must hold integer key positions, got dtype {span.dtype}")
        if span.device.type == "meta":
            raise ValueError("span is on the meta device (shape only, no values); pass real key positions")
        span_t = span.to(device=device, dtype=torch.int64)
        if span_t.shape == (2,):
            span_t = span_t.expand(b, 2)
        if span_t.shape != (b, 2):
            raise ValueError(f"span tensor must be [2] or [batch, 2] = [{b}, 2], got {tuple(span.shape)}")
        if bool((span_t[:, 0] < 0).any()) or bool((span_t[:, 1] > lk).any()) or bool(
                (span_t[:, 0] > span_t[:, 1]).any()):
            raise ValueError(f"span must satisfy 0 <= start <= end <= k_len ({lk}), got {span_t.tolist()}")
        return span_t.contiguous()
    if not isinstance(span, (tuple, list)):
        raise TypeError(f"span must be (start, end) or a [batch, 2] tensor, got {type(span).__name__}")
    try:
        start, end = span
    except (TypeError, ValueError):
        raise TypeError(f"span must be (start, end) or a [batch, 2] tensor, got {span!r}") from None
    if not (_is_int(start) and _is_int(end)):
        raise TypeError(f"span bounds must be ints (key positions), got span={span!r}")
    start, end = int(start), int(end)
    if not 0 <= start <= end <= lk:
        raise ValueError(f"span must satisfy 0 <= start <= end <= k_len ({lk}), got {[start, end]}")
    return _span_tensor(start, end, b, device)  # validated on the host: no device sync


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None,
    sliding_window: int | None,
    attention_mask: torch.Tensor | None,
    key_bias: torch.Tensor | None,
    stats,
    sink_tokens: int,
    local_window: int,
    span,
    softcap=None,
    sinks=None,
    sinks_per_batch: bool = False,
    segment_ids=None,
    attn_mask=None,
) -> AttnSpec:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D [batch, heads, seq, head_dim] (SDPA layout), got shape "
                             f"{tuple(t.shape)}{LAYOUT_HINT}")
        if t.device.type == "meta":
            raise ValueError(f"{name} is on the meta device (shape only, no values); attention needs real tensors")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; allowed: float16, bfloat16, float32")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    b, h, lq, d = q.shape
    bk, hk, lk, dk = k.shape
    dv = _check_head_dims(q, k, v)
    if bk != b:
        raise ValueError(f"q has batch {b} but k/v have batch {bk}")
    if h == 0:
        raise ValueError(f"q has 0 heads (shape {tuple(q.shape)}); it needs at least one")
    if hk == 0 or h % hk != 0:
        raise ValueError(f"kv_heads ({hk}, k's dim 1) must divide heads ({h}, q's dim 1) (GQA/MQA), got q "
                         f"{tuple(q.shape)} and k {tuple(k.shape)}{LAYOUT_HINT}")
    if lq == 0 or lk == 0 or b == 0:
        raise ValueError(f"empty input: batch={b}, q_len={lq}, k_len={lk}; all must be >= 1")
    if lq > lk:
        raise ValueError(f"q_len ({lq}, q's dim 2) > k_len ({lk}, k's dim 2): queries are aligned to the end of the "
                         f"keys, so q_len <= k_len; got q {tuple(q.shape)} and k {tuple(k.shape)}{LAYOUT_HINT}")
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be True or False, got {causal!r} ({type(causal).__module__}."
                        f"{type(causal).__name__})")
    causal = bool(causal)
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif type(scale) is float and MIN_SCALE <= scale <= MAX_SCALE:  # the common case (a model's scaling)
        pass
    elif isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a positive finite number or None, got {type(scale).__name__}")
    elif not 0 < scale < math.inf:  # (compared, not math.isfinite: an int past float's range is no OverflowError)
        raise ValueError(f"scale must be a positive finite number or None, got {scale!r}")
    elif not MIN_SCALE <= scale <= MAX_SCALE:  # 0 or inf in float32: NaN statistics (or outputs) on every backend
        raise ValueError(f"scale must lie between {MIN_SCALE:.3g} and {MAX_SCALE:.3g} (the kernels compute in "
                         f"float32), got {scale!r}")
    if sliding_window is not None:
        sliding_window = _int_option("sliding_window", sliding_window, 1)
        if not causal:
            raise ValueError("sliding_window is only supported with causal=True")
        if sliding_window >= lk:  # every key a causal query can see lies inside the window: no window at all
            sliding_window = None
    # (beyond k_len both mean every key: clamped, so that a huge int never reaches a kernel's 32/64-bit argument)
    sink_tokens = min(_int_option("sink_tokens", sink_tokens, 0), lk)
    local_window = min(_int_option("local_window", local_window, 1), lk)

    key_valid = None
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a tensor, got {type(attention_mask).__name__}")
        if attention_mask.dim() != 2 or tuple(attention_mask.shape) != (b, lk):
            raise ValueError(
                f"attention_mask must be a 2-D padding mask [batch, k_len] = [{b}, {lk}] (True/1 = real token), "
                f"got shape {tuple(attention_mask.shape)}"
            )
        if attention_mask.dtype.is_floating_point or attention_mask.dtype.is_complex:
            raise TypeError("attention_mask must be bool or integer (1 = keep), not an additive float mask, got "
                            f"dtype {attention_mask.dtype}")
        if attention_mask.device != q.device:
            raise ValueError(f"attention_mask is on {attention_mask.device} but q is on {q.device}")
        bad = outside_0_1(attention_mask)
        if bad.numel():
            raise ValueError(f"attention_mask must hold 0 / 1 (or be bool: True/1 = real token), got the value "
                             f"{bad[0].item()}")
        key_valid = attention_mask.to(torch.bool)
        if not has_padding(key_valid):
            key_valid = None
        else:  # the kernels index the mask as b * k_len + j: a transposed (or other strided) mask must be copied
            key_valid = key_valid.contiguous()

    if key_bias is not None:
        if not isinstance(key_bias, torch.Tensor):
            raise TypeError(f"key_bias must be a tensor, got {type(key_bias).__name__}")
        if key_bias.dim() != 3 or key_bias.shape[-1] != lk or key_bias.shape[1] not in (1, h) or key_bias.shape[0] not in (1, b):
            raise ValueError(
                f"key_bias must be [batch or 1, heads or 1, k_len] = [{b}, {h}, {lk}], got {tuple(key_bias.shape)}"
            )
        if key_bias.device != q.device:
            raise ValueError(f"key_bias is on {key_bias.device} but q is on {q.device}")
        if not key_bias.dtype.is_floating_point:
            raise TypeError(f"key_bias must be a floating-point tensor (added to the scaled scores; -inf hides a key), "
                            f"got dtype {key_bias.dtype}; to hide keys by a bool mask use attention_mask or "
                            "torch.zeros(...).masked_fill(hide, float('-inf'))")
        hide_at = max(MASK_BIAS, torch.finfo(key_bias.dtype).min)
        checked = key_bias.dtype == torch.float32 and weak_tag_of(_checked_bias, key_bias, False)
        key_bias = key_bias.to(torch.float32)
        # one device sync (not while a CUDA graph is being captured, where a sync is an error: graphed calls are
        # checked when they run eagerly first; nor for a slice of a bias checked before: `mark_checked_bias`)
        if not checked and not capturing(key_bias) and bool((torch.isnan(key_bias) | (key_bias == float("inf"))).any()):
            raise ValueError("key_bias has NaN or +inf values (a float64 bias beyond float32's range included); a "
                             "key bias must be finite, or -inf to hide the key")
        # additive masks written as very large negative numbers (torch.finfo(dtype).min, -1e30...) mean "hidden":
        # as -inf they are, on every backend (finite, they would overflow in log2 units or swamp float32 scores)
        key_bias = key_bias.masked_fill(key_bias <= hide_at, float("-inf")).expand(b, h, lk).contiguous()

    softcap = _softcap_option(softcap)
    if softcap is not None and key_bias is None:
        # the kernels take capped scores on their key-bias path (scores in log2 units): a zero bias selects it, and
        # keeps such calls off the paths that take raw scores (SDPA's kernels, the decode walks, stats_from_lse)
        key_bias = torch.zeros(b, h, lk, device=q.device, dtype=torch.float32)

    sinks = sinks_option(sinks, b, h, q.device, sinks_per_batch)

    names = _names(stats, span is not None)
    span_t = None if span is None else span_rows(span, b, lk, q.device)
    if segment_ids is not None:
        from .segments import check_segment_ids

        segment_ids = check_segment_ids(segment_ids, b, lk, q.device)
    if attn_mask is not None:
        from .attn_mask import check_attn_mask

        attn_mask = check_attn_mask(attn_mask, b, h, lq, lk, q.device)

    return AttnSpec(
        batch=b, heads=h, kv_heads=hk, q_len=lq, k_len=lk, head_dim=d, q_offset=lk - lq, causal=causal,
        scale=float(scale), sliding_window=sliding_window, key_valid=key_valid, key_bias=key_bias, stats=names,
        sink_tokens=sink_tokens, local_window=local_window, span=span_t, softcap=softcap, sinks=sinks,
        v_head_dim=None if dv == d else dv, segment_ids=segment_ids, attn_mask=attn_mask,
    )


def _check_head_dims(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """k and v agree on [batch, kv_heads, k_len]; q and k share one head dim in [1, MAX_HEAD_DIM]; v's head dim may
    differ (multi-head latent attention: DeepSeek's q/k 192, v 128), at most MAX_HEAD_DIM -> v's head dim. (Head dims
    below MIN_HEAD_DIM, the Triton kernels' smallest, reach them zero-padded: `api._triton_padded`.)"""
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k and v must agree on [batch, kv_heads, k_len] (only their head dims may differ), got k "
                         f"{tuple(k.shape)} and v {tuple(v.shape)}{LAYOUT_HINT}")
    d, dk, dv = q.shape[-1], k.shape[-1], v.shape[-1]
    if dk != d:
        raise ValueError(f"q has head_dim {d} but k has head_dim {dk}; q and k must share one head dim (v's may "
                         "differ)")
    if not 1 <= d <= MAX_HEAD_DIM:
        raise ValueError(f"the q/k head_dim must be between 1 and {MAX_HEAD_DIM}, got {d}")
    if not 1 <= dv <= MAX_HEAD_DIM:
        raise ValueError(f"the v head_dim must be between 1 and {MAX_HEAD_DIM} (it may differ from the q/k head_dim "
                         f"{d}), got {dv}")
    return dv


def sinks_option(sinks, b: int, h: int, device, per_batch: bool = False) -> torch.Tensor | None:
    """Learned attention sinks (GPT-OSS's `s_aux`): None, or a real floating tensor [heads] (one logit per query
    head; with per_batch also [batch, heads]) of finite values on q's device -> [1 or batch, heads] float32 (its
    autograd history kept: the reference backend differentiates through it)."""
    if sinks is None:
        return None
    shapes = f"[heads] = [{h}]" + (f" or [batch, heads] = [{b}, {h}]" if per_batch else "")
    if not isinstance(sinks, torch.Tensor):
        raise TypeError(f"sinks must be a float tensor {shapes} (one logit per query head) or None, got "
                        f"{type(sinks).__name__}")
    if not sinks.dtype.is_floating_point:
        raise TypeError(f"sinks must be a real floating-point tensor (one logit per query head), got dtype "
                        f"{sinks.dtype}")
    if sinks.device.type == "meta":
        raise ValueError("sinks is on the meta device (shape only, no values); pass the real sink logits")
    if sinks.device != device:
        raise ValueError(f"sinks is on {sinks.device} but q is on {device}")
    given = sinks
    if tuple(sinks.shape) == (h,):
        sinks = sinks[None]
    elif not (per_batch and tuple(sinks.shape) == (b, h)):
        raise ValueError(f"sinks must have shape {shapes} (one logit per query head), got {tuple(sinks.shape)}")
    sinks = sinks.to(torch.float32)
    if not capturing(sinks) and not _known_finite(given, sinks):
        raise ValueError("sinks must hold finite values (a sink logit of -inf is no sink: pass sinks=None)")
    return sinks.contiguous()


_finite_sinks: dict = {}  # id(sinks) -> (weak reference, (version, data pointer) when its values were found finite)


def _known_finite(given: torch.Tensor, sinks32: torch.Tensor) -> bool:
    """Are the float32 sinks finite (a float64 sink beyond float32's range is not)? Asking is a device sync; a model
    hands every call the same sink parameter, so the answer is kept for `given` until it changes in place (its
    version counter moves) or its storage does. Inference-mode tensors keep no version: they are asked each time."""
    try:
        stamp = (given._version, given.data_ptr())
    except RuntimeError:  # an inference tensor
        stamp = None
    if stamp is not None and weak_tag_of(_finite_sinks, given) == stamp:
        return True
    ok = bool(torch.isfinite(sinks32).all())
    if ok and stamp is not None:
        weak_tag(_finite_sinks, given, stamp)
    return ok


MAX_SOFTCAP = 1e30  # softcap * log2(e) stays a finite float32 in the kernels (a cap this large bends no score)
# below float32's smallest normal number the kernels' 1 / (softcap * log2(e)) overflows to inf and a score of exactly 0
# (a zeroed query or key) becomes 0 * inf = NaN; the reference's s / softcap is 0 / 0 there too
MIN_SOFTCAP = float(torch.finfo(torch.float32).tiny)


def _softcap_option(softcap) -> float | None:
    """Logit soft-capping: None (off) or a positive finite number (Gemma 2: 50.0)."""
    if softcap is None:
        return None
    if isinstance(softcap, (bool, np.bool_)) or not isinstance(softcap, numbers.Real):
        raise TypeError(f"softcap must be a positive number (scores -> softcap * tanh(scores / softcap)) or None, "
                        f"got {type(softcap).__name__} {softcap!r:.40}")
    if not MIN_SOFTCAP <= softcap <= MAX_SOFTCAP:
        raise ValueError(f"softcap must lie in [{MIN_SOFTCAP:.3g}, {MAX_SOFTCAP:.3g}] (scores -> softcap * tanh(scores / "
                         f"softcap); the kernels compute in float32) or be None, got {softcap!r}")
    return float(softcap)


CHECK_MEMORY_ABOVE = 256 * 2**20  # bytes; smaller calls skip the free-memory query


def output_and_stats_bytes(spec: AttnSpec, element_size: int) -> int:
    """GPU memory a Triton-backend call allocates beyond its inputs: the output (the forward writes it even when
    need_out=False), lse, each requested statistic, and the key pass's int64 sums and tickets."""
    rows = spec.batch * spec.heads * spec.q_len
    keys = spec.batch * spec.heads * spec.k_len
    want = set(spec.stats)
    total = rows * max(spec.head_dim, spec.value_dim) * element_size + rows * 4  # output + lse
    total += rows * 4 * len(want & {"max_prob", "entropy", "sink_mass", "local_mass", "span_mass"})
    total += rows * 8 * ("argmax" in want)
    if want & {"key_mass", "key_mean"}:  # int64 sums + a ticket per head, key_mass (also under key_mean), key_mean
        total += keys * 8 + spec.batch * spec.heads * 8 + keys * 4 * (1 + ("key_mean" in want))
    total += keys * 4 * bool(want & {"key_count", "key_mean"})
    return total


def check_fits_in_memory(q: torch.Tensor, spec: AttnSpec, *, free: int | None = None, total: int | None = None):
    """A clear ValueError, before anything is launched, when the output and statistics will not fit in free GPU
    memory (free on the device plus what torch's caching allocator holds unused; `free`/`total` override it)."""
    need = output_and_stats_bytes(spec, q.element_size())
    if free is None:
        if q.device.type != "cuda" or need < CHECK_MEMORY_ABOVE:
            return
        free, total = torch.cuda.mem_get_info(q.device)
        free += torch.cuda.memory_reserved(q.device) - torch.cuda.memory_allocated(q.device)
    if need > free:
        gib = 2**30
        raise ValueError(
            f"attention with stats={list(spec.stats)} at batch={spec.batch}, heads={spec.heads}, "
            f"q_len={spec.q_len}, k_len={spec.k_len}, head_dim={spec.head_dim} needs {need / gib:.2f} GiB of GPU "
            f"memory for the output and statistics, but only {free / gib:.2f} GiB of {total / gib:.2f} GiB is free "
            "on " + str(q.device) + "; ask for fewer statistics, a shorter input or a smaller batch"
        )
