"""Statistics for every layer of a Llama-3-8B-shaped model at long context, on one GPU.

    python examples/long_context_gpu.py --tokens 32768 --layers 4

A randomly initialised LlamaForCausalLM with Llama-3-8B attention (32 heads, 8 KV heads, head dim 128, d_model 4096,
d_mlp 14336) runs through interp's Triton kernels with every statistic captured at every layer. Printed: wall time
and peak GPU memory for (a) the model under transformers' SDPA, (b) under interp without statistics, (c) with all
statistics; plus checks (each query row's mass sums to 1, so sum_k key_mass = number of queries) and, at a shorter
length, the logits of interp vs SDPA.
"""

import argparse
import time

import torch


def build(layers: int, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
                      rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    return model


def timed(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t, torch.cuda.max_memory_allocated() / 2**30


def main():
    import interp

    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--parity-tokens", type=int, default=2048)
    args = p.parse_args()
    hf = build(args.layers, args.vocab)
    g = torch.Generator(device="cuda").manual_seed(1)
    ids = torch.randint(0, args.vocab, (1, args.tokens), device="cuda", generator=g)

    short = ids[:, : args.parity_tokens]
    with torch.no_grad():
        hf.set_attn_implementation("eager")
        eager_short = hf(short).logits.float()
        hf.set_attn_implementation("sdpa")
        ref_short = hf(short).logits.float()
        hf(ids)  # warm-up
        _, t_sdpa, mem_sdpa = timed(lambda: hf(ids).logits)
    model = interp.load(hf)
    model(ids)  # warm-up: the kernels autotune once per length bucket
    _, t_none, mem_none = timed(lambda: model(ids))
    model.run_with_cache(ids, stats="all")  # warm-up / autotune of the statistics variants
    (logits, cache), t_all, mem_all = timed(lambda: model.run_with_cache(ids, stats="all"))
    print(f"model: {args.layers} layers of Llama-3-8B attention, {args.tokens} tokens, bf16, {torch.cuda.get_device_name()}")
    print(f"transformers SDPA          : {t_sdpa * 1e3:9.1f} ms  peak {mem_sdpa:6.2f} GiB")
    print(f"interp, no statistics      : {t_none * 1e3:9.1f} ms  peak {mem_none:6.2f} GiB")
    print(f"interp, all statistics, all layers: {t_all * 1e3:9.1f} ms  peak {mem_all:6.2f} GiB")
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
        assert err < 1e-2 * args.tokens ** 0.5, err
    with torch.no_grad():
        ours_short = model(short).float()
    diff = (ours_short - ref_short).abs().max().item()
    yard = (eager_short - ref_short).abs().max().item()
    scale = ref_short.abs().max().item()
    print(f"logits at {args.parity_tokens} tokens (bf16): max |interp - SDPA| {diff:.3e}; "
          f"max |eager - SDPA| {yard:.3e} (the bf16 yardstick); max |logit| {scale:.2f}")


if __name__ == "__main__":
    main()
