"""TaskBatch (clean / corrupt prompts, answers, read positions) and the Task base class with its shared helpers.

A task turns a loaded `HookedModel` into a `TaskBatch` built from the model's own tokenizer (or vocabulary, for
tokenizer-less toys) and scores logits with a scalar, differentiable metric. Patching code relies on three
invariants checked here: `clean` and `corrupt` have the same shape and padding, `position` is a real token of each
row (the last one, for the built-in tasks; never padding; negative indices count from the end, as in tensors),
and `answer` / `wrong` are int ids inside the vocabulary (`d_vocab`, recorded by `Task.make`; the logits a metric reads must cover every id it reads).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from interp.input_checks import bool_arg
from interp.tokens import Tokens
from interp.validate import model_arg

from ..probes import bos_id


@dataclass
class TaskBatch:
    clean: Tokens  # input_ids [batch, pos], attention_mask [batch, pos] or None (right-padded)
    corrupt: Tokens | None  # same shape and padding as clean, token-aligned; None for lm
    answer: torch.Tensor  # [batch] int64, the correct next token at `position`
    wrong: torch.Tensor | None  # [batch] int64 or None (IOI: the S name)
    position: torch.Tensor  # [batch] int64, the position whose logits are read (last real token)
    loss_mask: torch.Tensor | None = None  # [batch, pos] bool: positions whose next-token loss counts
    notes: str = ""
    task: str = ""
    extra: dict = field(default_factory=dict)  # task-specific tensors with a leading [batch] dim (e.g. digit ids)
    d_vocab: int | None = None  # the model's vocabulary size (Task.make sets it); answer / wrong ids lie below it

    def __post_init__(self):
        ids = self.clean.input_ids
        b, p = ids.shape
        if self.d_vocab is not None and (isinstance(self.d_vocab, bool) or not isinstance(self.d_vocab, int)
                                         or self.d_vocab < 1):
            raise TypeError(f"TaskBatch: d_vocab must be a positive int (the model's vocabulary size) or None, got "
                            f"{self.d_vocab!r:.60}")
        for name in ("answer", "wrong", "position"):
            t = getattr(self, name)
            if t is None and name != "wrong":
                raise TypeError(f"TaskBatch: {name} must be an int64 tensor [batch], got None")
            if t is not None and (not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype.is_complex
                                  or t.dtype == torch.bool):
                what = f"a {t.dtype} tensor" if isinstance(t, torch.Tensor) else type(t).__name__
                raise TypeError(f"TaskBatch: {name} must be an integer tensor [batch] of "
                                f"{'positions' if name == 'position' else 'token ids'}, got {what}")
        if self.corrupt is not None:
            if self.corrupt.input_ids.shape != ids.shape:
                raise ValueError(f"corrupt shape {tuple(self.corrupt.input_ids.shape)} differs from clean "
                                 f"{tuple(ids.shape)}; patching needs token-aligned prompts")
            if list(self.corrupt.lengths) != list(self.clean.lengths):
                raise ValueError("corrupt prompts must have the same per-row lengths as the clean prompts")
        for name in ("answer", "wrong", "position"):
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != (b,):
                raise ValueError(f"{name} must have shape [{b}], got {tuple(t.shape)}")
        if self.loss_mask is not None and tuple(self.loss_mask.shape) != (b, p):
            raise ValueError(f"loss_mask must have shape [{b}, {p}], got {tuple(self.loss_mask.shape)}")
        self._check_values(b, p)

    def _check_values(self, b: int, p: int) -> None:
        """Ids inside [0, d_vocab) and positions on real tokens; records the largest id a metric reads
        (`_id_max`, compared with the logits' width by check_logits without another device sync)."""
        if b == 0:
            self._id_max = -1
            return
        ids = [t.reshape(-1).long().cpu() for t in (self.answer, self.wrong) if t is not None]
        lo = min(int(t.min()) for t in ids)
        hi = max(int(t.max()) for t in ids)
        if self.loss_mask is not None:  # next-token losses read the clean ids themselves
            hi = max(hi, int(self.clean.input_ids.max()))
        vocab = f"[0, {self.d_vocab})" if self.d_vocab is not None else "[0, d_vocab)"
        if lo < 0 or (self.d_vocab is not None and hi >= self.d_vocab):
            for name in ("answer", "wrong"):
                t = getattr(self, name)
                if t is None:
                    continue
                bad = ((t < 0) | (t >= (self.d_vocab if self.d_vocab is not None else hi + 1))).nonzero()
                if len(bad):
                    r = int(bad[0])
                    raise ValueError(f"TaskBatch: {name} must hold token ids inside the vocabulary {vocab}; row {r} "
                                     f"has {int(t[r])}")
            raise ValueError(f"TaskBatch: the clean prompts hold ids outside the vocabulary {vocab}: max {hi}")
        self._id_max = hi
        pos = self.position.reshape(-1).long().cpu()
        out = ((pos < -p) | (pos >= p)).nonzero()
        if len(out):
            r = int(out[0])
            raise ValueError(f"TaskBatch: position must index the batch's {p} positions ([-{p}, {p}), as tensor "
                             f"indexing does); row {r} has {int(pos[r])}")
        mask = self.clean.attention_mask
        if mask is not None:  # the read position must be a real token, on either side of the padding
            at = pos % p
            pad = (~mask.cpu().bool()[torch.arange(b), at]).nonzero()
            if len(pad):
                r = int(pad[0])
                raise ValueError(f"TaskBatch: position must be a real token of each row, not padding (the last real "
                                 f"token for the built-in tasks); row {r} has {int(pos[r])}, which is padding in "
                                 f"that row (batch of [{b}, {p}])")

    def __len__(self) -> int:
        return self.clean.input_ids.shape[0]

    def to(self, device) -> "TaskBatch":
        return self._map(lambda t: t.to(device))

    def __getitem__(self, rows) -> "TaskBatch":
        """Rows of the batch (a slice or an index tensor), e.g. to run a large batch in chunks. An int i gives the
        one-row batch of row i (negative: from the end, as in lists); outside the batch it raises IndexError (which
        also ends a `for row in batch` loop)."""
        if isinstance(rows, numbers.Integral) and not isinstance(rows, bool):
            n = len(self)
            if not -n <= rows < n:
                raise IndexError(f"TaskBatch: row {int(rows)} is outside the batch of {n} rows (rows -{n}..{n - 1})")
            rows = slice(int(rows) % n, int(rows) % n + 1)
        elif not isinstance(rows, (slice, list, range, torch.Tensor, np.ndarray)):
            raise TypeError(f"TaskBatch: rows must be an int, a slice or an index tensor / list, got "
                            f"{type(rows).__name__} {rows!r:.60}")
        return self._map(lambda t: t[rows], rows)

    def _map(self, fn, rows=None) -> "TaskBatch":
        def tok(t: Tokens | None):
            if t is None:
                return None
            lengths = list(t.lengths)
            if rows is not None:
                lengths = torch.tensor(lengths)[rows].reshape(-1).tolist()
            return Tokens(fn(t.input_ids), None if t.attention_mask is None else fn(t.attention_mask), lengths)

        opt = lambda t: None if t is None else fn(t)  # noqa: E731
        return dataclasses.replace(
            self, clean=tok(self.clean), corrupt=tok(self.corrupt), answer=fn(self.answer), wrong=opt(self.wrong),
            position=fn(self.position), loss_mask=opt(self.loss_mask),
            extra={k: fn(v) if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == len(self) else v
                   for k, v in self.extra.items()})


@dataclass(frozen=True)
class Task:
    """A named task: `make(model, n, seed, **options) -> TaskBatch`, `metric(logits, batch)`.

    Options are the dataclass fields of each subclass; `make` accepts them as keyword overrides."""

    name = "task"
    higher_is_better = True
    metric_name = "metric"
    needs_tokenizer = True
    reads: ClassVar[tuple[str, ...]] = ()  # batch fields (or "extra.<key>") the metric reads: checked first

    def make(self, model, n: int = 32, seed: int = 0, **options) -> TaskBatch:
        task = self.with_options(**options)
        model_arg(model, f"task {self.name!r}", pattern_stats_ok=True)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if task.needs_tokenizer and model.tokenizer is None:
            from . import _REGISTRY  # the registry imports this module: look it up when needed

            ok = ", ".join(n for n, t in _REGISTRY.items() if not t.needs_tokenizer and n != "file")
            raise ValueError(f"task {self.name!r} needs a tokenizer; {model.name} has none (tokenizer-less models "
                             f"support: {ok})")
        batch = task._make(model, n, seed)
        batch = dataclasses.replace(batch, d_vocab=model.cfg.d_vocab)  # re-checks the ids against the vocabulary
        batch.task = self.name
        return batch

    def with_options(self, **options) -> "Task":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for task {self.name!r}; allowed: {sorted(known)}")
        kinds = {f.name: str(f.type) for f in dataclasses.fields(self)}
        for key, value in options.items():  # flags: a string such as "no" would read as True
            if kinds[key] in ("bool", "bool | None") and not (isinstance(value, bool)
                                                                 or (value is None and kinds[key] != "bool")):
                allowed = "True or False" + (" or None (the model's convention)" if kinds[key] != "bool" else "")
                raise TypeError(f"task {self.name!r}: option {key} must be {allowed}, got {type(value).__name__} "
                                f"{value!r:.60}")
        return dataclasses.replace(self, **options) if options else self

    def n_rows(self) -> int | None:
        """How many prompts the task has at most (None: as many as asked for)."""
        return None

    def _make(self, model, n: int, seed: int) -> TaskBatch:  # pragma: no cover - abstract
        raise NotImplementedError

    def metric(self, logits: torch.Tensor, batch: TaskBatch, per_example: bool = False) -> torch.Tensor:
        """Scalar (mean over the batch), or [batch] with per_example=True; differentiable in `logits`."""
        bool_arg("per_example", per_example, f"{self.name} metric")
        self._batch_arg(logits, batch, "metric")
        check_logits(logits, batch)
        self._check_reads(batch)
        m = self._metric(logits, batch)  # [batch]
        if not isinstance(m, torch.Tensor) or tuple(m.shape) != (len(batch),):
            got = f"shape {tuple(m.shape)}" if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"task {self.name!r}: _metric must return one value per example, a tensor of shape "
                             f"[{len(batch)}]; got {got}")
        return m if per_example else m.mean()

    def accuracy(self, logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        """[batch] float in [0, 1]: per-example success (see each task's docstring)."""
        self._batch_arg(logits, batch, "accuracy")
        check_logits(logits, batch)
        self._check_reads(batch)
        with torch.no_grad():
            return self._accuracy(logits, batch).float()

    def _batch_arg(self, logits, batch, what: str) -> None:
        """A TypeError naming what `metric` / `accuracy` take, (logits, batch from this task), for anything else
        as the batch (a string, the prompts' Tokens, arguments swapped), not an AttributeError from inside."""
        if isinstance(batch, TaskBatch) or all(hasattr(batch, a) for a in ("clean", "corrupt", "answer", "position")):
            return
        swapped = isinstance(logits, TaskBatch) and isinstance(batch, torch.Tensor)
        shown = f" {str(batch)[:40]!r}" if isinstance(batch, (str, numbers.Number)) else ""
        hint = (" (the arguments are swapped: logits first, then the batch)" if swapped else
                " (its .clean prompts alone are not enough: pass the whole batch)" if isinstance(batch, Tokens) else
                "")
        raise TypeError(f"task {self.name!r} {what} takes (logits, batch), the batch a TaskBatch from "
                        f"get_task({self.name!r}).make(model, n=...); got {type(batch).__name__}{shown} as the batch{hint}")

    def _check_reads(self, batch: TaskBatch) -> None:
        """A clear error for a batch without what this task scores (one made by another task), not an
        AttributeError from inside the metric."""
        missing = [f for f in self.reads
                   if (batch.extra.get(f[6:]) if f.startswith("extra.") else getattr(batch, f, None)) is None]
        if missing:
            made = f"made by task {batch.task!r}" if batch.task else "made by hand"
            raise ValueError(f"task {self.name!r} scores batch.{', batch.'.join(missing)}, which this batch ({made}) "
                             f"does not have; pass one made by get_task({self.name!r}).make(model, n)")

    def _metric(self, logits, batch):  # pragma: no cover - abstract
        raise NotImplementedError

    def _accuracy(self, logits, batch):  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------- helpers
def check_logits(logits, batch: TaskBatch) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be a float tensor [batch, pos, d_vocab], got {type(logits).__name__}"
                        + (f" {logits.dtype}" if isinstance(logits, torch.Tensor) else ""))
    shape = tuple(batch.clean.input_ids.shape)
    if logits.dim() != 3 or tuple(logits.shape[:2]) != shape:
        raise ValueError(f"logits must have shape [{shape[0]}, {shape[1]}, d_vocab] to match the batch, "
                         f"got {tuple(logits.shape)}")
    width = logits.shape[-1]
    id_max = getattr(batch, "_id_max", None)
    if id_max is not None and id_max >= width:
        raise ValueError(f"logits have {width} vocabulary entries but the batch reads token id {id_max}; the logits "
                         f"must cover the batch's vocabulary (shape [{shape[0]}, {shape[1]}, d_vocab > {id_max}])")


def at_position(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[batch, d_vocab] float32: the logits at each row's read position."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, batch.position.to(logits.device)].float()


def gather_ids(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x [batch, d_vocab], ids [batch] or [batch, k] -> the entries at those ids ([batch] or [batch, k])."""
    ids = ids.to(x.device)
    if ids.dim() == 1:
        return x.gather(1, ids[:, None]).squeeze(1)
    return x.gather(1, ids)


def next_token_loss(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """[batch]: mean cross-entropy of the clean next tokens over `loss_mask` (always the clean targets, so a
    corrupt run is scored on how well it predicts the clean continuation)."""
    ids = batch.clean.input_ids.to(logits.device)
    mask = batch.loss_mask.to(logits.device)[:, :-1]  # [batch, pos-1]: position t predicts ids[t+1]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [batch, pos-1, d_vocab]
    nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # [batch, pos-1]
    return (nll * mask).sum(1) / mask.sum(1).clamp_min(1)


def next_token_accuracy(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    ids = batch.clean.input_ids.to(logits.device)
    mask = batch.loss_mask.to(logits.device)[:, :-1]
    hit = (logits[:, :-1].argmax(-1) == ids[:, 1:]) & mask
    return hit.sum(1).float() / mask.sum(1).clamp_min(1)


def adds_bos(model) -> bool:
    """The model's BOS convention: does its tokenizer prepend BOS by default? (Gemma: yes, SmolLM2: no.)
    Tokenizer-less toys were trained with BOS (id from their config) first."""
    tok = model.tokenizer
    if tok is None:
        return bos_id(model) is not None
    ids = tok("x")["input_ids"]
    return tok.bos_token_id is not None and len(ids) > 0 and ids[0] == tok.bos_token_id


def encode(model, text: str) -> list[int]:
    """Token ids of `text` with the model's BOS convention (as `model.to_tokens(text)`)."""
    return model.to_tokens(text).input_ids[0].tolist()


def single_token(model, text: str) -> int | None:
    """The id if `text` is exactly one token (no special tokens added), else None."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def pad(model, seqs: list[list[int]]) -> Tokens:
    """Right-padded Tokens on the model's device (the model's own pad id and mask convention)."""
    return model.to_tokens([list(s) for s in seqs])


def last_positions(toks: Tokens) -> torch.Tensor:
    return torch.tensor(toks.lengths, dtype=torch.long, device=toks.input_ids.device) - 1


# ---------------------------------------------------------------------------------------------- argument checks
def task_arg(task, where: str | None = None) -> Task:
    """A Task, or a task name looked up in the registry (`get_task(name)`); a TypeError naming what is allowed
    otherwise (the same rule for every function that takes `task`)."""
    from . import TASKS, get_task  # the registry imports this module: look it up when needed

    if isinstance(task, str):
        return get_task(task)
    if isinstance(task, Task) or all(hasattr(task, a) for a in ("make", "metric", "higher_is_better")):
        return task  # a Task (also one of another import of this package)
    raise TypeError(f"{where + ': ' if where else ''}task must be a Task (analyses.tasks.get_task(name)) or a task "
                    f"name, one of {', '.join(TASKS)}; got {type(task).__name__} {str(task)[:60]!r}")


def batch_arg(batch, where: str | None = None) -> TaskBatch:
    """A TaskBatch (what `task.make(model, n=...)` returns); a TypeError naming what it got otherwise."""
    if isinstance(batch, TaskBatch) or all(hasattr(batch, a) for a in ("clean", "corrupt", "answer", "position")):
        return batch
    hint = (" (its .clean prompts alone are not enough: pass the whole batch, with answers and positions)"
            if isinstance(batch, Tokens) else "")
    raise TypeError(f"{where + ': ' if where else ''}batch must be a TaskBatch, as task.make(model, n=...) returns; "
                    f"got {type(batch).__name__}{hint}")


# ---------------------------------------------------------------------------------------------- memory
FLOAT_BYTES = 4  # logits and activations are estimated as float32 (the metrics upcast the logits anyway)
BUILD_BYTES_PER_TOKEN = 256  # building prompts: Python lists of ids, clean and corrupt, before they become tensors


def pass_bytes(cfg, n: int, seq_len: int, extra_per_token: int = 0) -> int:
    """Rough bytes of one batched pass (forward and backward) over `n` prompts of `seq_len` tokens: the logits
    (and a float32 copy), every layer's activations (residual stream, q/k/v, MLP hidden, attention scores and
    probabilities), the prompts while they are built, plus `extra_per_token` floats per token (e.g. the node
    outputs of a circuit graph)."""
    d_mlp = cfg.d_mlp or 4 * cfg.d_model
    per_layer = 8 * cfg.d_model + 2 * d_mlp + 2 * cfg.n_heads * seq_len
    floats = 2 * cfg.d_vocab + cfg.n_layers * per_layer + extra_per_token
    return n * seq_len * (floats * FLOAT_BYTES + BUILD_BYTES_PER_TOKEN)


def check_batch_fits(model, task, n: int, seed: int = 0, flag: str = "n", extra_per_token: int = 0,
                     limit: int | None = None, where: str | None = None) -> int:
    """Refuse (ValueError naming `flag`, the estimate and the largest n that fits) a batch of `n` prompts whose
    pass would not fit in the free memory of the model's device (`limit` bytes if given); returns the estimate.

    Called before the prompts are built: the token length comes from a probe batch of a few prompts."""
    from interp.memory import GiB, available_bytes
    from interp.validate import int_arg

    int_arg(flag, n, minimum=1, where=where)
    rows = task.n_rows()
    n_eff = n if rows is None else min(n, rows)
    probe = task.make(model, n=min(n_eff, 4), seed=seed)
    p = probe.clean.input_ids.shape[1]
    need = pass_bytes(model.cfg, n_eff, p, extra_per_token)
    if limit is None:
        limit = available_bytes(model.device)
    if limit is None or need <= limit:
        return need
    per_prompt = pass_bytes(model.cfg, 1, p, extra_per_token)
    largest = int(limit // per_prompt)
    fits = (f"the largest {flag} that fits is about {largest}" if largest >= 1 else
            "not even one prompt fits; free memory or use a smaller model / a shorter task")
    raise ValueError(f"{where + ': ' if where else ''}{flag} {n} is too many prompts for {model.name}: one pass "
                     f"over {n_eff} prompts of {p} tokens would take about {need / GiB:.1f} GiB (logits [{n_eff}, {p}, "
                     f"{model.cfg.d_vocab}] and {model.cfg.n_layers} layers of activations), more than the "
                     f"{limit / GiB:.1f} GiB available on {model.device}; {fits}")
