"""Which heads carry a needle to the answer at long context: head attribution (AtP, one forward + one backward per
prompt), checked by exact head patching, compared with the copy-score retrieval heads (Wu et al.).

    python examples/circuits_needle.py --context 4096 --n 2 --top-k 10 --out out/needle
    python examples/circuits_needle.py --context 8192 --n 2 --top-k 10 --out out/needle   # then compares 4k / 8k

Per context length: `n` needle prompts (task "needle": a three-word secret code hidden at depths 0.1-0.9 of the
bundled prose, then the question); corrupted prompt = the same prompt with another code of the same token length,
so the answer changes and every position stays aligned. Metric: logit[answer] - logit[other code's first token]
at the last position.

1. AtP per head: (z_corrupt - z_clean) . dM/dz summed over positions and d_head (Kramar et al.; node-level
   `atp_heads`), also split into the answer (last) position alone. One forward + backward on the clean prompt,
   one forward on the corrupted one.
2. Exact effect of the top-k heads by |AtP|: each head's z patched to the corrupted run (`head_patching`, batched),
   then all k together and "everything but the k" (the share of the clean - corrupt logit difference they carry).
3. Retrieval heads by copy score (`retrieval.retrieval_scores` on trials like `interp classify`'s: depths 0.25 /
   0.5 / 0.75 at `--retrieval-context` tokens): top-k overlap with a hypergeometric p-value against chance, the
   overlap with the labelled retrieval heads (score >= 0.1), Spearman rank correlation over all heads.
4. `--edges`: edge attribution (EAP, corrupted ablation) into the q / k / v inputs of the top heads and into the
   logits, from every upstream node (input, heads, MLPs), without the [batch, pos, n_nodes, d_model] stack.

Only the answer (last) position is unembedded (`logits_at`): at 8k tokens the full logits would be the largest
tensor of the run (Gemma 3: 8.6 GB per prompt). On a CPU the PyTorch reference path's backward recomputes each query
chunk (O(n) memory); for full-attention models `SDPAGrad` below routes the gradient through torch's fused
`scaled_dot_product_attention` instead, which is faster on a CPU (its output is checked against the reference
output of the same call), while statistics and hooks still come from the reference forward. Sliding-window models
(Gemma 3) take the reference backward. On CUDA the fused Triton / SDPA backward of `interp` is used as is.

Every step prints its wall time, the process's peak resident memory so far (ru_maxrss) and the estimate of what it
builds; `--max-gib` refuses a step whose estimate exceeds it.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import interp
from interp import HeadMask
from interp.analyses import retrieval as R
from interp.analyses import tasks as T
from interp.analyses.circuits.evaluate import spearman
from interp.analyses.circuits.patching import head_patching
from interp.memory import GiB, pattern_bytes
from interp.stages import Intervention

F32 = 4


# ---------------------------------------------------------------------------------------------- measuring
def peak_gib() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def fixed_mmap_threshold(kib: int) -> bool:
    """glibc only: serve allocations of >= `kib` KiB by mmap, so a freed tensor goes back to the OS at once. glibc's
    default threshold grows to 32 MiB after the first large free, and freed blocks below it stay in the heap: at long
    context RSS then measures the allocator's high-water mark, not live tensors (Gemma 3, 2k tokens, AtP: 2.29 GiB
    above the loaded model by default vs 0.81 with a 64 KiB threshold and block checkpointing,
    examples/patching_memory.py). False where mallopt is unavailable."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(kib) * 1024))  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        return False


class Step:
    """`with Step("name", log, estimate_bytes, max_gib):` prints and records wall time, peak RSS and the estimate."""

    def __init__(self, name: str, log: dict, estimate: int = 0, max_gib: float | None = None):
        self.name, self.log, self.estimate, self.max_gib = name, log, estimate, max_gib
        if max_gib is not None and estimate / GiB > max_gib:
            raise ValueError(f"step {name!r} would build ~{estimate / GiB:.1f} GiB, more than --max-gib {max_gib}; "
                             "use fewer prompts, a shorter --context or a smaller --chunk")

    def __enter__(self):
        self.t = time.perf_counter()
        self.c = time.process_time()
        return self

    def __exit__(self, *exc):
        rec = {"wall_s": round(time.perf_counter() - self.t, 1), "cpu_s": round(time.process_time() - self.c, 1),
               "peak_rss_gib": round(peak_gib(), 2), "estimate_gib": round(self.estimate / GiB, 2)}
        self.log[self.name] = rec
        print(f"  [{self.name}] {rec}", flush=True)


# ---------------------------------------------------------------------------------------------- O(n) gradients on CPU
class SDPAGrad(Intervention):
    """Gradient path through torch's fused attention, O(n) memory (for CPU runs that need a backward).

    At stage qkv it keeps the differentiable q, k, v and hands the reference path detached copies (so that path
    saves nothing for autograd); at stage out it recomputes the output with `F.scaled_dot_product_attention`
    from the kept tensors and returns it. The recomputed output must match the reference output of the same call
    (else ValueError): full causal attention, unpadded rows, no window. Scales: `scales[layer]`."""

    stages = ("qkv", "out")

    def __init__(self, scales: list[float], tol: float = 1e-3):
        self.scales, self.tol = list(scales), tol
        self._kept: dict = {}

    def validate(self, n_layers: int, n_heads: int) -> None:
        if len(self.scales) != n_layers:
            raise ValueError(f"SDPAGrad: {len(self.scales)} scales for a model with {n_layers} layers")

    def layers(self, n_layers: int) -> list[int]:
        return list(range(n_layers))

    def qkv(self, q, k, v, call):
        if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
            return q, k, v
        if call.valid is not None and not bool(call.valid.all()):
            raise ValueError("SDPAGrad needs unpadded rows (all of one length)")
        if call.q_len != call.k_len:
            raise ValueError("SDPAGrad needs a full prefill (q_len == k_len)")
        self._kept[call.layer] = (q, k, v)
        return q.detach(), k.detach(), v.detach()

    def out(self, out, call):
        kept = self._kept.pop(call.layer, None)
        if kept is None:
            return out
        q, k, v = kept  # [batch, heads, pos, d], [batch, kv_heads, pos, d] x 2
        g = q.shape[1] // k.shape[1]
        o = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(g, 1),
                                           v.float().repeat_interleave(g, 1), is_causal=True,
                                           scale=self.scales[call.layer])
        err = float((o.detach() - out.float()).abs().max())
        if err > self.tol * max(1.0, float(out.abs().max())):
            raise ValueError(f"SDPAGrad: layer {call.layer} output differs from the reference by {err:.2e} "
                             "(sliding window, soft-capping or another scale?); run without SDPAGrad")
        return o.to(out.dtype)


def grad_interventions(model) -> list:
    """[SDPAGrad] on CPU for full-attention models; [] elsewhere (CUDA, or sliding-window layers: the reference
    path's own O(n) backward)."""
    if model.device.type != "cpu" or any(w is not None for w in model.cfg.layer_windows):
        return []
    d = model.cfg.d_head
    return [SDPAGrad([float(getattr(a, "scaling", d ** -0.5)) for a in model.attn_modules])]


# ---------------------------------------------------------------------------------------------- step 1: AtP
def z_names(model) -> list[str]:
    return [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]


def last_metric(batch, per_example: bool = False):
    """The needle metric on logits unembedded at the last position only ([batch, 1, vocab], `logits_at`):
    logit[answer] - logit[other value]; the mean over the batch, or [batch]."""
    def metric(lg):
        x = lg[:, -1].float()
        m = x.gather(1, batch.answer.to(x.device)[:, None])[:, 0] - x.gather(1, batch.wrong.to(x.device)[:, None])[:, 0]
        return m if per_example else m.mean()
    return metric


def atp_prompt(model, task, batch, keep: bool = False, checkpoint: bool = False) -> dict:
    """AtP of every head for one prompt (a TaskBatch of one row): [layer, head] over all positions and at the
    answer position only, the clean / corrupt metric, and (keep=True) the corrupted z per layer for patching.
    checkpoint=True: the backward keeps each block's input only and recomputes the block (interp.checkpointing)."""
    names = z_names(model)
    pos = int(batch.position[0])
    if pos != batch.clean.input_ids.shape[1] - 1:
        raise ValueError(f"the needle metric reads the last position, but this prompt answers at {pos}")
    metric = last_metric(batch)
    _, cache, grads = model.run_with_cache(batch.clean, names=names, grad_of=metric, logits_at=[pos],
                                           interventions=grad_interventions(model), checkpoint=checkpoint)
    with torch.no_grad():
        lc, corr = model.run_with_cache(batch.corrupt, names=names, logits_at=[pos])
    L, H = model.cfg.n_layers, model.cfg.n_heads
    atp, atp_last = torch.zeros(L, H), torch.zeros(L, H)
    for l, n in enumerate(names):
        prod = (corr[n] - cache[n]).float() * grads[n].float()  # [1, pos, head, d_head]
        atp[l] = prod.sum((0, 1, 3)).cpu()
        atp_last[l] = prod[:, pos].sum((0, 2)).cpu()
    out = {"atp": atp, "atp_last": atp_last, "clean": grads.metric, "corrupt": float(metric(lc))}
    if keep:
        out["z_corrupt"] = {l: corr[n] for l, n in enumerate(names)}
    return out


def atp_bytes(model, pos: int, checkpoint: bool = False) -> int:
    """Estimate for one prompt: three hook_z stacks (clean, grad, corrupt), the last position's logits and their
    gradient, and the activations autograd keeps, ~ (12 d_model + 6 d_mlp + 4 (heads + 2 kv_heads) d_head) floats
    per token and layer (fitted to be on the safe side of the measured peaks: SmolLM2 4k 6.5 GiB measured vs 9.9
    estimated, Gemma 3 4k 7.7 vs 8.0, above the loaded model). With block checkpointing autograd keeps d_model
    floats per token and layer, plus a block's insides and attention temporaries while the backward recomputes it
    (Gemma 3 16k: 9.2 GiB measured vs 10.7 estimated)."""
    c = model.cfg
    z = c.n_layers * pos * c.n_heads * c.d_head_v * F32
    d_mlp = getattr(c, "d_mlp", 4 * c.d_model) or 4 * c.d_model
    attn = (c.n_heads + c.n_kv_heads) * c.d_head + c.n_kv_heads * c.d_head_v  # q, k; v (MLA: v heads narrower)
    block = pos * (12 * c.d_model + 6 * d_mlp + 4 * attn) * F32
    acts = c.n_layers * pos * c.d_model * F32 + 4 * block if checkpoint else c.n_layers * block
    return 3 * z + 2 * c.d_vocab * F32 + acts


# ---------------------------------------------------------------------------------------------- step 2: patching
def joint_patch(model, task, batch, heads: list, z_corrupt: dict, complement: bool = False) -> list[float]:
    """Per-prompt metric with the z of `heads` patched to the corrupted run (complement=True: every head except
    them). z_corrupt: {layer: [batch, pos, head, d_head_v]}."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    xi = torch.zeros(L, H) if complement else torch.ones(L, H)
    for l, h in heads:
        xi[l, h] = 1.0 if complement else 0.0
    layers = sorted({l for l in range(L) if bool((xi[l] == 0).any())})
    last = batch.clean.input_ids.shape[1] - 1
    ivs = [HeadMask(xi.to(model.device), baseline={l: z_corrupt[l] for l in layers}, only_layers=layers)] if layers \
        else []  # every head kept (complement of all heads): nothing to patch
    with torch.no_grad():
        lg = model.run_with_hooks(batch.clean, logits_at=[last], interventions=ivs)
    return last_metric(batch, per_example=True)(lg).tolist()


def patch_bytes(model, pos: int, rows: int) -> int:
    """A no-grad forward of `rows` rows: the last position's logits plus a few [rows, pos, d_mlp] temporaries per
    layer."""
    c = model.cfg
    d_mlp = getattr(c, "d_mlp", 4 * c.d_model) or 4 * c.d_model
    return rows * (c.d_vocab + 4 * pos * d_mlp) * F32 + c.n_layers * pos * c.n_heads * c.d_head_v * F32


# ---------------------------------------------------------------------------------------------- step 3: compare
def hypergeom_sf(overlap: int, population: int, successes: int, draws: int) -> float:
    """P(X >= overlap) for X ~ Hypergeometric(population, successes, draws): the chance of an overlap this large."""
    total = math.comb(population, draws)
    return sum(math.comb(successes, i) * math.comb(population - successes, draws - i)
               for i in range(overlap, min(successes, draws) + 1)) / total


def top_heads(scores: torch.Tensor, k: int) -> list[tuple[int, int]]:
    H = scores.shape[1]
    idx = torch.nan_to_num(scores, nan=-float("inf")).flatten().topk(k).indices.tolist()
    return [(i // H, i % H) for i in idx]


def compare_sets(found: list, scores: torch.Tensor, k: int, label_threshold: float = 0.1) -> dict:
    """found heads vs copy-score retrieval heads: top-k overlap, labelled-set overlap, p-values."""
    N = scores.numel()
    top_r = top_heads(scores, k)
    ov = len(set(found) & set(top_r))
    labelled = [(int(l), int(h)) for l, h in (torch.nan_to_num(scores, nan=0.0) >= label_threshold).nonzero().tolist()]
    ov_l = len(set(found) & set(labelled))
    return {"k": k, "top_k_retrieval": [f"L{l}H{h}" for l, h in top_r],
            "overlap_top_k": ov, "p_top_k": hypergeom_sf(ov, N, k, len(found)), "expected_top_k": k * len(found) / N,
            "n_labelled": len(labelled), "overlap_labelled": ov_l,
            "p_labelled": hypergeom_sf(ov_l, N, len(labelled), len(found)) if labelled else float("nan"),
            "expected_labelled": len(labelled) * len(found) / N}


# ---------------------------------------------------------------------------------------------- the pipeline
def analyse(model, context: int, n: int = 2, k: int = 10, seed: int = 0, chunk: int = 4, retrieval_context=512,
            retrieval_trials: int = 3, max_gib: float | None = None, edges: bool = False, log: dict | None = None,
            partial=None, checkpoint: bool = False):
    """The whole pipeline at one context length -> a JSON-able dict (tensors as nested lists). `partial(dict)` is
    called with what is known after each expensive step (a long run that is killed keeps its AtP)."""
    partial = partial or (lambda d: None)
    log = {} if log is None else log
    task = T.get_task("needle", context=context)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    with Step("make prompts", log):
        batch = task.make(model, n=n, seed=seed)
    pos = batch.clean.input_ids.shape[1]
    print(f"{model.name}: {n} needle prompts of {pos} tokens; full attention patterns of one prompt would need "
          f"{pattern_bytes(model.cfg, 1, pos, pos) / GiB:.1f} GiB (interp.memory.pattern_bytes), not built here",
          flush=True)
    atps, lasts, clean, corrupt, zc = [], [], [], [], []
    for i in range(n):
        ck = " (blocks checkpointed)" if checkpoint else ""
        with Step(f"AtP prompt {i} (fwd+bwd clean, fwd corrupt){ck}", log, atp_bytes(model, pos, checkpoint),
                  max_gib):
            r = atp_prompt(model, task, batch[i], keep=True, checkpoint=checkpoint)
        atps.append(r["atp"])
        lasts.append(r["atp_last"])
        clean.append(r["clean"])
        corrupt.append(r["corrupt"])
        zc.append({l: t.cpu() for l, t in r.pop("z_corrupt").items()})
        print(f"    prompt {i}: metric clean {r['clean']:.3f} corrupt {r['corrupt']:.3f}, sum AtP "
              f"{float(r['atp'].sum()):.3f}", flush=True)
        partial({"model": model.name, "context": pos, "n_done": i + 1, "metric_clean": clean,
                 "metric_corrupt": corrupt, "atp": torch.stack(atps).mean(0).tolist(),
                 "atp_last": torch.stack(lasts).mean(0).tolist(), "steps": log})
    atp = torch.stack(atps).mean(0)  # [layer, head]
    atp_last = torch.stack(lasts).mean(0)
    top = top_heads(atp.abs(), k)
    print("top-|AtP| heads: " + ", ".join(f"L{l}H{h} {float(atp[l, h]):+.3f}" for l, h in top), flush=True)

    exact = torch.full((L, H), float("nan"))
    with Step(f"exact patching of the top-{k} heads ({chunk} heads x {n} prompts per forward)", log,
              patch_bytes(model, pos, chunk * n), max_gib):
        mean_exact = head_patching(model, batch.clean, batch.corrupt, last_metric(batch), chunk=chunk, heads=top,
                                   logits_at=[pos - 1])
    for l, h in top:
        exact[l, h] = mean_exact[l, h]
    partial({"model": model.name, "context": pos, "n_done": n, "metric_clean": clean, "metric_corrupt": corrupt,
             "atp": atp.tolist(), "atp_last": atp_last.tolist(), "top_heads": [f"L{l}H{h}" for l, h in top],
             "exact": exact.tolist(), "steps": log})
    z_corrupt = {l: torch.cat([z[l] for z in zc]) for l in range(L)}  # [n, pos, head, d_head]
    with Step("patch the top-k together / all but the top-k", log, patch_bytes(model, pos, n), max_gib):
        joint = joint_patch(model, task, batch, top, z_corrupt)
        keep_only = joint_patch(model, task, batch, top, z_corrupt, complement=True)
    del z_corrupt, zc
    mc, mx = sum(clean) / n, sum(corrupt) / n
    gap = mc - mx
    res = {"model": model.name, "context": pos, "n": n, "k": k, "seed": seed,
           "metric_clean": clean, "metric_corrupt": corrupt,
           "metric_top_k_patched": joint, "metric_all_but_top_k_patched": keep_only,
           "explained_by_top_k": (mc - sum(joint) / n) / gap if gap else float("nan"),
           "kept_by_top_k_alone": (sum(keep_only) / n - mx) / gap if gap else float("nan"),
           "top_heads": [f"L{l}H{h}" for l, h in top],
           "atp": atp.tolist(), "atp_last": atp_last.tolist(), "exact": exact.tolist(),
           "atp_vs_exact_spearman": spearman(atp[tuple(zip(*top))], exact[tuple(zip(*top))]),
           "atp_sum": float(atp.sum())}

    with Step(f"copy-score retrieval heads ({retrieval_trials} trials of {retrieval_context} tokens)", log):
        depths = [0.25, 0.5, 0.75] if retrieval_trials == 3 else \
            [0.1 + 0.8 * j / max(1, retrieval_trials - 1) for j in range(retrieval_trials)]
        trials = R.make_trials(model, contexts=(retrieval_context,), depths=depths, seed=seed)
        copy, per_trial = R.retrieval_scores(model, trials)
    res["retrieval_context"] = retrieval_context
    res["retrieval_answered"] = int(per_trial.answered.sum())
    res["copy_score"] = copy.tolist()
    res["vs_retrieval"] = compare_sets(top, copy, k)
    res["spearman_abs_atp_vs_copy"] = spearman(atp.abs().flatten(), torch.nan_to_num(copy, nan=0.0).flatten())
    if edges:
        from circuits_needle_edges import edge_attribution  # noqa: PLC0415 - optional, heavier step

        with Step("edge attribution into the top heads and logits", log):
            res["edges"] = edge_attribution(model, task, batch, top, max_gib=max_gib)
    res["steps"] = log
    return res


def print_tables(res: dict) -> None:
    atp, exact, copy = (torch.tensor(res[k]) for k in ("atp", "exact", "copy_score"))
    last = torch.tensor(res["atp_last"])
    H = atp.shape[1]
    flat_copy = torch.nan_to_num(copy, nan=0.0).flatten()
    rank_copy = {int(i): r + 1 for r, i in enumerate(flat_copy.argsort(descending=True).tolist())}
    print(f"\n{res['model']} at {res['context']} tokens, {res['n']} prompts: metric clean "
          f"{sum(res['metric_clean']) / res['n']:.3f} / corrupt {sum(res['metric_corrupt']) / res['n']:.3f}")
    print("| head | AtP (all positions) | AtP (answer position) | exact patch | copy score | copy-score rank |")
    print("|---|---|---|---|---|---|")
    for name in res["top_heads"]:
        l, h = (int(x) for x in name[1:].split("H"))
        print(f"| {name} | {atp[l, h]:+.3f} | {last[l, h]:+.3f} | {exact[l, h]:+.3f} | {copy[l, h]:.2f} | "
              f"{rank_copy[l * H + h]} |")
    v = res["vs_retrieval"]
    print(f"top-{res['k']} patched together: metric {sum(res['metric_top_k_patched']) / res['n']:.3f} "
          f"({100 * res['explained_by_top_k']:.0f} % of clean - corrupt explained); all other heads patched: "
          f"{sum(res['metric_all_but_top_k_patched']) / res['n']:.3f} ({100 * res['kept_by_top_k_alone']:.0f} % kept)")
    print(f"AtP vs exact (Spearman over the top-{res['k']}): {res['atp_vs_exact_spearman']:.2f}; sum of AtP "
          f"{res['atp_sum']:.3f}")
    print(f"vs copy-score retrieval heads ({res['retrieval_answered']} trials answered at {res['retrieval_context']} "
          f"tokens): top-{v['k']} overlap {v['overlap_top_k']} (chance {v['expected_top_k']:.2f}, hypergeometric "
          f"p = {v['p_top_k']:.2g}); with the {v['n_labelled']} labelled (score >= 0.1): {v['overlap_labelled']} "
          f"(chance {v['expected_labelled']:.2f}, p = {v['p_labelled']:.2g}); Spearman |AtP| vs copy score over all "
          f"heads {res['spearman_abs_atp_vs_copy']:.2f}")
    print(f"top-{v['k']} by copy score: {' '.join(v['top_k_retrieval'])}")
    if "edges" in res:
        print("edges (EAP, corrupted ablation) into the top heads and the logits, strongest 5 sources each:")
        for slot, best in res["edges"]["top"].items():
            print(f"  {slot} <- " + ", ".join(f"{u} {s:+.3f}" for u, s in best[:5]))


def compare_contexts(results: list[dict]) -> None:
    """Are the heads the same at each context length? Top-k overlap and Spearman of AtP between runs."""
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            a, b = results[i], results[j]
            sa, sb = set(a["top_heads"]), set(b["top_heads"])
            rho = spearman(torch.tensor(a["atp"]).flatten(), torch.tensor(b["atp"]).flatten())
            n = torch.tensor(a["atp"]).numel()
            k = min(len(sa), len(sb))
            print(f"{a['context']} vs {b['context']} tokens: top-{k} heads shared {len(sa & sb)} "
                  f"({' '.join(sorted(sa & sb))}; chance {k * k / n:.2f}, p = {hypergeom_sf(len(sa & sb), n, k, k):.2g}); "
                  f"Spearman of AtP over all heads {rho:.2f}")


def report_partial(partial: dict, copy: torch.Tensor, k: int) -> dict:
    """What a run that stopped after its AtP step supports: the top-k heads by |AtP| vs the copy-score heads."""
    atp = torch.tensor(partial["atp"])
    top = top_heads(atp.abs(), k)
    last = torch.tensor(partial["atp_last"])
    print(f"{partial['model']} at {partial['context']} tokens, {partial['n_done']} prompt(s) (AtP only): metric clean "
          f"{partial['metric_clean']} / corrupt {partial['metric_corrupt']}; sum of AtP {float(atp.sum()):.3f}")
    print("| head | AtP (all positions) | AtP (answer position) | copy score |")
    print("|---|---|---|---|")
    for l, h in top:
        print(f"| L{l}H{h} | {atp[l, h]:+.3f} | {last[l, h]:+.3f} | {float(copy[l, h]):.2f} |")
    v = compare_sets(top, copy, k)
    rho = spearman(atp.abs().flatten(), torch.nan_to_num(copy, nan=0.0).flatten())
    print(f"top-{k} overlap with the copy-score top-{k}: {v['overlap_top_k']} (chance {v['expected_top_k']:.2f}, "
          f"p = {v['p_top_k']:.2g}); with the {v['n_labelled']} labelled: {v['overlap_labelled']} (chance "
          f"{v['expected_labelled']:.2f}, p = {v['p_labelled']:.2g}); Spearman |AtP| vs copy score {rho:.2f}")
    print(f"top-{k} by copy score: {' '.join(v['top_k_retrieval'])}")
    return {**v, "spearman_abs_atp_vs_copy": rho}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--context", type=int, nargs="+", default=[4096])
    p.add_argument("--n", type=int, default=2, help="needle prompts per context")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--chunk", type=int, default=4, help="heads patched per batched forward")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrieval-context", type=int, default=512)
    p.add_argument("--retrieval-trials", type=int, default=3)
    p.add_argument("--edges", action="store_true")
    p.add_argument("--checkpoint", action="store_true",
                   help="AtP backward keeps each block's input only and recomputes the block (long context)")
    p.add_argument("--max-gib", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--mmap-kib", type=int, default=0,
                   help="glibc: allocations of at least this many KiB by mmap, returned to the OS when freed "
                        "(e.g. 64 at long context; 0 keeps glibc's default)")
    p.add_argument("--out", default=None, help="folder: one JSON per context; runs found there are compared")
    p.add_argument("--from-partial", nargs=2, metavar=("PARTIAL_JSON", "COPY_JSON"),
                   help="compare the AtP of a stopped run (partial_*.json) with saved copy scores ({'copy_score': "
                        "[[...]]}) and exit")
    a = p.parse_args(argv)
    if a.from_partial:
        try:
            partial, copy = (json.loads(Path(f).read_text()) for f in a.from_partial)
            report_partial(partial, torch.tensor(copy["copy_score"]), a.top_k)
        except (OSError, KeyError, ValueError) as e:
            p.error(f"--from-partial: {e}")
        return
    for name in ("n", "top_k", "chunk", "retrieval_trials"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.mmap_kib > 0 and not fixed_mmap_threshold(a.mmap_kib):
        print("--mmap-kib: mallopt is not available here (not glibc); ignored", flush=True)
    model = interp.load(a.model)
    results = []
    for ctx in a.context:
        t0 = time.perf_counter()
        partial = None
        if a.out:
            def partial(d, ctx=ctx):
                Path(a.out).mkdir(parents=True, exist_ok=True)
                (Path(a.out) / f"partial_{a.model}_{ctx}.json").write_text(json.dumps(d, indent=1))
        res = analyse(model, ctx, n=a.n, k=a.top_k, seed=a.seed, chunk=a.chunk, retrieval_context=a.retrieval_context,
                      retrieval_trials=a.retrieval_trials, max_gib=a.max_gib, edges=a.edges, partial=partial,
                      checkpoint=a.checkpoint)
        res["total_wall_s"] = round(time.perf_counter() - t0, 1)
        print_tables(res)
        print(f"total {res['total_wall_s']} s, peak RSS {peak_gib():.2f} GiB", flush=True)
        results.append(res)
        if a.out:
            out = Path(a.out)
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / f".{a.model}_{ctx}.json.tmp"
            tmp.write_text(json.dumps(res, indent=1))
            tmp.replace(out / f"{a.model}_{ctx}.json")
    if a.out:
        results = [json.loads(f.read_text()) for f in sorted(Path(a.out).glob(f"{a.model}_*.json"))]
    compare_contexts(sorted(results, key=lambda r: r["context"]))


if __name__ == "__main__":
    main()
