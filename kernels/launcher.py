"""Launchers: turn a validated AttnSpec into (output, lse) and one statistics pass, and back into AttentionStats.

    output + lse   torch's SDPA kernels where they apply (`sdpa_path.py`), else the Triton forward kernel
    statistics     one Triton pass from the known lse (`triton_stats.py`); skipped when only lse is asked for

Contract (relied on by the backward pass): `triton_attention(q, k, v, spec, need_out=True) -> (out, AttentionStats)`
with `AttentionStats.lse` (natural log, float32 [batch, heads, q_len], -inf on rows that see no key) filled when
"lse" is in spec.stats.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import torch
import triton

from . import launcher_decode, walk_parts
from .checks import AttnSpec, check_fits_in_memory
from .direct_launch import DirectLauncher
from .sdpa_path import eligible, sdpa_out_lse
from .stats import AttentionStats
from .triton_forward import AUTOTUNE, INTERPRET, attention_fwd_kernel, window_kind
from .triton_stats import attention_stats_kernel

LOG2E = 1.0 / math.log(2.0)
ROW_STATS = ("max_prob", "entropy", "sink_mass", "local_mass", "span_mass")
ROW_CONST = {"max_prob": "MAXP", "entropy": "ENT", "sink_mass": "SINK", "local_mass": "LOCAL", "span_mass": "SPAN"}
KEY_STATS = {"key_mass", "key_mean", "key_count"}
_dummies: dict = {}
_tuned: dict = {}  # autotune key of the statistics kernel -> the config it chose
# (autotune key, FINALIZE) -> (its config, BLOCK_M, the launch's keyword arguments, a small id of all of them for the
# direct launcher, which keeps one compiled kernel per id)
_launch_plans: dict = {}
_config_ids: dict = {}  # ((autotune key, FINALIZE), the config's arguments) -> a small int
# tuned statistics launches skip Triton's per-call JIT path once compiled (`direct_launch.py`); not in the interpreter
_direct_stats = DirectLauncher(attention_stats_kernel.fn, enabled=not INTERPRET)


class PinnedConfig(dict):
    """A stand-in for `_tuned` that answers every key with one config: `launcher._tuned = PinnedConfig(c)` runs
    every statistics launch with `c` (tests of each config; `examples/profile_kernels.py --config`)."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def get(self, key, default=None):
        return self.config


# autotune keys cap the length at TUNE_LEN: longer inputs reuse its choice, and are tuned on a TUNE_LEN proxy
TUNE_LEN = 8192
# ... except short-query calls (at most walk_parts.MAX_BLOCK_M queries: decode steps), whose work grows with the keys
# alone: they are tuned at their own length up to SHORT_TUNE_LEN keys. On the 8k proxy the autotuner picked 128-query
# tiles for a 9x64 decode step, whose 128k call then spent 152 us in statistics for one query row per tile against
# cuDNN's 41 us (`docs/gpu/decode_profile_round18.log`). Env INTERP_SHORT_TUNE_LEN (a power of two >= TUNE_LEN; 8192
# gives round 18's first form, every length on the 8k proxy) is for A/Bs


def short_tune_len(value: str | None) -> int:
    """INTERP_SHORT_TUNE_LEN -> SHORT_TUNE_LEN (unset: 2^20)."""
    if value is None:
        return 1 << 20
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < TUNE_LEN or n & (n - 1):
        raise ValueError(f"INTERP_SHORT_TUNE_LEN must be a power of two >= {TUNE_LEN}, got {value!r}")
    return n


SHORT_TUNE_LEN = short_tune_len(os.environ.get("INTERP_SHORT_TUNE_LEN"))
_proxied: set = set()  # requests whose kernels were tuned on a proxy
# key_mass / key_mean finalized inside the statistics kernel (its last program per head; no torch ops after the
# launch; 8 % less device time at 2k) while neither axis is longer than this; beyond it two torch ops convert the
# fixed-point sums: there neither form is measurably faster (H100 and H200, round 12), and with a long key axis (a
# decode step against a long cache) one program per head would convert every key serially
FINALIZE_MAX_LEN = 8192


def _dummy(device, dtype=torch.float32):
    """A one-element placeholder for a kernel argument not used, made once per (device, dtype). Never an inference
    tensor: one made inside torch.inference_mode() and kept would be an error to zero outside it (the autotuner
    zeroes KMASS, which may be this placeholder, before each timing run)."""
    key = (device, dtype)
    t = _dummies.get(key)
    if t is None:
        with torch.inference_mode(False):
            t = _dummies[key] = torch.empty(1, device=device, dtype=dtype)
    return t


def tune_cap(spec: AttnSpec) -> int:
    """The longest input tuned at its own length: TUNE_LEN, or SHORT_TUNE_LEN for a short-query call."""
    return SHORT_TUNE_LEN if spec.q_len <= walk_parts.MAX_BLOCK_M else TUNE_LEN


def _len_bucket(spec: AttnSpec) -> int:
    """Autotune key for the sequence length: the next power of two, capped at `tune_cap` (longer inputs reuse its
    choice)."""
    return min(1 << (max(spec.q_len, spec.k_len) - 1).bit_length(), tune_cap(spec))


def _proxy_spec(spec: AttnSpec, device) -> AttnSpec:
    """The same request at most `tune_cap` long, batch 1: same autotune keys (length bucket, flags, dtypes) and the
    same choice between SDPA and the Triton forward, so tuning it fills the caches the real call reads."""
    cap = tune_cap(spec)
    lq, lk = min(spec.q_len, cap), min(spec.k_len, cap)  # q_len <= k_len (checked)
    if spec.q_len != spec.k_len and lq == lk:  # keep q_len != k_len (it decides whether SDPA applies)
        lq = cap // 2
    valid = torch.ones(1, lk, device=device, dtype=torch.bool) if spec.key_valid is not None else None
    bias = None
    if spec.key_bias is not None:
        bias = torch.zeros(1, spec.heads, lk, device=device, dtype=spec.key_bias.dtype)
    span = None
    if spec.span is not None:
        span = torch.tensor([[0, min(lk, 64)]], device=device, dtype=spec.span.dtype)
    return dataclasses.replace(spec, batch=1, q_len=lq, k_len=lk, q_offset=lk - lq,
                               key_valid=valid, key_bias=bias, span=span)


def proxy_kind(q, spec: AttnSpec) -> tuple:
    """What decides the kernels' autotune keys and path besides the length: one proxy per kind and request (the
    tuning cap too: a short-query chunk and a longer one of the same kind tune different length buckets)."""
    return (q.device, q.dtype, spec.heads, spec.kv_heads, spec.head_dim, spec.causal, window_kind(spec.sliding_window),
            spec.key_valid is not None, None if spec.key_bias is None else spec.key_bias.dtype, spec.q_len == 1,
            spec.q_len == spec.k_len, tune_cap(spec), spec.softcap)


def proxy_inputs(ps: AttnSpec, q):
    """Random q, k, v of the proxy's shapes in q's dtype and device, and the generator they came from (the
    caller's random stream is never touched)."""
    g = torch.Generator(device=q.device).manual_seed(0)
    kw = dict(device=q.device, dtype=q.dtype, generator=g)
    qp = torch.randn(1, ps.heads, ps.q_len, ps.head_dim, **kw)
    kp = torch.randn(1, ps.kv_heads, ps.k_len, ps.head_dim, **kw)
    return qp, kp, torch.randn(kp.shape, **kw), g


def _tune_on_proxy(q, k, spec: AttnSpec, sdpa: bool | None) -> None:
    """Autotune on a `tune_cap`-token proxy before the first long call of a kind. The autotuner times every config
    on the input it is given: at 1M tokens that was ~45 s a config (`docs/gpu/kspeed_notes.md`, round 3); on the
    proxy it is milliseconds, and the long call then launches the chosen configs directly. `sdpa`: whether the
    real call's output comes from SDPA (True) or the Triton forward (False), which the proxy then tunes; None
    for a statistics-only call. The proxy draws from its own generator: the caller's random stream is untouched."""
    if INTERPRET or not AUTOTUNE or max(spec.q_len, spec.k_len) <= tune_cap(spec):
        return
    base = proxy_kind(q, spec)
    # the proxy tunes the real call's kernel variant: parted or not as the real call is
    parted = walk_parts.call_may_part(spec.stats, spec.q_len, spec.k_len, spec.batch * spec.heads, q.device)
    keys = [(*base, "stats", spec.stats, spec.span is not None, parted)]
    if sdpa is not None:
        keys.append((*base, "forward", sdpa))
    if all(key in _proxied for key in keys):
        return
    ps = _proxy_spec(spec, q.device)
    qp, kp, vp, _ = proxy_inputs(ps, q)
    res = sdpa_out_lse(qp, kp, vp, ps) if sdpa is not False and eligible(qp, kp, vp, ps) else None
    _, lse = res if res is not None else triton_forward(qp, kp, vp, ps, _flags(ps, qp), _len_bucket(ps))
    triton_stats(qp, kp, lse, ps, parted=parted)
    _proxied.update(keys)


def _fix_scale(q_len: int) -> float:
    """Fixed-point scale for the integer key-mass sums: a key's mass is at most q_len (plus rounding), which must
    stay below 2^63 after scaling."""
    return float(2 ** (61 - q_len.bit_length()))


def _flags(spec: AttnSpec, q):
    return _flag_values(q.dtype, spec.causal, window_kind(spec.sliding_window), spec.key_valid is not None,
                        spec.key_bias is not None, spec.softcap or 0.0)


def _flag_values(dtype, causal: bool, has_window: int, has_valid: bool, has_bias: bool, softcap: float = 0.0) -> dict:
    """has_window: `window_kind` (0 none, 1 narrow, 2 wide); softcap: the logit cap, 0 for none (a soft-capping call
    has a key bias, zero when none was given: `checks.check_inputs`)."""
    return dict(
        CAUSAL=causal, HAS_WINDOW=has_window, HAS_VALID=has_valid, HAS_BIAS=has_bias, SOFTCAP=softcap,
        UPCAST=INTERPRET and dtype == torch.bfloat16,  # tl.dot on bf16 tiles is wrong in the CPU interpreter
        DOT_PREC="ieee" if dtype == torch.float32 else None,  # exact fp32 products; fp16/bf16 the default
    )


def _launch_stats(args, consts, tune_key, lq, n_bh, kmass, parts=None):
    """Launch the statistics kernel. The first call per autotune key goes through the autotuner; later ones launch
    the chosen config directly (no autotuner bookkeeping on the hot path, which short inputs feel). parts(meta):
    the parts per query block for a config (`walk_parts.n_parts`; None: 1)."""
    config = _tuned.get(tune_key)
    if config is not None:
        plan_key = (tune_key, consts["FINALIZE"])  # FINALIZE is a constexpr outside the autotune key
        plan = _launch_plans.get(plan_key)
        if plan is None or plan[0] is not config:  # worked out once per key and config (PinnedConfig swaps them)
            meta = config.all_kwargs()
            key = _config_ids.setdefault((plan_key, tuple(meta.items())), len(_config_ids))
            plan = _launch_plans[plan_key] = (config, meta, {**consts, **meta}, key)
        _, meta, kwargs, key = plan
        _direct_stats((triton.cdiv(lq, meta["BLOCK_M"]) * n_bh * (parts(meta) if parts else 1),), args, kwargs, key)
        return

    def grid(meta):  # one axis: (query blocks x (batch x heads)) x parts, ordered by `triton_forward._program_at`
        return (triton.cdiv(lq, meta["BLOCK_M"]) * n_bh * (parts(meta) if parts else 1),)

    attention_stats_kernel[grid](*args, **consts)
    if INTERPRET:
        return
    if kmass is not None and AUTOTUNE:  # timing runs of the autotuner may have added to the atomic key sums,
        kmass.zero_()  # whatever the Triton version does with reset_to_zero: run the chosen config once more
        attention_stats_kernel[grid](*args, **consts)
    _tuned[tune_key] = attention_stats_kernel.best_config


def triton_forward(q, k, v, spec: AttnSpec, flags, len_bucket):
    """Output [b, h, q_len, d] and lse [b, h, q_len] (natural log) from the Triton forward kernel."""
    b, h, lq, d = spec.batch, spec.heads, spec.q_len, spec.head_dim
    out = torch.empty(b, h, lq, d, device=q.device, dtype=q.dtype)
    lse = torch.empty(b, h, lq, device=q.device, dtype=torch.float32)
    dev = q.device
    kvalid = spec.key_valid.to(torch.int8) if spec.key_valid is not None else _dummy(dev, torch.int8)
    bias = spec.key_bias if spec.key_bias is not None else _dummy(dev)

    def grid(meta):
        return (triton.cdiv(lq, meta["BLOCK_M"]) * b * h,)

    attention_fwd_kernel[grid](
        q, k, v, out, lse, kvalid, bias, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        h, spec.group, lq, spec.k_len, spec.q_offset, spec.scale * LOG2E, spec.sliding_window or 0, len_bucket,
        HEAD_DIM=d, BLOCK_D=max(16, 1 << (d - 1).bit_length()), **flags,
    )
    return out, lse


def triton_attention(q, k, v, spec: AttnSpec, *, need_out: bool = True):
    """Output (None when need_out=False) and the statistics spec.stats asks for."""
    if spec.sinks is not None:  # learned sinks: the forward as usual, then the rescale and lse' (`sinks.py`)
        from .sinks import triton_attention_with_sinks

        return triton_attention_with_sinks(q, k, v, spec, need_out=need_out)
    if q.device.type == "cuda":
        check_fits_in_memory(q, spec)
    if launcher_decode.fused_eligible(spec):  # a decode step with statistics: output and statistics in one walk
        f = _flag_values(q.dtype, False, 0, False, False)
        row = tuple(n for n in ROW_STATS if n in spec.stats)
        return launcher_decode.fused_decode(q, k, v, spec, row, _row_slots(row), spec.scale * LOG2E,
                                            dict(UPCAST=f["UPCAST"], DOT_PREC=f["DOT_PREC"]), need_out)
    use_sdpa = eligible(q, k, v, spec)
    _tune_on_proxy(q, k, spec, use_sdpa)
    len_bucket = _len_bucket(spec)

    res = sdpa_out_lse(q, k, v, spec, need_lse=bool(spec.stats)) if use_sdpa else None
    out, lse = res if res is not None else triton_forward(q, k, v, spec, _flags(spec, q), len_bucket)
    if not spec.stats:  # output only: no lse from cuDNN, no statistics pass
        return (out if need_out else None), AttentionStats()
    return (out if need_out else None), triton_stats(q, k, lse, spec)


def _row_slots(row: tuple) -> dict:
    """The statistics kernels' S_* constexprs: each per-query statistic's slot in ROWS (0 where not asked for)."""
    return {f"S_{ROW_CONST[n]}": (row.index(n) if n in row else 0) for n in ROW_STATS}


@functools.lru_cache(maxsize=4096)
def _stats_plan(stats: tuple, head_dim: int, dtype: torch.dtype, causal: bool, has_window: int, has_valid: bool,
                has_bias: bool, len_bucket: int, parted: bool = False, softcap: float = 0.0):
    """What a statistics request launches, worked out once per kind of request (the hot path of short calls):
    (row statistics in slot order, want key sums, want key_count, the kernel's constexprs with the key statistics
    finalized in the kernel and without (FINALIZE True / False: one autotune key for both), its autotune key)."""
    want = set(stats)
    row = tuple(n for n in ROW_STATS if n in want)
    want_key = "key_mass" in want or "key_mean" in want
    want_count = "key_count" in want or "key_mean" in want
    slots = _row_slots(row)
    consts = dict(
        HEAD_DIM=head_dim, BLOCK_D=max(16, 1 << (head_dim - 1).bit_length()),
        WANT_MAXP="max_prob" in want, WANT_ARG="argmax" in want, WANT_ENT="entropy" in want,
        WANT_SINK="sink_mass" in want, WANT_LOCAL="local_mass" in want, WANT_SPAN="span_mass" in want,
        WANT_KEY=want_key, WANT_COUNT=want_count, WANT_KMEAN="key_mean" in want, PARTED=parted, **slots,
        **_flag_values(dtype, causal, has_window, has_valid, has_bias, softcap),
    )
    tune_key = (len_bucket, dtype, *consts.values())
    return row, want_key, want_count, {f: {**consts, "FINALIZE": f} for f in (True, False)}, tune_key


def triton_stats(q, k, lse, spec: AttnSpec, parted: bool | None = None) -> AttentionStats:
    """The statistics spec.stats asks for, in one Triton pass from the row log-sum-exp `lse` [b, h, q_len]. parted:
    whether to compile the parts' code (`walk_parts.py`; None: as this call's shape says, when parts are on)."""
    if spec.sinks is not None:  # lse is the sink-inclusive lse' (`sinks.py`)
        from .sinks import stats_with_sinks

        return stats_with_sinks(q, k, lse, spec)
    b, h, lq, lk, d = spec.batch, spec.heads, spec.q_len, spec.k_len, spec.head_dim
    dev = q.device
    want = spec.stats
    if launcher_decode.eligible(spec) and any(n != "lse" for n in want):  # a decode step, heads packed (opt-in)
        f = _flag_values(q.dtype, False, 0, False, False)
        row = tuple(n for n in ROW_STATS if n in want)
        return launcher_decode.decode_stats(q, k, lse, spec, row, _row_slots(row), spec.scale * LOG2E,
                                            dict(UPCAST=f["UPCAST"], DOT_PREC=f["DOT_PREC"]))
    _tune_on_proxy(q, k, spec, None)
    len_bucket = _len_bucket(spec)
    st = AttentionStats()
    if "lse" in want:
        st.lse = lse

    if parted is None:
        parted = walk_parts.call_may_part(want, lq, lk, b * h, dev)
    row, want_key, want_count, consts_by, tune_key = _stats_plan(
        tuple(spec.stats), d, q.dtype, spec.causal, window_kind(spec.sliding_window), spec.key_valid is not None,
        spec.key_bias is not None, len_bucket, parted, spec.softcap or 0.0)
    if row or "argmax" in want or want_key or want_count:
        f32 = dict(device=dev, dtype=torch.float32)
        rows = torch.empty(len(row), b, h, lq, **f32) if row else _dummy(dev)  # one buffer, a slot per statistic
        arg = torch.empty(b, h, lq, device=dev, dtype=torch.int64) if "argmax" in want else _dummy(dev, torch.int64)
        # fixed-point key sums [b, h, lk], then one ticket counter per (batch, head), then a parted call's combine
        # tickets (`walk_parts.py`): zeroed in one fill
        tickets = walk_parts.n_tickets(lq, b * h) if parted else 0
        kmass = (torch.zeros(b * h * (lk + 1) * want_key + tickets, device=dev, dtype=torch.int64)
                 if want_key or parted else _dummy(dev, torch.int64))
        kcount = torch.empty(b, h, lk, **f32) if want_count else _dummy(dev)
        mass = torch.empty(b, h, lk, **f32) if want_key else _dummy(dev)
        mean = torch.empty(b, h, lk, **f32) if "key_mean" in want else _dummy(dev)
        if spec.key_valid is not None:
            kvalid = spec.key_valid.to(torch.int8)
            qcum = torch.zeros(b, lq + 1, device=dev, dtype=torch.int32)
            torch.cumsum(spec.key_valid[:, spec.q_offset:], 1, dtype=torch.int32, out=qcum[:, 1:])
        else:
            kvalid, qcum = _dummy(dev, torch.int8), _dummy(dev, torch.int32)
        bias = spec.key_bias if spec.key_bias is not None else _dummy(dev)
        spans = spec.span if spec.span is not None else _dummy(dev, torch.int64)
        fix = _fix_scale(lq)
        finalize = not want_key or max(lq, lk) <= FINALIZE_MAX_LEN  # (no key sums: one kernel for every length)
        parts, part, ticket = None, _dummy(dev), _dummy(dev, torch.int64)
        if parted:  # the partial row statistics and tickets of a call that may be parted (`walk_parts.py`)
            parts = walk_parts.parts_of_call(want, lq, lk, b * h, dev)
            part, ticket = walk_parts.partials(lq, b * h, dev), kmass[kmass.numel() - tickets:]

        args = (q, k, lse, rows, arg, kmass, kcount, mass, mean, kvalid, qcum, bias, spans, part, ticket,
                *q.stride(), *k.stride(), h, spec.group, lq, lk, spec.q_offset, spec.scale * LOG2E,
                spec.sliding_window or 0, spec.sink_tokens, spec.local_window, fix, 1.0 / fix, b * h, b * h * lq,
                len_bucket)
        _launch_stats(args, consts_by[finalize], tune_key, lq, b * h, kmass if want_key else None, parts)
        if row:
            for n, t in zip(row, rows.unbind(0)):  # one op for every slot's view
                setattr(st, n, t)
        if "argmax" in want:
            st.argmax = arg
        if not finalize:  # as the kernel's finalize: int64 -> float32 (nearest), then times 1 / fix in float32 (exact:
            # a power of two) whatever torch's default dtype
            mass.copy_(kmass[:b * h * lk].view(b, h, lk)).mul_(1.0 / fix)
            if "key_mean" in want:  # correctly rounded, as the kernel's div_rn
                torch.div(mass, kcount, out=mean)
        if "key_mass" in want:  # key_mass and key_mean: from the kernel's last program per head, or just above
            st.key_mass = mass
        if "key_mean" in want:  # mass is exactly 0 where count is 0, so 0/0 gives the documented NaN
            st.key_mean = mean
        if "key_count" in want:
            st.key_count = kcount
    return st
