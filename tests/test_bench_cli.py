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
@pytest.mark.parametrize("option", ["--lengths", "--graph-lengths", "--long-lengths", "--decode-lengths"])
def test_lengths_must_be_positive_whole_numbers(option, bad, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--smoke", option, bad])
    assert e.value.code == 2 and "length must be" in capsys.readouterr().err


def test_unknown_method_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--smoke", "--methods", "ours_all"])
    assert e.value.code == 2 and "ours-all" in capsys.readouterr().err  # the allowed names are listed


def test_smoke_decode_step_rows(capsys, tmp_path):
    """--decode-lengths: one query per head against the cache, every method on the same step; in smoke mode one cache
    of 130 keys, timed once (no CUDA graph on the CPU)."""
    out_json = tmp_path / "rows.json"
    rows = bench.main(["--smoke", "--shapes", "9x64/3", "--lengths", "--methods", "sdpa", "--decode-lengths", "4096",
                       "--json", str(out_json)])
    decode = [r for r in rows if r.get("decode")]
    assert {(r["n"], r["method"]) for r in decode} == {(130, m) for m in ("sdpa", "ours-none", "ours-all")}
    assert all(r["ms"] is not None and r["ms"] > 0 for r in decode)
    assert "# one decode step" in capsys.readouterr().out
    import json

    assert all(r["graph"] is False for r in json.loads(out_json.read_text()) if r.get("decode"))


def test_decode_step_sdpa_sees_every_key():
    """The benchmark's SDPA for a decode step attends to every cached key (SDPA's is_causal would align a single
    query top-left, to the first key alone), as attention_with_stats does."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 16, generator=g) for n in (1, 40, 40))
    full = torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1) @ v
    torch.testing.assert_close(bench.sdpa(q, k, v), full)
    out, _ = bench.attention_with_stats(q, k, v, stats="none")
    torch.testing.assert_close(out, full)


def test_table_ratios_take_sdpa_before_and_after(capsys):
    """An eager row's SDPA is timed again after the other methods (drift over a run of long calls): the table shows
    both and takes the ratios against their mean; rows without the second timing keep the single one."""
    rows = [dict(shape="9x64/3", n=n, method=m, ms=ms) for n, m, ms in (
        (131072, "sdpa", 40.0), (131072, "ours-none", 44.0), (131072, "sdpa-again", 48.0),
        (8192, "sdpa", 1.0), (8192, "ours-none", 1.5))]
    bench.print_table(rows)
    out = capsys.readouterr().out
    assert "| 9x64/3 | 128k | 44.000 (40.000 / 48.000) | 44.000 (1.00x) |" in out, out
    assert "| 9x64/3 | 8k | 1.000 | 1.500 (1.50x) |" in out, out
