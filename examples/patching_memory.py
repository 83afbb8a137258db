"""Peak memory and time of the needle pipeline's steps at long context (the measurements in docs/notes/needle.md).

    python examples/patching_memory.py --model gemma3-270m --context 4096                       # patching sweep
    python examples/patching_memory.py --context 2048 --step atp --mmap-kib 0                   # AtP, as before
    python examples/patching_memory.py --context 2048 --step atp --checkpoint                   # AtP, checkpointed

`--step patching`: patches the z of each of `--heads` (default: Gemma 3's needle top 10) to the corrupted run's,
one head x 2 prompts per forward. `--step atp`: one prompt's AtP (forward + backward clean, forward corrupt).
Prints the wall time, the peak RSS above the loaded model (sampled every 10 ms; `--mmap-kib`, default 64, fixes
glibc's mmap threshold so freed tensors leave the RSS; 0 keeps glibc's default) and L11H2's value.
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
from circuits_needle import atp_prompt, fixed_mmap_threshold, last_metric  # noqa: E402
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
    p.add_argument("--step", choices=("patching", "atp"), default="patching")
    p.add_argument("--checkpoint", action="store_true", help="atp: block checkpointing in the backward")
    p.add_argument("--mmap-kib", type=int, default=64)
    a = p.parse_args(argv)
    try:
        heads = [tuple(int(x) for x in lh.split(".")) for lh in a.heads.split()]
    except ValueError:
        p.error(f"--heads: give layer.head pairs like '11.2 15.1', got {a.heads!r}")
    if a.mmap_kib > 0:
        fixed_mmap_threshold(a.mmap_kib)
    m = interp.load(a.model)
    task = T.get_task("needle", context=a.context)
    b = task.make(m, n=2, seed=0)
    peak, stop = [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_gib())
            time.sleep(0.01)

    base = rss_gib()
    threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    pos = b.clean.input_ids.shape[1]
    l, h = heads[0]
    if a.step == "patching":
        out = head_patching(m, b.clean, b.corrupt, last_metric(b), chunk=1, heads=heads, logits_at=[pos - 1])
        what = f"head_patching of {len(heads)} heads x 2 prompts"
    else:
        out = atp_prompt(m, task, b[0], checkpoint=a.checkpoint)["atp"]
        what = "AtP of one prompt" + (" (blocks checkpointed)" if a.checkpoint else "")
    stop.set()
    print(f"{a.model}: {what} at {pos} tokens, mmap threshold {a.mmap_kib or 'default'} KiB: "
          f"{time.perf_counter() - t:.1f} s, peak {peak[0] - base:.2f} GiB above the loaded model ({base:.2f}); "
          f"L{l}H{h} {float(out[l, h]):.3f}")


if __name__ == "__main__":
    main()
