"""The HTML report in a real browser: headless Chromium (Debian's package) renders the plotly figures offline."""

import html
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


def need_chromium():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium package)")
        pytest.skip("chromium not installed (apt-get install chromium)")


def dump_dom(page: Path, tmp_path: Path) -> str:
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def test_report_renders_in_chromium(report, tmp_path):
    need_chromium()
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = dump_dom(report, tmp_path)
    n_divs = report.read_text().count('class="plotly-graph-div"')
    assert n_divs >= 4
    assert dom.count('class="main-svg"') >= n_divs  # plotly drew every figure, with no network
    first = dom.index("plotly-graph-div")  # the first figure is the role grid, with its legend
    assert dom.index("label (heads)", first) < dom.index("plotly-graph-div", first + 20)
    assert "induction (4)" in dom  # toy-induction's four layer-1 heads
    assert "of 16 rows" in dom  # the table script ran (2 models x 2 layers x 4 heads)
    shot = tmp_path / "report.png"
    r = subprocess.run(common + ["--window-size=1200,1600", f"--screenshot={shot}", report.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.exists(), r.stderr[-2000:]
    assert len(png_pixel_values(shot)) > 50  # not blank


def test_head_table_sorts_and_filters_in_chromium(tmp_path):
    """Type in the filter box and click headers, in the browser; the page writes what it sees into #result."""
    need_chromium()
    import pandas as pd

    from interp.plots import table_html

    df = pd.DataFrame(dict(model="m", layer=[0, 0, 1, 1, 2], head=[0, 1, 0, 1, 0],
                           label=["sink", "mixed", "sink", "induction", "sink"],
                           sink_score=[0.5, 0.1, float("nan"), 0.05, 0.9]))
    probe = """<pre id='result'></pre><script>
    var w=document.querySelector('.interp-table'), f=w.querySelector('input'), out=[];
    function visible(){return Array.prototype.filter.call(w.querySelectorAll('tbody tr'),
        function(r){return r.style.display!=='none';}).map(function(r){return r.cells[1].textContent+'/'
        +r.cells[2].textContent;}).join(',');}
    function filter(q){f.value=q; f.dispatchEvent(new Event('input')); out.push(q+' -> '+visible());}
    filter('label=sink'); filter('label=sink layer>=1'); filter('sink_score<0.2'); filter('induct'); filter('');
    var th=w.querySelectorAll('th'); th[4].click(); out.push('sort '+th[4].dataset.dir+' -> '+visible());
    th[4].click(); out.push('sort '+th[4].dataset.dir+' -> '+visible());
    out.push('count '+w.querySelector('.n').textContent);
    document.getElementById('result').textContent=out.join('\\n');
    </script>"""
    page = tmp_path / "table.html"
    page.write_text(f"<!DOCTYPE html><html><body>{table_html(df)}{probe}</body></html>")
    dom = dump_dom(page, tmp_path)
    result = html.unescape(dom.split("<pre id=\"result\">")[1].split("</pre>")[0]).splitlines()
    assert result == [
        "label=sink -> 0/0,1/0,2/0",
        "label=sink layer>=1 -> 1/0,2/0",
        "sink_score<0.2 -> 0/1,1/1",  # NaN compares false
        "induct -> 1/1",
        " -> 0/0,0/1,1/0,1/1,2/0",
        "sort asc -> 1/1,0/1,0/0,2/0,1/0",  # first click: ascending, NaN last
        "sort desc -> 2/0,0/0,0/1,1/1,1/0",
        "count 5 of 5 rows",
    ], result
