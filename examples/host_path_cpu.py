"""Host (Python) time of the statistics path, without a GPU: the kernels are replaced by stubs that only allocate
their outputs, so what is timed is interp's own Python per call (issue 18's short-input overhead).

    TRITON_INTERPRET=1 .venv/bin/python examples/host_path_cpu.py [--reps 2000]

Prints (1) one `attention_with_stats` call (32 heads x 8 tokens x 16, fp16) for stats="none" / "query" / "all", and
(2) entering `model.hooks(...)` with every statistic's hook point on 30 layers (what `run_with_cache(stats="all")`
sets up per run). Median of 5 batches of `reps` calls. Absolute times are this machine's; compare versions on one
machine (e.g. at two commits).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402


def per_call_us(fn, reps: int) -> float:
    from host_split_gpu import host_us  # beside this script

    return host_us(fn, reps, sync=None)


def main(argv=None):
    import interp
    from interp.hooks import HOOK_OF_STAT
    from interp.input_checks import stat_selection
    from interp.kernels import api, launcher

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2000)
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error("--reps must be >= 1")

    def fake_sdpa(q, k, v, spec, need_lse=True):
        b, h, lq, d = spec.batch, spec.heads, spec.q_len, spec.head_dim
        return torch.empty(b, h, lq, d, dtype=q.dtype), (torch.empty(b, h, lq) if need_lse else None)

    api.pick_backend = lambda backend, dev: "triton"  # the GPU's path: SDPA's output + lse, then the stats kernel
    launcher.eligible = lambda q, k, v, spec: True
    launcher.sdpa_out_lse = fake_sdpa
    launcher._launch_stats = lambda *a, **k: None
    q = torch.randn(1, 32, 8, 16, dtype=torch.float16)
    k = torch.randn(1, 8, 8, 16, dtype=torch.float16)
    for s in ("none", "query", "all"):
        us = per_call_us(lambda: api.attention_with_stats(q, k, k, stats=s), args.reps)
        print(f"attention_with_stats(stats={s!r}), kernels stubbed: {us:6.1f} us per call", flush=True)

    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=256, num_hidden_layers=30, hidden_size=64, intermediate_size=128,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    torch.manual_seed(0)
    model = interp.load(LlamaForCausalLM(cfg).eval())
    names = [f"blocks.{l}.attn.{HOOK_OF_STAT[s]}" for l in range(30) for s in stat_selection("all", None)]
    hooks = [(n, lambda t, hook: None) for n in names]

    def enter():
        with model.hooks(fwd_hooks=hooks):
            pass

    us = per_call_us(enter, max(1, args.reps // 20))
    print(f"model.hooks(...) with {len(hooks)} statistic hook points (30 layers): {us / 1e3:6.2f} ms per run")


if __name__ == "__main__":
    main()
