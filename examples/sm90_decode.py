"""Registers, spills and the combine loop of the packed decode-step kernels (`kernels/triton_stats_decode.py`) on
sm_90, compiled here without a GPU (as `sm90_registers.py` does for the general kernel; same Triton caveat: use the
GPU machine's version, 3.6.0, for the GPU's numbers).

    /tmp/t36/bin/python examples/sm90_decode.py [--root TREE]

Prints, per head dim, the walk kernel's registers and spills (stats="all", the launcher's BLOCK_N and 4 warps), then
the combine kernel's, with the global loads of each of its loops (SASS) and the tiles of parts a call of P parts
walks (ceil(P / BLOCK_P); one part at a time before f465149).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm90_registers as R  # noqa: E402  (the package loader, cuobjdump and resources)

WALK_PTRS = dict(Q="*fp16", K="*fp16", LSE="*fp32", PF="*fp32", PA="*i32", KM_OUT="*fp32", KCOUNT="*fp32",
                 KMEAN_OUT="*fp32", SPANS="*i64")
COMBINE_PTRS = dict(LSE="*fp32", PF="*fp32", PA="*i32", ROWS="*fp32", ARG="*i64")
FUSED_WALK_PTRS = dict(Q="*fp16", K="*fp16", V="*fp16", PF="*fp32", PA="*i32", PO="*fp32", KM_OUT="*fp32",
                       SPANS="*i64")
FUSED_COMBINE_PTRS = dict(PF="*fp32", PA="*i32", PO="*fp32", KM="*fp32", KC="*fp32", KMEAN="*fp32", OUT="*fp16",
                          LSE="*fp32", ROWS="*fp32", ARG="*i64")
FLOATS = ("qk_scale",)
ALL = dict(WANT_MAX=True, WANT_ARG=True, WANT_ENT=True, WANT_SINK=True, WANT_LOCAL=True, WANT_SPAN=False,
           WANT_KEY=True, WANT_COUNT=True, WANT_KMEAN=True)
SLOTS = dict(S_MAXP=0, S_ENT=1, S_SINK=2, S_LOCAL=3, S_SPAN=4)


def load(root: Path):
    R.ROOT = root
    return R.load_kernels(extra=("triton_stats_rows", "triton_stats_decode", "triton_decode_fused"))


def compile_kernel(fn, constants: dict, pointers: dict, num_warps: int = 4):
    """sm_90 compile as the launcher calls it (4 warps); the ints are not marked divisible by 16 (G, H, Lk vary)."""
    ints = [n for n in fn.arg_names if n not in constants and n not in pointers and n not in FLOATS]
    return R.compile_sm90(fn, constants, pointers, FLOATS, ints, {"num_warps": num_warps, "num_stages": 1})


def compile_kernel_stages(fn, constants: dict, pointers: dict, num_stages: int, num_warps: int = 4):
    """As compile_kernel, at a given num_stages (the launcher leaves Triton's default)."""
    ints = [n for n in fn.arg_names if n not in constants and n not in pointers and n not in FLOATS]
    return R.compile_sm90(fn, constants, pointers, FLOATS, ints, {"num_warps": num_warps, "num_stages": num_stages})


def ex2_feeds(ptx: str) -> list[tuple[str, int, str]]:
    """Each ex2 of the PTX as (source file name, line, the opcode that defined its operand): which arithmetic feeds
    each exponential (`.loc` line info; a register defined twice keeps its last definition)."""
    files = {m.group(1): Path(m.group(2)).name for m in re.finditer(r'^\s*\.file\s+(\d+)\s+"([^"]+)"', ptx, re.M)}
    defs, out, loc = {}, [], ("?", 0)
    for line in ptx.splitlines():
        m = re.match(r"\s*([a-z][a-z0-9.]*)\s+(%[a-z]*\d+),", line)
        if m:
            defs[m.group(2)] = m.group(1)
        m = re.match(r"\s*\.loc\s+(\d+)\s+(\d+)", line)
        if m:
            loc = (files.get(m.group(1), "?"), int(m.group(2)))
        if "ex2.approx" in line:
            out.append((*loc, defs.get(line.strip().rstrip(";").split(",")[-1].strip(), "?")))
    return out


def loop_loads(compiled) -> list[int]:
    """Global loads (LDG) inside each backward-branch loop of the SASS."""
    ins = R.sass_instructions(compiled)
    out = []
    for _, _, body in R.loops(ins):
        out.append(sum(1 for _, t in body if R.opcode(t).startswith("LDG")))
    return out


def main(argv=None) -> int:
    import triton

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="compile the kernels/ of another tree (default: this one)")
    ap.add_argument("--parts", type=int, nargs="+", default=[66, 128, 176, 528],
                    help="part counts to report the combine's iterations for")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve() if args.root else R.ROOT
    mods = load(root)
    dec = mods["triton_stats_decode"]
    print(f"triton {triton.__version__}, sm_90, fp16, stats='all' (no span), 4 warps")
    for d in (64, 128, 256):
        const = dict(HEAD_DIM=d, BLOCK_D=d, BLOCK_G=16, BLOCK_N=64 if d <= 128 else 32, UPCAST=False, DOT_PREC=None,
                     stride_qd=1, stride_kd=1, **ALL)
        regs, stack = R.resources(compile_kernel(dec.decode_walk_kernel, const, WALK_PTRS))
        print(f"walk     head_dim {d:<4} BLOCK_N {const['BLOCK_N']:<3} registers {regs:>3}  spill B {stack}")
    launcher = (root / "kernels" / "launcher_decode.py").read_text()
    block = int(re.search(r"^COMBINE_BLOCK = (\d+)", launcher, re.M).group(1))
    block_p = re.search(r"^COMBINE_PARTS = (\d+)", launcher, re.M)
    const = dict(BLOCK=block, WANT_MAXP=True, WANT_ARG=True, WANT_ENT=True, WANT_SINK=True, WANT_LOCAL=True,
                 WANT_SPAN=False, **SLOTS)
    fn = dec.decode_combine_kernel
    if "BLOCK_P" in fn.arg_names:
        const["BLOCK_P"] = int(block_p.group(1))
    compiled = compile_kernel(fn, const, COMBINE_PTRS)
    regs, stack = R.resources(compiled)
    per = const.get("BLOCK_P", 1)
    print(f"combine  BLOCK {block} BLOCK_P {per:<4} registers {regs:>3}  spill B {stack}  global loads per loop "
          f"iteration {loop_loads(compiled)}")
    print(f"combine: {per} part(s) per source iteration (the compiler may unroll: the loads per loop above); "
          "tiles for " + ", ".join(f"{p} parts: {-(-p // per)}" for p in args.parts))
    fused = mods.get("triton_decode_fused")
    if fused is not None:  # (round 21) output and statistics in one walk
        want = dict(WANT_ARG=True, WANT_ENT=True, WANT_SINK=True, WANT_LOCAL=True, WANT_SPAN=False, WANT_KEY=True)
        for d in (64, 128, 256):
            const = dict(HEAD_DIM=d, BLOCK_D=d, BLOCK_G=16, BLOCK_N=64 if d <= 128 else 32, UPCAST=False,
                         DOT_PREC=None, stride_qd=1, stride_kd=1, stride_vd=1, WANT_OUT=True, **want)
            regs, stack = R.resources(compile_kernel(fused.fused_decode_walk_kernel, const, FUSED_WALK_PTRS))
            print(f"fused walk     head_dim {d:<4} BLOCK_N {const['BLOCK_N']:<3} registers {regs:>3}  spill B {stack}")
        for d in (64, 128, 256):
            const = dict(BLOCK_P=128, BLOCK_K=1024, BLOCK_D=d, D_SLICE=32, HEAD_DIM=d, WANT_OUT=True,
                         WANT_MAXP=True, WANT_COUNT=True, WANT_KMEAN=True, **want, **SLOTS)
            const.pop("BLOCK_N", None)
            regs, stack = R.resources(compile_kernel(fused.fused_decode_combine_kernel, const, FUSED_COMBINE_PTRS))
            print(f"fused combine  head_dim {d:<4} BLOCK_P {const['BLOCK_P']:<3} registers {regs:>3}  spill B {stack}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
