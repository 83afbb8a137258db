"""Where a wrapped model's statistics cost goes: host syncs, host time, kernels (one GPU).

    python examples/model_overhead_gpu.py [--shape llama3-8b] [--layers 4] [--tokens 1024 4096] [--reps 10]

For each length: wall time of the HF SDPA forward, interp without statistics and `run_with_cache(stats="all")`
(median of `reps`), then, for the statistics run,
1. host-device syncs: the run repeated under `torch.cuda.set_sync_debug_mode("error")`, which raises at the first
   synchronising call (the traceback says where), and, separately, the CUDA runtime's sync calls counted by the
   profiler;
2. the torch profiler's top host ops (self CPU time) and top kernels (device time) of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback

import torch


def wall(fn, reps):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


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
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU (host syncs and kernel times are what it measures)")
    if args.layers < 1 or args.reps < 1 or args.vocab < 2 or args.top < 1 or any(n < 1 for n in args.tokens):
        p.error("--layers, --reps, --top and --tokens must be >= 1, --vocab >= 2")
    hf = build(args.shape, args.layers, args.vocab, "cuda")
    hf.set_attn_implementation("sdpa")
    model = interp.load(hf)
    for n in args.tokens:
        ids = torch.randint(0, args.vocab, (1, n), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
        with torch.no_grad():
            t_hf = wall(lambda: hf(ids, use_cache=False).logits, args.reps)
        t_none = wall(lambda: model(ids), args.reps)
        t_all = wall(lambda: model.run_with_cache(ids, stats="all"), args.reps)
        print(f"== {args.layers} layers of {args.shape}, {n} tokens: HF SDPA {t_hf * 1e3:.2f} ms, interp none "
              f"{t_none * 1e3:.2f} ms ({t_none / t_hf:.2f}x), run_with_cache(stats='all') {t_all * 1e3:.2f} ms "
              f"({t_all / t_hf:.2f}x)", flush=True)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            model.run_with_cache(ids, stats="all")
            print("sync debug mode 'error': no synchronising call in run_with_cache", flush=True)
        except RuntimeError:
            print("first synchronising call in run_with_cache:")
            print("".join(traceback.format_exc().splitlines(keepends=True)[-16:]), flush=True)
        finally:
            torch.cuda.set_sync_debug_mode(0)
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
