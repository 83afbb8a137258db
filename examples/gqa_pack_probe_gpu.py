"""Probe: is the statistics walk bound by moving K tiles from L2? (issue 18, round 8)

Each program of the key-by-query walk (`kernels/triton_stats_t.py`) loads every K tile below its BLOCK_M queries:
with 64 queries per program, 2 bytes of K feed 128 flops, and at 8k tokens (32x128 GQA 32/8) that is ~4.3 GB of
L2-to-SM traffic in ~0.87 ms, ~4.9 TB/s, the order of the H100's L2 bandwidth. This probe times one cut-down walk
(unmasked key blocks only; max, argmax, sum p log2 p per query and per-key mass) two ways on identical work:
    one head: a program takes 64 queries of one head (as the kernel does today);
    packed:   a program takes 64 // G queries of each of the G query heads that share one KV head (GQA), so one K
              tile feeds 64 rows of G heads, and K traffic drops G-fold; per-key mass becomes G row sums per key.
If packed wins by a margin, the real kernel should pack GQA heads. Checked against torch (float64) first.

    python3 examples/gqa_pack_probe_gpu.py --n 8192 32768
    /tmp/t36/bin/python examples/gqa_pack_probe_gpu.py --compile-only     # sm_90 registers here, no GPU
Not part of the package.

Answer (round 8, H200, `docs/gpu/gqa_pack_round8.log`; all three exact against float64): no. Time against SDPA at
8k / 32k: one head 0.82x / 0.78x, two heads packed 0.86x / 0.82x, four 1.02x / 0.96x; the packed loop has more
instructions (327 / 335 / 359 per key block, sm_90, `--compile-only`) and K traffic was not the limit: Nsight
Compute puts the real walk's L2 throughput at 49 % of peak (`docs/gpu/ncu_memory_round8.log`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).parent))
from ws_probe_gpu import fold_block  # noqa: E402  (the per-block fold, shared with the warp-specialisation probe)


@triton.jit
def walk_kernel(Q, K, LSE, KMASS, ROWS, H, Lq, Lk, qk_scale, fix_scale,
                G: tl.constexpr, PACK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                D: tl.constexpr):
    """Q [H, Lq, D], K [H // G, Lk, D] fp16; LSE [H, Lq] natural log; KMASS [H, Lk] int64 (zeroed); ROWS [3, H, Lq]
    float32. A program: BLOCK_M columns = PACK heads x (BLOCK_M // PACK) queries. Keys below the 64-aligned block of
    the program's first query are walked (the probe's 'unmasked' blocks)."""
    QB: tl.constexpr = BLOCK_M // PACK  # queries per head in one program
    pid_m = tl.program_id(0)
    pid_h = tl.program_id(1)  # a group of PACK query heads (PACK divides G: one KV head)
    m0 = pid_m * QB
    cols = tl.arange(0, BLOCK_M)
    if PACK == 1:
        head = pid_h + cols * 0
        kvh = pid_h // G
    else:
        head = pid_h * PACK + cols // QB
        kvh = pid_h * PACK // G
    qpos = m0 + cols % QB
    row = head.to(tl.int64) * Lq + qpos  # [BLOCK_M]
    offs_d = tl.arange(0, D)
    qt = tl.load(Q + row[None, :] * D + offs_d[:, None])  # [D, BLOCK_M]
    lse = tl.load(LSE + row) * 1.4426950408889634
    G8: tl.constexpr = BLOCK_N // 16
    m_acc = tl.full([G8, 8, BLOCK_M], float("-inf"), tl.float32)
    a_acc = tl.full([G8, 8, BLOCK_M], -1, tl.int32)
    e_acc = tl.zeros([G8, 8, BLOCK_M], tl.float32)
    row0 = tl.arange(0, G8)[:, None, None] * 16 + tl.arange(0, 8)[None, :, None]
    offs_n0 = tl.arange(0, BLOCK_N)
    k_base = K + kvh.to(tl.int64) * Lk * D
    hi = m0 // BLOCK_N * BLOCK_N
    for start_n in range(0, hi, BLOCK_N):
        kx = tl.load(k_base + (start_n + offs_n0)[:, None] * D + offs_d[None, :])
        s = tl.dot(kx, qt)  # [BLOCK_N keys, BLOCK_M columns]
        p, m_acc, a_acc, e_acc = fold_block(s, start_n, row0, lse, qk_scale, m_acc, a_acc, e_acc, G8, BLOCK_M)
        if PACK == 1:
            fixed = (tl.sum(p, 1) * fix_scale + 0.5).to(tl.int64)  # [BLOCK_N]
            tl.atomic_add(KMASS + pid_h.to(tl.int64) * Lk + start_n + offs_n0, fixed, sem="relaxed")
        else:
            fixed = (tl.sum(tl.reshape(p, [BLOCK_N, PACK, QB]), 2) * fix_scale + 0.5).to(tl.int64)  # [BLOCK_N, PACK]
            hd = pid_h * PACK + tl.arange(0, PACK)
            tl.atomic_add(KMASS + hd.to(tl.int64)[None, :] * Lk + (start_n + offs_n0)[:, None], fixed, sem="relaxed")
    R: tl.constexpr = G8 * 8
    m2 = tl.reshape(m_acc, [R, BLOCK_M])
    m_i = tl.max(m2, 0)
    a_i = tl.min(tl.where(m2 == m_i[None, :], tl.reshape(a_acc, [R, BLOCK_M]), 2147483647), 0)
    tl.store(ROWS + row, m_i)
    tl.store(ROWS + H * Lq + row, a_i.to(tl.float32))
    tl.store(ROWS + 2 * H * Lq + row, tl.sum(tl.reshape(e_acc, [R, BLOCK_M]), 0))


def launch(q, k, lse, kmass, rows, G: int, pack: int, scale: float, fix: float, warps: int, stages: int):
    H, n, D = q.shape
    bm, bn = 64, 64
    grid = (n // (bm // pack), H // pack)
    walk_kernel[grid](q, k, lse, kmass, rows, H, n, n, scale * 1.4426950408889634, fix, G=G, PACK=pack,
                      BLOCK_M=bm, BLOCK_N=bn, D=D, num_warps=warps, num_stages=stages)


def reference(q, k, lse, G: int, scale: float):
    """torch, float64: the probe's statistics over the keys below each query's 64-aligned block."""
    import torch

    H, n, D = q.shape
    s = q.double() @ k.double().repeat_interleave(G, 0).transpose(-1, -2)  # [H, n, n]
    block = torch.arange(n, device=q.device) // 64 * 64
    seen = torch.arange(n, device=q.device)[None, :] < block[:, None]
    s = s.masked_fill(~seen, float("-inf"))
    t = (s * scale - lse.double()[..., None]) * 1.4426950408889634
    p = torch.exp2(t)
    arg = s.argmax(-1).masked_fill(~seen.any(-1), -1)
    ent = torch.where(p > 0, p * t, torch.zeros_like(p)).sum(-1)
    return s.max(-1).values, arg, ent, p.sum(-2)


def check_case(n: int, H: int, KVH: int, D: int, device: str = "cuda"):
    """Random fp16 q [H, n, D], k [KVH, n, D], their causal lse, and the float64 reference statistics: the inputs of
    each probe's correctness check. (Shared with examples/gluon_walk_probe_gpu.py.)"""
    import torch

    G, scale = H // KVH, D ** -0.5
    q = torch.randn(H, n, D, device=device, dtype=torch.float16)
    k = torch.randn(KVH, n, D, device=device, dtype=torch.float16)
    s = (q.float() @ k.float().repeat_interleave(G, 0).transpose(-1, -2)) * scale
    lse = torch.logsumexp(s + torch.full((n, n), float("-inf"), device=device).triu(1), -1)
    return q, k, lse, reference(q, k, lse, G, scale)


def errors(rows, kmass, want_max, arg, ent, km, fix: float) -> str:
    """One line of errors against the float64 reference, over rows that see some key: ROWS[0] against want_max,
    argmax agreement, entropy, per-key mass. (Shared with examples/gluon_walk_probe_gpu.py.)"""
    ok = want_max.isfinite()
    return (f"max err {float((rows[0] - want_max)[ok].abs().max()):.1e}, argmax agree "
            f"{float((rows[1].long() == arg)[ok].double().mean()):.4f}, entropy err "
            f"{float((rows[2] - ent)[ok].abs().max()):.1e}, key mass err "
            f"{float((kmass.double() / fix - km).abs().max()):.1e}")


def timing_inputs(n: int, H: int, KVH: int, D: int):
    """Random fp16 q [H, n, D], k [KVH, n, D], a constant lse, zeroed outputs, and SDPA's time on the same shapes
    (ms): what each probe's timing loop starts from."""
    import torch

    q = torch.randn(H, n, D, device="cuda", dtype=torch.float16)
    k = torch.randn(KVH, n, D, device="cuda", dtype=torch.float16)
    v = torch.randn(KVH, n, D, device="cuda", dtype=torch.float16)
    lse = torch.full((H, n), 8.0, device="cuda")
    kmass = torch.zeros(H, n, dtype=torch.int64, device="cuda")
    rows = torch.zeros(3, H, n, device="cuda")
    sdpa = triton.testing.do_bench(lambda: torch.nn.functional.scaled_dot_product_attention(
        q[None], k[None], v[None], is_causal=True, enable_gqa=True))
    return q, k, lse, kmass, rows, sdpa


def compile_only(pack: int, warps: int, stages: int):
    import sm90_registers as R  # beside this file: on sys.path above
    from triton.backends.compiler import GPUTarget

    sig = dict(Q="*fp16", K="*fp16", LSE="*fp32", KMASS="*i64", ROWS="*fp32", H="i32", Lq="i32", Lk="i32",
               qk_scale="fp32", fix_scale="fp32", G="constexpr", PACK="constexpr", BLOCK_M="constexpr",
               BLOCK_N="constexpr", D="constexpr")
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(walk_kernel.arg_names)
             if n in ("Q", "K", "LSE", "KMASS", "ROWS", "Lq", "Lk")}
    src = triton.compiler.ASTSource(fn=walk_kernel, signature=sig, attrs=attrs,
                                    constexprs=dict(G=4, PACK=pack, BLOCK_M=64, BLOCK_N=64, D=128))
    target = GPUTarget("cuda", 90, 32)
    backend = triton.compiler.make_backend(target)
    c = triton.compile(src, target=target, options=backend.parse_options(
        {"num_warps": warps, "num_stages": stages}).__dict__)
    regs, stack = R.resources(c)
    print(f"pack {pack}, {warps} warps, {stages} stages: {regs} registers, {stack} B stack")
    for line in R.loop_mix(c):
        print("   ", line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile-only", action="store_true")
    ap.add_argument("--n", nargs="+", type=int, default=[8192, 32768])
    ap.add_argument("--warps", type=int, default=4)
    ap.add_argument("--stages", type=int, default=2)
    a = ap.parse_args(argv)
    if a.compile_only:
        for pack in (1, 2, 4):
            compile_only(pack, a.warps, a.stages)
        return 0

    import torch

    torch.manual_seed(0)
    H, KVH, D = 32, 8, 128
    G = H // KVH
    scale, fix = D ** -0.5, 2.0 ** 40
    n = 1024
    q, k, lse, (mx, arg, ent, km) = check_case(n, H, KVH, D)
    for pack in (1, 2, 4):
        kmass = torch.zeros(H, n, dtype=torch.int64, device="cuda")
        rows = torch.zeros(3, H, n, device="cuda")
        launch(q, k, lse, kmass, rows, G, pack, scale, fix, a.warps, a.stages)
        print(f"pack {pack}: {errors(rows, kmass, mx, arg, ent, km, fix)}", flush=True)
    for n in a.n:
        q, k, lse, kmass, rows, sdpa = timing_inputs(n, H, KVH, D)
        line = f"N={n}: SDPA {sdpa:.3f} ms"
        for pack in (1, 2, 4):
            t = triton.testing.do_bench(lambda: launch(q, k, lse, kmass, rows, G, pack, scale, fix, a.warps,
                                                       a.stages))
            line += f" | pack {pack} {t:.3f} ms ({t / sdpa:.2f}x)"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
