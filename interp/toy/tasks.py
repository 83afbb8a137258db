"""Synthetic tasks with known ground truth. Each returns (tokens [batch, seq], loss_mask [batch, seq]) where
loss_mask[t] marks positions whose *next* token is scored; all sampling is from a torch.Generator (deterministic).

Token 0 is BOS in every task.
"""

from __future__ import annotations

import dataclasses
import functools
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
    """Guo et al. 2024 ("Active-Dormant Attention Heads"): tokens follow a bigram Markov chain, except after a
    trigger token, where the next token copies the token *before* the trigger.

    source="prose": the chain is the character bigram chain of the bundled prose text (analyses/data/prose.txt,
    whitespace collapsed); the triggers are its n_triggers most frequent letters (token ids 1..n_triggers; letters,
    not the space: with the space as a trigger the chain falls into ", , , ," forever, since "," is always followed
    by a space), then the other characters follow by decreasing frequency. The chain is mixed with a uniform one
    (weight `smoothing`): the short text gives some characters a single successor, and a trigger as the only
    successor of x would loop x,trigger,x,... forever.
    source="random": a random sparse chain over vocab_size tokens (branching next tokens each). Replacing the
    source of the prose task (dataclasses.replace) keeps its vocab_size, so that control has the same vocabulary.
    """

    vocab_size: int = 64
    seq_len: int = 64
    n_triggers: int = 3
    branching: int = 3
    chain_seed: int = 1234
    source: str = "random"
    smoothing: float = 0.1
    name: str = "bigram_backcopy"

    def __post_init__(self):
        if self.source not in ("random", "prose"):
            raise ValueError(f"source must be 'random' or 'prose', got {self.source!r}")
        if not 0.0 <= self.smoothing <= 1.0:
            raise ValueError(f"smoothing must be in [0, 1], got {self.smoothing}")
        if self.source == "prose":
            object.__setattr__(self, "vocab_size", len(self._chars()) + 1)
        if not 1 <= self.n_triggers < self.vocab_size - 1:
            raise ValueError(f"n_triggers must be in [1, {self.vocab_size - 2}], got {self.n_triggers}")

    def _chars(self) -> list[str]:
        """Token id - 1 -> character: the triggers (most frequent letters), then the rest by decreasing frequency."""
        from collections import Counter

        counts = Counter(_prose_text())
        ranked = sorted(counts, key=lambda c: (-counts[c], c))
        triggers = [c for c in ranked if c.isalpha()][: self.n_triggers]
        return triggers + [c for c in ranked if c not in triggers]

    def decode(self, toks) -> str:
        """Text of a token row (prose source only); BOS is shown as '^'."""
        if self.source != "prose":
            raise ValueError("decode needs source='prose'")
        chars = self._chars()
        return "".join("^" if int(t) == BOS else chars[int(t) - 1] for t in toks)

    def transitions(self) -> torch.Tensor:
        if self.source == "prose":
            text = _prose_text()
            ids = {c: i + 1 for i, c in enumerate(self._chars())}
            counts = torch.zeros(self.vocab_size, self.vocab_size)
            for a, b in zip(text, text[1:]):
                counts[ids[a], ids[b]] += 1
            counts[ids[text[-1]], ids[text[0]]] += 1  # wrap around: every character has a successor
            counts[BOS, 1:] = 1  # BOS is never the current token when sampling; keep its row a distribution
            uniform = torch.ones(self.vocab_size, self.vocab_size)
            uniform[:, BOS] = 0
            return ((1 - self.smoothing) * counts / counts.sum(-1, keepdim=True)
                    + self.smoothing * uniform / uniform.sum(-1, keepdim=True))
        g = torch.Generator().manual_seed(self.chain_seed)
        probs = torch.zeros(self.vocab_size, self.vocab_size)
        for a in range(self.vocab_size):
            nxt = torch.randperm(self.vocab_size - 1, generator=g)[: self.branching] + 1
            probs[a, nxt] = torch.rand(self.branching, generator=g) + 0.5
        probs[:, 0] = 0
        return probs / probs.sum(-1, keepdim=True)

    def is_trigger(self, toks: torch.Tensor) -> torch.Tensor:
        return (toks >= 1) & (toks <= self.n_triggers)

    def sample(self, batch: int, gen: torch.Generator, seq_len: int | None = None, device=None):
        """BOS, a random non-trigger token, then the chain with back-copies after triggers. With a CUDA generator
        and device the sampling runs on the GPU (training)."""
        n = seq_len or self.seq_len
        probs = self.transitions().to(device)
        toks = torch.zeros(batch, n, dtype=torch.long, device=device)
        toks[:, 1] = torch.randint(self.n_triggers + 1, self.vocab_size, (batch,), generator=gen, device=device)
        for t in range(1, n - 1):
            nxt = torch.multinomial(probs[toks[:, t]], 1, generator=gen)[:, 0]
            trig = self.is_trigger(toks[:, t])
            toks[:, t + 1] = torch.where(trig, toks[:, t - 1], nxt)
        mask = torch.ones_like(toks, dtype=torch.bool)
        mask[:, 0] = False
        mask[:, -1] = False
        return toks, mask


@functools.lru_cache(maxsize=1)
def _prose_text() -> str:
    from interp.analyses.probes import DATA

    return " ".join((DATA / "prose.txt").read_text().split())


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


TASKS = {"induction": InductionTask(), "bigram_backcopy": BigramBackcopyTask(source="prose", seq_len=256),
         "needle": NeedleTask()}


def make_task(name: str, task_args: dict | None = None):
    """The registered task `name`, with `task_args` (a checkpoint's or a recipe's overrides) replaced in."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    known = {f.name for f in dataclasses.fields(TASKS[name]) if f.name != "name"}
    if task_args and set(task_args) - known:
        raise ValueError(f"unknown option(s) {sorted(set(task_args) - known)} for task {name!r}; "
                         f"allowed: {sorted(known)}")
    return dataclasses.replace(TASKS[name], **task_args) if task_args else TASKS[name]
