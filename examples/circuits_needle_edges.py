"""Edge attribution (EAP, corrupted ablation) into a few chosen heads and the logits, at long context.

    score(u -> v) = sum_{pos, d} (a_u^corrupt - a_u^clean) . dM/d in_v          (the formula of `circuits.eap`)

`circuits.eap` builds the [batch, pos, n_up, d_model] stack of every node's output (SmolLM2 at 8k tokens: 5.7 GB
per prompt, twice) and the gradient of every input of every layer. Here only the inputs of the chosen heads (their
q, and the k / v of their KV heads) and the logits get a gradient (`input_gradients(layers=...)`), and a head's
output difference is never materialised in d_model: (dz_h W_O^h) . g = dz_h . (g W_O^h^T), one layer at a time from
the hook_z difference [pos, head, d_head]. Memory: the hook_z / mlp_out differences (2 x n_layers x pos x d_model
floats) plus one [slots, pos, d_model] gradient stack.

Models with sandwich norms (Gemma 2/3) are not supported here: their head contributions carry the run's norm scale.
"""

from __future__ import annotations

import torch

from interp.config import head_output_weight
from interp.head_inputs import input_gradients, sandwich_norms

F32 = 4


def _deltas(model, tokens_clean, tokens_corrupt, mlp: bool) -> dict:
    """corrupt - clean of every node's output: z per layer [pos, head, d_head], mlp_out [pos, d_model], input."""
    L = model.cfg.n_layers
    names = [f"blocks.{l}.attn.hook_z" for l in range(L)] + ["blocks.0.hook_resid_pre"]
    if mlp:
        names += [f"blocks.{l}.hook_mlp_out" for l in range(L)]
    with torch.no_grad():
        _, a = model.run_with_cache(tokens_clean, names=names)
        _, b = model.run_with_cache(tokens_corrupt, names=names)
    return {n: (b[n] - a[n]).float()[0] for n in names}  # batch of one


def edge_attribution(model, task, batch, heads: list, mlp: bool | None = None, max_gib: float | None = None,
                     top: int = 8) -> dict:
    """EAP scores of every edge into the q / k / v inputs of `heads` [(layer, head)] and into the logits, averaged
    over the prompts of `batch` (rows of one length). Returns {"slots": [...], "up": [...], "scores": [slot][up]
    (None where no edge), "top": per slot its `top` upstream nodes by |score|}."""
    from circuits_needle import grad_interventions, last_metric  # noqa: PLC0415 - sibling example

    c = model.cfg
    L, H, KV, dh = c.n_layers, c.n_heads, c.n_kv_heads, c.d_head_v  # dh: the value / z head dim W_O reads
    if any(sandwich_norms(b) is not None for b in model.blocks):
        raise ValueError(f"{model.name} has sandwich norms; use analyses.circuits.eap (short inputs) instead")
    if mlp is None:
        mlp = any(name.endswith("mlp_out") for name in model.hook_names())
    g = H // KV
    layers = sorted({l for l, _ in heads})
    slots = []
    for l, h in heads:
        slots += [(f"L{l}H{h}<q>", "q", l, h), (f"L{l}KV{h // g}<k>" if KV != H else f"L{l}H{h}<k>", "k", l, h // g),
                  (f"L{l}KV{h // g}<v>" if KV != H else f"L{l}H{h}<v>", "v", l, h // g)]
    slots = list(dict.fromkeys(slots))  # heads of one KV group share their k / v slots
    slots.append(("logits", "logits", L, 0))
    up = ["input"] + [x for l in range(L) for x in [f"L{l}H{h}" for h in range(H)] + ([f"MLP{l}"] if mlp else [])]
    up_layer = [-1] + [l for l in range(L) for _ in range(H + (1 if mlp else 0))]
    up_is_mlp = [False] + [i == H for l in range(L) for i in range(H + (1 if mlp else 0))]
    pos = batch.clean.input_ids.shape[1]
    need = (len(slots) + 2 * L + 2 * L * (1 if mlp else 0) + len(layers) * (H + 2 * KV)) * pos * c.d_model * F32
    if max_gib is not None and need / 2**30 > max_gib:
        raise ValueError(f"edge attribution would hold ~{need / 2**30:.1f} GiB, more than {max_gib} GiB: fewer heads "
                         "or a shorter context")
    scores = torch.zeros(len(slots), len(up), dtype=torch.float64)
    for i in range(len(batch)):
        row = batch[i]
        d = _deltas(model, row.clean.input_ids, row.corrupt.input_ids, mlp)
        _, grads = input_gradients(model, row.clean.input_ids, last_metric(row), mlp=False, layers=layers,
                                   interventions=grad_interventions(model), logits_at=[pos - 1])
        G = torch.stack([grads[("logits",)][0] if kind == "logits" else grads[(kind, l)][j, 0]
                         for _, kind, l, j in slots]).float()  # [slot, pos, d_model]
        del grads
        scores[:, 0] += torch.einsum("pm,spm->s", d["blocks.0.hook_resid_pre"], G).double()
        col = 1
        for l in range(L):
            w_o = head_output_weight(model.attn_modules[l], H, dh).float()  # [head, d_head_v, d_model]
            gw = torch.einsum("spm,hdm->sphd", G, w_o)  # [slot, pos, head, d_head]
            scores[:, col:col + H] += torch.einsum("phd,sphd->sh", d[f"blocks.{l}.attn.hook_z"], gw).double()
            col += H
            if mlp:
                scores[:, col] += torch.einsum("pm,spm->s", d[f"blocks.{l}.hook_mlp_out"], G).double()
                col += 1
    scores /= len(batch)
    out_scores, tops = [], {}
    for s, (name, kind, l, _) in enumerate(slots):
        # an edge exists from nodes written before the input is read: attention inputs read layers < l; the logits
        # read everything
        ok = [u for u in range(len(up)) if up_layer[u] < l or kind == "logits"]
        out_scores.append([float(scores[s, u]) if u in ok else None for u in range(len(up))])
        best = sorted(ok, key=lambda u: -abs(float(scores[s, u])))[:top]
        tops[name] = [(up[u], round(float(scores[s, u]), 4)) for u in best]
    return {"slots": [s[0] for s in slots], "up": up, "scores": out_scores, "top": tops,
            "estimate_gib": round(need / 2**30, 2)}
