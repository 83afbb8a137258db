"""The kernel benchmark (`python -m interp.kernels.bench`): its CPU smoke mode runs every path it prints, and on a
GPU its CUDA-graph timer replays a captured call."""

import pytest
import torch

from interp.kernels import bench


def test_smoke_rows_and_tables(capsys):
    rows = bench.main(["--smoke", "--shapes", "4x256/1", "--methods", "sdpa", "ours-none", "ours-all"])
    assert {(r["n"], r["method"]) for r in rows} == {(n, m) for n in (64, 130) for m in ("sdpa", "ours-none",
                                                                                           "ours-all")}
    assert all(r["ms"] is not None and r["ms"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "| 4x256/1 | 130 |" in out and "CUDA graph" not in out  # graph replays only on a GPU


@pytest.mark.gpu
def test_graph_timer_replays_the_call():
    x = torch.zeros(1 << 20, device="cuda")
    calls = []

    def fn():
        calls.append(1)  # host side: runs at warm-up and capture only, never at replay
        x.add_(1.0)

    ms = bench.graph_ms(fn)
    assert ms > 0 and len(calls) == 4  # 3 warm-up calls + the capture
    assert x[0].item() > 4  # the replays ran the captured kernel


@pytest.mark.parametrize("bad", ["0", "-5", "1.5", "8k"])
@pytest.mark.parametrize("option", ["--lengths", "--graph-lengths", "--long-lengths"])
def test_lengths_must_be_positive_whole_numbers(option, bad, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--smoke", option, bad])
    assert e.value.code == 2 and "length must be" in capsys.readouterr().err


def test_unknown_method_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--smoke", "--methods", "ours_all"])
    assert e.value.code == 2 and "ours-all" in capsys.readouterr().err  # the allowed names are listed
