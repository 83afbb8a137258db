"""interp must never pass for PyPI's `kernels` package (transformers probes for it by import name)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "from transformers.utils.import_utils import is_kernels_available as f; print(f())"


def run(code, cwd):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_transformers_does_not_see_a_kernels_package(tmp_path):
    for cwd in (tmp_path, ROOT):
        r = run(PROBE, cwd)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines()[-1] == "False", (cwd, r.stdout)


def test_no_top_level_kernels_module_is_installed(tmp_path):
    r = run("import importlib.util as u; print(u.find_spec('kernels'))", tmp_path)
    assert r.stdout.strip() == "None", r.stdout
    r = run("import interp.kernels, interp.analyses; print(interp.kernels.__name__)", tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "interp.kernels", r.stderr


def test_wheel_maps_kernels_under_interp(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    import zipfile

    wheel = next(tmp_path.glob("interp_heads-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"interp"}, tops
    assert "interp/kernels/triton_forward.py" in names and "interp/analyses/__init__.py" in names
    assert any(n.startswith("interp/toy/checkpoints/toy-induction") for n in names)
