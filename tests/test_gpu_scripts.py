"""GPU scripts smoke-tested on the CPU (Triton interpreter): the command a GPU session runs must not fail there for
a reason a CPU run could have caught."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TRITON_INTERPRET="1", HF_HUB_OFFLINE="1")


def _example(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """examples/<name> run with args, its output captured."""
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def _run(*args):
    return _example("long_context_gpu.py", *args)


def test_model_level_timing_script_runs_and_checks_itself():
    r = _run("--device", "cpu", "--shape", "smollm2", "--layers", "2", "--tokens", "40", "--parity-tokens", "24",
             "--vocab", "128", "--reps", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 layers of smollm2 shape, 40 tokens" in r.stdout and "CPU (Triton interpreter)" in r.stdout and "median of 2" in r.stdout
    ratio = re.search(r"all statistics, all layers:\s+[\d.]+ ms .*\(([\d.]+)x SDPA\)", r.stdout)
    assert ratio and float(ratio.group(1)) > 0, r.stdout
    assert len(re.findall(r"layer \d: sum_k key_mass = n", r.stdout)) == 2
    assert "logits at 24 tokens (fp32)" in r.stdout


def test_model_level_timing_script_bad_arguments():
    r = _run("--device", "cpu", "--reps", "0")
    assert r.returncode == 2 and "must be >= 1" in r.stderr
    r = _run("--shape", "gpt5")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_model_level_timing_script_without_a_gpu():
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the default device works")
    r = _run("--tokens", "8")
    assert r.returncode == 2 and "needs a CUDA GPU" in r.stderr and "--device cpu" in r.stderr


def test_short_call_anatomy_script_runs():
    """examples/short_calls_gpu.py (host vs device time per short call) on the CPU: every method, its profile rows."""
    r = _example("short_calls_gpu.py", "--device", "cpu", "--shape", "9x64/3", "--tokens", "24", "--reps", "1", "--top",
                 "2")
    assert r.returncode == 0, r.stderr[-3000:]
    for m in ("sdpa", "ours-none", "ours-query", "ours-all"):
        assert re.search(rf"N=24\s+{m}\s+host\s+[\d.]+ us\s+wall\s+[\d.]+ us", r.stdout), r.stdout
    assert len(re.findall(r"^\s+[\d.]+ us\s+x", r.stdout, re.M)) == 8
    bad = _example("short_calls_gpu.py", "--device", "cpu", "--reps", "0", timeout=120)
    assert bad.returncode == 2 and "must be >= 1" in bad.stderr


def test_config_timing_script_runs_and_checks_itself():
    """examples/stats_configs_gpu.py --smoke: the interpreter's config pinned, checked against the reference."""
    r = _example("stats_configs_gpu.py", "--smoke", "--stats", "query", "all")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = re.findall(r"^\s+\[ 0\] \S.*?\s+(query|all)\s+[\d.]+ ms\s+[\d.]+x\s+err ([\d.e+-]+)$", r.stdout, re.M)
    assert [s for s, _ in rows] == ["query", "all"], r.stdout
    assert all(float(e) < 1e-4 for _, e in rows), rows
    r = _example("stats_configs_gpu.py", "--smoke", "--shape", "4x256/1")  # a bundled model's shape: MQA, head_dim 256
    assert r.returncode == 0 and "4x256 GQA 4/1" in r.stdout, r.stderr[-3000:]
    err = re.findall(r"^\s+\[ 0\] .* all\s+[\d.]+ ms\s+[\d.]+x\s+err ([\d.e+-]+)$", r.stdout, re.M)
    assert len(err) == 1 and float(err[0]) < 1e-4, r.stdout
    # a sliding window; every statistic but the masses, and none (round 13's options)
    r = _example("stats_configs_gpu.py", "--smoke", "--stats", "nomass", "none", "--window", "40")
    assert r.returncode == 0 and "causal, window 40, 4x128" in r.stdout, r.stderr[-3000:]
    err = re.findall(r"^\s+\[ 0\] .* (nomass|none)\s+[\d.]+ ms\s+[\d.]+x\s+err ([\d.e+-]+)$", r.stdout, re.M)
    assert [s for s, _ in err] == ["nomass", "none"] and all(float(e) < 1e-4 for _, e in err), r.stdout
    assert float(err[1][1]) > 0, r.stdout  # "none" checks the output itself (float32 rounding: never exactly 0)
    r = _example("stats_configs_gpu.py", "--smoke", "--decode", "--shape", "9x64/3")  # one decode step
    assert r.returncode == 0 and "N=128 (decode)" in r.stdout, r.stderr[-3000:]
    err = re.findall(r"^\s+\[ 0\] .* all\s+[\d.]+ ms\s+[\d.]+x\s+err ([\d.e+-]+)$", r.stdout, re.M)
    assert len(err) == 1 and float(err[0]) < 1e-4, r.stdout
    bad = _example("stats_configs_gpu.py", "--smoke", "--window", "0", timeout=120)
    assert bad.returncode == 2 and "--window must be >= 1, got 0" in bad.stderr, bad.stderr[-500:]
    bad = _example("stats_configs_gpu.py", "--smoke", "--configs", "5", timeout=120)
    assert bad.returncode == 2 and "--configs [5]" in bad.stderr, bad.stderr[-500:]
    bad = _example("stats_configs_gpu.py", "--smoke", "--graph", timeout=120)
    assert bad.returncode == 2 and "--graph needs a CUDA GPU" in bad.stderr, bad.stderr[-500:]


def test_gqa_packing_probe_kernel_is_exact():
    """examples/gqa_pack_probe_gpu.py (round 8's K-traffic probe): its walk, one head per program and 2 / 4 GQA heads
    packed, against its float64 reference, in the interpreter (the script's own check runs on the GPU)."""
    code = f"""
import sys, torch
sys.path.insert(0, {str(ROOT / "examples")!r})
import gqa_pack_probe_gpu as P
torch.manual_seed(0)
H, KVH, D, n = 8, 2, 128, 192
G, scale, fix = H // KVH, D ** -0.5, 2.0 ** 40
q, k, lse, (mx, arg, ent, km) = P.check_case(n, H, KVH, D, device="cpu")
ok = mx.isfinite()
assert ok.sum() > 0 and (~ok).sum() > 0  # rows of the first 64-block see no earlier block
for pack in (1, 2, 4):
    kmass, rows = torch.zeros(H, n, dtype=torch.int64), torch.zeros(3, H, n)
    P.launch(q, k, lse, kmass, rows, G, pack, scale, fix, 4, 2)
    assert (rows[0] - mx)[ok].abs().max() < 1e-4, pack
    assert torch.equal(rows[1].long()[ok], arg[ok]), pack
    assert (rows[2] - ent).abs().max() < 1e-4, pack
    assert (kmass.double() / fix - km).abs().max() < 1e-5, pack
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TRITON_INTERPRET": "1"})
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-2000:] + r.stderr[-2000:]


def test_host_time_scripts_refuse_without_a_gpu():
    """examples/model_overhead_gpu.py and host_split_gpu.py time the host's side of GPU launches, decode_fused_gpu.py
    decode steps: without a GPU they stop at once with a clear message (exit 2), and their bad arguments are named."""
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the scripts run")
    for script, bad in (("model_overhead_gpu.py", ["--reps", "0"]), ("host_split_gpu.py", ["--tokens", "0"]),
                        ("decode_fused_gpu.py", ["--lengths", "0"])):
        path = str(ROOT / "examples" / script)
        r = subprocess.run([sys.executable, path], capture_output=True, text=True, env=ENV, timeout=300)
        assert r.returncode == 2 and "needs a CUDA GPU" in r.stderr, (script, r.stderr[-2000:])
        r = subprocess.run([sys.executable, path, *bad], capture_output=True, text=True, env=ENV, timeout=300)
        assert r.returncode == 2 and "must be >= 1" in r.stderr, (script, r.stderr[-2000:])


def test_finalize_ab_script_checks_both_forms():
    """examples/finalize_ab_gpu.py --smoke: the in-kernel key finalize and the torch conversion, both run and checked
    equal (the script raises otherwise; bit for bit on a GPU, within the statistics tolerance in the interpreter)."""
    r = _example("finalize_ab_gpu.py", "--smoke", "--rounds", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"^N=128: SDPA .*in kernel: \S+ \S+ .*torch ops: \S+ \S+ .*in kernel / torch ops", r.stdout,
                     re.M), r.stdout
    bad = _example("finalize_ab_gpu.py", "--smoke", "--rounds", "0", timeout=120)
    assert bad.returncode == 2 and "--rounds must be >= 1" in bad.stderr


def test_kernel_profile_script_runs():
    """examples/kernel_profile_gpu.py --device cpu: the profiler path runs and lists what each call spends time on."""
    r = _example("kernel_profile_gpu.py", "--device", "cpu", "--reps", "2", "--stats", "all", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"^N=64 sdpa: [\d.]+ us", r.stdout, re.M) and re.search(r"^N=64 all: [\d.]+ us", r.stdout, re.M)
    assert re.search(r"^N=64 none: [\d.]+ us", r.stdout, re.M), r.stdout
    assert len(re.findall(r"per call, +[\d.]+ us each$", r.stdout, re.M)) >= 2, r.stdout
    bad = _example("kernel_profile_gpu.py", "--device", "cpu", "--reps", "0", timeout=120)
    assert bad.returncode == 2 and "--reps must be >= 1" in bad.stderr
    # a bundled model's shape under a sliding window, the statistics config pinned (round 13's options)
    r = _example("kernel_profile_gpu.py", "--device", "cpu", "--reps", "1", "--shape", "4x256/1", "--window", "20",
                 "--pad", "5", "--config", "0")
    assert r.returncode == 0 and "pinned to config 0" in r.stdout, r.stderr[-3000:]
    assert "4x64 GQA 4/1, torch.float32, causal, window 20, 5 padding keys, statistics config 0" in r.stdout, r.stdout
    assert re.search(r"^N=64 all: [\d.]+ us", r.stdout, re.M), r.stdout
    bad = _example("kernel_profile_gpu.py", "--device", "cpu", "--config", "99", timeout=120)
    assert bad.returncode == 2 and "--config must be in 0..0, got 99" in bad.stderr, bad.stderr[-500:]
    bad = _example("kernel_profile_gpu.py", "--device", "cpu", "--window", "0", timeout=120)
    assert bad.returncode == 2 and "--window must be >= 1, got 0" in bad.stderr
    bad = _example("kernel_profile_gpu.py", "--device", "cpu", "--pad", "64", timeout=120)
    assert bad.returncode == 2 and "--pad must be >= 0 and below every length, got 64" in bad.stderr


def test_source_segments_summary(tmp_path):
    """examples/ncu_source_segments.py groups Nsight Compute's per-instruction counts into runs executed equally
    often: a 3-instruction loop run 10 times per warp between straight-line code, on a hand-made export."""
    rows = ['"Kernel Name","k",', '"Address","Source","Warp Stall Sampling (All Samples)","# Samples",'
            '"Instructions Executed"']
    counts = [2, 2, 20, 20, 20, 2]
    rows += [f'"0x{0x1000 + 16 * i:x}","  OP R{i}","{i}","{i}","{c}"' for i, c in enumerate(counts)]
    path = tmp_path / "rep.csv"
    path.write_text("\n".join(rows) + "\n")
    r = _example("ncu_source_segments.py", str(path), "--warps", "2", "--min-share", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("  0x")]
    assert "66 warp instructions executed, 33 per warp" in r.stdout, r.stdout
    assert [ln.split()[0] for ln in lines] == ["0x00000-0x00010", "0x00020-0x00040", "0x00050-0x00050"], lines
    assert "3 instructions x        20 (  10.0 per warp):  90.9 %" in lines[1], lines[1]
    bad = _example("ncu_source_segments.py", str(path), "--warps", "0")
    assert bad.returncode == 2 and "--warps must be >= 1, got 0" in bad.stderr, bad.stderr[-500:]
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    bad = _example("ncu_source_segments.py", str(tmp_path / "x.csv"))
    assert bad.returncode == 2 and "not an `ncu --page source --csv` export" in bad.stderr, bad.stderr[-500:]


def test_every_gpu_shell_script_parses_and_refuses_unknown_steps():
    """The GPU sessions' shell scripts (one call each, no second chance on the device): bash must parse every one, and
    the round scripts with steps must refuse a step they do not know before doing anything."""
    scripts = sorted((ROOT / "examples").glob("*.sh"))
    assert len(scripts) >= 10
    for s in scripts:
        r = subprocess.run(["bash", "-n", str(s)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{s.name}: {r.stderr}"
    for name in ("gpu_round14.sh", "gpu_round15.sh"):
        r = subprocess.run(["bash", str(ROOT / "examples" / name), "nonsense"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and "usage: bash examples/" + name in r.stderr, r.stderr
    for name in ("gpu_round16.sh", "gpu_round17.sh", "gpu_round26.sh"):
        r = subprocess.run(["bash", str(ROOT / "examples" / name)], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PART="z"))
        assert r.returncode == 2 and "usage: PART=a|" in r.stderr and "bash examples/" + name in r.stderr, r.stderr


def test_first_call_script_runs_and_refuses_bad_arguments():
    """examples/first_call_gpu.py --smoke: EAP twice per length on a 2-layer SmolLM2-shaped model, the two calls'
    scores equal; a length below 2 is refused by argparse."""
    r = _example("first_call_gpu.py", "--smoke", "--lengths", "6", "9", "--batch", "2", "--vocab", "64")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = re.findall(r"^\s+(\d+) \|\s+([12]) \|\s+[\d.]+$", r.stdout, re.M)
    assert rows == [("6", "1"), ("6", "2"), ("9", "1"), ("9", "2")], r.stdout
    assert "first calls" in r.stdout and "graph 231 edges" in r.stdout
    bad = _example("first_call_gpu.py", "--smoke", "--lengths", "1", timeout=120)
    assert bad.returncode == 2 and "--lengths must be at least 2" in bad.stderr


def test_kernel_modules_load_without_torch():
    """`examples/sm90_registers.py` compiles the Triton kernels for sm_90 on a machine with Triton alone: their modules
    (and what they import) must not need torch."""
    code = ("import sys; sys.modules['torch'] = None; sys.path.insert(0, 'examples'); import sm90_registers; "
            "mods = sm90_registers.load_kernels(); print(sorted(mods))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and "triton_stats" in r.stdout, r.stderr[-2000:]


def test_sinks_timing_script_runs_and_checks_itself():
    """examples/sinks_gpu.py (GPT-OSS sink logits: cost and float64 check) on the CPU: both windows, small errors."""
    r = _example("sinks_gpu.py", "--device", "cpu", "--shapes", "4x16/2", "--lengths", "40", "--windows", "0", "8",
                 "--dtype", "float32")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = re.findall(r"^4x16/2, 40, (\d+) \|.*\| ([\d.e+-]+), ([\d.e+-]+), ([\d.e+-]+), ([\d.e+-]+), ([\d.e+-]+)$",
                      r.stdout, re.M)
    assert [w for w, *_ in rows] == ["0", "8"], r.stdout
    assert all(float(e) < 1e-5 for _, *errs in rows for e in errs), r.stdout


@pytest.mark.parametrize("layout", [("--chunk", "16"), ("--packed", "7", "13")])
def test_segments_timing_script_runs_and_checks_itself(layout):
    """examples/segments_gpu.py (chunked attention / packed sequences: cost and float64 check) on the CPU."""
    r = _example("segments_gpu.py", "--device", "cpu", "--shapes", "4x16/2", "--lengths", "40", *layout,
                 "--dtype", "float32")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = re.findall(r"^4x16/2, 40, (\d+) \|.*\| ([\d.e+-]+), ([\d.e+-]+), ([\d.e+-]+), ([\d.e+-]+), ([\d.e+-]+)$",
                      r.stdout, re.M)
    assert [n for n, *_ in rows] == ["3" if layout[0] == "--chunk" else "4"], r.stdout
    assert all(float(e) < 1e-5 for _, *errs in rows for e in errs), r.stdout
