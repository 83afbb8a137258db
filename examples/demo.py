"""The main demo: a real model (SmolLM2-135M, from a PyPI package, offline), every head scored, a report written.

    make demo            # or: python examples/demo.py --out out/demo [--model gemma3-270m] [--context 1024]

Prints Sink^0.3 and where the sink heads are, the hidden sinks, the strongest induction / previous-token heads,
and writes out/demo/heads.csv and out/demo/report.html (interactive plotly, works offline).
"""

import argparse
import time
from pathlib import Path

import torch

import interp
from interp import analyses as A
from interp import plots


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--context", type=int, default=1024, help="tokens of natural text for sink/local statistics")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    t0 = time.time()
    model = interp.load(args.model)
    print(f"loaded {model} in {time.time() - t0:.1f}s")

    t = time.time()
    text = A.text_tokens(model, "prose", n_tokens=args.context)
    code = A.text_tokens(model, "code")
    long_scores = A.long_context_scores(model, text)  # sink, local, entropy: kernel statistics, O(n) memory
    alpha_prose = long_scores["sink_score"]
    alpha_code = A.first_token_alpha(model, code)
    sink03 = A.sink_metric(alpha_prose, 0.3)
    print(f"[sinks] Sink^0.3 on {text.shape[1]} tokens of prose: {sink03:.3f} "
          f"({int((alpha_prose > 0.3).sum())} of {alpha_prose.numel()} heads); on code: "
          f"{A.sink_metric(alpha_code, 0.3):.3f}   ({time.time() - t:.1f}s)")
    per_layer = (alpha_prose > 0.3).float().mean(1)
    print("        share of sink heads per layer: " + " ".join(f"{v:.2f}" for v in per_layer.tolist()))
    hs = A.hidden_sinks(model, text[:, : min(512, text.shape[1])])
    if len(hs):
        top = hs.groupby("token").agg(heads=("head", "size"), mean_alpha=("alpha", "mean")) \
            .sort_values("heads", ascending=False).head(8)
        print(f"[hidden sinks] {len(hs)} (layer, head, token) hits with alpha > 0.1; most common tokens:")
        print(top.to_string())
    else:
        print("[hidden sinks] none above alpha 0.1")

    t = time.time()
    pattern_scores = A.head_pattern_scores(model, half=48, n_prompts=4)
    print(f"[patterns] scored in {time.time() - t:.1f}s")
    table = A.head_table({**long_scores, **pattern_scores}, model_name=model.name)
    for col, label in (("induction_score", "induction"), ("previous_token_score", "previous-token")):
        best = table.sort_values(col, ascending=False).head(3)
        print(f"[{label}] top heads: " + ", ".join(f"L{r.layer}H{r.head}={getattr(r, col):.2f}"
                                                   for r in best.itertuples()))
    print("[labels] " + ", ".join(f"{k}: {v}" for k, v in table["label"].value_counts().items()))
    csv = out / "heads.csv"
    figs = [(f"{c} per head", plots.score_grid(table, c)) for c in
            ("sink_score", "induction_score", "previous_token_score", "local_score", "entropy")]
    tokens = [model.tokenizer.decode([t]) for t in text[0, :24].tolist()]
    strongest = table.sort_values("sink_score").iloc[-1]
    layer, head = int(strongest["layer"]), int(strongest["head"])
    _, cache = model.run_with_cache(text[:, :24], pattern=True, layers=[layer])
    figs.append((f"pattern of the strongest sink head (L{layer}H{head}) on the first 24 tokens",
                 plots.attention_pattern(cache[f"blocks.{layer}.attn.hook_pattern"][0, head], tokens, layer, head)))
    alpha_tokens = [model.tokenizer.decode([t]) for t in text[0, :48].tolist()]
    _, c48 = model.run_with_cache(text[:, :48], stats=["key_mean"], layers=[layer])
    figs.append((f"attention each of the first 48 tokens receives in L{layer}H{head} (alpha_k)",
                 plots.sink_bars(c48[f"blocks.{layer}.attn.hook_key_mean"][0, head], alpha_tokens)))
    t = time.time()
    by_ctx = {n: A.long_context_scores(model, A.text_tokens(model, "prose", n_tokens=n)) for n in (128, 256, 512)}
    by_ctx[text.shape[1]] = long_scores
    figs.append(("first-token sink score of every head against context length",
                 plots.scores_vs_context(by_ctx, "sink_score")))
    from interp.analyses import retrieval as R

    trials = R.make_trials(model, contexts=(256, 512), depths=(0.2, 0.5, 0.8))
    retrieval, per_trial = R.retrieval_scores(model, trials)
    table["retrieval_score"] = retrieval.flatten().tolist()
    print(f"[retrieval] {int(per_trial.answered.sum())}/{len(trials)} needles retrieved; "
          f"{int((retrieval >= 0.1).sum())} retrieval heads (score >= 0.1)   ({time.time() - t:.1f}s)")
    figs.append(("needle recall by context length and depth", plots.retrieval_heatmap(per_trial)))
    figs.insert(3, ("retrieval_score per head", plots.score_grid(table, "retrieval_score")))
    figs.insert(0, ("every head's role", plots.role_grid(table)))
    table.to_csv(csv, index=False)
    summary = (f"model: {model}\nSink^0.3 (prose, {text.shape[1]} tokens): {sink03:.3f}\n"
               f"labels: {table['label'].value_counts().to_dict()}")
    report = plots.write_report(out / "report.html", f"interp demo: {model.name}",
                                [("summary", summary)] + figs + [("per-head table", table)])
    print(f"wrote {csv} and {report} in {time.time() - t0:.1f}s total")


if __name__ == "__main__":
    main()
