"""The task registry: batch shapes and alignment, answers matching the templates, differentiable metrics, errors,
and ground truth (toy-induction's induction loss; IOI and greater-than on SmolLM2)."""

import json

import pytest
import torch

import interp
from interp.analyses import tasks as T
from interp.analyses.probes import corpus
from interp.tokens import Tokens


@pytest.fixture(scope="module")
def toy():
    return interp.load("toy-induction")


def decode_row(model, toks, i):
    return model.tokenizer.decode(toks.input_ids[i, : toks.lengths[i]])


def test_registry_names_and_errors():
    assert T.TASKS == ("lm", "induction", "ioi", "greater-than", "needle", "file")
    assert T.get_task("ioi").higher_is_better and T.get_task("greater-than").higher_is_better
    assert not T.get_task("lm").higher_is_better and not T.get_task("induction").higher_is_better
    with pytest.raises(ValueError, match="unknown task .nope.; available: lm, induction, ioi, greater-than, needle, file"):
        T.get_task("nope")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\] for task 'lm'"):
        T.get_task("lm", bogus=1)
    assert T.get_task("lm", source="code").source == "code"


def test_ioi_batch_follows_the_templates(smollm2):
    batch = T.get_task("ioi").make(smollm2, n=12, seed=3)
    ids, bad = batch.clean.input_ids, batch.corrupt.input_ids
    assert len(batch) == 12 and ids.shape == bad.shape and batch.clean.lengths == batch.corrupt.lengths
    assert batch.clean.attention_mask is not None  # templates differ in length: right-padded
    assert torch.equal(batch.clean.attention_mask, batch.corrupt.attention_mask)
    assert batch.position.tolist() == [n - 1 for n in batch.clean.lengths]
    orders = set()
    for i in range(len(batch)):
        text = decode_row(smollm2, batch.clean, i)
        io, s = smollm2.tokenizer.decode(batch.answer[i]), smollm2.tokenizer.decode(batch.wrong[i])
        assert io.startswith(" ") and s.startswith(" ") and io != s
        assert text.count(io.strip()) == 1 and text.count(s.strip()) == 2, text
        assert text.endswith(" to")
        orders.add(text.index(io.strip()) < text.index(s.strip()))  # ABBA: IO named first
        diff = (ids[i] != bad[i]).nonzero().flatten().tolist()
        assert len(diff) == 1  # only S2 changed
        c = smollm2.tokenizer.decode(bad[i, diff[0]])
        assert c.strip() not in (io.strip(), s.strip())
    assert orders == {True, False}
    assert ids[:, 0].ne(smollm2.tokenizer.bos_token_id).all()  # SmolLM2 adds no BOS


def test_ioi_abc_all_and_gemma_bos(smollm2, gemma3):
    batch = T.get_task("ioi", corrupt="abc-all").make(smollm2, n=6)
    diffs = (batch.clean.input_ids != batch.corrupt.input_ids).sum(1)
    assert diffs.tolist() == [3] * 6
    g = T.get_task("ioi").make(gemma3, n=4)
    assert (g.clean.input_ids[:, 0] == gemma3.tokenizer.bos_token_id).all()
    assert (g.corrupt.input_ids[:, 0] == gemma3.tokenizer.bos_token_id).all()
    with pytest.raises(ValueError, match="corrupt must be 'abc' or 'abc-all'"):
        T.get_task("ioi", corrupt="flip").make(smollm2, n=2)


def test_greater_than_batch(smollm2):
    batch = T.get_task("greater-than").make(smollm2, n=10, seed=1)
    assert batch.clean.input_ids.shape == batch.corrupt.input_ids.shape and batch.clean.attention_mask is None
    digits = [smollm2.tokenizer.decode(i) for i in batch.extra["digit_ids"][0]]
    assert digits == [str(d) for d in range(10)]
    for i in range(len(batch)):
        text, bad = decode_row(smollm2, batch.clean, i), decode_row(smollm2, batch.corrupt, i)
        t = int(batch.extra["tens"][i])
        xx = text.split()[-1]
        assert text.split()[-5].startswith(xx) and text.split()[-5][2] == str(t), text
        assert bad == text.replace(text.split()[-5], xx + "01"), (text, bad)
        assert smollm2.tokenizer.decode(batch.answer[i]) == str(t + 1)
        assert smollm2.tokenizer.decode(batch.wrong[i]) == str(t - 1)


def test_lm_batch(smollm2):
    batch = T.get_task("lm", source="code", seq_len=24).make(smollm2, n=5, seed=2)
    assert batch.clean.input_ids.shape == (5, 24) and batch.corrupt is None
    assert batch.loss_mask.shape == (5, 24) and batch.loss_mask[:, :-1].all() and not batch.loss_mask[:, -1].any()
    stream = smollm2.to_tokens(corpus("code")).input_ids[0].tolist()
    for i in range(5):
        row = batch.clean.input_ids[i].tolist()
        start = next(k for k in range(len(stream)) if stream[k:k + 24] == row)
        assert batch.answer[i] == stream[start + 24]
    with pytest.raises(ValueError, match="seq_len=5000 is too long for the prose text"):
        T.get_task("lm").make(smollm2, n=2, seq_len=5000)
    with pytest.raises(ValueError, match="source must be one of"):
        T.get_task("lm", source="poetry").make(smollm2, n=2)


@pytest.mark.parametrize("name", ["lm", "induction", "ioi", "greater-than"])
def test_metric_is_differentiable(smollm2, name):
    task = T.get_task(name, **({"seq_len": 16} if name == "lm" else {}))
    batch = task.make(smollm2, n=3)
    b, p = batch.clean.input_ids.shape
    logits = torch.randn(b, p, smollm2.cfg.d_vocab, requires_grad=True)
    m = task.metric(logits, batch)
    assert m.dim() == 0 and torch.isfinite(m)
    m.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    per = task.metric(logits.detach(), batch, per_example=True)
    assert per.shape == (b,) and torch.allclose(per.mean(), m.detach(), atol=1e-5)
    acc = task.accuracy(logits.detach(), batch)
    assert acc.shape == (b,) and ((acc >= 0) & (acc <= 1)).all()
    with pytest.raises(ValueError, match="logits must have shape"):
        task.metric(logits[:, :-1], batch)
    with pytest.raises(TypeError, match="float tensor"):
        task.metric(batch.clean.input_ids, batch)


def test_tokenizer_less_model_gets_only_induction(toy):
    for name in ("ioi", "greater-than", "lm"):
        with pytest.raises(ValueError, match=f"task '{name}' needs a tokenizer; toy-induction has none"):
            T.get_task(name).make(toy, n=2)
    report = T.task_report(toy, n=8)
    assert list(report.task) == ["lm", "induction", "ioi", "greater-than", "needle"]
    assert report.set_index("task").loc["ioi", "notes"].startswith("skipped: task 'ioi' needs a tokenizer")
    assert report.set_index("task").loc["induction", "n"] == 8


def test_a_batch_from_another_task_is_refused(toy):
    """A metric given another task's batch (without the fields it scores) says so, instead of an AttributeError
    from inside the metric; head_importance with such a batch= too."""
    from interp.analyses import importance

    needle, induction = T.get_task("needle").make(toy, n=2), T.get_task("induction").make(toy, n=2)
    with pytest.raises(ValueError, match=r"task 'induction' scores batch.loss_mask, which this batch \(made by task "
                                         r"'needle'\) does not have"):
        T.get_task("induction").metric(toy(needle.clean), needle)
    with pytest.raises(ValueError, match="task 'needle' scores batch.wrong, which"):
        T.get_task("needle").accuracy(toy(induction.clean), induction)
    with pytest.raises(ValueError, match="task 'induction' scores batch.loss_mask"):
        importance.head_importance(toy, T.get_task("induction"), methods=["ablation_zero"], batch=needle)
    assert torch.isfinite(T.get_task("needle").metric(toy(needle.clean), needle))


def test_induction_ground_truth_on_toy(toy):
    """toy-induction copies the repeat: low loss on r r, high when the second half is fresh random tokens."""
    task = T.get_task("induction")
    batch = task.make(toy, n=16, seed=0)
    assert batch.clean.input_ids.shape == (16, 41) and (batch.clean.input_ids[:, 0] == 0).all()  # BOS first
    assert torch.equal(batch.clean.input_ids[:, 1:21], batch.clean.input_ids[:, 21:])
    assert torch.equal(batch.corrupt.input_ids[:, :21], batch.clean.input_ids[:, :21])
    assert (batch.corrupt.input_ids[:, 21:] != batch.clean.input_ids[:, 21:]).float().mean() > 0.9
    assert batch.loss_mask.sum(1).tolist() == [19] * 16
    clean, corrupt = toy(batch.clean), toy(batch.corrupt)
    assert task.metric(clean, batch) < 0.5 and task.accuracy(clean, batch).mean() > 0.9
    assert task.metric(corrupt, batch) > 3.0
    assert (toy(batch.clean)[torch.arange(16), batch.position].argmax(-1) == batch.answer).float().mean() > 0.8


def test_ioi_and_greater_than_ground_truth_on_smollm2(smollm2):
    for name, low in (("ioi", 1.0), ("greater-than", 0.2)):
        task = T.get_task(name)
        batch = task.make(smollm2, n=6, seed=0)
        clean = task.metric(smollm2(batch.clean), batch)
        corrupt = task.metric(smollm2(batch.corrupt), batch)
        assert clean > low and clean > corrupt + low, (name, clean, corrupt)


def test_tokens_pass_through_the_model(toy):
    seqs = [[0, 5, 6, 7, 8], [0, 9, 10]]
    toks = toy.to_tokens(seqs)
    assert toks.attention_mask is not None
    assert torch.equal(toy.to_tokens(toks).input_ids, toks.input_ids)
    torch.testing.assert_close(toy(toks), toy(seqs))
    logits = toy.run_with_hooks(toks, fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: z * 0)])
    assert logits.shape == (2, 5, toy.cfg.d_vocab)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        toy.to_tokens(Tokens(torch.tensor([[0, 999]]), None, [2]))


def test_batch_to_len_and_rows(toy):
    batch = T.get_task("induction").make(toy, n=6)
    moved = batch.to("cpu")
    assert len(moved) == 6 and moved.answer.device.type == "cpu"
    part = batch[2:4]
    assert len(part) == 2 and part.clean.lengths == batch.clean.lengths[2:4]
    assert torch.equal(part.loss_mask, batch.loss_mask[2:4])


# ------------------------------------------------------------------------------------------- user files
def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_from_file_jsonl_and_csv(smollm2, tmp_path):
    rows = [dict(clean="The capital of France is", corrupt="The capital of Spain is", answer=" Paris", wrong=" Madrid"),
            dict(clean="One, two, three,", corrupt="One, two, five,", answer=" four", wrong=" six")]
    task, batch = T.from_file(write_jsonl(tmp_path / "rows.jsonl", rows), smollm2)
    assert task.name == "file" and len(batch) == 2 and batch.corrupt.input_ids.shape == batch.clean.input_ids.shape
    assert smollm2.tokenizer.decode(batch.answer[0]) == " Paris" and smollm2.tokenizer.decode(batch.wrong[1]) == " six"
    logits = torch.randn(*batch.clean.input_ids.shape, smollm2.cfg.d_vocab)
    x = logits[torch.arange(2), batch.position]
    torch.testing.assert_close(task.metric(logits, batch, per_example=True),
                               x[torch.arange(2), batch.answer] - x[torch.arange(2), batch.wrong])
    csv = tmp_path / "rows.csv"
    csv.write_text("clean,answer\nThe capital of France is, Paris\n")
    task, batch = T.from_file(csv, smollm2)
    assert batch.corrupt is None and batch.wrong is None
    logp = torch.log_softmax(logits[:1, : batch.clean.input_ids.shape[1]], -1)[0, batch.position[0], batch.answer[0]]
    torch.testing.assert_close(task.metric(logits[:1, : batch.clean.input_ids.shape[1]], batch), logp)


def test_from_file_token_ids_on_toy(toy, tmp_path):
    path = write_jsonl(tmp_path / "ids.jsonl", [dict(clean=[0, 5, 6, 7, 5, 6], answer=7, corrupt=[0, 5, 6, 7, 9, 9])])
    _, batch = T.from_file(path, toy)
    assert batch.clean.input_ids.tolist() == [[0, 5, 6, 7, 5, 6]] and batch.answer.tolist() == [7]
    with pytest.raises(ValueError, match="row 0 clean is text but toy-induction has no tokenizer"):
        T.from_file(write_jsonl(tmp_path / "t.jsonl", [dict(clean="hi", answer=3)]), toy)


def test_from_file_errors(smollm2, tmp_path):
    def err(name, content, match):
        p = tmp_path / name
        p.write_text(content)
        with pytest.raises(ValueError, match=match):
            T.from_file(p, smollm2)

    err("empty.jsonl", "\n", "has no rows")
    err("empty.csv", "clean,answer\n", "has no rows")
    err("missing.jsonl", '{"clean": "a b"}\n', r"missing.jsonl row 0: missing column\(s\) \['answer'\]")
    err("multi.jsonl", '{"clean": "a", "answer": " x"}\n{"clean": "b", "answer": " Paris and Rome"}\n',
        "multi.jsonl row 1 answer ' Paris and Rome' is 3 tokens")
    err("uneven.jsonl", '{"clean": "The cat sat", "corrupt": "The very big dog sat", "answer": " on"}\n',
        "row 0: clean is 3 tokens but corrupt is 5")
    err("mixed.jsonl", '{"clean": "a", "answer": " x", "wrong": " y"}\n{"clean": "b", "answer": " x"}\n',
        "column 'wrong' is set in some rows but not in row 1")
    err("bad.jsonl", "{not json\n", "line 1 is not valid JSON")
    err("rows.txt", "x", r"must end in .jsonl, .json or .csv")
    with pytest.raises(ValueError, match="does not exist"):
        T.from_file(tmp_path / "nope.jsonl", smollm2)
    with pytest.raises(ValueError, match="the file task needs path="):
        T.get_task("file").make(smollm2)
