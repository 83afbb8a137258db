"""ACT-style attention calibration ("Unveiling and Harnessing Hidden Attention Sinks"): in chosen heads, scale the
attention that goes to hidden-sink tokens by beta and give the removed mass back to the other tokens in proportion.
Heads are chosen greedily on a calibration set (keep a head only if it lowers the calibration loss) and the effect
is measured on held-out text. The effect is reported as measured, gain or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interp import ScaleAttention
from interp.validate import int_arg, model_arg, real_arg, tokens_arg

from .sinks import hidden_sinks


def _prompt_arg(model, tokens, name: str, where: str) -> torch.Tensor:
    """An integer tensor of token ids [pos] or [1, pos] -> [1, pos]."""
    tokens_arg(tokens, model, name=name, where=where, tensor_only=True)
    if tokens.dim() == 1:
        tokens = tokens[None]
    if tokens.shape[0] != 1:
        raise ValueError(f"{where}: {name} must be one prompt, [pos] or [1, pos], got shape {tuple(tokens.shape)}")
    if tokens.shape[1] < 2:
        raise ValueError(f"{where}: {name} needs at least 2 tokens (the loss predicts the next one)")
    return tokens


def _loss(model, tokens: torch.Tensor, interventions=()) -> float:
    logits = model.run_with_hooks(tokens, interventions=interventions)
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    return -logp.gather(-1, tokens[:, 1:, None].to(logp.device)).mean().item()


def _sink_map(model, tokens: torch.Tensor, threshold: float, min_queries: int) -> dict:
    """(layer, head) -> (positions of hidden sinks, strongest alpha), for prompt 0 (one capture)."""
    table = hidden_sinks(model, tokens[:1], threshold=threshold, min_queries=min_queries)
    return {(int(l), int(h)): (sorted(g["position"].tolist()), float(g["alpha"].max()))
            for (l, h), g in table.groupby(["layer", "head"])}


def hidden_sink_positions(model, tokens: torch.Tensor, threshold: float = 0.1,
                          min_queries: int = 16) -> dict[tuple[int, int], list[int]]:
    """(layer, head) -> non-initial positions whose alpha_k exceeds threshold (prompt 0)."""
    model_arg(model, "hidden_sink_positions")  # hidden_sinks checks the rest
    return {k: pos for k, (pos, _) in _sink_map(model, tokens, threshold, min_queries).items()}


def _interventions(heads, sinks, beta) -> list:
    return [ScaleAttention(layer=l, keys=sinks[(l, h)], factor=beta, heads=[h]) for (l, h) in heads
            if (l, h) in sinks]


@dataclass
class CalibrationResult:
    beta: float
    heads: list = field(default_factory=list)  # chosen (layer, head)
    calib_loss_before: float = float("nan")
    calib_loss_after: float = float("nan")
    heldout_loss_before: float = float("nan")
    heldout_loss_after: float = float("nan")
    candidates: int = 0

    def __str__(self) -> str:
        return (f"ACT calibration (beta={self.beta}): {len(self.heads)} of {self.candidates} candidate heads chosen "
                f"{self.heads}; calibration loss {self.calib_loss_before:.4f} -> {self.calib_loss_after:.4f}; "
                f"held-out loss {self.heldout_loss_before:.4f} -> {self.heldout_loss_after:.4f}")


def act_calibrate(model, calib: torch.Tensor, heldout: torch.Tensor, beta: float = 0.6, threshold: float = 0.1,
                  max_heads: int = 8, max_candidates: int = 40, log=None) -> CalibrationResult:
    """Greedy head selection on `calib` ([1, n] tokens), then the held-out effect on `heldout`."""
    where = "act_calibrate"
    model_arg(model, where)
    calib = _prompt_arg(model, calib, "calib", where)
    heldout = _prompt_arg(model, heldout, "heldout", where)
    beta = real_arg("beta", beta, low=0, high=1, where=where)
    threshold = real_arg("threshold", threshold, low=0, high=1, high_open=True, where=where)
    max_heads = int_arg("max_heads", max_heads, minimum=1, where=where)
    max_candidates = int_arg("max_candidates", max_candidates, minimum=1, where=where)
    if log is not None and not callable(log):
        raise TypeError(f"{where}: log must be a callable (e.g. print) or None, got {type(log).__name__}")
    found = _sink_map(model, calib, threshold, min_queries=16)
    sinks = {k: pos for k, (pos, _) in found.items()}
    candidates = sorted(found, key=lambda k: -found[k][1])[:max_candidates]  # strongest hidden sinks first
    res = CalibrationResult(beta=beta, candidates=len(candidates))
    res.calib_loss_before = best = _loss(model, calib)
    chosen: list = []
    for cand in candidates:
        if len(chosen) >= max_heads:
            break
        trial = _loss(model, calib, _interventions(chosen + [cand], sinks, beta))
        if trial < best - 1e-5:
            best, chosen = trial, chosen + [cand]
            if log:
                log(f"  keep L{cand[0]}H{cand[1]}: calibration loss {trial:.4f}")
    res.heads, res.calib_loss_after = chosen, best
    held_sinks = hidden_sink_positions(model, heldout, threshold)  # sinks are found on each input, online
    res.heldout_loss_before = _loss(model, heldout)
    res.heldout_loss_after = _loss(model, heldout, _interventions(chosen, held_sinks, beta))
    return res
