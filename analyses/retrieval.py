"""Retrieval heads (Wu et al., "Retrieval Head Mechanistically Explains Long-Context Factuality").

Needle-in-a-haystack trials are built offline from the model's own tokenizer (or, for tokenizer-less toy models,
from its vocabulary); during greedy decoding of the answer, a head scores a hit at a step when its top-1 attended
key lies inside the needle and the generated token equals the token at that key. A trial's score is the share of
needle tokens copied that way; only trials the model answers (ROUGE-1 recall > 0.5) count. Heads with score >= 0.1
are retrieval heads. The prefill runs through the fused kernels; the per-step argmax comes from their per-query
statistics (`hook_query_argmax`), so no n x n map is formed at any length. `retrieval_scores(...,
checkpoint=PATH)` keeps what it has summed after every trial and continues from there.
"""

from __future__ import annotations

import numbers
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from interp.validate import int_arg, model_arg, progress_arg, real_arg, tensor_arg

from .probes import bos_id, corpus

WORDS = ("amber", "falcon", "cobalt", "meadow", "quartz", "harbor", "lantern", "orchid", "saffron", "glacier",
         "walnut", "comet", "juniper", "basalt", "willow", "marble", "tundra", "pepper", "violet", "canyon")


@dataclass
class Trial:
    input_ids: torch.Tensor  # [1, n] the prompt
    needle_span: tuple[int, int]  # [start, end) of the needle's answer tokens inside the prompt
    answer: list[int]  # the tokens the model should produce
    context: int
    depth: float


def _toy_trial(model, context: int, depth: float, rng: random.Random, n_values: int = 3, mark: int = 1) -> Trial:
    vocab = model.cfg.d_vocab
    hay = context - 2 * (n_values + 1) - 1
    if hay < 1:
        raise ValueError(f"make_trials: context {context} is too short for a needle of {n_values} tokens; "
                         f"contexts must be at least {2 * (n_values + 1) + 2} for {model.name}")
    toks = [rng.randrange(2, vocab) for _ in range(context)]
    toks[0] = bos_id(model) or 0
    pos = 1 + int(round(depth * (hay - 1)))
    values = [rng.randrange(2, vocab) for _ in range(n_values)]
    toks[pos] = mark
    toks[pos + 1: pos + 1 + n_values] = values
    prompt = toks[: context - n_values - 1] + [mark]
    return Trial(torch.tensor([prompt]), (pos + 1, pos + 1 + n_values), values, context, depth)


def _text_trial(model, context: int, depth: float, rng: random.Random) -> Trial:
    tok = model.tokenizer
    code = " ".join(rng.sample(WORDS, 3))
    needle = f" The secret code is {code}."
    question = " Question: what is the secret code? Answer: The secret code is"
    hay_ids = tok(corpus("prose"), add_special_tokens=False)["input_ids"]
    needle_ids = tok(needle, add_special_tokens=False)["input_ids"]
    q_ids = tok(question, add_special_tokens=False)["input_ids"]
    answer = tok(" " + code, add_special_tokens=False)["input_ids"]
    head = [bos_id(model)] if tok("a")["input_ids"][:1] == [tok.bos_token_id] and tok.bos_token_id is not None else []
    room = context - len(head) - len(needle_ids) - len(q_ids)
    if room < 16:
        raise ValueError(f"make_trials: context {context} is too short for a needle-in-a-haystack trial; contexts "
                         f"must be at least {context - room + 16} for {model.name}'s tokenizer")
    hay = (hay_ids * (room // len(hay_ids) + 1))[:room]
    cut = int(round(depth * room))
    prompt = head + hay[:cut] + needle_ids + hay[cut:] + q_ids
    start = len(head) + cut + len(needle_ids) - len(answer) - 1  # the code's tokens inside the needle
    # locate the code precisely (tokenization of " code" inside the sentence equals the standalone one here)
    for s in range(len(head) + cut, len(head) + cut + len(needle_ids)):
        if prompt[s: s + len(answer)] == answer:
            start = s
            break
    return Trial(torch.tensor([prompt]), (start, start + len(answer)), answer, context, depth)


def make_trials(model, contexts=(256, 512, 1024), depths=(0.1, 0.3, 0.5, 0.7, 0.9), seed: int = 0) -> list[Trial]:
    """Needle-in-a-haystack prompts at each context length x depth, tokenized with the model's own tokenizer."""
    where = "make_trials"
    model_arg(model, where)
    contexts = _seq_arg("contexts", contexts, where)
    depths = _seq_arg("depths", depths, where)
    contexts = [int_arg("contexts[]", c, minimum=1, where=where) for c in contexts]
    depths = [real_arg("depths[]", d, low=0, high=1, where=where) for d in depths]
    seed = int_arg("seed", seed, where=where)
    rng = random.Random(seed)
    trials = []
    for c in contexts:
        if c > model.cfg.n_ctx:
            raise ValueError(f"context {c} exceeds the model's maximum context {model.cfg.n_ctx}")
        for d in depths:
            make = _text_trial if model.tokenizer is not None else _toy_trial
            trials.append(make(model, c, d, rng))
    return trials


def _seq_arg(name: str, value, where: str) -> list:
    """A non-empty list/tuple (a single number is taken as a list of one); a 0-D/1-D tensor or NumPy array, and
    NumPy numbers, as the plain numbers they hold."""
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)) and value.ndim <= 1 and not (
            isinstance(value, torch.Tensor) and value.device.type == "meta"):
        value = value.tolist()  # 0-D: a number; 1-D: a list
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, (list, tuple, range)):
        raise TypeError(f"{where}: {name} must be a list of numbers, got {type(value).__name__} {value!r:.60}")
    if len(value) == 0:
        raise ValueError(f"{where}: {name} is empty; give at least one value")
    return list(value)


def _trials_arg(trials, where: str, model=None) -> list:
    if isinstance(trials, Trial):
        trials = [trials]
    if not isinstance(trials, (list, tuple)) or not trials or not all(isinstance(t, Trial) for t in trials):
        raise TypeError(f"{where}: trials must be a non-empty list of Trial (from make_trials), got "
                        f"{type(trials).__name__} {trials!r:.60}")
    if model is not None:
        for i, tr in enumerate(trials):
            _trial_check(tr, model, where, f"trials[{i}]")
    return list(trials)


def _trial_check(tr: Trial, model, where: str, name: str) -> None:
    """A Trial as make_trials builds it: input_ids [1, n] ids of the vocabulary, a non-empty answer of ids of the
    vocabulary, a needle_span inside the prompt, and room in the context to decode the answer."""
    vocab = model.cfg.d_vocab
    ids = tr.input_ids
    tensor_arg(f"{name}.input_ids", ids, dims=(2,), floating=False, where=where, shape_doc="[1, n] of token ids")
    if ids.shape[0] != 1:
        raise ValueError(f"{where}: {name}.input_ids must be one prompt [1, n], got shape {tuple(ids.shape)}")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab:
        raise ValueError(f"{where}: {name}.input_ids has ids outside the vocabulary [0, {vocab}): min {lo}, max {hi}")
    ans = tr.answer
    if (not isinstance(ans, (list, tuple)) or not ans
            or not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in ans)):
        raise TypeError(f"{where}: {name}.answer must be a non-empty list of token ids, got {ans!r:.60}")
    if not all(0 <= int(t) < vocab for t in ans):
        raise ValueError(f"{where}: {name}.answer has ids outside the vocabulary [0, {vocab}): {list(ans)!r:.60}")
    n = ids.shape[1]
    if n + len(ans) > model.cfg.n_ctx:
        raise ValueError(f"{where}: {name} has {n} prompt tokens + {len(ans)} answer tokens, more than the model's "
                         f"context {model.cfg.n_ctx}")
    span = tr.needle_span
    if (not isinstance(span, (tuple, list)) or len(span) != 2
            or not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in span)
            or not 0 <= span[0] < span[1] <= n):
        raise ValueError(f"{where}: {name}.needle_span must be (start, end) with 0 <= start < end <= {n} (the prompt "
                         f"length), got {span!r:.60}")


def _id_list(name: str, value, where: str) -> list[int]:
    """Token ids: a list / tuple of ints (numpy ints too) or a 1-D integer tensor -> list of ints."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"{where}: {name} must be token ids, a list of ints or a 1-D integer tensor, got a "
                            f"{value.dtype} tensor of shape {tuple(value.shape)}")
        return value.tolist()
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in value):
        raise TypeError(f"{where}: {name} must be token ids, a list of ints or a 1-D integer tensor, got "
                        f"{type(value).__name__} {value!r:.60}")
    return [int(t) for t in value]


def rouge1_recall(generated: list[int], reference: list[int]) -> float:
    """Share of the reference tokens found in `generated` (each generated token matches once); 0.0 for an empty
    reference. Both are token ids: lists of ints or 1-D integer tensors."""
    generated = _id_list("generated", generated, "rouge1_recall")
    reference = _id_list("reference", reference, "rouge1_recall")
    if not reference:
        return 0.0
    pool = list(generated)
    hit = 0
    for t in reference:
        if t in pool:
            pool.remove(t)
            hit += 1
    return hit / len(reference)


def decode_with_argmax(model, trial: Trial, interventions=()):
    """Greedy decoding of len(answer) tokens; returns (generated ids, argmax [steps, layer, head])."""
    model_arg(model, "decode_with_argmax")
    if not isinstance(trial, Trial):
        raise TypeError(f"decode_with_argmax: trial must be a Trial (from make_trials), got {type(trial).__name__}")
    _trial_check(trial, model, "decode_with_argmax", "trial")
    return _decode_with_argmax(model, trial, interventions)


def _decode_with_argmax(model, trial: Trial, interventions=()):
    """decode_with_argmax on a checked trial."""
    L = model.cfg.n_layers
    steps = len(trial.answer)
    per_layer: dict[int, list[torch.Tensor]] = {l: [] for l in range(L)}

    def grab(t, hook):
        per_layer[hook.layer].append(t[0, :, -1].cpu())  # the last query: the one predicting the next token

    hooks = [(f"blocks.{l}.attn.hook_query_argmax", grab) for l in range(L)]
    with model.hooks(fwd_hooks=hooks, interventions=interventions):
        gen = model.generate(trial.input_ids, max_new_tokens=steps)[0].tolist()
    arg = torch.stack([torch.stack(per_layer[l][:steps]) for l in range(L)], dim=1)  # [steps, layer, head]
    return gen, arg


def copy_hits(generated: list[int], argmax: torch.Tensor, prompt: list[int], span: tuple[int, int]) -> torch.Tensor:
    """Wu et al.'s copy-paste hits -> [layer, head] count. argmax: [steps, layer, head], the key each head attended
    most while generating token `generated[i]`; a hit needs that key inside `span` and holding that very token."""
    where = "copy_hits"
    if not isinstance(generated, (list, tuple)) or not all(
            isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in generated):
        raise TypeError(f"{where}: generated must be a list of token ids, got {generated!r:.60}")
    tensor_arg("argmax", argmax, dims=(3,), floating=False, where=where,
               shape_doc="[steps, layer, head] of attended key positions")
    if not isinstance(prompt, (list, tuple)) or not prompt or not all(
            isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in prompt):
        raise (ValueError if isinstance(prompt, (list, tuple)) and not prompt else TypeError)(
            f"{where}: prompt must be a non-empty list of token ids, got {prompt!r:.60}")
    if (not isinstance(span, (tuple, list)) or len(span) != 2
            or not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in span)
            or not 0 <= span[0] <= span[1] <= len(prompt)):
        raise ValueError(f"{where}: span must be (start, end) with 0 <= start <= end <= {len(prompt)} (the prompt "
                         f"length), got {span!r:.60}")
    start, end = (int(x) for x in span)
    argmax = argmax.cpu().long()
    hits = torch.zeros(argmax.shape[1:])
    for i, w in enumerate(generated[: argmax.shape[0]]):
        a = argmax[i]
        inside = (a >= start) & (a < end)
        keys = a.clamp(0, len(prompt) - 1)
        same = torch.tensor(prompt)[keys] == w
        hits += (inside & same).float()
    return hits


def retrieval_scores(model, trials: list[Trial], recall_threshold: float = 0.5, progress: Callable | None = None,
                     checkpoint=None):
    """Wu et al.'s retrieval score per head -> ([layer, head] tensor, per-trial DataFrame). `progress(done, total)`
    hears after every trial (and on resuming) how many are decoded. `checkpoint=PATH`: the answers decoded so far
    and the summed copy scores are saved there after every trial (the last one too, so a rerun of a finished run
    decodes nothing), and a rerun with the same model and dtype, trials and recall_threshold continues from them,
    with the same result as an uninterrupted run; another run's file or a damaged one is refused (a ValueError
    naming it)."""
    from .circuits import checkpoints

    where = "retrieval_scores"
    model_arg(model, where)
    trials = _trials_arg(trials, where, model)
    recall_threshold = real_arg("recall_threshold", recall_threshold, low=0, high=1, high_open=True, where=where)
    progress_arg(progress, where)
    path = None if checkpoint is None else checkpoints.checkpoint_path(checkpoint, where)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    total, generated = torch.zeros(L, H), []
    if path is not None:
        settings = _scores_settings(model, trials, recall_threshold)
        saved = checkpoints.load(path, settings, SCORES_KIND)
        if saved is not None:
            generated, total = _scores_state(saved, path, trials, (L, H))
            if progress:
                progress(len(generated), len(trials))
    for tr in trials[len(generated):]:
        gen, arg = _decode_with_argmax(model, tr)  # trials checked above
        if rouge1_recall(gen, tr.answer) > recall_threshold:
            start, end = tr.needle_span
            total += copy_hits(gen, arg, tr.input_ids[0].tolist(), tr.needle_span) / max(1, end - start)
        generated.append(gen)
        if path is not None:
            checkpoints.save(path, settings, {"done": len(generated), "generated": generated, "total": total})
        if progress:
            progress(len(generated), len(trials))
    return _scores_result(trials, generated, total, recall_threshold)


def _scores_result(trials: list[Trial], generated: list[list[int]], total: torch.Tensor, recall_threshold: float):
    """retrieval_scores' (scores, per-trial frame) from every trial's greedy answer and the summed copy scores of
    the answered ones."""
    rows = []
    for tr, gen in zip(trials, generated):
        recall = rouge1_recall(gen, tr.answer)
        rows.append(dict(context=tr.context, depth=tr.depth, recall=recall, answered=recall > recall_threshold,
                         generated=gen, answer=tr.answer))
    counted = sum(r["answered"] for r in rows)
    scores = total / counted if counted else torch.full(tuple(total.shape), float("nan"))
    return scores, pd.DataFrame(rows)


SCORES_KIND = "a retrieval-scores"


def _scores_settings(model, trials: list[Trial], recall_threshold: float) -> dict:
    """What a saved retrieval_scores run must match to be continued: the model and its dtype, the trials (prompts,
    needle spans, answers, contexts, depths), recall_threshold (the device is left out: a run may continue on
    another device)."""
    from .circuits import checkpoints

    parts = [[tr.input_ids, list(tr.needle_span), list(tr.answer), tr.context, tr.depth] for tr in trials]
    return {"format": 1, **checkpoints.model_settings(model),
            "shape": [model.cfg.n_layers, model.cfg.n_heads], "trials": checkpoints.digest(parts),
            "n_trials": len(trials), "recall_threshold": recall_threshold}


def _scores_state(saved, path, trials: list[Trial], shape: tuple[int, int]) -> tuple[list[list[int]], torch.Tensor]:
    """(greedy answers of the trials done, summed copy scores) of a saved run, checked: one list of token ids per
    trial done, a finite float tensor [layer, head] of sums."""
    from .circuits import checkpoints

    saved = checkpoints.state_fields(saved, path, SCORES_KIND, ("done", "generated", "total"))
    done = checkpoints.done_count(saved["done"], path, SCORES_KIND, len(trials), 1, "trials", finished_ok=True)
    generated, total = saved["generated"], saved["total"]
    if not isinstance(generated, list) or len(generated) != done or not all(
            isinstance(g, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in g)
            for g in generated):
        raise checkpoints.invalid(path, SCORES_KIND, f"'generated' must hold the {done} greedy answers (lists of "
                                                     f"token ids) of the trials it says are done, got "
                                                     f"{generated!r:.60}")
    want = torch.get_default_dtype()  # retrieval_scores sums in torch.zeros' dtype
    if (not isinstance(total, torch.Tensor) or tuple(total.shape) != tuple(shape) or total.dtype != want
            or not bool(torch.isfinite(total).all())):
        raise checkpoints.invalid(path, SCORES_KIND, f"'total' must be a finite {str(want).replace('torch.', '')} "
                                                     f"tensor {list(shape)} (the summed copy scores)")
    return [list(g) for g in generated], total.clone()


def needle_accuracy(model, trials: list[Trial], interventions=()) -> dict:
    """Mean ROUGE-1 recall of the greedy answers and mean loss of the answer tokens, under interventions."""
    model_arg(model, "needle_accuracy")
    trials = _trials_arg(trials, "needle_accuracy", model)
    return _needle_accuracy(model, trials, interventions)


def _needle_accuracy(model, trials: list[Trial], interventions=()) -> dict:
    """needle_accuracy on checked trials."""
    recalls, losses = [], []
    for tr in trials:
        with model.hooks(interventions=interventions):
            gen = model.generate(tr.input_ids, max_new_tokens=len(tr.answer))[0].tolist()
        recalls.append(rouge1_recall(gen, tr.answer))
        full = torch.cat([tr.input_ids, torch.tensor([tr.answer[:-1]])], dim=1) if len(tr.answer) > 1 else tr.input_ids
        logits = model.run_with_hooks(full, interventions=interventions)[0]
        n = tr.input_ids.shape[1]
        logp = torch.log_softmax(logits[n - 1: n - 1 + len(tr.answer)].float(), -1)
        losses.append(-logp[torch.arange(len(tr.answer)), torch.tensor(tr.answer)].mean().item())
    return {"recall": sum(recalls) / len(recalls), "answer_loss": sum(losses) / len(losses)}


MAX_DRAWS = 10_000  # each draw decodes every trial: more would run for hours


def masking_experiment(model, trials, scores: torch.Tensor, k: int, draws: int = 3, seed: int = 0) -> pd.DataFrame:
    """Ablate the top-k retrieval heads vs k random other heads (several draws): needle recall and answer loss."""
    from interp import HeadAblation

    where = "masking_experiment"
    model_arg(model, where)
    trials = _trials_arg(trials, where, model)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    tensor_arg("scores", scores, dims=(2,), floating=True, where=where, shape_doc="[layer, head]")
    if tuple(scores.shape) != (L, H):
        raise ValueError(f"{where}: scores must be [layer, head] = [{L}, {H}], got {tuple(scores.shape)}")
    if bool(torch.isnan(scores).all()):
        raise ValueError(f"{where}: scores are all NaN: no trial was answered (retrieval_scores gives NaN then), so "
                         "there are no top retrieval heads to mask; use trials the model answers")
    if bool(torch.isinf(scores).any()):
        raise ValueError(f"{where}: scores hold inf; give retrieval scores (from retrieval_scores)")
    # the random control draws k heads among the L*H - k others: k may be at most half the heads
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{where}: k must be an int (heads to mask), got {type(k).__name__} {k!r:.60}")
    k = int(k)
    if not 1 <= k <= (L * H) // 2:
        raise ValueError(f"{where}: k must be a positive int (heads to mask) below the {L * H} heads, at most "
                         f"{(L * H) // 2} so that the random control can draw k heads among the {L * H} - k others; "
                         f"got {k}")
    known = int((~torch.isnan(scores)).sum())
    if k > known:
        raise ValueError(f"{where}: k={k} is more than the {known} heads with a retrieval score (the other "
                         f"{L * H - known} are NaN: not measured), so the top-{k} would include unmeasured heads; "
                         f"give k <= {known}")
    draws = int_arg("draws", draws, minimum=0, maximum=MAX_DRAWS, where=where)
    seed = int_arg("seed", seed, where=where)
    flat = torch.nan_to_num(scores, nan=-1.0).flatten()  # NaN ranks last (k <= known keeps it out of the top-k)
    top = flat.topk(k).indices.tolist()

    def ablate(idx):
        by = {}
        for i in idx:
            by.setdefault(i // H, []).append(i % H)
        return [HeadAblation(layer=l, heads=hs) for l, hs in by.items()]

    rows = [dict(condition="none", heads="", **_needle_accuracy(model, trials))]
    rows.append(dict(condition=f"top-{k} retrieval", heads=" ".join(f"L{i // H}H{i % H}" for i in top),
                     **_needle_accuracy(model, trials, ablate(top))))
    rng = random.Random(seed)
    others = [i for i in range(flat.numel()) if i not in top]
    for d in range(draws):
        pick = rng.sample(others, k)
        rows.append(dict(condition=f"random-{k} #{d + 1}", heads=" ".join(f"L{i // H}H{i % H}" for i in pick),
                         **_needle_accuracy(model, trials, ablate(pick))))
    return pd.DataFrame(rows)
