"""Statistics for every layer of a real-shaped model, against the same model under transformers' SDPA, on one GPU.

    python examples/long_context_gpu.py --tokens 32768 --layers 4            # Llama-3-8B attention, long context
    python examples/long_context_gpu.py --shape smollm2 --layers 30 --tokens 1024 --reps 20   # short inputs

A randomly initialised LlamaForCausalLM with Llama-3-8B attention (32 heads, 8 KV heads, head dim 128, d_model 4096,
d_mlp 14336) or SmolLM2-135M's shape (9 heads, 3 KV heads, head dim 64, d_model 576, d_mlp 1536, vocabulary 49152)
runs through interp's Triton kernels with every statistic captured at every layer. Printed: wall time (median of
--reps timed calls after a warm-up) and peak GPU memory for (a) the model under transformers' SDPA, (b) under
interp without statistics, (c) with all statistics, and (c)/(a), the issue-18 ratio; plus checks (each query row's
mass sums to 1, so sum_k key_mass = number of queries) and, at a shorter length, the logits of interp vs SDPA.
`--device cpu` runs the same on the CPU (Triton interpreter; a smoke test of the script, not a timing).
"""

import argparse
import os
import statistics
import time

import torch

SHAPES = {  # attention and MLP shapes of real models (weights random)
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                      head_dim=128, rope_theta=500000.0),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
                    head_dim=64, rope_theta=100000.0, tie_word_embeddings=True),
}


def build(shape: str, layers: int, vocab: int, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, num_hidden_layers=layers, max_position_embeddings=131072, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if device == "cuda" else torch.float32).eval()
    return model


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device="cuda", reps=1):
    """(last result, median seconds of `reps` calls, peak GiB of one call); the caller has warmed fn up."""
    cuda = device == "cuda"
    times, peak = [], float("nan")
    for i in range(reps):
        _sync(device)
        if cuda and i == 0:
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t)
        if cuda and i == 0:
            peak = torch.cuda.max_memory_allocated() / 2**30
    return out, statistics.median(times), peak


def main():
    import interp

    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=None, help="default: 1024 (llama3-8b), 49152 (smollm2)")
    p.add_argument("--parity-tokens", type=int, default=2048)
    p.add_argument("--reps", type=int, default=1, help="timed calls per variant (median); 20+ for short inputs")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = p.parse_args()
    if args.tokens < 1 or args.layers < 1 or args.reps < 1 or args.parity_tokens < 1 or (
            args.vocab is not None and args.vocab < 1):
        p.error("--tokens, --layers, --reps, --parity-tokens and --vocab must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda needs a CUDA GPU (--device cpu runs the script under the Triton interpreter)")
    dev = args.device
    vocab = args.vocab or (49152 if args.shape == "smollm2" else 1024)
    hf = build(args.shape, args.layers, vocab, dev)
    g = torch.Generator(device=dev).manual_seed(1)
    ids = torch.randint(0, vocab, (1, args.tokens), device=dev, generator=g)

    short = ids[:, : min(args.parity_tokens, args.tokens)]
    with torch.no_grad():
        hf.set_attn_implementation("eager")
        eager_short = hf(short).logits.float()
        hf.set_attn_implementation("sdpa")
        ref_short = hf(short).logits.float()
        hf(ids)  # warm-up
        t_sdpa, mem_sdpa = timed(lambda: hf(ids).logits, dev, args.reps)[1:]  # (no output kept: peak memory)
    model = interp.load(hf)
    model(ids)  # warm-up: the kernels autotune once per length bucket
    t_none, mem_none = timed(lambda: model(ids), dev, args.reps)[1:]
    model.run_with_cache(ids, stats="all")  # warm-up / autotune of the statistics variants
    (logits, cache), t_all, mem_all = timed(lambda: model.run_with_cache(ids, stats="all"), dev, args.reps)
    name = torch.cuda.get_device_name() if dev == "cuda" else "CPU" + (
        " (Triton interpreter)" if os.environ.get("TRITON_INTERPRET") == "1" else "")
    dtype = "bf16" if dev == "cuda" else "fp32"
    print(f"model: {args.layers} layers of {args.shape} shape, {args.tokens} tokens, {dtype}, {name}, "
          f"median of {args.reps}")
    print(f"transformers SDPA          : {t_sdpa * 1e3:9.1f} ms  peak {mem_sdpa:6.2f} GiB")
    print(f"interp, no statistics      : {t_none * 1e3:9.1f} ms  peak {mem_none:6.2f} GiB  ({t_none / t_sdpa:.2f}x)")
    print(f"interp, all statistics, all layers: {t_all * 1e3:9.1f} ms  peak {mem_all:6.2f} GiB  "
          f"({t_all / t_sdpa:.2f}x SDPA)")
    stat_bytes = sum(t.numel() * t.element_size() for t in cache.values())
    print(f"captured {len(cache)} statistic tensors, {stat_bytes / 2**20:.1f} MiB in all (O(n) per layer)")
    for l in range(args.layers):
        km = cache[f"blocks.{l}.attn.hook_key_mass"][0]  # [head, n]
        total = km.double().sum(-1)
        err = (total - args.tokens).abs().max().item()
        ent = cache[f"blocks.{l}.attn.hook_query_entropy"][0]
        sink = cache[f"blocks.{l}.attn.hook_key_mean"][0, :, 0]
        print(f"layer {l}: sum_k key_mass = n (max err {err:.3g}); mean entropy {ent.mean():.3f} nats; "
              f"alpha_first mean {sink.mean():.4f}")
        if not err < 1e-2 * args.tokens ** 0.5:
            raise RuntimeError(f"layer {l}: sum_k key_mass differs from n = {args.tokens} by {err:.3g}")
    with torch.no_grad():
        ours_short = model(short).float()
    diff = (ours_short - ref_short).abs().max().item()
    yard = (eager_short - ref_short).abs().max().item()
    scale = ref_short.abs().max().item()
    print(f"logits at {short.shape[1]} tokens ({dtype}): max |interp - SDPA| {diff:.3e}; "
          f"max |eager - SDPA| {yard:.3e} (the {dtype} yardstick); max |logit| {scale:.2f}")


if __name__ == "__main__":
    main()
