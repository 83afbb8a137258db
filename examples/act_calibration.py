"""ACT-style calibration on SmolLM2-135M: greedy head choice on the first half of the prose corpus, effect on the
second half (held out) and on the code corpus.

    python examples/act_calibration.py --beta 0.6
"""

import argparse

import interp
from interp import analyses as A
from interp.analyses.calibration import act_calibrate


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--beta", type=float, default=0.6)
    p.add_argument("--max-heads", type=int, default=8)
    args = p.parse_args()
    model = interp.load(args.model)
    prose = A.text_tokens(model, "prose")
    half = prose.shape[1] // 2
    calib, held = prose[:, :half], prose[:, half:]
    res = act_calibrate(model, calib, held, beta=args.beta, max_heads=args.max_heads, log=print)
    print(res)
    code = A.text_tokens(model, "code")
    from interp.analyses.calibration import _interventions, _loss, hidden_sink_positions

    sinks = hidden_sink_positions(model, code)
    print(f"code (another domain): loss {_loss(model, code):.4f} -> "
          f"{_loss(model, code, _interventions(res.heads, sinks, args.beta)):.4f}")


if __name__ == "__main__":
    main()
