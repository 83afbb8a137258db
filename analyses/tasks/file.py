"""User tasks from a JSONL or CSV file: rows with clean, answer and optional corrupt, wrong."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.validate import is_path

from .base import Task, TaskBatch, at_position, encode, gather_ids, last_positions, pad, single_token

REQUIRED = ("clean", "answer")
OPTIONAL = ("corrupt", "wrong")


def read_rows(path) -> list[dict]:
    if not is_path(path):
        raise TypeError(f"task file path must be a str or pathlib.Path of a .jsonl, .json or .csv file, got "
                        f"{type(path).__name__} {path!r:.60}")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"task file {str(path)!r} is a folder, not a file; give a .jsonl or .csv file of rows")
    if not p.exists():
        raise ValueError(f"task file {str(path)!r} does not exist")
    if not p.is_file():
        raise ValueError(f"task file {str(path)!r} is not a regular file; give a .jsonl or .csv file of rows")
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise ValueError(f"task file must end in .jsonl, .json or .csv, got {p.name!r}")
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (spreadsheet exports) is dropped
    except UnicodeDecodeError as e:
        raise ValueError(f"task file {str(path)!r} is not UTF-8 text (byte {e.start} is "
                         f"{e.object[e.start:e.start + 1]!r}); save it as UTF-8") from None
    except OSError as e:
        raise ValueError(f"cannot read task file {str(path)!r}: {e.strerror or e}") from None
    if suffix == ".csv":
        rows = [dict(r) for r in csv.DictReader(io.StringIO(text, newline=""))]
    elif suffix == ".json" and text.lstrip().startswith("["):
        rows = _json_array(text, p.name)
    else:
        rows = _json_lines(text, p.name, suffix)
    if not rows:
        raise ValueError(f"task file {p.name} has no rows")
    for i, row in enumerate(rows):
        missing = [c for c in REQUIRED if row.get(c) in (None, "")]
        if missing:
            raise ValueError(f"{p.name} row {i}: missing column(s) {missing}; rows need {list(REQUIRED)} and "
                             f"may have {list(OPTIONAL)}")
    for col in OPTIONAL:
        has = [row.get(col) not in (None, "") for row in rows]
        if any(has) and not all(has):
            raise ValueError(f"{p.name}: column {col!r} is set in some rows but not in row {has.index(False)}; "
                             "give it in every row or in none")
    return rows


def _json_array(text: str, name: str) -> list[dict]:
    """A .json file holding one JSON array of row objects."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name} is not valid JSON (line {e.lineno}: {e.msg}); give a JSON array of row objects "
                         "or JSON Lines (one object per line)") from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{name} row {i}: each element of the JSON array must be an object with 'clean' and "
                             f"'answer', got {type(row).__name__}")
    return rows


def _json_lines(text: str, name: str, suffix: str) -> list[dict]:
    """JSON Lines: one row object a line (blank lines skipped)."""
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            hint = (" (a .json file may also hold one JSON array of row objects)" if suffix == ".json" else "")
            raise ValueError(f"{name} line {i} is not valid JSON: {e.msg}; JSON Lines (one object per line) "
                             f"expected{hint}") from None
        if not isinstance(row, dict):
            hint = ("; a JSON array of rows goes in a .json file" if isinstance(row, list) and suffix == ".jsonl"
                    else "")
            raise ValueError(f"{name} line {i}: JSON Lines (one object per line) expected, got a JSON "
                             f"{type(row).__name__}{hint}")
        rows.append(row)
    return rows


def _prompt_ids(model, value, where: str) -> list[int]:
    if isinstance(value, str):
        if model.tokenizer is None:
            raise ValueError(f"{where} is text but {model.name} has no tokenizer; give token ids (a list of ints)")
        return encode(model, value)
    if isinstance(value, list) and value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return list(value)
    raise ValueError(f"{where} must be a text or a non-empty list of token ids, got {value!r}")


def _token_id(model, value, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        tid = value
    elif isinstance(value, str):
        if model.tokenizer is None:
            raise ValueError(f"{where} is text but {model.name} has no tokenizer; give a token id (an int)")
        tid = single_token(model, value)
        if tid is None:
            pieces = model.tokenizer(value, add_special_tokens=False)["input_ids"]
            raise ValueError(f"{where} {value!r} is {len(pieces)} tokens in {model.name}'s tokenizer "
                             f"({[model.tokenizer.decode([t]) for t in pieces]}); it must be exactly one")
    else:
        raise ValueError(f"{where} must be a single-token string or an int token id, got {value!r}")
    if not 0 <= tid < model.cfg.d_vocab:
        raise ValueError(f"{where} id {tid} is outside the vocabulary [0, {model.cfg.d_vocab})")
    return tid


@dataclass(frozen=True)
class FileTask(Task):
    """Rows from `path` (UTF-8; JSONL: one object a line; .json: JSON Lines or one JSON array of objects; CSV: a
    header row): `clean` (text, or token ids in JSON), `answer` (a string that is one token, or an int id in JSON),
    optional `corrupt` (same token length as clean) and `wrong` (as answer). Each column is in every row or in
    none. Text follows the model's BOS convention. `make(model, n=None)` takes every row (or the first n).
    metric: logit[answer] - logit[wrong] at the last token when `wrong` is given, else log P(answer)
    (higher is better either way); accuracy: logit[answer] > logit[wrong], else answer is the top-1 token."""

    path: str | None = None

    name = "file"
    metric_name = "logit diff / log p"
    reads = ("answer",)
    needs_tokenizer = False

    def make(self, model, n: int | None = None, seed: int = 0, **options) -> TaskBatch:
        task = self.with_options(**options)
        if task.path is None:
            raise ValueError("the file task needs path=: get_task('file').make(model, path='rows.jsonl') or "
                             "from_file('rows.jsonl', model)")
        if n is None:
            n = len(read_rows(task.path))
        return Task.make(task, model, n=n, seed=seed)

    def n_rows(self) -> int | None:
        return None if self.path is None else len(read_rows(self.path))

    def _make(self, model, n, seed):
        rows = read_rows(self.path)[:n]
        name = Path(self.path).name
        clean, corrupt, answer, wrong = [], [], [], []
        has_corrupt, has_wrong = rows[0].get("corrupt") not in (None, ""), rows[0].get("wrong") not in (None, "")
        for i, row in enumerate(rows):
            ids = _prompt_ids(model, row["clean"], f"{name} row {i} clean")
            clean.append(ids)
            answer.append(_token_id(model, row["answer"], f"{name} row {i} answer"))
            if has_corrupt:
                bad = _prompt_ids(model, row["corrupt"], f"{name} row {i} corrupt")
                if len(bad) != len(ids):
                    raise ValueError(f"{name} row {i}: clean is {len(ids)} tokens but corrupt is {len(bad)} "
                                     f"({model.name}); patching compares the two runs position by position, so "
                                     "each corrupt prompt must have exactly as many tokens as its clean prompt "
                                     "(swap words for ones of the same token count, or give token ids)")
                corrupt.append(bad)
            if has_wrong:
                wrong.append(_token_id(model, row["wrong"], f"{name} row {i} wrong"))
        c_toks = pad(model, clean)
        dev = c_toks.input_ids.device
        return TaskBatch(c_toks, pad(model, corrupt) if has_corrupt else None, torch.tensor(answer, device=dev),
                         torch.tensor(wrong, device=dev) if has_wrong else None, last_positions(c_toks), None,
                         notes=f"{len(rows)} rows from {name}; metric: "
                               + ("logit[answer] - logit[wrong]" if has_wrong else "log P(answer)"))

    def _metric(self, logits, batch):
        x = at_position(logits, batch)  # [batch, d_vocab]
        if batch.wrong is not None:
            return gather_ids(x, batch.answer) - gather_ids(x, batch.wrong)
        return gather_ids(torch.log_softmax(x, dim=-1), batch.answer)

    def _accuracy(self, logits, batch):
        x = at_position(logits, batch)
        if batch.wrong is not None:
            return gather_ids(x, batch.answer) > gather_ids(x, batch.wrong)
        return x.argmax(-1) == batch.answer.to(x.device)


def from_file(path, model, n: int | None = None) -> tuple[FileTask, TaskBatch]:
    """(task, batch) for the rows of a JSONL / CSV file (see FileTask)."""
    task = FileTask(path=str(path))
    return task, task.make(model, n=n)
