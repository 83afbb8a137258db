"""Probe: does overlapping the next key block's product with this block's statistics speed up the walk? (issue 18)

Round 8 (`docs/gpu/kspeed_notes.md`) found the statistics walk latency-bound (tensor pipe 37 %, issue slots 46 %,
exp2 37 % at 8k on an H100) and Triton's automatic warp specialisation 2.1x slower. What is left is the schedule
FlashAttention-3 writes by hand: the tensor cores work on key block j + 1 while the warps run block j's statistics.
Triton's `tl.dot` waits for each product right after issuing it (round 6), so this probe is written in Gluon
(Triton's explicit-layout dialect, shipped with Triton 3.6, the GPU machines' version), as a cut-down copy of the
key-by-query walk (`kernels/triton_stats_t.py`): unmasked key blocks only (keys below each 64-query block), max,
argmax, sum p log2 p per query and the per-key mass (int64 fixed point), Q and K through TMA into shared memory
(K in a ring of NUM_BUF buffers), products by `warpgroup_mma` on s^T = k q^T tiles [64 keys, 64 queries].

Two accumulators alternate (even and odd key blocks). PIPELINE=1: block j + 1's product is issued, then only block
j's is waited for (`warpgroup_mma_wait(num_outstanding=1)`) and its statistics run while j + 1's is in flight;
PIPELINE=0: the same kernel waits for both products first. Same work, so the pair is an A/B of the overlap. The
per-query partials fold each thread's two rows of a 16-row group, as the Triton walk does, reduced once at the end.
max and argmax are taken over t = log2 p (formed right after each product), not the raw score: same order per query
up to rounding ties, and no instruction reads an accumulator whose product may still be in flight.

Compile findings (Triton 3.6, sm_90, `--compile-only`): 176 registers, no spills (168 with maxnreg=168, 48 B of
stack); ptxas does not serialise the products, and the SASS order in the loop is 8 wgmma k-steps of block j + 1,
one wait, then block j's 32 exp2s. Two earlier forms were serialised by ptxas (C7514, "non wgmma instructions
reading accumulator registers of a wgmma between start and end of the pipeline stage"): one accumulator re-issued
after each wait, and the same with t formed before the next issue (LLVM moved the FMAs after it). Not yet run on a
GPU (round 8's device time had run out): `bash examples/gpu_round9.sh`.

    /tmp/t36/bin/python examples/gluon_walk_probe_gpu.py --compile-only      # sm_90 registers and loop mix here
    python3 examples/gluon_walk_probe_gpu.py --n 8192 32768                  # GPU: check vs float64, then time
Not part of the package. Written against Triton 3.6's Gluon API (the GPU machines' compiler; the repository's CPU
environment has a later Triton whose Gluon renamed some of it: compile here with a Triton 3.6 venv, as
`examples/sm90_registers.py`'s notes say). The CPU interpreter does not run Gluon: GPU only; the Triton walk stays
the path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

sys.path.insert(0, str(Path(__file__).parent))


@gluon.jit
def _block_stats(t, start_n, m_acc, a_acc, e_acc, km_ptrs, fix_scale, row0):
    """One key block's statistics from t = log2 p [BLOCK_N keys, BLOCK_M queries] (s * scale - lse, formed by the
    caller right after the product, so that no instruction reads the accumulator while the next product is in
    flight: ptxas would serialise the products, C7514). max and argmax over t, whose order per query is that of the
    raw scores up to rounding ties. Each thread's two rows of a 16-row group fold into [BLOCK_N // 16, 8, BLOCK_M]
    partials (a reshape that stays in-thread, as in `kernels/triton_stats_t.py`); per-key mass added to KMASS."""
    BLOCK_N: gl.constexpr = t.shape[0]
    BLOCK_M: gl.constexpr = t.shape[1]
    R: gl.constexpr = BLOCK_N // 16
    t0, t1 = gl.split(gl.permute(gl.reshape(t, [R, 2, 8, BLOCK_M]), (0, 2, 3, 1)))
    key0 = start_n + row0
    a_acc = gl.where(t0 > m_acc, key0, a_acc)  # strictly greater: the first key reaching the max stays
    m_acc = gl.maximum(m_acc, t0)
    a_acc = gl.where(t1 > m_acc, key0 + 8, a_acc)
    m_acc = gl.maximum(m_acc, t1)
    p = gl.exp2(t)
    p0, p1 = gl.split(gl.permute(gl.reshape(p, [R, 2, 8, BLOCK_M]), (0, 2, 3, 1)))
    e_acc = e_acc + p0 * t0
    e_acc = e_acc + p1 * t1
    fixed = (gl.sum(p, axis=1) * fix_scale + 0.5).to(gl.int64)  # [BLOCK_N]: 4 lanes of one warp
    gl.atomic_add(km_ptrs + start_n, fixed, sem="relaxed")
    return m_acc, a_acc, e_acc


@gluon.jit
def _advance(j, n_blocks, tok_old, k_desc, k_smem, k_bars, qt, zero, kbase, lse2, qk_scale, m_acc, a_acc, e_acc,
             km_ptrs, fix_scale, row0, NUM_BUF: gl.constexpr, PIPELINE: gl.constexpr, SYNC: gl.constexpr):
    """Issue block j + 1's product (j + 1 < n_blocks) into a fresh accumulator, then finish block j (tok_old): wait
    for it (PIPELINE: leaving block j + 1's product in flight; else for both), refill its K buffer with block
    j + NUM_BUF, run its statistics. Returns block j + 1's token and the partials."""
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    nb = (j + 1) % NUM_BUF
    mbarrier.wait(k_bars.index(nb), ((j + 1) // NUM_BUF) & 1)
    tok_new = warpgroup_mma(k_smem.index(nb), qt, zero, use_acc=False, is_async=True)
    if PIPELINE:
        s = warpgroup_mma_wait(num_outstanding=1, deps=(tok_old, ))
    else:  # no group left outstanding: block j + 1's product completes here too
        s = warpgroup_mma_wait(num_outstanding=0, deps=(tok_old, ))
    if SYNC:  # every warp is past block j's product before its buffer is refilled
        gl.thread_barrier()
    buf = j % NUM_BUF
    nxt = j + NUM_BUF
    mbarrier.expect(k_bars.index(buf), k_desc.block_type.nbytes, pred=nxt < n_blocks)
    tma.async_copy_global_to_shared(k_desc, [kbase + nxt * BLOCK_N, 0], k_bars.index(buf), k_smem.index(buf),
                                    pred=nxt < n_blocks)
    t = s * qk_scale - lse2
    m_acc, a_acc, e_acc = _block_stats(t, j * BLOCK_N, m_acc, a_acc, e_acc, km_ptrs, fix_scale, row0)
    return tok_new, m_acc, a_acc, e_acc


@gluon.jit
def walk_kernel(q_desc, k_desc, LSE, KMASS, ROWS, H, G, Lq, Lk, qk_scale, fix_scale,
                NUM_BUF: gl.constexpr, PIPELINE: gl.constexpr, SYNC: gl.constexpr, num_warps: gl.constexpr):
    """q_desc over Q [H * Lq, D], k_desc over K [(H // G) * Lk, D] (batch 1); LSE [H, Lq] natural log; KMASS [H, Lk]
    int64 (zeroed); ROWS [3, H, Lq]: max log2 p, argmax, sum p log2 p over the keys below the query's block."""
    BLOCK_M: gl.constexpr = q_desc.block_type.shape[0]
    BLOCK_N: gl.constexpr = k_desc.block_type.shape[0]
    LOG2E: gl.constexpr = 1.4426950408889634
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_M, 16])
    cols: gl.constexpr = gl.SliceLayout(0, mma)
    rows: gl.constexpr = gl.SliceLayout(1, mma)
    pid_m = gl.program_id(0)
    pid_h = gl.program_id(1)
    m0 = pid_m * BLOCK_M
    kbase = (pid_h // G) * Lk
    n_blocks = m0 // BLOCK_N

    q_smem = gl.allocate_shared_memory(q_desc.dtype, q_desc.block_type.shape, q_desc.layout)
    k_smem = gl.allocate_shared_memory(k_desc.dtype, [NUM_BUF, BLOCK_N, k_desc.block_type.shape[1]], k_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_bars = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(NUM_BUF):
        mbarrier.init(k_bars.index(i), count=1)
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [pid_h * Lq + m0, 0], q_bar, q_smem)
    for i in gl.static_range(NUM_BUF):  # the ring's first loads
        mbarrier.expect(k_bars.index(i), k_desc.block_type.nbytes, pred=i < n_blocks)
        tma.async_copy_global_to_shared(k_desc, [kbase + i * BLOCK_N, 0], k_bars.index(i), k_smem.index(i),
                                        pred=i < n_blocks)

    offs_m = gl.arange(0, BLOCK_M, layout=cols)
    lse = gl.load(LSE + pid_h * Lq + m0 + offs_m) * LOG2E
    rows_n = gl.arange(0, BLOCK_N, layout=rows)
    km_ptrs = KMASS + pid_h.to(gl.int64) * Lk + rows_n
    zero = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, mma)
    # partials [BLOCK_N // 16, 8, BLOCK_M] in the layout the fold gives; row0: each one's first key in a block
    R: gl.constexpr = BLOCK_N // 16
    ridx = gl.expand_dims(rows_n, 1) + gl.zeros([BLOCK_N, BLOCK_M], gl.int32, mma)
    row0, _ = gl.split(gl.permute(gl.reshape(ridx, [R, 2, 8, BLOCK_M]), (0, 2, 3, 1)))
    m_acc = gl.full_like(row0, float("-inf"), dtype=gl.float32)
    a_acc = gl.full_like(row0, -1)
    e_acc = gl.full_like(row0, 0.0, dtype=gl.float32)
    lse2 = gl.expand_dims(lse, 0)
    mbarrier.wait(q_bar, 0)
    qt = q_smem.permute((1, 0))  # [D, BLOCK_M]: the product's B operand, a view

    if n_blocks > 0:  # two accumulators alternate (A: even blocks, B: odd), so neither is read while in flight
        mbarrier.wait(k_bars.index(0), 0)
        tok_a = warpgroup_mma(k_smem.index(0), qt, zero, use_acc=False, is_async=True)
        for jj in range(0, n_blocks - 2, 2):
            tok_b, m_acc, a_acc, e_acc = _advance(
                jj, n_blocks, tok_a, k_desc, k_smem, k_bars, qt, zero, kbase, lse2, qk_scale, m_acc, a_acc, e_acc,
                km_ptrs, fix_scale, row0, NUM_BUF, PIPELINE, SYNC)
            tok_a, m_acc, a_acc, e_acc = _advance(
                jj + 1, n_blocks, tok_b, k_desc, k_smem, k_bars, qt, zero, kbase, lse2, qk_scale, m_acc, a_acc,
                e_acc, km_ptrs, fix_scale, row0, NUM_BUF, PIPELINE, SYNC)
        last = n_blocks - 1
        if n_blocks % 2 == 0:  # blocks last - 1 (in A) and last remain
            tok_b, m_acc, a_acc, e_acc = _advance(
                last - 1, n_blocks, tok_a, k_desc, k_smem, k_bars, qt, zero, kbase, lse2, qk_scale, m_acc, a_acc,
                e_acc, km_ptrs, fix_scale, row0, NUM_BUF, PIPELINE, SYNC)
            t = warpgroup_mma_wait(num_outstanding=0, deps=(tok_b, )) * qk_scale - lse2
        else:  # block last, in A
            t = warpgroup_mma_wait(num_outstanding=0, deps=(tok_a, )) * qk_scale - lse2
        m_acc, a_acc, e_acc = _block_stats(t, last * BLOCK_N, m_acc, a_acc, e_acc, km_ptrs, fix_scale, row0)
    mbarrier.invalidate(q_bar)
    for i in gl.static_range(NUM_BUF):
        mbarrier.invalidate(k_bars.index(i))

    m_acc = gl.reshape(m_acc, [BLOCK_N // 2, BLOCK_M])
    a_acc = gl.reshape(a_acc, [BLOCK_N // 2, BLOCK_M])
    e_acc = gl.reshape(e_acc, [BLOCK_N // 2, BLOCK_M])
    m_i = gl.max(m_acc, axis=0)
    a_i = gl.min(gl.where(m_acc == gl.expand_dims(m_i, 0), a_acc, 2147483647), axis=0)
    e_i = gl.sum(e_acc, axis=0)
    offs_m = gl.convert_layout(offs_m, m_i.type.layout)
    out = pid_h * Lq + m0 + offs_m
    gl.store(ROWS + out, m_i)
    gl.store(ROWS + H * Lq + out, a_i.to(gl.float32))
    gl.store(ROWS + 2 * H * Lq + out, e_i)


def _layout():
    return gl.NVMMASharedLayout.get_default_for([64, 128], gl.float16)


def launch(q, k, lse, kmass, rows, G: int, scale: float, fix: float, pipeline: bool, num_buf: int = 3,
           sync: bool = True, maxnreg=None):
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    H, n, D = q.shape
    q_desc = TensorDescriptor.from_tensor(q.reshape(-1, D), [64, D], _layout())
    k_desc = TensorDescriptor.from_tensor(k.reshape(-1, D), [64, D], _layout())
    walk_kernel[(n // 64, H)](q_desc, k_desc, lse, kmass, rows, H, G, n, n, scale * 1.4426950408889634, fix,
                              NUM_BUF=num_buf, PIPELINE=pipeline, SYNC=sync, num_warps=4,
                              **({"maxnreg": maxnreg} if maxnreg else {}))


def compile_only(pipeline: bool, num_buf: int, sync: bool, maxnreg=None):
    import sm90_registers as R
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    desc = f"tensordesc<fp16[64, 128],{_layout()!r}>"
    sig = dict(q_desc=desc, k_desc=desc, LSE="*fp32", KMASS="*i64", ROWS="*fp32", H="i32", G="i32", Lq="i32",
               Lk="i32", qk_scale="fp32", fix_scale="fp32", NUM_BUF="constexpr", PIPELINE="constexpr",
               SYNC="constexpr", num_warps="constexpr")
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(walk_kernel.arg_names)
             if name in ("LSE", "KMASS", "ROWS", "Lq", "Lk")}
    src = GluonASTSource(fn=walk_kernel, signature=sig, attrs=attrs,
                         constexprs=dict(NUM_BUF=num_buf, PIPELINE=pipeline, SYNC=sync, num_warps=4))
    target = GPUTarget("cuda", 90, 32)
    backend = triton.compiler.make_backend(target)
    opts = {"num_warps": 4}
    if maxnreg:
        opts["maxnreg"] = maxnreg
    c = triton.compile(src, target=target, options=backend.parse_options(opts).__dict__)
    regs, stack = R.resources(c)
    print(f"PIPELINE={int(pipeline)} NUM_BUF={num_buf} SYNC={int(sync)} maxnreg={maxnreg}: {regs} registers, "
          f"{stack} B stack; ptxas serialises the products: {serialised(c)}")
    print("    order (H: one wgmma k-step, D: wait for products, m: exp2, R: per-key atomic, B: barrier):",
          schedule(c))
    return c


def serialised(compiled) -> bool:
    """Does ptxas report wgmma serialisation (C7514: an instruction reads an in-flight product's registers, which
    undoes the overlap)? ptxas -v on the kernel's PTX, with the Triton wheel's own ptxas."""
    import subprocess
    import tempfile

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(compiled.asm["ptx"])
        r = subprocess.run([str(ptxas), "-arch=sm_90a", "-v", str(src), "-o", str(Path(d) / "k.cubin")],
                           capture_output=True, text=True)
    return "C7514" in r.stdout + r.stderr


def schedule(compiled) -> str:
    """The SASS order of products, waits, exp2s, atomics and barriers, one letter each: overlap shows as a run of
    H (block j + 1's product issued), one D (block j's product waited for), then block j's m's."""
    import sm90_registers as R

    letters = []
    for _, text in R.sass_instructions(compiled):
        op = R.opcode(text)
        name = op.split(".")[0]
        tag = {"HGMMA": "H", "MUFU": "m", "REDG": "R", "BAR": "B"}.get(name, "D" if "DEPBAR" in op else "")
        letters.append(tag)
    return "".join(letters)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile-only", action="store_true")
    ap.add_argument("--n", nargs="+", type=int, default=[8192, 32768])
    ap.add_argument("--num-buf", type=int, default=3)
    a = ap.parse_args(argv)
    if a.compile_only:
        for pipeline in (False, True):
            compile_only(pipeline, a.num_buf, True)
        compile_only(True, a.num_buf, True, maxnreg=168)
        compile_only(True, a.num_buf, False)
        return 0

    import torch
    from gqa_pack_probe_gpu import check_case, errors, timing_inputs
    from gqa_pack_probe_gpu import launch as triton_launch

    torch.manual_seed(0)
    H, KVH, D = 32, 8, 128
    G = H // KVH
    scale, fix = D ** -0.5, 2.0 ** 40
    variants = [("gluon pipelined", dict(pipeline=True)), ("gluon waits", dict(pipeline=False)),
                ("gluon pipelined r168", dict(pipeline=True, maxnreg=168)),
                ("gluon pipelined, no barrier", dict(pipeline=True, sync=False))]
    n = 1024
    q, k, lse, (mx, arg, ent, km) = check_case(n, H, KVH, D)
    mx_t = (mx * scale - lse.double()) * 1.4426950408889634  # the kernel's ROWS[0] is the max of log2 p
    for name, kw in variants:
        for rep in range(3):  # races would show as run-to-run differences
            kmass = torch.zeros(H, n, dtype=torch.int64, device="cuda")
            rows = torch.zeros(3, H, n, device="cuda")
            launch(q, k, lse, kmass, rows, G, scale, fix, **kw)
            print(f"{name} (run {rep}): {errors(rows, kmass, mx_t, arg, ent, km, fix)}", flush=True)
    for n in a.n:
        q, k, lse, kmass, rows, sdpa = timing_inputs(n, H, KVH, D)
        line = f"N={n}: SDPA {sdpa:.3f} ms"
        t = triton.testing.do_bench(lambda: triton_launch(q, k, lse, kmass, rows, G, 1, scale, fix, 4, 2))
        line += f" | triton walk {t:.3f} ms ({t / sdpa:.2f}x)"
        for name, kw in variants:
            t = triton.testing.do_bench(lambda: launch(q, k, lse, kmass, rows, G, scale, fix, **kw))
            line += f" | {name} {t:.3f} ms ({t / sdpa:.2f}x)"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
