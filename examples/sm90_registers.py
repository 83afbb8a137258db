"""Registers and spills of the statistics kernel on sm_90 (H100/H200), compiled here, without a GPU.

Triton compiles for a named target without a device, and its wheel carries the same ptxas and cuobjdump that a GPU
machine uses, so with the GPU machine's Triton version the register counts here are the GPU's. Check: with
Triton 3.6.0 (the H100/H200 machines' version), the 128x64 w8 s3 config (then the first) gives 206 registers for
stats="query" and 241 for stats="all", as Nsight Compute measured there (docs/gpu/ncu_stats_h200.log). Other
Triton versions differ.

    python3 -m venv /tmp/t36 && /tmp/t36/bin/pip install triton==3.6.0
    /tmp/t36/bin/python examples/sm90_registers.py [--configs all|first] [--variants query all ...] [--loops] [--mix]
                                                   [--head-dim 256] [--window [narrow|wide]] [--root TREE]

No torch needed: the kernel files are loaded on their own.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)
ROOT = Path(__file__).resolve().parents[1]

# stats="..." variants as the launcher sets the WANT_* flags (lse alone launches no statistics kernel); "query" and
# "all" without a span, as in the profiled run (a group given no span drops span_mass)
ROW = dict(WANT_MAXP=True, WANT_ARG=True, WANT_ENT=True, WANT_SINK=True, WANT_LOCAL=True, WANT_SPAN=False)
NONE = dict(WANT_MAXP=False, WANT_ARG=False, WANT_ENT=False, WANT_SINK=False, WANT_LOCAL=False, WANT_SPAN=False,
            WANT_KEY=False, WANT_COUNT=False, WANT_KMEAN=False, FINALIZE=True)
VARIANTS = {
    "query": {**NONE, **ROW},
    "all": {**NONE, **ROW, "WANT_KEY": True, "WANT_COUNT": True, "WANT_KMEAN": True},
    "key": {**NONE, "WANT_KEY": True, "WANT_COUNT": True, "WANT_KMEAN": True},
    "max_prob": {**NONE, "WANT_MAXP": True},
    "argmax": {**NONE, "WANT_ARG": True},
    "entropy": {**NONE, "WANT_ENT": True},
    "masses": {**NONE, "WANT_SINK": True, "WANT_LOCAL": True, "WANT_SPAN": True},
    "query+span": {**NONE, **ROW, "WANT_SPAN": True},
}


def load_kernels(extra: tuple = ()):
    """kernels/triton_forward.py and triton_stats.py (and the modules named in `extra`, in order) as a package of
    their own (kernels/__init__ needs torch)."""
    pkg = types.ModuleType("_k")
    pkg.__path__ = [str(ROOT / "kernels")]
    sys.modules["_k"] = pkg
    mods = {}
    for name in ("triton_forward", "triton_stats_t", "triton_stats", *extra):
        spec = importlib.util.spec_from_file_location(f"_k.{name}", ROOT / "kernels" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[f"_k.{name}"] = mod
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods


# pointer element types and scalar types of attention_stats_kernel's runtime arguments
POINTERS = dict(Q="*fp16", K="*fp16", LSE="*fp32", ROWS="*fp32", ARG="*i64", KMASS="*i64", KCOUNT="*fp32",
                KM_OUT="*fp32", KMEAN_OUT="*fp32", KVALID="*i8", QCUM="*i32", BIAS="*fp32", SPANS="*i64",
                PART="*fp32", TICKET="*i64")
FLOATS = ("qk_scale", "fix_scale", "inv_fix")
ONE = ("stride_qd", "stride_kd")  # contiguous head dim: Triton specialises a 1 into a constant
# the profiled call's ints (8k tokens, 32 heads / 8 KV heads, q_offset 0, no window, local_window 64) are multiples of
# 16, which Triton marks divisible; the group size G = 4 and sink_tokens = 4 are not
NOT_16 = ("G", "sink_tokens")


def compile_stats(mods, config, want: dict, head_dim=128, causal=True, window=0, parted=False):
    kernel = mods["triton_stats"].attention_stats_kernel.fn
    slots = {"S_MAXP": 0, "S_ENT": 1, "S_SINK": 2, "S_LOCAL": 3, "S_SPAN": 4}
    constants = dict(
        HEAD_DIM=head_dim, BLOCK_D=max(16, 1 << (head_dim - 1).bit_length()), CAUSAL=causal, HAS_WINDOW=window,
        HAS_VALID=False, HAS_BIAS=False, UPCAST=False, DOT_PREC=None, **want, **slots, **config.kwargs,
    )
    if "PARTED" in kernel.arg_names:  # (trees before the parted walks have no such flag)
        constants["PARTED"] = parted
    for name in ONE:
        constants[name] = 1
    opts = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    if getattr(config, "maxnreg", None):
        opts["maxnreg"] = config.maxnreg
    return compile_sm90(kernel, constants, POINTERS, FLOATS, NOT_16, opts)


def compile_sm90(kernel, constants: dict, pointers: dict, floats=(), not_16=(), opts=None):
    """`kernel` (a JITFunction) compiled for sm_90: `constants` as constexprs, the other arguments typed by name
    (`pointers`: element types, `floats`: fp32 scalars, else i32), each pointer and each int outside `not_16` marked
    divisible by 16 as Triton marks the multiples of 16 it is called with; `opts`: num_warps, num_stages, maxnreg."""
    import triton
    from triton.backends.compiler import GPUTarget

    signature, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in constants:
            signature[name] = "constexpr"
            continue
        signature[name] = pointers.get(name, "fp32" if name in floats else "i32")
        if name in pointers or (name not in floats and name not in not_16):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
    target = GPUTarget("cuda", 90, 32)
    options = triton.compiler.make_backend(target).parse_options(opts or {})
    return triton.compile(src, target=target, options=options.__dict__)


def cuobjdump(compiled, flag: str) -> str:
    """`cuobjdump <flag>` on the compiled cubin (the Triton wheel's own cuobjdump)."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        return subprocess.run([str(tool), flag, f.name], capture_output=True, text=True, check=True).stdout


def resources(compiled) -> tuple[int, int]:
    """(registers per thread, stack bytes) of the compiled cubin, from cuobjdump -res-usage."""
    text = cuobjdump(compiled, "-res-usage")
    m = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if m is None:
        raise RuntimeError(f"no REG/STACK line in cuobjdump's output:\n{text}")
    return int(m.group(1)), int(m.group(2))


def sass_instructions(compiled) -> list[tuple[int, str]]:
    """(address, instruction text) of every SASS instruction of the compiled cubin, in order."""
    sass = cuobjdump(compiled, "-sass")
    return [(int(m.group(1), 16), m.group(2).strip()) for m in
            re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;/]*?)\s*;", sass)]


def opcode(text: str) -> str:
    """The opcode of one instruction's text, without its predicate (`@P0 BRA ...` -> `BRA`)."""
    return text.split()[1] if text.startswith("@") else text.split()[0]


def loops(ins: list[tuple[int, str]]):
    """(start, end, body) of each loop: a backward branch and the instructions from its target to it."""
    for addr, text in ins:
        m = re.search(r"BRA (0x[0-9a-f]+)", text)
        if not m or int(m.group(1), 16) >= addr:
            continue
        start = int(m.group(1), 16)
        yield start, addr, [(a, t) for a, t in ins if start <= a <= addr]


def loop_schedules(compiled) -> list[str]:
    """One line per loop of the SASS (a backward branch): its length and the order of the instructions that
    matter for overlap: the tensor-core products (HGMMA) and the wait for them (WARPGROUP.DEPBAR), exponentials
    (MUFU), warp shuffles (SHFL), CTA barriers (BAR) and async copies (LDGSTS); runs of one kind as `xN`."""
    kinds = ("HGMMA", "WARPGROUP.DEPBAR", "MUFU", "SHFL", "BAR.SYNC", "LDGSTS")
    lines = []
    for start, addr, body in loops(sass_instructions(compiled)):
        runs: list[list] = []
        for _, t in body:
            op = opcode(t)
            kind = next((k for k in kinds if op.startswith(k)), None)
            if kind is None:
                continue
            if runs and runs[-1][0] == kind:
                runs[-1][1] += 1
            else:
                runs.append([kind, 1])
        lines.append(f"loop {start:#x}-{addr:#x}, {len(body)} instructions: "
                     + " ".join(k if n == 1 else f"{k}x{n}" for k, n in runs))
    return lines


def loop_mix(compiled, top: int = 12) -> list[str]:
    """One line per key loop (a backward branch over a block with tensor-core products): its instructions, those on the
    common path (forward-branched regions of more than 60 instructions left out: the sink / local-window blocks,
    which run on a few key blocks only) and the most frequent opcodes there (kspeed_notes round 6)."""
    import collections

    lines = []
    for start, addr, body in loops(sass_instructions(compiled)):
        if not any("HGMMA" in t for _, t in body):
            continue
        skip = set()
        for a, t in body:
            fwd = re.search(r"^@!?U?P\d BRA (0x[0-9a-f]+)", t)
            if fwd:
                inside = [b for b, _ in body if a < b < int(fwd.group(1), 16)]
                if len(inside) > 60:
                    skip.update(inside)
        common = [t for a, t in body if a not in skip]
        ops = collections.Counter(opcode(t).split(".")[0] for t in common)
        lines.append(f"loop {start:#x}-{addr:#x}: {len(body)} instructions, {len(common)} on the common "
                     "path: " + " ".join(f"{op} {n}" for op, n in ops.most_common(top)))
    return lines


def main(argv=None) -> int:
    import triton

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", choices=["all", "first"], default="all")
    ap.add_argument("--pick", nargs="+", type=int, default=None, help="only these config indices")
    ap.add_argument("--variants", nargs="+", default=["query", "all"], choices=sorted(VARIANTS))
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--window", nargs="?", const="narrow", default=None, choices=["narrow", "wide"],
                    help="a sliding-window variant: narrow (HAS_WINDOW = 1, every block masked; the default) or "
                         "wide (HAS_WINDOW = 2, an unmasked interior run)")
    ap.add_argument("--parted", action="store_true", help="the variant a call that may be parted compiles "
                    "(`kernels/walk_parts.py`)")
    ap.add_argument("--root", default=None, help="compile the kernels/ of another tree (default: this one)")
    ap.add_argument("--loops", action="store_true", help="also print each loop's instruction schedule (SASS)")
    ap.add_argument("--mix", action="store_true", help="also print each key loop's common-path instruction mix")
    args = ap.parse_args(argv)
    if args.root is not None:
        global ROOT
        ROOT = Path(args.root).resolve()
        if not (ROOT / "kernels" / "triton_stats.py").is_file():
            ap.error(f"--root {args.root}: no kernels/triton_stats.py there")
    mods = load_kernels()
    configs = mods["triton_stats"]._configs()
    if args.pick is not None:
        configs = [configs[i] for i in args.pick]
    if args.configs == "first":
        configs = configs[:1]
    window = f", {args.window} sliding window" if args.window else ""
    print(f"triton {triton.__version__}, sm_90, head_dim {args.head_dim}, fp16, causal{window}"
          f"{f', kernels of {args.root}' if args.root else ''}")
    print(f"{'config':<28} {'stats':<9} {'regs':>5} {'spill B':>8} {'smem KiB':>9} {'CTAs/SM':>8} {'warps/SM':>9}")
    for c in configs:
        tag = mods["triton_stats"].config_tag(c)
        for v in args.variants:
            compiled = compile_stats(mods, c, VARIANTS[v], head_dim=args.head_dim,
                                     window={None: 0, "narrow": 1, "wide": 2}[args.window], parted=args.parted)
            regs, stack = resources(compiled)
            smem = compiled.metadata.shared
            threads = 32 * c.num_warps
            # registers are allocated per warp in units of 256 (8 per thread): 64K per SM; shared memory: 228 KiB
            # per SM, 1 KiB of it reserved per CTA; at most 32 CTAs and 64 warps
            per_warp = -(-regs * 32 // 256) * 256
            ctas = min(65536 // (per_warp * c.num_warps), 233472 // (smem + 1024), 32, 2048 // threads)
            print(f"{tag:<28} {v:<9} {regs:>5} {stack:>8} {smem / 1024:>9.1f} {ctas:>8} {ctas * c.num_warps:>9}",
                  flush=True)
            if args.loops:
                for line in loop_schedules(compiled):
                    print("    " + line)
            if args.mix:
                for line in loop_mix(compiled):
                    print("    " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
