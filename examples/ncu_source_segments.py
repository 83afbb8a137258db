"""Where a kernel's instructions go, from Nsight Compute's per-SASS-instruction counts.

    ncu --section SourceCounters -o rep ...; ncu -i rep.ncu-rep --page source --csv --print-source sass > rep.csv
    python examples/ncu_source_segments.py rep.csv [--warps 4096] [--min-share 0.01]

Consecutive instructions executed the same number of times form a segment (a loop body, or straight-line code run
once per warp); each segment with at least --min-share of the executed instructions is printed with its address
range (offsets from the kernel's first instruction, as `examples/sm90_registers.py --loops` prints them), its
length, executions per warp (--warps: warps launched) and its share of the instructions and of the stall samples.
No GPU needed: it reads the CSV only.
"""

from __future__ import annotations

import argparse
import csv


def segments(path: str) -> tuple[int, int, list[list[int]]]:
    """(executed instructions, stall samples, [[first offset, last offset, executions, length, samples], ...])."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    start = next((i for i, r in enumerate(rows) if r and r[0] == "Address"), None)
    if start is None:
        raise ValueError(f"{path}: no 'Address' header row: not an `ncu --page source --csv` export")
    head = rows[start]
    col = {name: head.index(name) for name in ("Address", "Instructions Executed", "Warp Stall Sampling (All Samples)")}
    base, total, samples, segs = None, 0, 0, []
    for r in rows[start + 1:]:
        try:
            addr = int(r[col["Address"]], 16)
            ex = int(r[col["Instructions Executed"]].replace(",", ""))
            smp = int(r[col["Warp Stall Sampling (All Samples)"]].replace(",", ""))
        except (ValueError, IndexError):
            continue
        base = addr if base is None else base
        off = addr - base
        total += ex
        samples += smp
        if segs and segs[-1][2] == ex:
            segs[-1][1] = off
            segs[-1][3] += 1
            segs[-1][4] += smp
        else:
            segs.append([off, off, ex, 1, smp])
    return total, samples, segs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv")
    p.add_argument("--warps", type=int, default=None, help="warps launched (grid x warps per CTA): executions per warp")
    p.add_argument("--min-share", type=float, default=0.01)
    a = p.parse_args(argv)
    if a.warps is not None and a.warps < 1:
        p.error(f"--warps must be >= 1, got {a.warps}")
    try:
        total, samples, segs = segments(a.csv)
    except (OSError, ValueError) as e:
        p.error(str(e))
    per = f", {total / a.warps:.0f} per warp" if a.warps else ""
    print(f"{a.csv}: {total:,} warp instructions executed{per}, {samples:,} stall samples")
    for lo, hi, ex, n, smp in segs:
        if ex * n >= a.min_share * total:
            runs = f" ({ex / a.warps:6.1f} per warp)" if a.warps else ""
            print(f"  {lo:#07x}-{hi:#07x} {n:5d} instructions x {ex:9,d}{runs}: {100 * ex * n / max(total, 1):5.1f} % "
                  f"of instructions, {100 * smp / max(samples, 1):5.1f} % of samples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
