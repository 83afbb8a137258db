"""Probe inputs built from the model's own tokenizer and vocabulary, so any checkpoint works (toy vocabularies
included): repeated random tokens, natural text (prose, code) and random tokens."""

from __future__ import annotations

from pathlib import Path

import torch

from interp.memory import GiB, available_bytes
from interp.validate import int_arg, model_arg

SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed

DATA = Path(__file__).parent / "data"
DOMAINS = ("prose", "code")


def corpus(domain: str = "prose") -> str:
    if not isinstance(domain, str) or domain not in DOMAINS:
        raise ValueError(f"unknown text domain {domain!r}; available: {DOMAINS}")
    return (DATA / f"{domain}.txt").read_text()


def _ordinary_ids(model, generator: torch.Generator, shape) -> torch.Tensor:
    """Random token ids, avoiding the tokenizer's special tokens (and id 0 / BOS of toy models)."""
    vocab = model.cfg.d_vocab
    special = set()
    tok = model.tokenizer
    if tok is not None:
        special = set(getattr(tok, "all_special_ids", []) or [])
        vocab = min(vocab, len(tok))
    bos = getattr(model.model.config, "bos_token_id", None)
    if bos is not None:
        special.add(bos)
    special.add(0)
    allowed = torch.tensor([i for i in range(min(vocab, 50_000)) if i not in special])
    if allowed.numel() == 0:
        raise ValueError("the vocabulary has no ordinary tokens to sample from")
    return allowed[torch.randint(0, allowed.numel(), shape, generator=generator)]


def _bool_arg(name: str, value, where: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def fits_n_prompts(n_prompts: int, per_prompt_bytes: int, device, where: str, what: str) -> None:
    """Refuse, before anything is built, n_prompts whose buffers (per_prompt_bytes each) exceed the free memory of
    `device`; the message names n_prompts and the largest value that fits. Nothing is refused when the free memory
    is unknown."""
    limit = available_bytes(device)
    if limit is None or n_prompts * per_prompt_bytes <= limit:
        return
    most = limit // max(1, per_prompt_bytes)
    raise ValueError(f"{where}: n_prompts={n_prompts} needs {n_prompts * per_prompt_bytes / GiB:.1f} GiB for {what}, "
                     f"more than the {limit / GiB:.1f} GiB free on {device}; n_prompts must be at most {most}")


def _token_bytes(n_tokens: int) -> int:
    """int64 ids, with room for the copies made while building them (draw, index, concatenate)."""
    return 3 * 8 * n_tokens


def bos_id(model) -> int | None:
    tok = model.tokenizer
    if tok is not None and tok.bos_token_id is not None:
        return tok.bos_token_id
    return getattr(model.model.config, "bos_token_id", None)


def repeated_tokens(model, half: int = 64, n_prompts: int = 8, seed: int = 0, prepend_bos: bool = True):
    """[n_prompts, 1 + 2*half] (or 2*half without BOS): random tokens r, then r again."""
    where = "repeated_tokens"
    model_arg(model, where)
    half = int_arg("half", half, minimum=1, where=where)
    n_prompts = int_arg("n_prompts", n_prompts, minimum=1, where=where)
    seed = int_arg("seed", seed, minimum=0, maximum=SEED_MAX, where=where)
    _bool_arg("prepend_bos", prepend_bos, where)
    n_ctx = model.cfg.n_ctx
    need = 2 * half + int(prepend_bos)
    if need > n_ctx:
        raise ValueError(f"{where}: repeated sequences of 2 x half = 2 x {half} tokens"
                         f"{' after BOS' if prepend_bos else ''} exceed the model's context ({n_ctx}); half must be "
                         f"at most {(n_ctx - int(prepend_bos)) // 2}")
    fits_n_prompts(n_prompts, _token_bytes(need), "cpu", where, f"[n_prompts, {need}] token ids")
    g = torch.Generator().manual_seed(seed)
    r = _ordinary_ids(model, g, (n_prompts, half))
    toks = torch.cat([r, r], dim=1)
    b = bos_id(model)
    if prepend_bos and b is not None:
        toks = torch.cat([torch.full((n_prompts, 1), b), toks], dim=1)
    return toks


def random_tokens(model, n_tokens: int = 256, n_prompts: int = 4, seed: int = 0, prepend_bos: bool = True):
    """[n_prompts, n_tokens]: random ordinary tokens of the model's vocabulary (after BOS when prepend_bos)."""
    where = "random_tokens"
    model_arg(model, where)
    _bool_arg("prepend_bos", prepend_bos, where)
    n_tokens = int_arg("n_tokens", n_tokens, minimum=2, maximum=model.cfg.n_ctx, where=where)
    n_prompts = int_arg("n_prompts", n_prompts, minimum=1, where=where)
    seed = int_arg("seed", seed, minimum=0, maximum=SEED_MAX, where=where)
    fits_n_prompts(n_prompts, _token_bytes(n_tokens), "cpu", where, f"[n_prompts, {n_tokens}] token ids")
    g = torch.Generator().manual_seed(seed)
    toks = _ordinary_ids(model, g, (n_prompts, n_tokens - int(prepend_bos)))
    b = bos_id(model)
    if prepend_bos and b is not None:
        toks = torch.cat([torch.full((n_prompts, 1), b), toks], dim=1)
    return toks


def text_tokens(model, domain: str = "prose", n_tokens: int | None = None, prepend_bos: bool | None = None):
    """[1, n] token ids of the domain's bundled text, tokenized by the model; n_tokens (at most the model's context)
    takes the first n_tokens, repeating the text to reach them.

    The bundled texts are short: prose is one paragraph of about 470 tokens (SmolLM2's tokenizer; code about 370),
    so n_tokens=1024 is that paragraph 2.2 times over. From the second copy on, a model can copy the text by
    induction (SmolLM2's loss falls from 3.2 to 0.1 there), which moves long-context scores: read them as scores on
    repeated text, not on 1,024 tokens of distinct prose."""
    where = "text_tokens"
    model_arg(model, where)
    n_tokens = int_arg("n_tokens", n_tokens, minimum=1, where=where, optional=True)
    if n_tokens is not None and n_tokens > model.cfg.n_ctx:
        raise ValueError(f"{where}: n_tokens={n_tokens} exceeds {model.name}'s context of {model.cfg.n_ctx} tokens; "
                         f"n_tokens must be at most {model.cfg.n_ctx}")
    if prepend_bos is not None:
        _bool_arg("prepend_bos", prepend_bos, where)
    text = corpus(domain)
    if model.tokenizer is None:
        raise ValueError(f"{model.name} has no tokenizer: natural-text probes need one (use random_tokens)")
    if n_tokens is None:
        ids = model.to_tokens(text, prepend_bos=prepend_bos).input_ids[0]
    else:  # the corpus may be longer than a short model's context: encode it whole, keep the first n_tokens
        ids = torch.tensor(model.tokenizer(text, add_special_tokens=prepend_bos is None)["input_ids"])
        if prepend_bos and model.tokenizer.bos_token_id is not None and (not len(ids) or ids[0] != bos_id(model)):
            ids = torch.cat([torch.tensor([model.tokenizer.bos_token_id]), ids])
        head = ids[:1] if (prepend_bos is not False and ids[0] == bos_id(model)) else ids[:0]
        body = ids[len(head):]
        reps = -(-(n_tokens - len(head)) // len(body))
        ids = torch.cat([head, body.repeat(reps)])[:n_tokens]
    return ids[None]
