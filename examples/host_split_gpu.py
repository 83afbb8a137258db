"""Where the host time of one short statistics call goes, piece by piece (one GPU).

    python examples/host_split_gpu.py [--tokens 1024] [--reps 300]

At 1k tokens `attention_with_stats(stats="all")` is bound by the host (`short_calls_gpu.py`): the device finishes
its kernels before Python has issued the next call. This times, per call, the host cost of issuing `reps` calls
back to back (then one synchronise; each piece's device work is shorter than its host work, so the time is the
host's), for:
    sdpa             F.scaled_dot_product_attention (what the HF forward issues per layer)
    out+lse          the cuDNN call that gives the output and the log-sum-exp (`sdpa_path.sdpa_out_lse`)
    stats launch     the Triton statistics launch alone, its arguments built once (`launcher._launch_stats`; its
                     tickets are not re-zeroed, so after the first call the kernel skips the key finalize: device
                     work only, the host cost is the same)
    ours none / all  `attention_with_stats(stats=...)`, everything
    all, JIT launch  the same with the statistics kernel launched through Triton's JIT path every call (what
                     `kernels/direct_launch.py` skips once the kernel is compiled)
    all, no cuDNN    the same with the cuDNN call replaced by the output and lse of an earlier call (the launch kept)
    all, no launch   the same with the Triton launch replaced by a no-op (all - this = the launch's share)
    all, no kernels  the cuDNN call and the launch both replaced (interp's own Python and tensor ops)
and, at 64 tokens (the launch's device work is a few microseconds, so its host cost shows), the statistics
kernel launched through Triton's JIT path (`JITFunction.run`: argument binding and specialisation, cache key,
grid, launch metadata, each call) against the same compiled kernel launched by `kernels/direct_launch.py`
(its key computed each call, as in the statistics path), after checking that both write the same statistics.
(Round 9's logs of this section, `docs/gpu/host_split_round9b.log` and `host_split_direct_round9.log`, came from
its first form: the compiled kernel launched with a hand-built argument list, without the key.) 32 heads x 128,
GQA 32/8, fp16, causal, batch 1.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
import triton


SLEEP_CYCLES = 200_000_000  # the sleep kernel that keeps the GPU busy while calls are issued: ~0.1 s on an H100


def host_us(fn, reps: int, sync=torch.cuda.synchronize) -> float:
    """Host microseconds per call: `reps` calls back to back, then `sync()` (None: nothing to wait for, e.g. on the
    CPU), after 20 warm-up calls; the median of 5 batches."""
    for _ in range(20):
        fn()
    if sync is not None:
        sync()
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        runs.append((time.perf_counter() - t) / reps * 1e6)
        if sync is not None:
            sync()
    return sorted(runs)[2]


def main(argv=None):
    from interp.kernels import attention_with_stats, launcher

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", nargs="+", type=int, default=[1024])
    p.add_argument("--reps", type=int, default=300)
    a = p.parse_args(argv)
    if a.reps < 1 or any(n < 1 for n in a.tokens):
        p.error("--reps and --tokens must be >= 1")
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU (it times the host's side of GPU launches)")
    for n in a.tokens:
        g = torch.Generator("cuda").manual_seed(0)
        q = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.float16, generator=g)
        k = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.float16, generator=g)
        v = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.float16, generator=g)
        out, st = attention_with_stats(q, k, v, stats="all")  # compiles, tunes, picks the cuDNN op
        spec, launch_args = captured_call(q, k, v)
        real_sdpa, real_launch = launcher.sdpa_out_lse, launcher._launch_stats
        lse = st.lse
        rows = {
            "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
            "out+lse": lambda: real_sdpa(q, k, v, spec),
            "stats launch": lambda: real_launch(*launch_args),
            "ours none": lambda: attention_with_stats(q, k, v, stats="none"),
            "ours all": lambda: attention_with_stats(q, k, v, stats="all"),
        }
        times = {name: host_us(fn, a.reps) for name, fn in rows.items()}
        launcher._direct_stats.enabled = False
        try:
            times["all, JIT launch"] = host_us(lambda: attention_with_stats(q, k, v, stats="all"), a.reps)
        finally:
            launcher._direct_stats.enabled = True
        try:
            launcher.sdpa_out_lse = lambda q_, k_, v_, spec_, need_lse=True: (out, lse)
            times["all, no cuDNN"] = host_us(lambda: attention_with_stats(q, k, v, stats="all"), a.reps)
            launcher.sdpa_out_lse = real_sdpa
            launcher._launch_stats = lambda *args: None
            times["all, no launch"] = host_us(lambda: attention_with_stats(q, k, v, stats="all"), a.reps)
            launcher.sdpa_out_lse = lambda q_, k_, v_, spec_, need_lse=True: (out, lse)
            times["all, no kernels"] = host_us(lambda: attention_with_stats(q, k, v, stats="all"), a.reps)
        finally:
            launcher.sdpa_out_lse, launcher._launch_stats = real_sdpa, real_launch
        print(f"N={n}: host microseconds per call ({torch.cuda.get_device_name()}, {a.reps} calls back to back)")
        for name, us in times.items():
            print(f"  {name:<16} {us:7.1f} us")
        print(f"N={n}: the same calls issued while the GPU is busy (behind a ~0.1 s sleep kernel: pure host time; "
              "'waited' = the call blocked until the GPU got to it)")
        for name, fn in rows.items():
            us, waited = behind_sleep_us(fn)
            print(f"  {name:<16} {us:7.1f} us{'  waited' if waited else ''}")
        call = lambda: attention_with_stats(q, k, v, stats="all")  # noqa: E731
        back, behind = sections(call, a.reps), sections(call, a.reps, behind=True)
        print(f"N={n}: host us per 'ours all' call in each section (each function wrapped in place by a timer): "
              "back to back | behind a sleep kernel")
        for name in back:
            print(f"  {name:<28} {back[name]:7.1f} | {behind.get(name, float('nan')):7.1f} us")
    print(launch_paths(a.reps))
    print(lse_ops(a.tokens, a.reps))


def lse_ops(tokens, reps: int) -> str:
    """Host and device us per call of the two torch ops that give the output and the lse (`sdpa_path.OPS`),
    beside plain SDPA, at each length (32 query and 32 KV heads: the flash op has no GQA): device time from CUDA
    events around `reps` calls back to back."""
    from interp.kernels import sdpa_path

    lines = []
    for n in tokens:
        g = torch.Generator("cuda").manual_seed(2)
        q = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.float16, generator=g)
        k = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.float16, generator=g).repeat_interleave(4, 1)
        ops = {"sdpa": lambda: F.scaled_dot_product_attention(q, k, k, is_causal=True)}  # 32 KV heads: flash has no GQA
        for name, op in sdpa_path.OPS.items():
            ops[name] = lambda op=op: op(q, k, k, True, 128 ** -0.5)
        for name, fn in ops.items():
            try:
                host = host_us(fn, reps)
            except (RuntimeError, NotImplementedError) as e:
                lines.append(f"N={n}: {name}: fails ({type(e).__name__})")
                continue
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            torch.cuda.synchronize()
            dev = start.elapsed_time(end) * 1e3 / reps
            lines.append(f"N={n}: {name:<7} host {host:6.1f} us, device+gaps {dev:7.1f} us per call")
    return "\n".join(lines)


def behind_sleep_us(fn, calls: int = 20) -> tuple[float, bool]:
    """Median host us of `calls` single calls of fn issued while the GPU spins in a long sleep kernel, so that no
    call can overlap the device finishing earlier work: what is left is pure host time, unless a call synchronises,
    which then waits for the sleep (returned as True)."""
    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(SLEEP_CYCLES)
    times = []
    t0 = time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    torch.cuda.synchronize()
    waited = max(times) > 0.02 or total > 0.05
    return sorted(times)[calls // 2] * 1e6, waited


def sections(fn, reps: int, behind: bool = False) -> dict:
    """Host us per call of fn spent inside each of the statistics path's functions (`host_sections.py`);
    `behind`: at most 20 calls, issued behind a long sleep kernel (as in `behind_sleep_us`)."""
    import interp.kernels.api as api
    from host_sections import timed_sections
    from interp.kernels import direct_launch, launcher

    targets = [(api, "check_inputs"), (launcher, "sdpa_out_lse"), (launcher, "triton_stats"),
               (launcher, "_launch_stats"), (launcher, "_direct_stats"), (direct_launch, "signature"),
               (launcher, "_stats_plan")]
    if behind:
        return timed_sections(fn, targets, min(reps, 20), sync=torch.cuda.synchronize,
                              before=lambda: torch.cuda._sleep(SLEEP_CYCLES))
    return timed_sections(fn, targets, reps, sync=torch.cuda.synchronize)


def captured_call(q, k, v):
    """(the AttnSpec, the `launcher._launch_stats` arguments) of one `attention_with_stats(q, k, v, stats="all")`
    call, after a first call has compiled and tuned its kernels."""
    from interp.kernels import attention_with_stats, launcher

    attention_with_stats(q, k, v, stats="all")
    seen = {}
    real_sdpa, real_launch = launcher.sdpa_out_lse, launcher._launch_stats

    def spy_sdpa(q_, k_, v_, spec, need_lse=True):
        seen["spec"] = spec
        return real_sdpa(q_, k_, v_, spec, need_lse)

    def spy_launch(*args):
        seen["launch"] = args
        return real_launch(*args)

    launcher.sdpa_out_lse, launcher._launch_stats = spy_sdpa, spy_launch
    try:
        attention_with_stats(q, k, v, stats="all")
    finally:
        launcher.sdpa_out_lse, launcher._launch_stats = real_sdpa, real_launch
    return seen["spec"], seen["launch"]


def launch_paths(reps: int, n: int = 64) -> str:
    """Host us per statistics launch at n tokens: Triton's JIT path against `DirectLauncher` (its key included),
    after checking that both write the same statistics."""
    from interp.kernels import launcher
    from interp.kernels.direct_launch import DirectLauncher

    g = torch.Generator("cuda").manual_seed(1)
    q = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.float16, generator=g)
    k = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.float16, generator=g)
    _, (args, consts, tune_key, lq, n_bh, kmass, parts) = captured_call(q, k, k)
    if parts is not None:
        raise SystemExit("run it with INTERP_STATS_PARTS off: its grid is one program per query block")
    meta = launcher._tuned[tune_key].all_kwargs()
    kwargs = {**consts, **meta}
    fn = launcher.attention_stats_kernel.fn
    grid = (triton.cdiv(lq, meta["BLOCK_M"]) * n_bh,)
    direct = DirectLauncher(fn)
    key = (tune_key, tuple(meta.items()))
    direct(grid, args, kwargs, key)  # through Triton once: keeps the compiled kernel
    assert all(e is not None for e in direct._compiled.values()), "the launch did not become direct"
    outs = args[3], args[4], args[7], args[8]  # rows, argmax, key_mass and key_mean (the in-kernel finalize's)
    results = []
    for launch in (lambda: fn[grid](*args, **kwargs), lambda: direct(grid, args, kwargs, key)):
        kmass.zero_()  # the sums and the per-head tickets: a launch whose tickets are not zeroed does not finalize
        for t in outs:
            t.fill_(-1)
        launch()
        torch.cuda.synchronize()
        results.append(tuple(t.clone() for t in outs) + (kmass.clone(),))
    same = all(torch.equal(x, y) for x, y in zip(*results))
    jit = host_us(lambda: fn[grid](*args, **kwargs), reps)
    direct_us = host_us(lambda: direct(grid, args, kwargs, key), reps)
    return (f"N={n}: statistics launch, host us per call: Triton JIT path {jit:.1f}, DirectLauncher "
            f"{direct_us:.1f}; same statistics: {same}")


if __name__ == "__main__":
    main()
