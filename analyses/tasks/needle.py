"""`needle`: retrieve a value hidden in a haystack (the retrieval-head probe of `analyses.retrieval` as a task).

Each row is a needle-in-a-haystack prompt of `context` tokens with the needle at a different depth (text models:
"The secret code is <three words>." hidden in the bundled prose, then a question; tokenizer-less toys: a marker
token followed by values, then the marker again). `answer` is the first token of the hidden value. corrupt: the
same prompt with the hidden value replaced by another one of the same token length, so the corrupt run answers
with that other value, `wrong`. metric: logit[answer] - logit[wrong] at the last position (higher is better);
accuracy: the answer is the top-1 prediction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..retrieval import make_trials
from .base import Task, TaskBatch, at_position, gather_ids, last_positions, pad


@dataclass(frozen=True)
class NeedleTask(Task):
    context: int = 128

    name = "needle"
    higher_is_better = True
    metric_name = "logit diff (answer - other value)"
    reads = ("answer", "wrong")
    needs_tokenizer = False

    def _make(self, model, n, seed):
        if isinstance(self.context, bool) or not isinstance(self.context, int) or self.context < 16:
            raise ValueError(f"context must be an int >= 16, got {self.context!r}")
        depths = [0.1 + 0.8 * i / max(1, n - 1) for i in range(n)]
        clean_rows, corrupt_rows, answers, wrongs = [], [], [], []
        rng = random.Random(seed)
        attempts = 0
        while len(clean_rows) < n:
            attempts += 1
            if attempts > 20 * n:
                raise ValueError(f"could not build {n} needle prompts whose corrupted value has the same token "
                                 f"length for {model.name}")
            d = depths[len(clean_rows)]
            s = rng.randrange(1 << 30)
            a, b = make_trials(model, contexts=(self.context,), depths=(d,), seed=s)[0], \
                make_trials(model, contexts=(self.context,), depths=(d,), seed=s + 1)[0]
            ids = a.input_ids[0].tolist()
            start, end = a.needle_span
            if len(b.answer) != end - start or b.answer[0] == a.answer[0]:
                continue
            corrupt = ids[:start] + list(b.answer) + ids[end:]
            if len(corrupt) != len(ids):
                continue
            clean_rows.append(ids)
            corrupt_rows.append(corrupt)
            answers.append(a.answer[0])
            wrongs.append(b.answer[0])
        clean, corrupt = pad(model, clean_rows), pad(model, corrupt_rows)
        dev = clean.input_ids.device
        return TaskBatch(clean, corrupt, torch.tensor(answers, device=dev), torch.tensor(wrongs, device=dev),
                         last_positions(clean), None,
                         notes=f"{n} prompts of ~{self.context} tokens, needle depths 0.1-0.9; corrupt: another value")

    def _metric(self, logits, batch):
        x = at_position(logits, batch)
        return gather_ids(x, batch.answer) - gather_ids(x, batch.wrong)

    def _accuracy(self, logits, batch):
        return at_position(logits, batch).argmax(-1) == batch.answer.to(logits.device)
