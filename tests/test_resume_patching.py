"""Exact patching sweeps survive a kill: `head_patching(checkpoint=PATH)` saves its finished forwards and a rerun
continues after them with the uninterrupted run's scores (torch.equal) and fewer forwards; another sweep's file or a
damaged one is refused, naming it. Ctrl-C (or any error) in `edge_patching` / `head_patching` saves the chunks
finished since the last save, even when the next timed save is far off. (tests/test_long_jobs.py has edge patching's
timed saves.)"""

from __future__ import annotations

import re

import pytest
import torch

from test_badinput_circuits import induction_setup

from interp.analyses.circuits.patching import edge_patching, head_patching

N_HEADS = 8  # toy-induction: 2 layers x 4 heads


@pytest.fixture(scope="module")
def setup():
    model, task, batch, graph, clean, corrupt, ablated, metric = induction_setup()
    return model, graph, clean, corrupt, ablated, metric


class Counted:
    """A metric counting its calls (the clean run's, then one per patched variant) that raises `error` at call
    `stop_at` (a kill in the middle of a sweep)."""

    def __init__(self, metric, stop_at: int | None = None, error: BaseException = KeyboardInterrupt()):
        self.metric, self.stop_at, self.error, self.calls = metric, stop_at, error, 0

    def __call__(self, logits):
        self.calls += 1
        if self.calls == self.stop_at:
            raise self.error
        return self.metric(logits)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, NaN where the other is NaN (edge scores are NaN off the edges)."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def stopped_heads(setup, path, stop_at: int, **kw) -> list[str]:
    """head_patching killed at the metric's call `stop_at`; the progress messages it gave."""
    model, graph, clean, corrupt, ablated, metric = setup
    said = []
    with pytest.raises(KeyboardInterrupt):
        head_patching(model, clean, corrupt, Counted(metric, stop_at), checkpoint=path, progress=said.append, **kw)
    return said


# ------------------------------------------------------------------------------ head_patching: kill and resume
@pytest.mark.parametrize("kw, stop_at, done", [
    (dict(chunk=2), 6, 4),  # killed in the 3rd forward: 2 forwards of 2 heads done
    (dict(chunk=3), 8, 6),  # in the last forward (2 heads): 6 done
    (dict(chunk=3, heads=[(1, 3), (0, 1), (1, 0), (0, 3)]), 5, 3),  # a subset, in its own order
    (dict(batched=False, logits_at=slice(-1, None)), 4, 2),  # one head per forward, the last position's logits
])
def test_head_patching_killed_then_resumed_equals_the_full_run(setup, tmp_path, kw, stop_at, done):
    model, graph, clean, corrupt, ablated, metric = setup
    last = (lambda lg: lg[:, -1].log_softmax(-1)[:, 7].mean()) if "logits_at" in kw else metric
    full_metric = Counted(last)
    full = head_patching(model, clean, corrupt, full_metric, **kw)
    n = len(kw.get("heads", range(N_HEADS)))
    assert full_metric.calls == 1 + n
    path = tmp_path / "heads.pt"
    said = []
    with pytest.raises(KeyboardInterrupt):  # no timed save before the kill: only the save on the way out
        head_patching(model, clean, corrupt, Counted(last, stop_at), checkpoint=path, progress=said.append,
                      save_every_s=1e9, **kw)
    assert said == [f"stopped after {done} of {n} heads (saved to heads.pt)"]
    assert torch.load(path)["state"]["done"] == done
    again, resumed = Counted(last), []
    got = head_patching(model, clean, corrupt, again, checkpoint=path, progress=resumed.append, **kw)
    assert resumed == [f"resume: {path} at head {done} of {n}"]
    assert torch.equal(got, full)
    assert again.calls == 1 + n - done < full_metric.calls  # the clean run, then only the heads not done


def test_head_patching_timed_saves_and_an_error_mid_sweep(setup, tmp_path):
    model, graph, clean, corrupt, ablated, metric = setup
    full = head_patching(model, clean, corrupt, metric, chunk=2)
    path = tmp_path / "h.pt"
    said = stopped_heads(setup, path, 6, chunk=2, save_every_s=0)  # saved after each forward: nothing more to save
    assert said == ["patched 2 of 8 heads (saved to h.pt)", "patched 4 of 8 heads (saved to h.pt)"]
    flaky = Counted(metric, stop_at=4, error=RuntimeError("out of memory"))  # resumed at 4, fails in its 2nd forward
    with pytest.raises(RuntimeError, match="out of memory"):  # any error, not only Ctrl-C, saves what was done
        head_patching(model, clean, corrupt, flaky, chunk=2, checkpoint=path, save_every_s=1e9)
    assert torch.load(path)["state"]["done"] == 6
    assert torch.equal(head_patching(model, clean, corrupt, metric, chunk=2, checkpoint=path), full)


def test_killed_before_a_forward_finished_leaves_no_file(setup, tmp_path):
    path = tmp_path / "none.pt"
    assert stopped_heads(setup, path, 2, chunk=4, save_every_s=1e9) == []  # killed in the first forward
    assert not path.exists()


def test_resume_reads_only_the_heads_done(setup, tmp_path):
    """A chunk being written when the file was saved (or a tampered value beyond 'done') is never taken as done."""
    model, graph, clean, corrupt, ablated, metric = setup
    full = head_patching(model, clean, corrupt, metric, chunk=2, heads=[(0, 0), (0, 1), (1, 2), (1, 3)])
    path = tmp_path / "h.pt"
    stopped_heads(setup, path, 4, chunk=2, heads=[(0, 0), (0, 1), (1, 2), (1, 3)], save_every_s=1e9)
    saved = torch.load(path)
    assert saved["state"]["done"] == 2
    saved["state"]["scores"][1, 2] = 123.0  # half of the next chunk, "written" but not done
    saved["state"]["scores"][0, 3] = 7.0  # a head the sweep does not patch (stays 0)
    torch.save(saved, path)
    got = head_patching(model, clean, corrupt, metric, chunk=2, heads=[(0, 0), (0, 1), (1, 2), (1, 3)],
                        checkpoint=path)
    assert torch.equal(got, full) and float(got[0, 3]) == 0.0


# ------------------------------------------------------------------------ head_patching: other sweeps' files
@pytest.fixture(scope="module")
def partial(setup, tmp_path_factory):
    """head_patching (chunk=2) killed after 2 forwards: (path, the saved file's contents)."""
    path = tmp_path_factory.mktemp("hp") / "sweep.pt"
    stopped_heads(setup, path, 6, chunk=2, save_every_s=1e9)
    return path, torch.load(path)


def _flip(t: torch.Tensor) -> torch.Tensor:
    return t.flip(0)


@pytest.mark.parametrize("change, differs", [
    (dict(heads=[(0, 0), (0, 1), (0, 2), (0, 3)]), "data, n_heads"),
    (dict(chunk=4), "chunk"),
    (dict(batched=False), "batched, chunk"),
    (dict(corrupt=_flip), "data"),  # the same clean run, other corrupted prompts
    (dict(clean=_flip, corrupt=_flip), "base, data"),
])
def test_head_patching_refuses_another_sweeps_file(setup, partial, change, differs):
    model, graph, clean, corrupt, ablated, metric = setup
    path, _ = partial
    kw = {"chunk": 2, **{k: v for k, v in change.items() if k not in ("clean", "corrupt")}}
    c = change.get("clean", lambda t: t)(clean)
    x = change.get("corrupt", lambda t: t)(corrupt)
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {path} was written under other settings (differs "
                                                   f"in: {differs}); delete it or pass another path")):
        head_patching(model, c, x, metric, checkpoint=path, **kw)


def test_head_and_edge_patching_refuse_each_others_files(setup, partial, tmp_path):
    model, graph, clean, corrupt, ablated, metric = setup
    path, _ = partial
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {path} was written under other settings")):
        edge_patching(model, graph, clean, ablated, metric, chunk=2, checkpoint=path)
    edges = tmp_path / "edges.pt"
    with pytest.raises(KeyboardInterrupt):
        edge_patching(model, graph, clean, ablated, Counted(metric, 4), chunk=2, checkpoint=edges,
                      save_every_s=1e9)
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {edges} was written under other settings")):
        head_patching(model, clean, corrupt, metric, chunk=2, checkpoint=edges)


def _tampered(saved: dict, path, change) -> None:
    s = {"settings": dict(saved["settings"]), "state": dict(saved["state"])}
    s["state"] = change(s["state"])
    torch.save(s, path)


@pytest.mark.parametrize("change, match", [
    (lambda st: {**st, "done": 10 ** 6}, r"'done' must be a whole number of chunks of 2 heads in 0\.\.8, got 1000000"),
    (lambda st: {**st, "done": -2}, r"'done' must be .* got -2"),
    (lambda st: {**st, "done": 3}, r"'done' must be a whole number of chunks of 2 heads .* got 3"),
    (lambda st: {**st, "done": 4.0}, r"'done' must be .* got 4\.0"),
    (lambda st: {**st, "done": True}, r"'done' must be .* got True"),
    (lambda st: {"scores": st["scores"]}, r"its state must hold 'done' and 'scores', got \['scores'\]"),
    (lambda st: "garbage", r"its state must hold 'done' and 'scores', got str"),
    (lambda st: {"done": 4, "scores": [[0.0] * 4] * 2}, r"'scores' must be a float tensor \[2, 4\], got list"),
    (lambda st: {**st, "scores": torch.zeros(4, 2)}, r"'scores' must be a float tensor \[2, 4\]"),
    (lambda st: {**st, "scores": torch.zeros(2, 4, dtype=torch.long)}, r"'scores' must be a float tensor \[2, 4\]"),
    (lambda st: {**st, "scores": torch.full((2, 4), float("nan"))},
     r"'scores' lacks a finite score on some of the 4 heads it says are done"),
])
def test_head_patching_refuses_a_damaged_file(setup, partial, tmp_path, change, match):
    model, graph, clean, corrupt, ablated, metric = setup
    path = tmp_path / "t.pt"
    _tampered(partial[1], path, change)
    counted = Counted(metric)
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {path} is damaged or not a head-patching "
                                                   "checkpoint: ") + match):
        head_patching(model, clean, corrupt, counted, chunk=2, checkpoint=path)
    assert counted.calls == 1  # refused after the clean run, before any patched forward


@pytest.mark.parametrize("content, match", [
    ("not a checkpoint", r"is not a head-patching checkpoint \(UnpicklingError"),
    ({"settings": [1], "state": {}}, r"is not a head-patching checkpoint \(TypeError: its 'settings' is a list"),
    ({"state": {}}, r"is not a head-patching checkpoint \(KeyError"),
])
def test_head_patching_refuses_a_file_that_is_no_checkpoint(setup, tmp_path, content, match):
    model, graph, clean, corrupt, ablated, metric = setup
    path = tmp_path / "junk.pt"
    if isinstance(content, str):
        path.write_text(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {path} ") + match):
        head_patching(model, clean, corrupt, metric, checkpoint=path)


# ------------------------------------------------------------------------------ edge_patching: Ctrl-C saves
@pytest.fixture(scope="module")
def edges_full(setup):
    """edge_patching's uninterrupted sweep (chunks of 8 of the 81 edges): (scores, metric calls)."""
    model, graph, clean, corrupt, ablated, metric = setup
    counted = Counted(metric)
    return edge_patching(model, graph, clean, ablated, counted, chunk=8), counted.calls


def test_ctrl_c_in_edge_patching_saves_the_finished_chunks(setup, edges_full, tmp_path):
    model, graph, clean, corrupt, ablated, metric = setup
    full, calls = edges_full
    assert calls == 1 + 81
    path, said = tmp_path / "edges.pt", []
    with pytest.raises(KeyboardInterrupt):  # in the 4th chunk, long before a timed save
        edge_patching(model, graph, clean, ablated, Counted(metric, 1 + 3 * 8 + 5), chunk=8, checkpoint=path,
                      progress=said.append, save_every_s=1e9)
    assert said == ["stopped after 24 of 81 edges (saved to edges.pt)"]
    saved = torch.load(path)["state"]
    assert saved["done"] == 24 and int(torch.isfinite(saved["scores"]).sum()) == 24
    again, resumed = Counted(metric), []
    got = edge_patching(model, graph, clean, ablated, again, chunk=8, checkpoint=path, progress=resumed.append)
    assert resumed == [f"resume: {path} at edge 24 of 81"]
    assert same(got, full)
    assert again.calls == 1 + 81 - 24


def test_edge_patching_killed_twice_keeps_both_parts(setup, edges_full, tmp_path):
    model, graph, clean, corrupt, ablated, metric = setup
    path = tmp_path / "edges.pt"
    for stop_at, done in ((1 + 8 + 3, 8), (1 + 2 * 8 + 1, 24)):  # the second run resumes at 8, dies in its 3rd chunk
        with pytest.raises(KeyboardInterrupt):
            edge_patching(model, graph, clean, ablated, Counted(metric, stop_at), chunk=8, checkpoint=path,
                          save_every_s=1e9)
        assert torch.load(path)["state"]["done"] == done
    assert same(edge_patching(model, graph, clean, ablated, metric, chunk=8, checkpoint=path), edges_full[0])


# --------------------------------------------------------------------------------------- head_patching: arguments
@pytest.mark.parametrize("kw, err, match", [
    (dict(checkpoint=3), TypeError, r"head_patching: checkpoint must be a file path \(str or pathlib\.Path\) or None, "
                                    r"got int 3"),
    (dict(checkpoint=b"ck.pt"), TypeError, r"head_patching: checkpoint must be a file path"),
    (dict(checkpoint="DIR"), ValueError, r"head_patching: checkpoint .* is a folder; pass a file path inside it"),
    (dict(checkpoint=""), ValueError, r"head_patching: checkpoint '' is a folder"),
    (dict(checkpoint="FILE/ck.pt"), ValueError, r"head_patching: cannot create the folder .* of checkpoint"),
    (dict(progress="yes"), TypeError, r"head_patching: progress must be a callable taking a message"),
    (dict(save_every_s=-1), ValueError, r"head_patching: save_every_s must be a finite number in \[0, inf\), got -1"),
    (dict(save_every_s="30"), TypeError, r"head_patching: save_every_s must be a number, got str '30'"),
])
def test_head_patching_checks_its_checkpoint_arguments_first(setup, tmp_path, kw, err, match):
    model, graph, clean, corrupt, ablated, metric = setup
    (tmp_path / "FILE").write_text("x")
    kw = {k: (v.replace("DIR", str(tmp_path)).replace("FILE", str(tmp_path / "FILE")) if isinstance(v, str) else v)
          for k, v in kw.items()}
    counted = Counted(metric)
    with pytest.raises(err, match=match):
        head_patching(model, clean, corrupt, counted, **kw)
    assert counted.calls == 0  # refused before any forward


def test_head_patching_makes_the_checkpoint_folder(setup, tmp_path):
    model, graph, clean, corrupt, ablated, metric = setup
    path = tmp_path / "new" / "deeper" / "h.pt"
    head_patching(model, clean, corrupt, metric, chunk=4, checkpoint=path, save_every_s=0)
    assert path.exists() and torch.load(path)["state"]["done"] == 4  # saved after the first forward, not the last
