"""Mask-gradient head importance at long context on one GPU: interp's fused backward against transformers' SDPA.

    python examples/gpu_importance.py --tokens 32768 --layers 4

A randomly initialised Llama-3-8B-shaped model (32 heads, 8 KV heads, head dim 128, d_model 4096, d_mlp 14336;
vocab 1024 so the logits stay small) computes dL/dxi for a head mask xi [layer, head] (Michel et al.'s importance,
one forward + one backward): (a) through transformers' SDPA attention with the mask applied to o_proj's input,
(b) through interp (`HeadMask`, Triton forward + backward kernels). Printed: time and peak GPU memory of each, and
the relative difference of the two gradients.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from long_context_gpu import build  # noqa: E402


def timed(fn, repeats: int = 3):
    fn()  # warm-up (autotuning, compilation)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return out, sorted(times)[len(times) // 2], torch.cuda.max_memory_allocated() / 2**30


def loss_of(logits, target):
    return -torch.log_softmax(logits[0, -1].float(), -1)[target]


def sdpa_mask_grad(hf, ids, target, L, H, d):
    hf.set_attn_implementation("sdpa")
    xi = torch.ones(L, H, device="cuda", requires_grad=True)
    handles = []
    for l, layer in enumerate(hf.model.layers):
        def pre(mod, args, l=l):
            x = args[0]
            b, s, _ = x.shape
            return ((x.view(b, s, H, d) * xi[l].to(x.dtype)[None, None, :, None]).view(b, s, H * d),)
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(pre))
    try:
        loss = loss_of(hf(ids).logits, target)
        (g,) = torch.autograd.grad(loss, xi)
    finally:
        for h in handles:
            h.remove()
    return g


def interp_mask_grad(model, ids, target, L, H):
    import interp

    xi = torch.ones(L, H, device="cuda", requires_grad=True)
    loss = loss_of(model.run_with_hooks(ids, interventions=[interp.HeadMask(xi)]), target)
    (g,) = torch.autograd.grad(loss, xi)
    return g


def main():
    import interp

    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1024)
    args = p.parse_args()
    hf = build(args.layers, args.vocab).requires_grad_(False)
    model = interp.load(hf)  # routes attention through interp; the SDPA run switches it back and forth
    L, H, d = args.layers, 32, 128
    print(f"{'tokens':>7} | {'SDPA s':>7} {'GiB':>6} | {'interp s':>8} {'GiB':>6} | ratio | grad rel. diff")
    for n in args.tokens:
        g = torch.Generator(device="cuda").manual_seed(n)
        ids = torch.randint(0, args.vocab, (1, n), device="cuda", generator=g)
        target = int(ids[0, n // 2])
        ref, t_ref, m_ref = timed(lambda: sdpa_mask_grad(hf, ids, target, L, H, d))
        hf.set_attn_implementation("interp")
        ours, t_ours, m_ours = timed(lambda: interp_mask_grad(model, ids, target, L, H))
        rel = float((ours - ref).norm() / ref.norm())
        print(f"{n:>7} | {t_ref:7.3f} {m_ref:6.2f} | {t_ours:8.3f} {m_ours:6.2f} | {t_ours / t_ref:5.2f} | {rel:.2e}",
              flush=True)


if __name__ == "__main__":
    main()
