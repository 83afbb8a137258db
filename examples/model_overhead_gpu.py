"""Where a wrapped model's statistics cost goes: host syncs, host time, kernels (one GPU).

    python examples/model_overhead_gpu.py [--shape llama3-8b] [--layers 4] [--tokens 1024 4096] [--reps 10]

For each length: wall time of the HF SDPA forward, interp without statistics, `run_with_cache(stats="all")` and the
same with `interp.layer_batch` switched off (a statistics call in every layer) (medians of `reps` interleaved
rounds; per call as a user waits for it, and per call in bursts of 5 back to back, see `timings`); whether the
batched and per-layer statistics are equal bit for bit; the host time inside the main functions of one forward
(`model_sections`); then, for the statistics run,
1. host-device syncs: the run repeated under `torch.cuda.set_sync_debug_mode("warn")`, each synchronising call
   listed with the chain of this repository's frames that made it, and, separately, the CUDA runtime's sync calls
   counted by the profiler;
2. the Python functions that take the most host time (cProfile, 5 runs), and the torch profiler's top host ops (self CPU time) and top kernels (device time) of one run.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
import traceback
import warnings

import torch


def timings(fns: dict, reps: int, burst: int = 5) -> dict:
    """Per method, median seconds per call, measured interleaved (method after method, `reps` rounds, after two
    warm-up calls each) so that drift in the host's speed hits every method alike:
    'latency': one call, synchronised before and after (what a user who reads the result waits);
    'burst': `burst` calls back to back, one synchronise at the end (host work of one call overlaps the device
    work of the one before), per call."""
    for fn in fns.values():
        fn()
        fn()
    lat = {name: [] for name in fns}
    bur = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            lat[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(burst):
                fn()
            torch.cuda.synchronize()
            bur[name].append((time.perf_counter() - t) / burst)
    return {name: {"latency": statistics.median(lat[name]), "burst": statistics.median(bur[name])} for name in fns}


def sync_sites(fn, root: str) -> list[str]:
    """Every synchronising CUDA call made by fn(), each as the chain of this repository's frames (under `root`) that
    led to it: torch's sync debug mode 'warn' warns at each one, and the warning hook records the stack."""

    sites = []

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(root)]
        sites.append(" <- ".join(f"{os.path.relpath(f.filename, root)}:{f.lineno} {f.name}" for f in reversed(frames))
                     or f"{filename}:{lineno}")

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sites


def per_layer(fn):
    """fn() with `interp.layer_batch` switched off: each layer makes its own statistics call (the path before)."""
    import interp.layer_batch as layer_batch

    layer_batch.ENABLED = False
    try:
        return fn()
    finally:
        layer_batch.ENABLED = True


def model_sections(model, fn, reps: int = 10) -> dict:
    """Host us per forward of fn inside the wrapper's, the kernels' and the HF modules' main functions
    (`host_sections.py`), calls back to back."""
    import interp.attention as attention
    import interp.layer_batch as layer_batch
    import interp.model as imodel
    from host_sections import timed_sections
    from interp.hooks import RunContext
    from interp.kernels import api, launcher

    block, attn = model.blocks[0], model.attn_modules[0]
    targets = [(imodel.HookedModel, "_forward"), (type(block), "forward"), (type(attn), "forward"),
               (imodel.HookedModel, "attention_call"), (imodel, "attention_with_stats"),
               (attention, "attention_with_stats"), (api, "check_inputs"), (launcher, "sdpa_out_lse"),
               (launcher, "triton_stats"), (launcher, "_launch_stats"), (RunContext, "apply"),
               (imodel.HookedModel, "to_tokens"), (layer_batch.LayerBatch, "flush"),
               (layer_batch.LayerBatch, "add")]
    return timed_sections(fn, targets, reps, sync=torch.cuda.synchronize)


def main(argv=None):
    import interp
    from long_context_gpu import build

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=["llama3-8b", "smollm2"], default="llama3-8b")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--tokens", nargs="+", type=int, default=[1024, 4096])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--top", type=int, default=14)
    args = p.parse_args(argv)
    if args.layers < 1 or args.reps < 1 or args.vocab < 2 or args.top < 1 or any(n < 1 for n in args.tokens):
        p.error("--layers, --reps, --top and --tokens must be >= 1, --vocab >= 2")
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU (host syncs and kernel times are what it measures)")
    hf = build(args.shape, args.layers, args.vocab, "cuda")
    hf.set_attn_implementation("sdpa")
    model = interp.load(hf)
    for n in args.tokens:
        ids = torch.randint(0, args.vocab, (1, n), device="cuda", generator=torch.Generator("cuda").manual_seed(1))

        def hf_forward():
            with torch.no_grad():
                return hf(ids, use_cache=False).logits

        t = timings({"hf": hf_forward, "none": lambda: model(ids),
                     "all": lambda: model.run_with_cache(ids, stats="all"),
                     "per layer": lambda: per_layer(lambda: model.run_with_cache(ids, stats="all"))}, args.reps)
        for kind in ("latency", "burst"):
            hf_t, none_t, all_t, per_t = (t[m][kind] for m in ("hf", "none", "all", "per layer"))
            print(f"== {args.layers} layers of {args.shape}, {n} tokens, {kind}: HF SDPA {hf_t * 1e3:.2f} ms, interp "
                  f"none {none_t * 1e3:.2f} ms ({none_t / hf_t:.2f}x), run_with_cache(stats='all') "
                  f"{all_t * 1e3:.2f} ms ({all_t / hf_t:.2f}x), the same with a statistics call per layer "
                  f"{per_t * 1e3:.2f} ms ({per_t / hf_t:.2f}x)", flush=True)
        _, batched = model.run_with_cache(ids, stats="all")
        _, own = per_layer(lambda: model.run_with_cache(ids, stats="all"))
        same = set(batched) == set(own) and all(
            batched[name].shape == t.shape and bool(((batched[name] == t) | (batched[name].isnan() & t.isnan())).all())
            for name, t in own.items())
        print(f"statistics of the batched pass equal the per-layer calls' bit for bit ({len(own)} hook points): {same}")
        print(f"host us per forward inside each function (in place; a caller's row includes its callees'), {n} "
              "tokens: interp none | run_with_cache(stats='all')")
        none_s = model_sections(model, lambda: model(ids))
        all_s = model_sections(model, lambda: model.run_with_cache(ids, stats="all"))
        for label in {**none_s, **all_s}:
            print(f"  {label:<34} {none_s.get(label, 0.0):9.1f} | {all_s.get(label, 0.0):9.1f}")
        root = os.path.dirname(os.path.dirname(os.path.abspath(interp.__file__)))
        sites = sync_sites(lambda: model.run_with_cache(ids, stats="all"), root)
        print(f"synchronising calls in one run_with_cache: {len(sites)}")
        for site in sites:
            print("   ", site)
        prof_py = cProfile.Profile()
        prof_py.enable()
        for _ in range(5):
            model.run_with_cache(ids, stats="all")
        prof_py.disable()
        torch.cuda.synchronize()
        print("Python functions of 5 run_with_cache(stats='all') calls (cProfile, by own time):")
        pstats.Stats(prof_py).sort_stats("tottime").print_stats(args.top)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model.run_with_cache(ids, stats="all")
            torch.cuda.synchronize()
        ka = prof.key_averages()
        syncs = {e.key: e.count for e in ka if "Synchronize" in e.key or "Memcpy" in e.key or "MemGetInfo" in e.key}
        print("CUDA runtime sync/copy calls in one run:", syncs)
        print(ka.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=60))
        print(ka.table(sort_by="self_device_time_total", row_limit=args.top, max_name_column_width=60), flush=True)


if __name__ == "__main__":
    main()
