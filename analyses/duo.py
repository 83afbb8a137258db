"""DuoAttention-style gates: one alpha per KV head mixing full and streaming attention, trained on synthetic
passkey (needle) prompts so the final hidden states match the unmodified model's (MSE), with an L1 push towards
streaming; model weights stay frozen. Binarise at 0.5 (or keep a target share of full heads) -> a KV-cache config.
Runs on CPU for the bundled models (short prompts); on a GPU when lent.
"""

from __future__ import annotations

import numbers
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
                sink_tokens: int = 4, window: int = 16, seed: int = 0, log=None, checkpoint=None) -> DuoResult:
    """Train one gate per KV head for `steps` Adam steps, one passkey trial of `context` tokens a step; `log(msg)`
    hears the loss every 10 steps. `checkpoint=PATH` (a file path): the gates, Adam's state, the trial generator's
    state and the losses are saved there after every step, and a rerun with the same model, dtype and options
    continues after the last saved step, giving the gates of an uninterrupted run; a larger `steps` continues a
    finished run further. A file of other options, one holding more steps than asked, or a damaged one is refused
    (a ValueError naming it)."""
    from .circuits import checkpoints

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
    path = None if checkpoint is None else checkpoints.checkpoint_path(checkpoint, where)
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
    losses, first_step = [], 0
    if path is not None:
        settings = {"format": 1, **checkpoints.model_settings(model), "gates": [L, kvh], "context": context, "l1": l1,
                    "lr": lr, "sink_tokens": sink_tokens, "window": window, "seed": seed}
        saved = checkpoints.load(path, settings, "a gate-training")
        if saved is not None:
            first_step, losses = _resume(saved, path, logits, opt, rng, steps)
            if log:
                log(f"resume: {path} after step {first_step - 1}")
    try:
        for step in range(first_step, steps):
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
            if path is not None:
                checkpoints.save(path, settings, {"step": step + 1, "logits": logits.detach().clone(),
                                                  "adam": opt.state_dict(), "rng": rng.get_state(),
                                                  "losses": list(losses)})
            if log and (step % 10 == 0 or step == steps - 1):
                log(f"step {step}: relative mse {mse.item():.4f}, mean alpha {reg.item():.3f}")
    finally:
        for p, f in zip(params, frozen):
            p.requires_grad_(f)
    return DuoResult(alpha=torch.sigmoid(logits.detach()), losses=losses)


def _resume(saved, path, logits: torch.Tensor, opt, rng: torch.Generator, steps: int) -> tuple[int, list]:
    """Load a saved gate training into `logits`, `opt` and `rng`; (the next step, the losses so far). A state that
    is malformed, or holds more steps than `steps`, is refused with a ValueError naming the file."""
    from .circuits import checkpoints

    kind = "a gate-training"
    saved = checkpoints.state_fields(saved, path, kind, ("step", "logits", "adam", "rng", "losses"))
    done, saved_logits, losses = saved["step"], saved["logits"], saved["losses"]
    if isinstance(done, bool) or not isinstance(done, numbers.Integral) or done < 1:
        raise checkpoints.invalid(path, kind, f"'step' must be an int >= 1, got {done!r:.40}")
    if (not isinstance(saved_logits, torch.Tensor) or saved_logits.shape != logits.shape
            or not bool(torch.isfinite(saved_logits).all())):
        raise checkpoints.invalid(path, kind, f"'logits' must be a finite tensor {list(logits.shape)}")
    if (not isinstance(losses, list) or len(losses) != done
            or not all(isinstance(x, (tuple, list)) and len(x) == 2 for x in losses)):
        raise checkpoints.invalid(path, kind, f"'losses' must be a list of {done} (mse, l1) pairs")
    if done > steps:
        raise checkpoints.unusable(path, f"checkpoint {path} holds {done} training steps, more than steps={steps}; "
                                         f"pass steps >= {done}, or delete it or pass another path")
    try:
        opt.load_state_dict(saved["adam"])
        rng.set_state(saved["rng"])
    except Exception as e:  # noqa: BLE001 - any malformed optimiser or generator state gets the same message
        raise checkpoints.invalid(path, kind, f"its Adam or generator state does not load ({type(e).__name__}: "
                                              f"{str(e)[:120]})") from None
    with torch.no_grad():
        logits.copy_(saved_logits)
    return int(done), [tuple(x) for x in losses]
