"""Indirect-object identification (Wang et al. 2022) from the model's own tokenizer."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .base import Task, TaskBatch, at_position, encode, gather_ids, last_positions, pad, single_token

# Common first names; only those that are one token *with the leading space* in the model's tokenizer are used.
CANDIDATE_NAMES = (
    "Mary John Tom James Michael David Robert William Sarah Anna Emma Lisa Paul Mark Peter George Jack Kate Alice "
    "Laura Daniel Kevin Jason Ryan Eric Adam Brian Steven Richard Thomas Charles Joseph Susan Linda Karen Nancy "
    "Helen Amy Emily Jessica Rachel Rose Grace Anne Jane Frank Scott Andrew Matthew Chris Sam Ben Max Henry Edward "
    "Lucy Sophie Oliver Harry Charlie Leo Nick Tim Dan Joe Bob Bill Jim Mike Steve Jeff Greg Carl Alan Ian Sean "
    "Kelly Julia Maria Sara Ellen Martin Simon Victoria Elizabeth Jennifer Michelle Patrick Tony Fred Luke"
).split()

# {A} is the first name mentioned, {B} the second, {S2} the repeated subject; IO = the name not repeated.
TEMPLATES = (
    "When {A} and {B} went to the {place}, {S2} gave a {object} to",
    "After {A} and {B} went to the {place}, {S2} gave a {object} to",
    "While {A} and {B} were working at the {place}, {S2} gave a {object} to",
    "Then, {A} and {B} had a long argument, and afterwards {S2} said to",
    "Friends {A} and {B} found a {object} at the {place}. {S2} gave it to",
)
PLACES = ("store", "garden", "school", "hospital", "restaurant", "station", "office", "park")
OBJECTS = ("drink", "book", "ring", "letter", "bone", "kiss", "basketball", "computer")
MIN_NAMES = 6


def single_token_names(model) -> list[tuple[str, int]]:
    """(name, id) for candidate names that are exactly one token with a leading space."""
    if model.tokenizer is None:
        raise ValueError(f"ioi needs a tokenizer; {model.name} has none")
    out = [(n, single_token(model, " " + n)) for n in CANDIDATE_NAMES]
    return [(n, i) for n, i in out if i is not None]


@dataclass(frozen=True)
class IOITask(Task):
    """"When Mary and John went to the store, John gave a drink to" -> " Mary".

    Five templates (TEMPLATES), each in ABBA order (IO named first) and BABA order (S named first), cycled row by
    row (rows 2k, 2k+1: template k mod 5, ABBA then BABA); place, object and names are drawn at random. Names are
    the CANDIDATE_NAMES that are one token with the leading space in this tokenizer (a
    ValueError below MIN_NAMES). The prompt follows the model's BOS convention (Gemma: <bos> first; SmolLM2: none).
    corrupt="abc" (default): the same prompt with S2 replaced by a third name C, so IO, S and C all differ and
    nothing marks which of IO / S is the duplicate; corrupt="abc-all": IO, S1 and S2 all replaced by three fresh
    names (Wang et al.'s p_ABC). Pairs whose clean and corrupt prompts tokenize to different lengths are dropped
    (counted in `notes`). answer = IO, wrong = S (both with the leading space).
    metric: logit[IO] - logit[S] at the last token (higher is better); accuracy: logit[IO] > logit[S]."""

    corrupt: str = "abc"

    name = "ioi"
    metric_name = "logit diff IO-S"
    reads = ("answer", "wrong")

    def _make(self, model, n, seed):
        if self.corrupt not in ("abc", "abc-all"):
            raise ValueError(f"corrupt must be 'abc' or 'abc-all', got {self.corrupt!r}")
        names = single_token_names(model)
        need = 6 if self.corrupt == "abc-all" else 3
        if len(names) < max(MIN_NAMES, need):
            raise ValueError(f"ioi needs at least {MIN_NAMES} first names that are single tokens with a leading space "
                             f"in {model.name}'s tokenizer; found {len(names)}: {[x for x, _ in names]}")
        rng = random.Random(seed)
        clean, corrupt, io_ids, s_ids = [], [], [], []
        dropped = tried = 0
        while len(clean) < n:
            tried += 1
            if tried > 10 * n + 100:
                raise ValueError(f"only {len(clean)} of {n} IOI prompts tokenize to equal clean/corrupt lengths in "
                                 f"{model.name} ({dropped} dropped)")
            k = len(clean)
            template = TEMPLATES[(k // 2) % len(TEMPLATES)]  # every template in both orders, in turn
            slots = dict(place=rng.choice(PLACES), object=rng.choice(OBJECTS))
            picked = rng.sample(names, need)
            (io, io_id), (s, s_id), (c, _) = picked[:3]
            abba = k % 2 == 0
            text = template.format(A=io if abba else s, B=s if abba else io, S2=s, **slots)
            if self.corrupt == "abc":
                bad = template.format(A=io if abba else s, B=s if abba else io, S2=c, **slots)
            else:
                a, b, c2 = (x for x, _ in picked[3:6])
                bad = template.format(A=a, B=b, S2=c2, **slots)
            ids, bad_ids = encode(model, text), encode(model, bad)
            if len(ids) != len(bad_ids) or ids.count(s_id) != 2 or ids.count(io_id) != 1:
                dropped += 1
                continue
            clean.append(ids)
            corrupt.append(bad_ids)
            io_ids.append(io_id)
            s_ids.append(s_id)
        c_toks, x_toks = pad(model, clean), pad(model, corrupt)
        dev = c_toks.input_ids.device
        notes = (f"{len(names)} single-token names, {len(TEMPLATES)} templates x ABBA/BABA, corrupt={self.corrupt}; "
                 f"dropped {dropped} of {tried} sampled pairs (unequal token lengths or names split)")
        return TaskBatch(c_toks, x_toks, torch.tensor(io_ids, device=dev), torch.tensor(s_ids, device=dev),
                         last_positions(c_toks), None, notes=notes)

    def _metric(self, logits, batch):
        x = at_position(logits, batch)  # [batch, d_vocab]
        return gather_ids(x, batch.answer) - gather_ids(x, batch.wrong)

    def _accuracy(self, logits, batch):
        return self._metric(logits, batch) > 0
