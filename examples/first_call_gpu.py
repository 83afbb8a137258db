"""How long the first gradient call takes in a fresh process: EAP on short prompts, compile and autotune included.

    TRITON_CACHE_DIR=$(mktemp -d) python examples/first_call_gpu.py --lengths 16 20 24
    TRITON_CACHE_DIR=$(mktemp -d) INTERP_AUTOTUNE=0 python examples/first_call_gpu.py --lengths 16 20 24
    python examples/first_call_gpu.py --smoke      # CPU, tiny model, seconds (what the test runs)

Model: a randomly initialised LlamaForCausalLM of SmolLM2-135M's shape (30 layers, 9 heads, 3 KV heads, head dim
64, d_model 576; `long_context_gpu.build`, bf16 on the GPU), wrapped by `interp.load`. For each prompt length in
turn (a new length is a new shape key for the kernels, as IOI prompts bucketed by length are), EAP over every edge
of the GQA-native graph (`analyses.circuits.eap`: a corrupted forward, a clean forward, a clean forward + backward)
on a batch of random prompts, timed twice: the first call pays for compiling (and, above the tuning cap, autotuning)
the forward, statistics and backward kernels of that shape; the second is the steady state. An empty
TRITON_CACHE_DIR makes the first length's call a cold start. Printed: one line per (length, call), and the first /
second ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 20, 24])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--smoke", action="store_true", help="CPU, 2 layers, float32 (a check of the script)")
    args = p.parse_args(argv)
    for name in ("lengths", "batch", "layers", "vocab"):
        v = getattr(args, name)
        if any(x < 2 for x in (v if isinstance(v, list) else [v])):
            p.error(f"--{name} must be at least 2, got {v}")
    import interp
    from interp.analyses import circuits as C
    from long_context_gpu import build

    cuda = not args.smoke
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke on CPU", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    hf = build("smollm2", 2 if args.smoke else args.layers, args.vocab, "cuda" if cuda else "cpu")
    hf.requires_grad_(False)
    model = interp.load(hf)
    c = model.cfg
    graph = C.Graph.from_config(c.n_layers, c.n_heads, c.n_kv_heads, mlp=True, model_name="first_call")
    dev = torch.device("cuda" if cuda else "cpu")
    print(f"model: {c.n_layers} layers, {c.n_heads} heads ({c.n_kv_heads} KV), head dim {c.d_head}, {model.dtype}, "
          f"{torch.cuda.get_device_name() if cuda else 'CPU'}; graph {graph.n_edges} edges; built in "
          f"{time.perf_counter() - t0:.1f} s; INTERP_AUTOTUNE={os.environ.get('INTERP_AUTOTUNE', '(unset)')}, "
          f"TRITON_CACHE_DIR={os.environ.get('TRITON_CACHE_DIR', '(default)')}", flush=True)
    print(f"{'tokens':>6} | {'call':>4} | {'seconds':>8}", flush=True)
    total = {1: 0.0, 2: 0.0}
    for n in args.lengths:
        g = torch.Generator().manual_seed(n)
        ids = torch.randint(0, args.vocab, (args.batch, n), generator=g).to(dev)
        corrupt = ids.clone()
        corrupt[:, : n // 2] = torch.randint(0, args.vocab, (args.batch, n // 2), generator=g).to(dev)

        def metric(logits):
            return (logits[:, -1, 1].float() - logits[:, -1, 2].float()).mean()

        first = None
        for call in (1, 2):
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            scores = C.eap(model, graph, ids, metric, corrupt=corrupt)
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
            total[call] += dt
            if not torch.isfinite(scores).any():  # (NaN marks the pairs that are not edges)
                print(f"no finite score at {n} tokens", file=sys.stderr)
                return 1
            if first is not None and not torch.allclose(scores, first, rtol=1e-3, atol=1e-5, equal_nan=True):
                print(f"the second call's scores differ from the first's at {n} tokens", file=sys.stderr)
                return 1
            first = scores
            print(f"{n:>6} | {call:>4} | {dt:8.3f}", flush=True)
    print(f"all lengths: first calls {total[1]:.1f} s, second calls {total[2]:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
