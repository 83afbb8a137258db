"""The HTML report in a real browser: headless Chromium (Debian's package) renders the plotly figures offline."""

import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=8000"]


def png_pixel_values(path: Path) -> set:
    """Distinct byte values of the decompressed image data (a blank page has only a handful)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    i, idat = 8, b""
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        if kind == b"IDAT":
            idat += data[i + 8:i + 8 + n]
        i += 12 + n
    return set(zlib.decompress(idat))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from interp.classify import classify

    out = tmp_path_factory.mktemp("report")
    classify(["toy-induction", "toy-needle"], out, progress=False, log=lambda *a: None)
    return out / "report.html"


def test_report_renders_in_chromium(report, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium package)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(common + ["--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    n_divs = report.read_text().count('class="plotly-graph-div"')
    assert n_divs >= 4
    assert dom.stdout.count('class="main-svg"') >= n_divs  # plotly drew every figure, with no network
    shot = tmp_path / "report.png"
    r = subprocess.run(common + ["--window-size=1200,1600", f"--screenshot={shot}", report.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.exists(), r.stderr[-2000:]
    assert len(png_pixel_values(shot)) > 50  # not blank
