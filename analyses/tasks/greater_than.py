"""Greater-than (Hanna et al. 2023), tens-digit form for tokenizers that split numbers into single digits."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .base import Task, TaskBatch, at_position, encode, gather_ids, last_positions, pad

NOUNS = ("war", "siege", "drought", "famine", "expedition", "occupation", "reign", "strike", "plague", "voyage")
TEMPLATE = "The {noun} lasted from the year {XX}{YY} to the year {XX}"


@dataclass(frozen=True)
class GreaterThanTask(Task):
    """"The war lasted from the year 1732 to the year 17" -> next token: the end year's tens digit.

    Both bundled tokenizers write years digit by digit (SmolLM2 and Gemma 3: " 1732" -> " ", "1", "7", "3", "2"),
    so the prompt ends on the century's last digit and the next token is the tens digit d of the end year. The
    century XX is 11-17, the start year's tens digit t is 1-8 (units 0-9), the noun one of NOUNS. Checked per
    model: each digit 0-9 must be one token appended to the prompt, else a ValueError.
    corrupt: the start year replaced by XX01 (same token length).
    metric: P(d > t) - P(d < t) at the last token, probabilities over the full vocabulary (d = t counts in
    neither; the corrupt run is scored with the clean t; higher is better). answer = digit t+1 (the smallest
    correct digit), wrong = digit t-1 (the largest incorrect one); accuracy: P(d > t) > P(d < t).
    extra["digit_ids"]: [batch, 10] token ids of "0".."9"; extra["tens"]: [batch] t."""

    name = "greater-than"
    metric_name = "P(>)-P(<)"
    reads = ("extra.digit_ids", "extra.tens")

    def _make(self, model, n, seed):
        rng = random.Random(seed)
        rows, clean, corrupt = [], [], []
        dropped = 0
        digit_ids = None
        while len(clean) < n:
            if dropped > 4 * n + 20:
                raise ValueError(f"only {len(clean)} of {n} greater-than prompts tokenize to equal clean/corrupt "
                                 f"lengths in {model.name}")
            xx, t, u = rng.randint(11, 17), rng.randint(1, 8), rng.randint(0, 9)
            noun = rng.choice(NOUNS)
            text = TEMPLATE.format(noun=noun, XX=xx, YY=f"{t}{u}")
            ids = encode(model, text)
            if digit_ids is None:
                digit_ids = _digit_ids(model, text, ids)
            bad = encode(model, TEMPLATE.format(noun=noun, XX=xx, YY="01"))
            if len(bad) != len(ids):
                dropped += 1
                continue
            clean.append(ids)
            corrupt.append(bad)
            rows.append(t)
        c_toks, x_toks = pad(model, clean), pad(model, corrupt)
        dev = c_toks.input_ids.device
        tens = torch.tensor(rows, device=dev)
        digits = torch.tensor(digit_ids, device=dev)
        return TaskBatch(c_toks, x_toks, digits[tens + 1], digits[tens - 1], last_positions(c_toks), None,
                         notes=f"tens-digit form, e.g. {TEMPLATE.format(noun=NOUNS[0], XX=17, YY=32)!r}; corrupt "
                               f"start year XX01; dropped {dropped}",
                         extra={"digit_ids": digits[None].expand(n, 10), "tens": tens})

    def _probs_gt_lt(self, logits, batch):
        p = torch.softmax(at_position(logits, batch), dim=-1)  # [batch, d_vocab]
        pd = gather_ids(p, batch.extra["digit_ids"])  # [batch, 10]
        d = torch.arange(10, device=pd.device)
        t = batch.extra["tens"].to(pd.device)[:, None]
        return (pd * (d > t)).sum(1), (pd * (d < t)).sum(1)

    def _metric(self, logits, batch):
        gt, lt = self._probs_gt_lt(logits, batch)
        return gt - lt

    def _accuracy(self, logits, batch):
        gt, lt = self._probs_gt_lt(logits, batch)
        return gt > lt


def _digit_ids(model, text: str, ids: list[int]) -> list[int]:
    out = []
    for d in range(10):
        ext = encode(model, text + str(d))
        if len(ext) != len(ids) + 1 or ext[:len(ids)] != ids:
            raise ValueError(f"greater-than needs a tokenizer that writes numbers digit by digit; {model.name} "
                             f"tokenizes {text + str(d)!r} as {ext[len(ids) - 2:]} after the prompt")
        out.append(ext[-1])
    if len(set(out)) != 10:
        raise ValueError(f"greater-than: the digits 0-9 do not map to 10 distinct tokens in {model.name}")
    return out
