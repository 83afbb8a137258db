"""DuoAttention-style gates: one alpha per KV head mixing full and streaming attention, trained on synthetic
passkey (needle) prompts so the final hidden states match the unmodified model's (MSE), with an L1 push towards
streaming; model weights stay frozen. Binarise at 0.5 (or keep a target share of full heads) -> a KV-cache config.
Runs on CPU for the bundled models (short prompts); on a GPU when lent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp import GatedStreaming
from interp.validate import int_arg, model_arg, real_arg

from .retrieval import make_trials


@dataclass
class DuoResult:
    alpha: torch.Tensor  # [layer, kv_head] in [0, 1]
    losses: list  # per step: (mse, l1)

    def head_scores(self, n_heads: int) -> torch.Tensor:
        """alpha expanded to [layer, head] (every query head of a KV group shares its gate)."""
        n_heads = int_arg("n_heads", n_heads, minimum=1, where="DuoResult.head_scores")
        if n_heads % self.alpha.shape[1]:
            raise ValueError(f"DuoResult.head_scores: n_heads={n_heads} is not a multiple of the "
                             f"{self.alpha.shape[1]} KV heads")
        return self.alpha.repeat_interleave(n_heads // self.alpha.shape[1], dim=1)


def _final_hidden(model, ids, interventions=(), grad=False):
    captured = {}

    def grab(t, hook):
        captured["h"] = t

    model.run_with_hooks(ids, fwd_hooks=[("ln_final.hook_normalized", grab)], interventions=interventions, grad=grad)
    return captured["h"]


L1_MAX = 1e6  # the L1 term times l1 must stay finite next to the relative MSE (~1)


def train_gates(model, steps: int = 30, context: int = 256, l1: float = 0.05, lr: float = 0.1,
                sink_tokens: int = 4, window: int = 16, seed: int = 0, log=None) -> DuoResult:
    where = "train_gates"
    model_arg(model, where)
    steps = int_arg("steps", steps, minimum=1, where=where)
    context = int_arg("context", context, minimum=1, maximum=model.cfg.n_ctx, where=where)
    l1 = real_arg("l1", l1, low=0, high=L1_MAX, where=where)
    lr = real_arg("lr", lr, low=0, low_open=True, where=where)
    sink_tokens = int_arg("sink_tokens", sink_tokens, minimum=0, where=where)
    window = int_arg("window", window, minimum=1, where=where)
    seed = int_arg("seed", seed, minimum=0, maximum=2**63 - 1 - steps, where=where)
    if log is not None and not callable(log):
        raise TypeError(f"{where}: log must be None or a callable taking one str (e.g. print), got "
                        f"{type(log).__name__} {log!r:.60}")
    rng = torch.Generator().manual_seed(seed)

    def trial_at(step: int):
        depth = float(torch.rand(1, generator=rng))
        return make_trials(model, contexts=(context,), depths=(depth,), seed=seed + step)[0]

    try:  # the trial builder knows the shortest prompt a needle fits in: step 0's trial, before any training
        first = trial_at(0)
    except ValueError as e:
        raise ValueError(f"{where}: context={context} is too short for a passkey trial ({e})") from None
    L, kvh = model.cfg.n_layers, model.cfg.n_kv_heads
    params = [p for p in model.model.parameters()]
    frozen = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    logits = torch.full((L, kvh), 3.0, requires_grad=True)  # alpha ~ 0.95: start from full attention
    opt = torch.optim.Adam([logits], lr=lr)
    losses = []
    try:
        for step in range(steps):
            trial = first if step == 0 else trial_at(step)
            with torch.no_grad():
                target = _final_hidden(model, trial.input_ids).float()
            ivs = [GatedStreaming(layer=l, gate_logits=logits[l], sink_tokens=sink_tokens, window=window)
                   for l in range(L)]
            pred = _final_hidden(model, trial.input_ids, ivs, grad=True).float()
            mse = ((pred - target) ** 2).mean() / target.pow(2).mean().clamp_min(1e-12)
            reg = torch.sigmoid(logits).mean()
            loss = mse + l1 * reg
            if not bool(torch.isfinite(loss)):
                raise ValueError(f"{where}: the loss is {loss.item()} at step {step} (relative mse {mse.item()}, "
                                 f"l1={l1}, lr={lr}): training diverged; use a smaller l1 or lr")
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append((mse.item(), reg.item()))
            if log and (step % 10 == 0 or step == steps - 1):
                log(f"step {step}: relative mse {mse.item():.4f}, mean alpha {reg.item():.3f}")
    finally:
        for p, f in zip(params, frozen):
            p.requires_grad_(f)
    return DuoResult(alpha=torch.sigmoid(logits.detach()), losses=losses)
