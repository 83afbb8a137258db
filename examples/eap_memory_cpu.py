"""Peak CPU memory of EAP over every edge: the direct computation (`attribution.eap_reference`: all deltas and all
input gradients materialised) vs the memory-lean `attribution.eap` (compact deltas, gradients contracted as they
are produced), on a random Llama, per token length.

    OMP_NUM_THREADS=1 python examples/eap_memory_cpu.py --tokens 256 512 1024 2048

Each (method, length) runs in a fresh subprocess (MALLOC_MMAP_THRESHOLD_=1 MiB, so freed large tensors go back to
the OS); printed: peak resident memory above the resident memory after loading and a warm-up run (ru_maxrss minus
the RSS before the call), wall time, and the max |lean - reference| / max |reference| (float32). Method "grads"
is the floor both share: the clean forward + backward and the per-head pull-backs, nothing contracted.
Attention runs through interp's pure-PyTorch reference backend on CPU, whose autograd keeps the [heads, n, n]
probabilities of every layer: that part is the same for both methods and grows as n^2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def build(layers: int, d_model: int, heads: int, kv_heads: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=d_model // heads,
                      max_position_embeddings=8192)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args) -> None:
    from interp import HookedModel
    from interp.analyses.circuits import attribution as A
    from interp.analyses.circuits.graph import Graph
    from interp.head_inputs import input_gradients

    hf = build(args.layers, args.d_model, args.heads, args.kv_heads).requires_grad_(False)
    model = HookedModel(hf, name="mem", backend="reference")
    graph = Graph.from_model(model, mlp=True)
    g = torch.Generator().manual_seed(args.n)
    clean = torch.randint(0, 128, (1, args.n), generator=g)
    corrupt = clean.clone()
    corrupt[:, : args.n // 2] = torch.randint(0, 128, (1, args.n // 2), generator=g)

    def metric(lg):
        return lg[0, -1, 3] - lg[0, -1, 7]

    def grads_only(model, graph, clean, metric, corrupt):  # the forward + backward that both methods need
        input_gradients(model, clean, metric, sink=lambda *a: None,
                        head_chunk=A.default_head_chunk(*clean.shape, model.cfg.d_model))
        return A._scores_init(graph)

    fn = {"reference": A.eap_reference, "lean": lambda *a: A.eap(*a, pos_chunk=args.pos_chunk), "grads": grads_only}
    fn[args.method](model, graph, clean[:, :16], metric, corrupt[:, :16])  # warm-up
    base = rss()
    t = time.perf_counter()
    scores = fn[args.method](model, graph, clean, metric, corrupt)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    torch.save(scores, args.out)
    print(json.dumps({"peak_above_base": peak - base, "base": base, "seconds": dt, "edges": graph.n_edges,
                      "n_up": graph.n_up, "n_slots": graph.n_slots}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[256, 512, 1024, 2048])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--methods", nargs="+", default=["reference", "lean"], choices=["reference", "lean", "grads"],
                   help="grads: only the gradient forward + backward (no deltas, no contraction), the floor")
    p.add_argument("--pos-chunk", type=int, default=None, help="lean: positions per delta chunk (default: auto)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", default="lean", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    import tempfile

    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(2**20))
    shape = [] if args.pos_chunk is None else ["--pos-chunk", str(args.pos_chunk)]
    shape += ["--layers", str(args.layers), "--d-model", str(args.d_model), "--heads", str(args.heads),
             "--kv-heads", str(args.kv_heads)]
    print(f"random Llama: {args.layers} layers, d_model {args.d_model}, {args.heads} heads ({args.kv_heads} KV), "
          f"float32, CPU, lean pos_chunk {args.pos_chunk or 'auto'}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"{'tokens':>7} | {'method':>9} | {'peak MiB':>9} | {'time s':>7} | max rel diff vs reference", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.tokens:
            ref = None
            for m in args.methods:
                out = os.path.join(tmp, f"{m}{n}.pt")
                r = subprocess.run([sys.executable, __file__, "--child", "--method", m, "--n", str(n), "--out", out]
                                   + shape, capture_output=True, text=True, env=env)
                if r.returncode:
                    print(r.stderr[-2000:], file=sys.stderr)
                    return 1
                info = json.loads(r.stdout.strip().splitlines()[-1])
                s = torch.load(out)
                diff = "-"
                if m == "grads":
                    pass
                elif ref is None:
                    ref = s
                else:
                    ok = torch.isfinite(ref)
                    diff = f"{float((s[ok] - ref[ok]).abs().max() / ref[ok].abs().max()):.2e}"
                print(f"{n:>7} | {m:>9} | {info['peak_above_base'] / 2**20:9.1f} | {info['seconds']:7.2f} | {diff}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
