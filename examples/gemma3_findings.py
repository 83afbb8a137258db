"""Gemma 3 270M: sliding-window layers come out local at long context; the global layers' sinks; and what
happens to the sink without <bos>.

    python examples/gemma3_findings.py --context 2048
"""

import argparse

import torch

import interp
from interp import analyses as A


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--context", type=int, default=2048)
    args = p.parse_args()
    model = interp.load("gemma3-270m")
    windows = model.cfg.layer_windows
    text = A.text_tokens(model, "prose", n_tokens=args.context)  # starts with <bos>
    assert text[0, 0] == model.tokenizer.bos_token_id
    nobos = text[:, 1:]
    with_bos = A.long_context_scores(model, text, sink_tokens=1, local_window=512)
    without = A.long_context_scores(model, nobos, sink_tokens=1, local_window=512)
    patt = A.head_pattern_scores(model, half=48, n_prompts=4)
    print(f"Gemma 3 270M, {text.shape[1]} tokens of prose; local_score = mass on token 0 + the last 512 keys")
    print("layer  window  local(with bos)  sink alpha_1 (bos)  sink alpha_1 (no bos)  induction  prev-token")
    for l in range(model.cfg.n_layers):
        print(f"{l:5d}  {str(windows[l]):6s}  {with_bos['local_score'][l].mean():15.3f}  "
              f"{with_bos['sink_score'][l].mean():18.3f}  {without['sink_score'][l].mean():21.3f}  "
              f"{patt['induction_score'][l].max():9.2f}  {patt['previous_token_score'][l].max():10.2f}")
    glob = [l for l in range(model.cfg.n_layers) if windows[l] is None]
    loc = [l for l in range(model.cfg.n_layers) if windows[l] is not None]
    print(f"sliding-window layers: min local_score {with_bos['local_score'][loc].min():.4f}")
    print(f"Sink^0.3 with <bos>: {A.sink_metric(with_bos['sink_score'], 0.3):.3f}; "
          f"without: {A.sink_metric(without['sink_score'], 0.3):.3f}; "
          f"global layers {glob}: {A.sink_metric(with_bos['sink_score'][glob], 0.3):.3f} with, "
          f"{A.sink_metric(without['sink_score'][glob], 0.3):.3f} without")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
