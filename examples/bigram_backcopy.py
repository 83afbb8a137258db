"""The Bigram-Backcopy toy (Guo et al. 2024): an attention sink on BOS, a head active on trigger tokens and dormant
elsewhere, a drained BOS value; beside the same architecture untrained (the control).

    python examples/bigram_backcopy.py                       # the shipped checkpoint
    python examples/bigram_backcopy.py --weights W.safetensors --spec W.json   # a variant (e.g. from the GPU sweep)

Writes out/bigram_backcopy.html (the head's pattern on one sequence + the tables).
"""

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

import interp
from interp import analyses as A
from interp.plots import attention_pattern, write_report
from interp.toy.model import build_toy_model, load_checkpoint
from interp.toy.registry import CKPT_DIR
from interp.toy.tasks import make_task


def evidence(m, task, toks) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(active/dormant per head and query domain, per-layer summary)."""
    trig = task.is_trigger(toks)
    other = ~trig
    other[:, :2] = False  # BOS and the first token (whose only other key is BOS)
    table = A.dormant_by_query(m, toks, {"trigger": trig, "other": other})
    n_layers = m.cfg.n_layers
    logits, cache = m.run_with_cache(toks, names=[f"blocks.{l}.hook_resid_post" for l in range(n_layers)],
                                     pattern=True)
    pred = logits[:, :-1].argmax(-1)
    copy = trig[:, :-1].clone()
    copy[:, 0] = False
    drains = A.value_drains(m, toks).mean(1)  # [layer], KV heads averaged
    rows = []
    for l in range(n_layers):
        p = cache[f"blocks.{l}.attn.hook_pattern"].mean(1)  # heads averaged -> [batch, query, key]
        resid = cache[f"blocks.{l}.hook_resid_post"].norm(dim=-1)  # [batch, pos]
        rows.append({"layer": l,
                     "prev_token_attention_on_triggers": float(torch.diagonal(p, -1, 1, 2)[trig[:, 1:]].mean()),
                     "value_drain_bos": float(drains[l]),
                     "bos_residual_norm_over_median": float((resid[:, 0] / resid[:, 1:].median(1).values).mean())})
    summary = pd.DataFrame(rows)
    summary["copy_accuracy_after_triggers"] = float((pred == toks[:, 1:])[copy].float().mean())
    summary["sink_metric_0.3"] = A.sink_metric(A.first_token_alpha(m, toks))
    return table, summary


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weights", type=Path, default=CKPT_DIR / "toy-bigram-backcopy.safetensors")
    p.add_argument("--spec", type=Path, default=CKPT_DIR / "toy-bigram-backcopy.json")
    p.add_argument("--sequences", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("out/bigram_backcopy.html"))
    args = p.parse_args()
    spec = json.loads(args.spec.read_text())
    task = make_task(spec["task"], spec.get("task_args"))
    toks, _ = task.sample(args.sequences, torch.Generator().manual_seed(5))
    sections = []
    for name, model in {"trained": load_checkpoint(args.weights, args.spec),
                        "untrained (control)": build_toy_model(spec).eval()}.items():
        m = interp.load(model)
        table, summary = evidence(m, task, toks)
        print(f"== {name}\n{table.round(3).to_string(index=False)}\n{summary.round(3).to_string(index=False)}")
        sections += [(f"{name}: per query domain", table.round(3)), (f"{name}: per layer", summary.round(3))]
        if name == "trained":
            _, cache = m.run_with_cache(toks[:1, :48], pattern=True, names=[])
            labels = list(task.decode(toks[0, :48])) if task.source == "prose" else [str(int(t)) for t in toks[0, :48]]
            sections.insert(0, ("the head on one sequence (^ = BOS; e, t, a are triggers)",
                                attention_pattern(cache["blocks.0.attn.hook_pattern"][0], labels, 0, 0)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, "Bigram-Backcopy toy: sink, active/dormant head, value drain", sections)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
