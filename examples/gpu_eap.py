"""EAP over every edge at long context on one GPU: interp's fused Triton attention vs the same EAP with attention by
torch SDPA and by eager attention.

    python examples/gpu_eap.py --tokens 8192 16384 32768 --layers 4

    python examples/gpu_eap.py --smoke        # CPU, tiny shapes, seconds (what the test runs)

Model: a randomly initialised Llama-3-8B-shaped LlamaForCausalLM (`long_context_gpu.build`: 32 heads, 8 KV heads,
head dim 128, d_model 4096, d_mlp 14336; bf16; vocab 1024 so the logits stay small), `--layers` layers. Metric:
logit[a] - logit[b] at the last position; the corrupted prompt resamples the first half of the tokens.

EAP (Syed et al. 2023) on the GQA-native graph (`analyses.circuits.Graph`: input, heads, MLPs -> q of each head,
k / v of each KV head, MLPs, logits): one corrupted forward (node outputs), one clean forward (node outputs), one
clean forward + backward (gradients at every downstream input, pulled back per head), one contraction.

- interp : `C.ablated_outputs` + `C.eap` through interp's hooks and its fused Triton forward + backward kernels.
- sdpa   : the same computation written with plain PyTorch module hooks on the transformers model
           (`attn_implementation="sdpa"`): node outputs from o_proj's input and the MLP output, gradients at
           q_proj / k_proj / v_proj outputs and the MLP output pulled back to the residual stream per head
           (`is_grads_batched`), the same contraction.
- eager  : as sdpa, with `attn_implementation="eager"` (materialises [heads, n, n] probabilities).

All three share the memory-lean contraction of `analyses.circuits.attribution` (a fair comparison): node outputs
kept compact (`deltas.NodeDeltas`: per layer the heads' z [batch, pos, head, d_head] and the MLP output, both runs,
expanded to [n_up, batch, pos_chunk, d_model] one position chunk at a time), and each gradient (a chunk of one
layer's q / k / v heads, an MLP, the logits) contracted as soon as it is pulled back, then dropped. `--pos-chunk`,
`--head-chunk` override the automatic chunk sizes (~2^27 elements per delta chunk, ~2^29 per gradient chunk).

Printed: a table of wall time and peak GPU memory per implementation and length (OOM caught and printed as OOM),
and the max difference of each implementation's scores from interp's, relative to interp's largest |score|.

Predicted peak at 32k tokens, 4 layers, bf16 (arithmetic; one d_model vector over the sequence, [32768, 4096] bf16,
is 256 MiB): weights 1.7 GiB; compact outputs of the clean and corrupted runs 2 x (input + 4 x (z + MLP)) = 18
vectors = 4.5 GiB; the clean forward's saved activations for the backward, ~28 vectors per layer (norms in fp32,
q/k/v before and after RoPE, attention out, the four [pos, 14336] MLP tensors) = ~28 GiB; the gradients at every
q/k/v/MLP output, 10 vectors = 2.5 GiB; one pull-back of 4 heads (head_chunk = 2^29 / (32768 x 4096)): grad_outputs
and result [4, 32768, 4096] bf16, 1 GiB each, plus fp32 norm-backward temporaries, ~4-6 GiB; one delta chunk (~2^27
elements, 256 MiB, ~330 positions) and a layer's expanded heads, < 0.5 GiB. Total ~40-45 GiB for interp (and sdpa),
about 4x the same sum at 8k (~11 GiB); the old path needed 55.8 GiB at 8k (dense [133, pos, 4096] deltas and the
ablated / clean stacks, 197 slot gradients at once). Eager materialises [32, n, n] probabilities per layer (64 GiB
at 32k in bf16) and still runs out of memory.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


# ------------------------------------------------------------------ models
def build_smoke(layers: int = 2, vocab: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def build_gpu(layers: int, vocab: int):
    from long_context_gpu import build

    return build("llama3-8b", layers, vocab, "cuda")


# ------------------------------------------------------------------ the same EAP with plain module hooks
def _first(x):
    return x[0] if isinstance(x, tuple) else x


def hf_node_outputs(hf, ids) -> dict:
    """Compact node outputs as `interp.head_inputs.node_outputs(compact=True)`: "input" [batch, pos, d_model],
    ("z", l) [batch, pos, head, d_head] (o_proj's input), ("mlp", l) [batch, pos, d_model]."""
    layers = hf.model.layers
    cfg = hf.config
    H, dh = cfg.num_attention_heads, cfg.head_dim
    rec, handles = {}, []

    def pre0(mod, args, kwargs):
        rec["input"] = (args[0] if args else kwargs["hidden_states"]).detach()

    handles.append(layers[0].register_forward_pre_hook(pre0, with_kwargs=True))
    for l, layer in enumerate(layers):
        def o_pre(mod, args, l=l):
            b, p, _ = args[0].shape
            rec[("z", l)] = args[0].detach().view(b, p, H, dh)

        def mlp_out(mod, args, out, l=l):
            rec[("mlp", l)] = _first(out).detach()

        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(o_pre))
        handles.append(layer.mlp.register_forward_hook(mlp_out))
    try:
        with torch.no_grad():
            hf(input_ids=ids, use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return rec


def hf_head_weights(hf) -> list:
    """W_O per layer, split by head: [head, d_head, d_model]."""
    cfg = hf.config
    H, dh = cfg.num_attention_heads, cfg.head_dim
    return [layer.self_attn.o_proj.weight.detach().view(-1, H, dh).permute(1, 2, 0) for layer in hf.model.layers]


def hf_input_gradients(hf, ids, metric, sink, head_chunk: int) -> None:
    """d metric / d (residual stream read by each downstream input), handed to `sink(key, grad, heads)` chunk by
    chunk exactly as `interp.head_inputs.input_gradients(..., sink=...)` does."""
    layers = hf.model.layers
    cfg = hf.config
    H, KV, dh = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    live, handles = {}, []

    def leaf(mod, args, out):
        return out.detach().requires_grad_(True)

    handles.append(hf.model.embed_tokens.register_forward_hook(leaf))
    for l, layer in enumerate(layers):
        def pre(mod, args, kwargs, l=l):
            live[("resid", l)] = args[0] if args else kwargs["hidden_states"]

        def mid(mod, args, l=l):
            live[("mid", l)] = args[0]

        def grab(name, l=l):
            def hook(mod, args, out):
                live[(name, l)] = _first(out)
            return hook

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.post_attention_layernorm.register_forward_pre_hook(mid))
        for name in ("q", "k", "v"):
            handles.append(getattr(layer.self_attn, f"{name}_proj").register_forward_hook(grab(name)))
        handles.append(layer.mlp.register_forward_hook(grab("mlp")))
    handles.append(layers[-1].register_forward_hook(lambda mod, args, out: live.__setitem__("post", _first(out))))
    try:
        with torch.enable_grad():
            logits = hf(input_ids=ids, use_cache=False).logits
            value = metric(logits)
    finally:
        for h in handles:
            h.remove()
    del logits
    n = len(layers)
    outs = [(x, l) for l in range(n) for x in ("q", "k", "v", "mlp")] + ["post"]
    g_at = dict(zip(outs, torch.autograd.grad(value, [live[o] for o in outs], retain_graph=True)))
    sink(("logits",), g_at.pop("post").detach()[None], [0])
    for l in range(n):
        for x, heads in (("q", H), ("k", KV), ("v", KV)):
            g = g_at.pop((x, l))  # [batch, pos, heads*dh]
            b, p, _ = g.shape
            for h0 in range(0, heads, head_chunk):
                hs = list(range(h0, min(heads, h0 + head_chunk)))
                eye = torch.eye(heads, dtype=g.dtype, device=g.device)[hs][:, None, None, :, None]
                stacked = (g.view(1, b, p, heads, dh) * eye).reshape(len(hs), b, p, heads * dh)
                (gi,) = torch.autograd.grad(live[(x, l)], live[("resid", l)], grad_outputs=stacked,
                                            is_grads_batched=True, retain_graph=True)
                del stacked
                sink((x, l), gi.detach(), hs)
                del gi
            del g
        (gm,) = torch.autograd.grad(live[("mlp", l)], live[("mid", l)], grad_outputs=g_at.pop(("mlp", l)),
                                    retain_graph=l < n - 1)
        sink(("mlp", l), gm.detach()[None], [0])
        del gm


def hf_eap(hf, graph, ids, corrupt, metric, pos_chunk=None, head_chunk=None) -> torch.Tensor:
    """The same EAP as `C.eap`: compact deltas (`deltas.NodeDeltas`) and the same chunked contraction."""
    from interp.analyses.circuits.attribution import _Contractor, _scores_init, default_head_chunk
    from interp.analyses.circuits.deltas import NodeDeltas

    deltas = NodeDeltas(graph, hf_head_weights(hf), hf_node_outputs(hf, ids), hf_node_outputs(hf, corrupt), None)
    scores = _scores_init(graph)
    if head_chunk is None:
        head_chunk = default_head_chunk(*ids.shape, hf.config.hidden_size)
    hf_input_gradients(hf, ids, metric, _Contractor(graph, deltas, scores, 1.0, pos_chunk), head_chunk)
    return scores


def interp_eap(model, graph, ids, corrupt, metric, pos_chunk=None, head_chunk=None) -> torch.Tensor:
    from interp.analyses import circuits as C

    return C.eap(model, graph, ids, metric, corrupt=corrupt, pos_chunk=pos_chunk, head_chunk=head_chunk)


# ------------------------------------------------------------------ timing
def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(fn, cuda: bool, warmup: bool):
    """(scores, seconds, peak GiB) or ("OOM", None, None) / ("ERR: ...", None, None)."""
    result = None
    try:
        if warmup:
            fn()  # autotuning / compilation, once per length
            free()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        result = (out.float().cpu(), dt, peak)
    except Exception as e:  # noqa: BLE001 - one failed cell must not stop the table
        if is_oom(e):
            result = ("OOM", None, None)
        else:
            traceback.print_exc()
            result = (f"ERR: {type(e).__name__}", None, None)
    free()
    return result


def rel_diff(a: torch.Tensor, ref: torch.Tensor) -> float:
    ok = torch.isfinite(ref)
    scale = float(ref[ok].abs().max())
    return float((a[ok] - ref[ok]).abs().max()) / (scale if scale > 0 else 1.0)


def main(argv=None):
    import interp
    from interp.analyses import circuits as C

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[8192, 16384, 32768])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--impls", nargs="+", default=["interp", "sdpa", "eager"], choices=["interp", "sdpa", "eager"])
    p.add_argument("--pos-chunk", type=int, default=None, help="positions per expanded delta chunk (default: auto)")
    p.add_argument("--head-chunk", type=int, default=None, help="heads per gradient pull-back (default: auto)")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, short inputs (seconds)")
    args = p.parse_args(argv)
    if args.smoke:
        hf, tokens, vocab, cuda = build_smoke(vocab=64), [12, 20], 64, False
        args.pos_chunk = args.pos_chunk or 5  # exercise the chunked contraction (positions and heads)
        args.head_chunk = args.head_chunk or 1
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --smoke on CPU", file=sys.stderr)
            return 2
        hf, tokens, vocab, cuda = build_gpu(args.layers, args.vocab), args.tokens, args.vocab, True
    hf.requires_grad_(False)
    model = interp.load(hf)  # routes attention through interp; the sdpa / eager runs switch it back and forth
    c = model.cfg
    graph = C.Graph.from_config(c.n_layers, c.n_heads, c.n_kv_heads, mlp=True, model_name="gpu_eap")
    dev = torch.device("cuda" if cuda else "cpu")
    print(f"model: {c.n_layers} layers, {c.n_heads} heads ({c.n_kv_heads} KV), head dim {c.d_head}, d_model "
          f"{c.d_model}, {model.dtype}, {torch.cuda.get_device_name() if cuda else 'CPU'}; graph: {graph.n_edges} "
          f"edges; torch {torch.__version__}", flush=True)
    failed = False
    print(f"{'tokens':>7} | {'impl':>6} | {'time s':>8} | {'peak GiB':>8} | max rel diff vs interp", flush=True)
    for n in tokens:
        g = torch.Generator(device="cpu").manual_seed(n)
        ids = torch.randint(0, vocab, (1, n), generator=g)
        corrupt = ids.clone()
        corrupt[:, : n // 2] = torch.randint(0, vocab, (1, n // 2), generator=g)
        ids, corrupt = ids.to(dev), corrupt.to(dev)
        a, b = int(ids[0, n // 3]), int(ids[0, n // 4])
        if a == b:
            b = (a + 1) % vocab

        def metric(logits, a=a, b=b):
            return logits[0, -1, a].float() - logits[0, -1, b].float()

        results = {}
        for impl in args.impls:
            if impl == "interp":
                hf.set_attn_implementation("interp")
                fn = (lambda: interp_eap(model, graph, ids, corrupt, metric, args.pos_chunk, args.head_chunk))
            else:
                hf.set_attn_implementation(impl)
                fn = (lambda: hf_eap(hf, graph, ids, corrupt, metric, args.pos_chunk, args.head_chunk))
            results[impl] = measure(fn, cuda, warmup=cuda)
            hf.set_attn_implementation("interp")
        ref = results.get("interp", (None,))[0]
        for impl, (out, dt, peak) in results.items():
            if isinstance(out, str):
                print(f"{n:>7} | {impl:>6} | {out:>8} | {'-':>8} | -", flush=True)
                failed |= out != "OOM"
                continue
            diff = None if impl == "interp" or not isinstance(ref, torch.Tensor) else rel_diff(out, ref)
            print(f"{n:>7} | {impl:>6} | {dt:8.3f} | {peak:8.2f} | {'-' if diff is None else f'{diff:.2e}'}",
                  flush=True)
            if args.smoke and diff is not None and not diff < 1e-3:  # float32 on CPU: the implementations agree
                print(f"smoke check failed: {impl} differs from interp by {diff:.2e}", file=sys.stderr)
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
