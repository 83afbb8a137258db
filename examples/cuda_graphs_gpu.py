"""Can CUDA graphs remove the host overhead of short calls? Eager vs graph-replayed calls, on one GPU.

    python examples/cuda_graphs_gpu.py [--tokens 1024 2048] [--reps 200] [--model-tokens 1024]

1. One attention call (32 heads x 128, GQA 32/8, fp16) with every statistic: eager, and captured once in a
   torch.cuda.CUDAGraph and replayed (the graph holds the kernel launches; replay costs one launch on the host).
   SDPA eager beside it. Replayed outputs and statistics are checked equal to the eager call's.
2. A 30-layer SmolLM2-shaped model (or `--model-shape llama3-8b`: 4 layers; random weights, bf16) with every
   statistic captured at every layer: HF SDPA eager and graph-replayed, interp's `run_with_cache(stats="all")`
   eager, and `interp.graphs.GraphedRun` (the same forward captured once and replayed for new prompts; checked
   equal to eager runs).
Times: wall time per call over `reps` back-to-back calls (host and device together, as a user sees them).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def per_call_us(fn, reps):
    for _ in range(3):  # warm-up: cuDNN plans, autotuning, allocator
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e6


def graphed(fn, warmup=3):
    """(graph, static result of fn): fn captured once after warm-up calls on a side stream."""
    from interp.kernels.cuda_graph import capture

    return capture(fn, warmup)


def attention_calls(tokens, reps):
    from interp.kernels import attention_with_stats

    for n in tokens:
        gen = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.float16, generator=gen)
        k = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.float16, generator=gen)
        v = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.float16, generator=gen)

        def ours():
            return attention_with_stats(q, k, v, stats="all")

        def sdpa():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

        eager_out, eager_st = ours()
        g, (g_out, g_st) = graphed(ours)
        g.replay()
        torch.cuda.synchronize()
        same = torch.equal(g_out, eager_out) and all(
            torch.equal(getattr(g_st, name), t) or (t.is_floating_point() and torch.allclose(
                getattr(g_st, name), t, equal_nan=True)) for name, t in eager_st.items())
        t_sdpa = per_call_us(sdpa, reps)
        t_eager = per_call_us(ours, reps)
        t_graph = per_call_us(g.replay, reps)
        print(f"N={n:<6} SDPA {t_sdpa:7.1f} us | every statistic: eager {t_eager:7.1f} us ({t_eager / t_sdpa:.2f}x), "
              f"graph replay {t_graph:7.1f} us ({t_graph / t_sdpa:.2f}x); replay equals eager: {same}", flush=True)


def model_forward(n, reps, shape="smollm2", layers=30):
    import interp
    from interp.graphs import GraphedRun
    from long_context_gpu import build

    vocab = 49152 if shape == "smollm2" else 1024
    hf = build(shape, layers, vocab, "cuda")
    gen = torch.Generator(device="cuda").manual_seed(1)
    ids = torch.randint(0, vocab, (1, n), device="cuda", generator=gen)
    other = torch.randint(0, vocab, (1, n), device="cuda", generator=gen)
    with torch.no_grad():
        hf.set_attn_implementation("sdpa")
        t_hf = per_call_us(lambda: hf(ids, use_cache=False).logits, reps)
        g_hf, _ = graphed(lambda: hf(ids, use_cache=False).logits)
        t_hf_graph = per_call_us(g_hf.replay, reps)
        del g_hf
    model = interp.load(hf)
    t_eager = per_call_us(lambda: model.run_with_cache(ids, stats="all"), reps)
    run = GraphedRun(model, ids, stats="all")
    same = True
    for x in (other, ids):  # a new prompt, then the first again: replays equal eager runs
        want_logits, want = model.run_with_cache(x, stats="all")
        logits, cache = run(x)
        same &= torch.equal(logits, want_logits) and set(cache) == set(want) and all(
            torch.equal(cache[k], t) or torch.allclose(cache[k], t, equal_nan=True) for k, t in want.items())
    t_graph = per_call_us(run, reps)
    print(f"{layers}-layer {shape} shape, {n} tokens, bf16: HF SDPA eager {t_hf / 1e3:6.2f} ms, graph replay "
          f"{t_hf_graph / 1e3:6.2f} ms | interp run_with_cache(stats='all'): eager {t_eager / 1e3:6.2f} ms "
          f"({t_eager / t_hf:.2f}x HF eager), GraphedRun {t_graph / 1e3:6.2f} ms ({t_graph / t_hf_graph:.2f}x HF "
          f"replay); replays equal eager runs: {same}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", nargs="+", type=int, default=[1024, 2048])
    p.add_argument("--model-tokens", nargs="*", type=int, default=[1024])
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--model-shape", choices=["smollm2", "llama3-8b"], default="smollm2")
    p.add_argument("--model-layers", type=int, default=None, help="default: 30 (smollm2), 4 (llama3-8b)")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    if a.reps < 1 or any(n < 1 for n in a.tokens + a.model_tokens) or (
            a.model_layers is not None and a.model_layers < 1):
        p.error("--reps, --model-layers and token counts must be >= 1")
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    attention_calls(a.tokens, a.reps)
    layers = a.model_layers or (30 if a.model_shape == "smollm2" else 4)
    for n in a.model_tokens:
        model_forward(n, max(5, a.reps // 10), a.model_shape, layers)


if __name__ == "__main__":
    main()
