"""Synthetic tasks with known ground truth. Each returns (tokens [batch, seq], loss_mask [batch, seq]) where
loss_mask[t] marks positions whose *next* token is scored; all sampling is from a torch.Generator (deterministic).

Token 0 is BOS in every task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BOS = 0


@dataclass(frozen=True)
class InductionTask:
    """BOS, noise, r_1..r_n, r_1..r_n with r random: the repeat is predictable only by induction.

    The period n and the noise length vary from batch to batch, so no fixed-offset positional head can solve it
    (with one fixed period a model learns "attend n-1 back" instead of induction)."""

    vocab_size: int = 64
    min_half: int = 8
    max_half: int = 40
    max_prefix: int = 24
    name: str = "induction"

    def sample(self, batch: int, gen: torch.Generator, half: int | None = None, prefix: int | None = None):
        n = half or int(torch.randint(self.min_half, self.max_half + 1, (1,), generator=gen))
        pre = prefix if prefix is not None else int(torch.randint(0, self.max_prefix + 1, (1,), generator=gen))
        noise = torch.randint(1, self.vocab_size, (batch, pre), generator=gen)
        r = torch.randint(1, self.vocab_size, (batch, n), generator=gen)
        toks = torch.cat([torch.full((batch, 1), BOS), noise, r, r], dim=1)
        mask = torch.zeros_like(toks, dtype=torch.bool)
        mask[:, 1 + pre + n: -1] = True  # positions in the repeat predict the next token of the repeat
        return toks, mask


@dataclass(frozen=True)
class BigramBackcopyTask:
    """Guo et al. 2024: tokens follow a fixed sparse bigram chain, except after a trigger token, where the next
    token copies the token *before* the trigger. Trigger tokens are 1..n_triggers."""

    vocab_size: int = 64
    seq_len: int = 64
    n_triggers: int = 3
    branching: int = 3
    chain_seed: int = 1234
    name: str = "bigram_backcopy"

    def transitions(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.chain_seed)
        probs = torch.zeros(self.vocab_size, self.vocab_size)
        for a in range(self.vocab_size):
            nxt = torch.randperm(self.vocab_size - 1, generator=g)[: self.branching] + 1
            probs[a, nxt] = torch.rand(self.branching, generator=g) + 0.5
        probs[:, 0] = 0
        return probs / probs.sum(-1, keepdim=True)

    def is_trigger(self, toks: torch.Tensor) -> torch.Tensor:
        return (toks >= 1) & (toks <= self.n_triggers)

    def sample(self, batch: int, gen: torch.Generator, seq_len: int | None = None):
        n = seq_len or self.seq_len
        probs = self.transitions()
        toks = torch.zeros(batch, n, dtype=torch.long)
        toks[:, 1] = torch.randint(self.n_triggers + 1, self.vocab_size, (batch,), generator=gen)
        for t in range(1, n - 1):
            nxt = torch.multinomial(probs[toks[:, t]], 1, generator=gen)[:, 0]
            trig = self.is_trigger(toks[:, t])
            toks[:, t + 1] = torch.where(trig, toks[:, t - 1], nxt)
        mask = torch.ones_like(toks, dtype=torch.bool)
        mask[:, 0] = False
        mask[:, -1] = False
        return toks, mask


@dataclass(frozen=True)
class NeedleTask:
    """BOS, haystack ..., MARK v_1..v_k, haystack ..., MARK -> v_1..v_k. Token 1 is MARK; haystack and values are
    drawn from 2..vocab-1. The answer is only in the needle: retrieval heads must copy it."""

    vocab_size: int = 64
    n_values: int = 3
    min_len: int = 24
    max_len: int = 160
    name: str = "needle"
    MARK: int = 1

    def sample(self, batch: int, gen: torch.Generator, length: int | None = None, depth: float | None = None):
        k = self.n_values
        n = length or int(torch.randint(self.min_len, self.max_len + 1, (1,), generator=gen))
        hay = n - 2 * (k + 1) - 1  # room for BOS, needle, query and answer
        if hay < 1:
            raise ValueError(f"needle sequences need length >= {2 * (k + 1) + 2}, got {n}")
        toks = torch.randint(2, self.vocab_size, (batch, n), generator=gen)
        toks[:, 0] = BOS
        if depth is None:
            pos = torch.randint(1, hay + 1, (batch,), generator=gen)
        else:
            pos = torch.full((batch,), 1 + int(round(depth * (hay - 1))))
        vals = torch.randint(2, self.vocab_size, (batch, k), generator=gen)
        mask = torch.zeros_like(toks, dtype=torch.bool)
        for i in range(batch):
            p = int(pos[i])
            toks[i, p] = self.MARK
            toks[i, p + 1: p + 1 + k] = vals[i]
        toks[:, n - k - 1] = self.MARK
        toks[:, n - k:] = vals
        mask[:, n - k - 1: n - 1] = True
        return toks, mask

    def needle_span(self, toks: torch.Tensor) -> list[tuple[int, int]]:
        """[start, end) of each row's needle values (the first MARK's values)."""
        spans = []
        for row in toks:
            p = int((row == self.MARK).nonzero()[0])
            spans.append((p + 1, p + 1 + self.n_values))
        return spans


TASKS = {"induction": InductionTask(), "bigram_backcopy": BigramBackcopyTask(), "needle": NeedleTask()}
