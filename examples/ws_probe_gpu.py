"""Probe: does Triton's Hopper warp specialisation speed up the key-by-query statistics walk? (issue 18, round 7)

A cut-down copy of the TRANSPOSE walk (`kernels/triton_stats_t.py`): the unmasked key blocks of a causal call only
(keys below each query block), max / argmax / sum p log2 p per query and per-key mass, Q / K / lse through TMA
descriptors, the loop under `tl.range(..., warp_specialize=WS)`. The same kernel with WS on and off is an A/B test
of the specialisation itself on identical work. Findings on the CPU with Triton 3.6 (`--compile-only`):
  - with `tl.atomic_add` in the loop the NVGPUWarpSpecialization pass fails ("operation destroyed but still has
    uses"); a plain store, or an atomic whose result is used, compiles;
  - so the per-key sums are added by inline PTX (`red.relaxed.gpu.global.add.u64` from lane % 4 == 0: in the
    accumulator layout a row's sum is replicated over the 4 lanes sharing it), its dummy result folded into the
    output so the op stays;
  - compiled, the loop becomes a producer warpgroup (TMA) and two consumer warpgroups (232 registers each) that
    alternate key blocks.

    /tmp/t36/bin/python examples/ws_probe_gpu.py --compile-only       # sm_90 compile here, no GPU

Triton 3.6 is the GPU machines' version; with the Triton 3.9 of this repository's CPU environment the WS=True
compile fails in the MLIR pipeline (the pass changed), so the findings above are 3.6's.
    python3 examples/ws_probe_gpu.py --n 8192 32768                   # GPU: check against torch, time WS off / on

Not part of the package: a probe whose numbers decided that the real kernel should not take this route.

Answer (round 8, H100, `docs/gpu/ws_probe_round8.log`): with 64:64:4:2 tiles WS off is exact (max 2.2e-5, argmax
all equal, key mass 9.7e-7 against float64) and takes 0.88x / 0.82x SDPA at 8k / 32k; WS on takes 1.88x / 1.80x
(2.1-2.2x slower) and its key masses are wrong (error 4.0). (With 64:128 tiles the walk steps past the block start,
which the reference here does not count, so both variants differ from it; the timings, WS on 1.6x slower, stand.)
"""

from __future__ import annotations

import argparse
import re
import sys

import triton
import triton.language as tl

RED = tl.constexpr("{ .reg .u32 l; .reg .pred p; mov.u32 l, %laneid; and.b32 l, l, 3; setp.eq.u32 p, l, 0; "
                   "@p red.relaxed.gpu.global.add.u64 [$1], $2; mov.u32 $0, 0; }")


@triton.jit
def fold_block(s, start_n, row0, lse, qk_scale, m_acc, a_acc, e_acc, G8: tl.constexpr, BLOCK_M: tl.constexpr):
    """One unmasked key block of the key-by-query walk, as `kernels/triton_stats_t.py` folds it: s [BLOCK_N keys,
    BLOCK_M queries] raw q.k; each thread's two rows of a 16-row group into the [G8, 8, BLOCK_M] running max / first
    key / sum p log2 p partials (row0: each partial's first key in a block). Returns (p, m_acc, a_acc, e_acc).
    (Shared with examples/gqa_pack_probe_gpu.py.)"""
    s0, s1 = tl.split(tl.permute(tl.reshape(s, [G8, 2, 8, BLOCK_M]), (0, 2, 3, 1)))
    key0 = start_n + row0
    a_acc = tl.where(s0 > m_acc, key0, a_acc)
    m_acc = tl.maximum(m_acc, s0)
    a_acc = tl.where(s1 > m_acc, key0 + 8, a_acc)
    m_acc = tl.maximum(m_acc, s1)
    t = s * qk_scale - lse[None, :]
    p = tl.exp2(t)
    p0, p1 = tl.split(tl.permute(tl.reshape(p, [G8, 2, 8, BLOCK_M]), (0, 2, 3, 1)))
    t0, t1 = tl.split(tl.permute(tl.reshape(t, [G8, 2, 8, BLOCK_M]), (0, 2, 3, 1)))
    e_acc = e_acc + p0 * t0
    e_acc = e_acc + p1 * t1
    return p, m_acc, a_acc, e_acc


@triton.jit
def probe_kernel(Q, K, LSE, KMASS, ROWS, H, G, Lq, Lk, qk_scale, fix_scale,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr, WS: tl.constexpr):
    """Q [B*H*Lq, D], K [B*KVH*Lk, D] fp16/bf16 rows; LSE [B*H*Lq] natural log; KMASS [B*H, Lk] int64 (zeroed);
    ROWS [3, B*H*Lq] float32: max raw score, argmax, sum p log2 p over the keys below each query block."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    kvh = (pid_bh % H) // G
    m0 = pid_m * BLOCK_M
    q_desc = tl.make_tensor_descriptor(Q, shape=[Lq * H * 1, D], strides=[D, 1], block_shape=[BLOCK_M, D])
    k_desc = tl.make_tensor_descriptor(K, shape=[Lk * (H // G), D], strides=[D, 1], block_shape=[BLOCK_N, D])
    l_desc = tl.make_tensor_descriptor(LSE, shape=[Lq * H], strides=[1], block_shape=[BLOCK_M])
    qt = tl.trans(q_desc.load([pid_bh * Lq + m0, 0]))  # [D, BLOCK_M]
    lse = l_desc.load([pid_bh * Lq + m0]) * 1.4426950408889634
    G8: tl.constexpr = BLOCK_N // 16
    m_acc = tl.full([G8, 8, BLOCK_M], float("-inf"), tl.float32)
    a_acc = tl.full([G8, 8, BLOCK_M], -1, tl.int32)
    e_acc = tl.zeros([G8, 8, BLOCK_M], tl.float32)
    row0 = tl.arange(0, G8)[:, None, None] * 16 + tl.arange(0, 8)[None, :, None]
    dummy = 0
    kbase = (b * (H // G) + kvh) * Lk
    for start_n in tl.range(0, m0, BLOCK_N, warp_specialize=WS):
        s = tl.dot(k_desc.load([kbase + start_n, 0]), qt)  # [BLOCK_N keys, BLOCK_M queries]
        p, m_acc, a_acc, e_acc = fold_block(s, start_n, row0, lse, qk_scale, m_acc, a_acc, e_acc, G8, BLOCK_M)
        fixed = (tl.maximum(tl.sum(p, 1), 0.0) * fix_scale + 0.5).to(tl.int64)
        ptrs = KMASS + pid_bh.to(tl.int64) * Lk + start_n + tl.arange(0, BLOCK_N)
        done = tl.inline_asm_elementwise(RED, "=r,l,l", [ptrs, fixed], dtype=tl.int32, is_pure=False, pack=1)
        dummy += tl.sum(done, 0)
    R: tl.constexpr = G8 * 8
    m2 = tl.reshape(m_acc, [R, BLOCK_M])
    m_i = tl.max(m2, 0)
    a_i = tl.min(tl.where(m2 == m_i[None, :], tl.reshape(a_acc, [R, BLOCK_M]), 2147483647), 0)
    offs = pid_bh * Lq + m0 + tl.arange(0, BLOCK_M)
    tl.store(ROWS + offs, m_i + dummy.to(tl.float32))  # dummy is 0: it keeps the red ops alive
    tl.store(ROWS + Lq * H + offs, a_i.to(tl.float32))
    tl.store(ROWS + 2 * Lq * H + offs, tl.sum(tl.reshape(e_acc, [R, BLOCK_M]), 0))


def compile_only(bm: int, bn: int, warps: int, stages: int, ws: bool):
    from triton.backends.compiler import GPUTarget

    sig = dict(Q="*fp16", K="*fp16", LSE="*fp32", KMASS="*i64", ROWS="*fp32", H="i32", G="i32", Lq="i32", Lk="i32",
               qk_scale="fp32", fix_scale="fp32", BLOCK_M="constexpr", BLOCK_N="constexpr", D="constexpr",
               WS="constexpr")
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(probe_kernel.arg_names)
             if n in ("Q", "K", "LSE", "KMASS", "ROWS", "Lq", "Lk")}
    src = triton.compiler.ASTSource(fn=probe_kernel, signature=sig, constexprs=dict(BLOCK_M=bm, BLOCK_N=bn, D=128,
                                                                                   WS=ws), attrs=attrs)
    target = GPUTarget("cuda", 90, 32)
    backend = triton.compiler.make_backend(target)
    return triton.compile(src, target=target, options=backend.parse_options(
        {"num_warps": warps, "num_stages": stages}).__dict__)


def reference(q, k, lse, bm: int, G: int, scale: float):
    """torch, float64: the probe's statistics (keys below each query block only)."""
    import torch

    B, H, n, D = q.shape
    kk = k.double().repeat_interleave(G, 1)
    s = q.double() @ kk.transpose(-1, -2)  # [B, H, n, n] raw
    block = torch.arange(n, device=q.device) // bm * bm
    seen = torch.arange(n, device=q.device)[None, :] < block[:, None]  # [query, key]
    s = s.masked_fill(~seen, float("-inf"))
    t = s * scale * 1.4426950408889634 - lse.double()[..., None] * 1.4426950408889634
    p = torch.exp2(t)
    mx = s.max(-1).values
    arg = s.argmax(-1).masked_fill(~seen.any(-1), -1)
    ent = torch.where(p > 0, p * t, torch.zeros_like(p)).sum(-1)
    return mx, arg, ent, p.sum(-2)  # key mass [B, H, n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile-only", action="store_true")
    ap.add_argument("--n", nargs="+", type=int, default=[8192, 32768])
    ap.add_argument("--tiles", default="64:128:4:2", help="BLOCK_M:BLOCK_N:warps:stages")
    a = ap.parse_args(argv)
    bm, bn, warps, stages = (int(x) for x in a.tiles.split(":"))
    if a.compile_only:
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
        import sm90_registers as R

        for ws in (False, True):
            c = compile_only(bm, bn, warps, stages, ws)
            regs, stack = R.resources(c)
            parts = re.findall(r"partition\d+\(", c.asm["ttgir"])
            req = re.search(r"requestedRegisters = array<i32: ([\d, ]+)>", c.asm["ttgir"])
            print(f"WS={ws}: {regs} registers, {stack} B stack, {len(parts)} extra partitions"
                  + (f", consumer registers {req.group(1)}" if req else ""))
        return 0

    import torch

    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    torch.manual_seed(0)
    H, KVH, D = 32, 8, 128
    scale = D ** -0.5
    fix = 2.0 ** 40
    # correctness on a small case, both ways
    n = 1024
    q = torch.randn(1, H, n, D, device="cuda", dtype=torch.float16)
    k = torch.randn(1, KVH, n, D, device="cuda", dtype=torch.float16)
    lse = torch.logsumexp((q.float() @ k.float().repeat_interleave(H // KVH, 1).transpose(-1, -2)) * scale
                          + torch.full((n, n), float("-inf"), device="cuda").triu(1), -1)
    mx, arg, ent, km = reference(q, k, lse, bm, H // KVH, scale)  # key mass per query head: [1, H, n]
    for ws in (False, True):
        kmass = torch.zeros(H, n, dtype=torch.int64, device="cuda")
        rows = torch.zeros(3, H * n, device="cuda")
        probe_kernel[(n // bm, H)](q.reshape(-1, D), k.reshape(-1, D), lse.reshape(-1), kmass, rows, H, H // KVH, n,
                                   n, scale * 1.4426950408889634, fix, BLOCK_M=bm, BLOCK_N=bn, D=D, WS=ws,
                                   num_warps=warps, num_stages=stages)
        got_m, got_a, got_e = (r.reshape(1, H, n) for r in rows)
        ok = got_m.isfinite() & mx.isfinite()
        print(f"WS={ws}: max err {float((got_m - mx)[ok].abs().max()):.1e}, argmax agree "
              f"{float((got_a.long() == arg)[ok].double().mean()):.4f}, entropy err "
              f"{float((got_e - ent).abs().max()):.1e}, key mass err "
              f"{float((kmass.double() / fix - km[0]).abs().max()):.1e}", flush=True)
    for n in a.n:
        q = torch.randn(1, H, n, D, device="cuda", dtype=torch.float16)
        k = torch.randn(1, KVH, n, D, device="cuda", dtype=torch.float16)
        v = torch.randn(1, KVH, n, D, device="cuda", dtype=torch.float16)
        lse = torch.full((1, H, n), 8.0, device="cuda")
        kmass = torch.zeros(H, n, dtype=torch.int64, device="cuda")
        rows = torch.zeros(3, H * n, device="cuda")
        sdpa = triton.testing.do_bench(lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=True))
        line = f"N={n}: SDPA {sdpa:.3f} ms"
        for ws in (False, True):
            t = triton.testing.do_bench(lambda: probe_kernel[(n // bm, H)](
                q.reshape(-1, D), k.reshape(-1, D), lse.reshape(-1), kmass, rows, H, H // KVH, n, n,
                scale * 1.4426950408889634, fix, BLOCK_M=bm, BLOCK_N=bn, D=D, WS=ws, num_warps=warps,
                num_stages=stages))
            line += f" | WS={ws} {t:.3f} ms ({t / sdpa:.2f}x SDPA)"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
