"""report.html looked at in a real browser (headless Chromium): figures load, nothing overflows.

Wide tables scroll inside their own ``.table-wrap`` box; the page itself never scrolls sideways,
and no figure, heading, paragraph or table box reaches past the window.

Skipped where ``/usr/bin/chromium`` is absent (install with ``apt-get install -y chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1400, 4000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="headless Chromium not installed at /usr/bin/chromium "
        "(apt-get install -y chromium); the browser check of report.html is skipped",
    ),
]

_PROBE = """
<script>
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var out = {
    images: images.length,
    broken: images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                  .map(function (i) { return i.alt; }),
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    wide: Array.prototype.slice.call(
        document.querySelectorAll('img, figure, section, .table-wrap, pre, p, h1, h2, h3'))
      .filter(function (e) { return !e.closest('details:not([open])'); })
      .filter(function (e) { var r = e.getBoundingClientRect(); return r.right > window.innerWidth + 1; })
      .map(function (e) { return e.tagName + '#' + (e.id || e.alt || ''); })
  };
  var node = document.createElement('pre');
  node.id = 'probe-result';
  node.textContent = JSON.stringify(out);
  document.body.appendChild(node);
});
</script>
"""


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def test_screenshot_is_not_blank(rendered, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    result = _chromium(f"--screenshot={shot}", rendered.html.as_uri(), profile=tmp_path / "p1")
    assert shot.exists(), result.stderr[-2000:]
    image = Image.open(shot).convert("L")
    assert image.size == (WIDTH, HEIGHT)
    low, high = image.getextrema()
    assert high - low > 100  # text and figures, not a blank page
    histogram = image.histogram()
    non_white = sum(histogram[:200]) / (WIDTH * HEIGHT)
    assert non_white > 0.01


def test_images_load_and_nothing_overflows(rendered, tmp_path):
    page = tmp_path / "probe.html"
    shutil.copy(rendered.html, page)
    text = page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>")
    page.write_text(text, encoding="utf-8")
    result = _chromium(
        "--virtual-time-budget=10000", "--dump-dom", page.as_uri(), profile=tmp_path / "p2"
    )
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', result.stdout, re.S)
    assert match, result.stderr[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    pngs = [p for p in rendered.figures if p.suffix == ".png"]
    assert probe["images"] == len(pngs)
    assert probe["broken"] == []
    assert probe["scrollWidth"] <= probe["innerWidth"], probe
    assert probe["wide"] == []
