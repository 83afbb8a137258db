"""Where should key_mass / key_mean be finalized: inside the statistics kernel (the last program of each head
converts the fixed-point sums, after a fence and a ticket in every program) or by two torch ops after it?
Both forms side by side on one GPU, in alternating rounds, with every statistic (32 heads x 128, GQA 32/8, fp16,
causal, batch 1), and their key statistics checked equal bit for bit (within the statistics tests' tolerance in
the CPU smoke run, whose float32 launches in the interpreter can differ from one another by ~1e-5 relative).

    python examples/finalize_ab_gpu.py [--lengths 2048 8192 32768 131072] [--rounds 3]

Lengths up to 2048 time CUDA-graph replays (device time; a single eager call is host-bound there), longer ones
`triton.testing.do_bench` on eager calls. `launcher.FINALIZE_MAX_LEN` picks the form per call; this script sets it
to force one or the other.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
import triton

from interp.kernels import attention_with_stats, launcher
from stats_configs_gpu import timed  # beside this script: do_bench, or of CUDA-graph replays

FORMS = {"in kernel": 1 << 62, "torch ops": -1}  # FINALIZE_MAX_LEN for each form


def run(n: int, rounds: int, device: str, heads=32, kv=8, dim=128) -> dict:
    """{form: [ms per round]} and SDPA's ms for n tokens; raises if the two forms' key statistics differ."""
    dtype = torch.float16 if device == "cuda" else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, h, n, dim, device=device, dtype=dtype, generator=g) for h in (heads, kv, kv))
    graph = device == "cuda" and n <= 2048
    keys = {}
    for form, limit in FORMS.items():
        launcher.FINALIZE_MAX_LEN = limit
        st = attention_with_stats(q, k, v, stats="all")[1]
        keys[form] = (st.key_mass.clone(), st.key_mean.clone())
    (ma, ea), (mb, eb) = keys.values()
    if device == "cuda":  # the GPU's launches are bit-reproducible, so the two forms must agree bit for bit
        same = torch.equal(ma, mb) and torch.equal(ea.nan_to_num(-7), eb.nan_to_num(-7))
    else:  # the CPU interpreter's float32 launches can differ by ~1e-5 relative: the statistics tests' tolerance
        same = torch.allclose(ma, mb, rtol=3e-4, atol=3e-5) and torch.allclose(ea, eb, rtol=3e-4, atol=3e-5,
                                                                               equal_nan=True)
    if not same:
        raise AssertionError(f"N={n}: key_mass / key_mean differ between the two forms")
    times = {form: [] for form in FORMS}
    sdpa = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), graph)
    for r in range(rounds):
        order = list(FORMS) if r % 2 == 0 else list(FORMS)[::-1]
        for form in order:
            launcher.FINALIZE_MAX_LEN = FORMS[form]
            times[form].append(timed(lambda: attention_with_stats(q, k, v, stats="all"), graph))
    return {"sdpa": sdpa, **times}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", nargs="+", type=int, default=[2048, 8192, 32768, 131072])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="CPU (Triton interpreter), 128 tokens, 4 heads: the "
                   "script's own check, not a timing")
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error(f"--rounds must be >= 1, got {a.rounds}")
    default = launcher.FINALIZE_MAX_LEN
    device, shape = ("cpu", dict(heads=4, kv=2, dim=64)) if a.smoke else ("cuda", {})
    if a.smoke:
        a.lengths = [128]
        triton.testing.do_bench = lambda fn: (fn(), 1.0)[1]
    print(f"{'CPU smoke' if a.smoke else torch.cuda.get_device_name()}; every statistic, ms (median per round); "
          f"key statistics equal in both forms (bit for bit on a GPU); default FINALIZE_MAX_LEN = {default}",
          flush=True)
    try:
        for n in a.lengths:
            res = run(n, a.rounds, device, **shape)
            sdpa = res.pop("sdpa")
            cells = "  ".join(f"{form}: " + " ".join(f"{t:.3f}" for t in ts)
                              + f" ({statistics.median(ts) / sdpa:.3f}x)" for form, ts in res.items())
            ratio = statistics.median(res["in kernel"]) / statistics.median(res["torch ops"])
            print(f"N={n}: SDPA {sdpa:.3f}  {cells}  in kernel / torch ops {ratio:.4f}", flush=True)
    finally:
        launcher.FINALIZE_MAX_LEN = default
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
