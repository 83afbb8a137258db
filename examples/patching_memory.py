"""Peak memory and time of a head-patching sweep at long context (the measurement behind docs/notes/needle.md).

    python examples/patching_memory.py --model gemma3-270m --context 4096

Patches the z of each of `--heads` (default: Gemma 3's needle top 10) to the corrupted run's, one head x 2 prompts
per forward, and prints the wall time, the peak RSS above the loaded model (sampled every 10 ms; glibc's mmap
threshold fixed at 64 KiB so freed tensors leave the RSS) and L11H2's effect.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import interp  # noqa: E402
from circuits_needle import fixed_mmap_threshold, last_metric  # noqa: E402
from interp.analyses import tasks as T  # noqa: E402
from interp.analyses.circuits.patching import head_patching  # noqa: E402

NEEDLE_TOP10 = "11.2 15.1 15.3 15.2 17.2 15.0 17.0 7.1 11.1 7.0"


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--heads", default=NEEDLE_TOP10, help="space-separated layer.head")
    a = p.parse_args(argv)
    try:
        heads = [tuple(int(x) for x in lh.split(".")) for lh in a.heads.split()]
    except ValueError:
        p.error(f"--heads: give layer.head pairs like '11.2 15.1', got {a.heads!r}")
    fixed_mmap_threshold(64)
    m = interp.load(a.model)
    b = T.get_task("needle", context=a.context).make(m, n=2, seed=0)
    peak, stop = [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_gib())
            time.sleep(0.01)

    base = rss_gib()
    threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    pos = b.clean.input_ids.shape[1]
    out = head_patching(m, b.clean, b.corrupt, last_metric(b), chunk=1, heads=heads, logits_at=[pos - 1])
    stop.set()
    l, h = heads[0]
    print(f"{a.model}: head_patching of {len(heads)} heads x 2 prompts at {pos} tokens: {time.perf_counter() - t:.1f} s, "
          f"peak {peak[0] - base:.2f} GiB above the loaded model ({base:.2f}); L{l}H{h} {float(out[l, h]):.3f}")


if __name__ == "__main__":
    main()
