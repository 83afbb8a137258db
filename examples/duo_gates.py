"""DuoAttention-style gates trained on needle prompts (weights frozen), binarised into a KV-cache config, then
needle recall and KV memory with that config.

    python examples/duo_gates.py --model smollm2-135m --steps 30 --context 256
"""

import argparse
import time

import interp
from interp import kvconfig
from interp.analyses import duo
from interp.analyses import retrieval as R


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--l1", type=float, default=0.05)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--sink-tokens", type=int, default=4)
    p.add_argument("--eval-context", type=int, default=512)
    p.add_argument("--checkpoint", default=None, help="save the training after every step; a rerun continues it")
    args = p.parse_args()
    t = time.time()
    m = interp.load(args.model)
    res = duo.train_gates(m, steps=args.steps, context=args.context, l1=args.l1, window=args.window,
                          sink_tokens=args.sink_tokens, log=print,
                          checkpoint=args.checkpoint)
    full = (res.alpha >= 0.5)
    print(f"{int(full.sum())} of {full.numel()} KV heads keep full attention (alpha >= 0.5); per layer: "
          + " ".join(str(int(x)) for x in full.sum(1).tolist()))
    cfg = kvconfig.config_from_scores(m, res.head_scores(m.cfg.n_heads), threshold=0.5,
                                      sink_tokens=args.sink_tokens, window=args.window)
    trials = R.make_trials(m, contexts=(args.eval_context,), depths=(0.2, 0.5, 0.8), seed=123)
    base = R.needle_accuracy(m, trials)
    gated = R.needle_accuracy(m, trials, kvconfig.interventions(cfg, m))
    mem = kvconfig.kv_memory(cfg, args.eval_context)
    print(f"at {args.eval_context} tokens: KV saved {100 * mem['saved_fraction']:.1f} %; needle recall "
          f"{base['recall']:.2f} -> {gated['recall']:.2f}, answer loss {base['answer_loss']:.3f} -> "
          f"{gated['answer_loss']:.3f}   ({time.time() - t:.0f}s)")


if __name__ == "__main__":
    main()
