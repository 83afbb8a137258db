"""examples/gpu_weights.sh: a bundled GGUF file split into parts, put one part at a time, assembled and checked."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "gpu_weights.sh"


def _run(args, cwd, env):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("split") is None or shutil.which("sha256sum") is None, reason="needs coreutils")
def test_split_put_assemble_round_trip(tmp_path):
    from interp.zoo import BUNDLED, _gguf_path

    src = _gguf_path(BUNDLED["smollm2-135m"])
    work, cache, parts = tmp_path / "repo", tmp_path / "cache", tmp_path / "parts"
    work.mkdir()
    env = dict(os.environ, PYTHON=sys.executable, INTERP_CACHE=str(cache), GGUF_PARTS=str(parts))
    r = _run(["split", "smollm2-135m", "40"], work, env)
    assert r.returncode == 0, r.stderr
    pieces = sorted((work / ".gguf").glob("smollm2-135m.part*"))
    assert len(pieces) == -(-src.stat().st_size // (40 << 20)) and len(pieces) >= 2
    for p in pieces:  # one part per call, as on the device machine
        assert _run(["put", str(p.relative_to(work))], work, env).returncode == 0
    r = _run(["assemble", "smollm2-135m"], work, env)
    assert r.returncode == 0, r.stderr
    out = cache / "gguf" / src.name
    assert out.stat().st_size == src.stat().st_size and "OK" in r.stdout
    assert not list(parts.glob("*.part*"))  # parts removed once joined


def test_missing_part_fails_the_checksum(tmp_path):
    work, cache, parts = tmp_path / "repo", tmp_path / "cache", tmp_path / "parts"
    (work / ".gguf").mkdir(parents=True)
    parts.mkdir()
    env = dict(os.environ, PYTHON=sys.executable, INTERP_CACHE=str(cache), GGUF_PARTS=str(parts))
    (parts / "m.part00").write_bytes(b"abc")
    (parts / "m.sha256").write_text("0" * 64 + "  m.gguf\n")
    r = _run(["assemble", "m"], work, env)
    assert r.returncode != 0 and "sha256 mismatch" in r.stderr
    assert not (cache / "gguf" / "m.gguf").exists() and not list((cache / "gguf").glob("*"))  # nothing half-written
    (parts / "m.part00").unlink()
    r = _run(["assemble", "m"], work, env)
    assert r.returncode == 1 and "no parts of m" in r.stderr
    assert _run(["frobnicate"], work, env).returncode == 2
