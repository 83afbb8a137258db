"""Head importance on a real model: every method on a task, their agreement, pruning curves on prose and code.

    python examples/importance.py --model smollm2-135m --task ioi --out out/importance
    python examples/importance.py --model gemma3-270m --task ioi --out out/importance

Writes DIR/<model>/importance.csv (model, layer, head, method, score), pruning.csv, agreement.csv and report.html;
prints the top heads per method, the agreement table, how many heads can go for a 5 % loss increase (ordered by
mask gradient on the language-modelling task, against a random order), and the time of each step.
"""

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

import interp
from interp.analyses import importance as I
from interp.analyses import pruning as P
from interp.analyses import tasks as T
from interp.importance_report import write_importance_report


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="ioi")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--lm-n", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--methods", nargs="+", default=list(I.METHODS))
    p.add_argument("--step", type=float, default=0.1, help="pruning step (fraction of the heads)")
    p.add_argument("--orders", type=int, default=2, help="random orders averaged for the control curve")
    p.add_argument("--out", default="out/importance")
    args = p.parse_args()
    torch.manual_seed(0)
    model = interp.load(args.model)
    out = Path(args.out) / model.name
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    table = I.head_importance(model, args.task, methods=args.methods, n=args.n, progress=print)
    print(f"importance on {args.task}: {time.perf_counter() - t0:.1f} s")
    table.to_csv(out / "importance.csv", index=False)
    for method, sub in table.groupby("method", sort=False):
        best = sub.sort_values("score", ascending=False).head(6)
        print(f"  top {method}: " + ", ".join(f"L{r.layer}H{r.head} ({r.score:.3g})" for r in best.itertuples()))
    if table["method"].nunique() > 1:  # agreement compares methods: one method has nothing to compare
        agreement = P.method_agreement(table)
        print(agreement.round(3).to_string(index=False))
        agreement.to_csv(out / "agreement.csv", index=False)

    curves, rows = {}, []
    for source in ("prose", "code"):
        lm = T.get_task("lm", source=source, seq_len=args.seq_len)
        batch = lm.make(model, n=args.lm_n, seed=1).to(model.device)
        t0 = time.perf_counter()
        grad = I.mask_gradient_scores(model, lm, batch)
        t_grad = time.perf_counter() - t0
        fr = [i * args.step for i in range(int(round(1 / args.step)))]
        by = {"mask_gradient order": P.pruning_curve(model, lm, batch, grad, fractions=fr),
              f"random order (mean of {args.orders})": P.random_pruning_curve(model, lm, batch, fractions=fr,
                                                                              n_orders=args.orders)}
        curves[f"lm ({source})"] = by
        for label, df in by.items():
            k = P.heads_removable(df, 0.05)
            n_heads = model.cfg.n_layers * model.cfg.n_heads
            print(f"  {source}: {label}: {k} of {n_heads} heads removable within +5 % loss "
                  f"(mask gradients {t_grad:.1f} s for {args.lm_n} x {args.seq_len} tokens)")
            rows.append(df.assign(source=source, order=label))
    pd.concat(rows).to_csv(out / "pruning.csv", index=False)
    write_importance_report(table, out / "report.html", curves={model.name: curves},
                            agreement={model.name: agreement})
    print(f"wrote {out / 'report.html'}")


if __name__ == "__main__":
    main()
