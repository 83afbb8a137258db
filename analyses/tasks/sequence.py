"""Next-token tasks: `lm` (loss on the bundled prose / code) and `induction` (repeated random tokens)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..probes import DOMAINS, bos_id, random_tokens, repeated_tokens, text_tokens
from .base import (Task, TaskBatch, adds_bos, last_positions, next_token_accuracy, next_token_loss, pad)


@dataclass(frozen=True)
class LMTask(Task):
    """Next-token cross-entropy on windows of the bundled text (`source` "prose" or "code", analyses/data/).

    Each row is a window of `seq_len` tokens (BOS first when the tokenizer adds one) at a random offset of the
    tokenized text; the corpora are short (a few hundred tokens), so windows overlap. loss_mask marks every
    position but the last; `answer` is the token that follows the window. No corrupt prompts.
    metric: mean cross-entropy over loss_mask (lower is better); accuracy: top-1 next-token accuracy."""

    source: str = "prose"
    seq_len: int = 64

    name = "lm"
    higher_is_better = False
    metric_name = "loss"
    reads = ("loss_mask",)

    def _make(self, model, n, seed):
        if self.source not in DOMAINS:
            raise ValueError(f"source must be one of {DOMAINS}, got {self.source!r}")
        ids = text_tokens(model, self.source)[0].tolist()
        head = ids[:1] if adds_bos(model) and ids and ids[0] == bos_id(model) else []
        body = ids[len(head):]
        if isinstance(self.seq_len, bool) or not isinstance(self.seq_len, int) or self.seq_len - len(head) < 2:
            raise ValueError(f"seq_len must be an int >= {len(head) + 2}, got {self.seq_len!r}")
        span = self.seq_len - len(head)  # body tokens per window
        if span + 1 > len(body):
            raise ValueError(f"seq_len={self.seq_len} is too long for the {self.source} text ({len(body)} tokens "
                             f"for {model.name}); use seq_len <= {len(body) - 1 + len(head)}")
        if self.seq_len > model.cfg.n_ctx:
            raise ValueError(f"seq_len={self.seq_len} exceeds the model's context ({model.cfg.n_ctx})")
        g = torch.Generator().manual_seed(seed)
        offsets = torch.randint(0, len(body) - span, (n,), generator=g).tolist()
        seqs = [head + body[o:o + span] for o in offsets]
        clean = pad(model, seqs)
        dev = clean.input_ids.device
        answer = torch.tensor([body[o + span] for o in offsets], device=dev)
        loss_mask = torch.ones_like(clean.input_ids, dtype=torch.bool)
        loss_mask[:, -1] = False
        return TaskBatch(clean, None, answer, None, last_positions(clean), loss_mask,
                         notes=f"{n} windows of {self.seq_len} tokens from {self.source} ({len(body)} tokens; "
                               f"windows overlap); BOS first: {bool(head)}")

    _metric = staticmethod(next_token_loss)
    _accuracy = staticmethod(next_token_accuracy)


@dataclass(frozen=True)
class InductionTask(Task):
    """[BOS] r r with r `half` random ordinary tokens of the model's vocabulary (works without a tokenizer).

    loss_mask marks positions inside the second repeat whose next token is also in it (as the toy task's mask);
    `answer` at the last position is r[0] (the repeat continues). corrupt: the same first half, the second half
    replaced by fresh random tokens. `prepend_bos=None` follows the model's convention (toys: BOS).
    metric: mean cross-entropy of the clean second repeat (lower is better; the corrupt run is scored on the
    clean targets too); accuracy: top-1 accuracy on those positions.
    The default half=20 lies inside toy-induction's training periods (8-40)."""

    half: int = 20
    prepend_bos: bool | None = None

    name = "induction"
    higher_is_better = False
    metric_name = "loss (2nd repeat)"
    reads = ("loss_mask",)
    needs_tokenizer = False

    def _make(self, model, n, seed):
        if isinstance(self.half, bool) or not isinstance(self.half, int) or self.half < 2:
            raise ValueError(f"half must be an int >= 2, got {self.half!r}")
        bos = adds_bos(model) if self.prepend_bos is None else bool(self.prepend_bos)
        toks = repeated_tokens(model, half=self.half, n_prompts=n, seed=seed, prepend_bos=bos)  # [n, off + 2 half]
        off = toks.shape[1] - 2 * self.half
        fresh = random_tokens(model, n_tokens=self.half, n_prompts=n, seed=seed + 10_007, prepend_bos=False)
        corrupt_ids = toks.clone()
        corrupt_ids[:, off + self.half:] = fresh
        clean, corrupt = pad(model, toks.tolist()), pad(model, corrupt_ids.tolist())
        loss_mask = torch.zeros_like(clean.input_ids, dtype=torch.bool)
        loss_mask[:, off + self.half: -1] = True
        answer = clean.input_ids[:, off]
        return TaskBatch(clean, corrupt, answer, None, last_positions(clean), loss_mask,
                         notes=f"BOS first: {bool(off)}; half={self.half}; corrupt second half: fresh random tokens")

    _metric = staticmethod(next_token_loss)
    _accuracy = staticmethod(next_token_accuracy)
