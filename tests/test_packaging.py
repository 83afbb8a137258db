"""interp must never pass for PyPI's `kernels` package (transformers probes for it, and from 5.25 on depends on it,
by that import name): installed, interp ships only `interp`; run from a checkout's root (where this repository's
`kernels/` folder is on sys.path), PyPI's package still wins."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "from transformers.utils.import_utils import is_kernels_available as f; print(f())"


def run(code, cwd):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def pypi_kernels_installed() -> bool:
    from importlib import metadata

    try:
        metadata.distribution("kernels")
        return True
    except metadata.PackageNotFoundError:
        return False


def test_transformers_sees_the_same_kernels_package_from_a_checkout(tmp_path):
    want = str(pypi_kernels_installed())
    for cwd in (tmp_path, ROOT):
        r = run(PROBE, cwd)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines()[-1] == want, (cwd, r.stdout)
        # transformers imports `kernels` while importing its activations when the package is there
        r = run("from transformers.activations import ACT2FN; import sys; m = sys.modules.get('kernels'); "
                "print(getattr(m, '__file__', None))", cwd)
        assert r.returncode == 0, (cwd, r.stderr[-2000:])
        assert str(ROOT / "kernels") not in r.stdout, (cwd, r.stdout)


def test_no_top_level_kernels_module_is_installed(tmp_path):
    r = run("import importlib.util as u; s = u.find_spec('kernels'); print(s and s.origin)", tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(ROOT / "kernels") not in r.stdout, r.stdout  # None, or PyPI's package in site-packages
    r = run("import interp.kernels, interp.analyses; print(interp.kernels.__name__)", tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "interp.kernels", r.stderr


def test_checkout_kernels_folder_defers_to_pypi_or_stays_ours():
    """From the repository root `import kernels` gives PyPI's package when it is installed, else this folder (as
    before transformers depended on it); a finder that hides PyPI's copy simulates its absence."""
    code = (
        "import sys, os, importlib.abc\n"
        f"ROOT = {str(ROOT)!r}\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'kernels' and not any(os.path.abspath(p or os.curdir) == ROOT for p in sys.path):\n"
        "            raise ImportError('hidden')\n"
        "if sys.argv[1:] == ['hide']:\n"
        "    sys.meta_path.insert(0, Hide())\n"
        "import kernels\n"
        "print(kernels.__file__, hasattr(kernels, 'attention_with_stats'))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, "hide"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(ROOT / "kernels" / "__init__.py"), "True"], r.stdout
    if pypi_kernels_installed():
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        path, ours = r.stdout.split()
        assert str(ROOT / "kernels") not in path and ours == "False", r.stdout


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
