"""report.html looked at in a real browser (headless Chromium): figures load, nothing overflows.

Wide tables scroll inside their own ``.table-wrap`` box; the page itself never scrolls sideways,
and no figure, heading, paragraph or table box reaches past the window. The boxes are measured
in the browser: every table lies inside its box or its box scrolls, every figure inside the
page's content, and no two tables, figures or paragraphs overlap. The numbers at risk inside
the Kaplan-Meier PNGs are measured in matplotlib when the report draws them
(``ReportFiles.at_risk_labels``): no two labels intersect.

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


def _probe(html: Path, tmp_path: Path, script: str = _PROBE, **window: int) -> dict:
    page = tmp_path / "probe.html"
    shutil.copy(html, page)
    text = page.read_text(encoding="utf-8").replace("</body>", script + "</body>")
    page.write_text(text, encoding="utf-8")
    extra = [f"--window-size={window['width']},{HEIGHT}"] if "width" in window else []
    result = _chromium(
        "--virtual-time-budget=10000",
        *extra,
        "--dump-dom",
        page.as_uri(),
        profile=tmp_path / "p2",
    )
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', result.stdout, re.S)
    assert match, result.stderr[-2000:]
    return json.loads(
        match.group(1)
        .replace("&quot;", '"')
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )


def test_images_load_and_nothing_overflows(rendered, tmp_path):
    probe = _probe(rendered.html, tmp_path)
    pngs = [p for p in rendered.figures if p.suffix == ".png"]
    assert probe["images"] == len(pngs)
    assert probe["broken"] == []
    assert probe["scrollWidth"] <= probe["innerWidth"], probe
    assert probe["wide"] == []


# Every box measured: each table inside its .table-wrap, or the wrap scrolls sideways (and
# stays inside the content); each figure and image inside the content; no two blocks overlap.
_BOXES = """
<script>
window.addEventListener('load', function () {
  function box(e) { var r = e.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; }
  function name(e) { return e.tagName + '#' + (e.id || e.className || e.alt || '') +
    (e.getAttribute && e.getAttribute('data-output') ? ':' + e.getAttribute('data-output') : ''); }
  function visible(e) { return !e.closest('details:not([open])') && e.getClientRects().length; }
  var main = document.querySelector('main');
  var style = getComputedStyle(main);
  var content = box(main);
  content.left += parseFloat(style.paddingLeft); content.right -= parseFloat(style.paddingRight);
  var out = {tables: 0, scrolling: [], outside: [], overflowing: [], overlaps: [], figures: 0};
  Array.prototype.slice.call(document.querySelectorAll('.table-wrap')).filter(visible)
    .forEach(function (wrap) {
      out.tables += 1;
      var table = wrap.querySelector('table');
      var w = box(wrap), t = box(table);
      if (w.right > content.right + 1 || w.left < content.left - 1) out.outside.push(name(table));
      var scrolls = wrap.scrollWidth > wrap.clientWidth + 1;
      var canScroll = ['auto', 'scroll'].indexOf(getComputedStyle(wrap).overflowX) >= 0;
      if (scrolls) out.scrolling.push(name(table));
      if ((t.right > w.right + 1 && !(scrolls && canScroll)) || t.left < w.left - 1)
        out.overflowing.push(name(table));
    });
  Array.prototype.slice.call(document.querySelectorAll('figure')).filter(visible)
    .forEach(function (fig) {
      out.figures += 1;
      var f = box(fig), img = box(fig.querySelector('img'));
      if (f.right > content.right + 1 || img.right > content.right + 1) out.outside.push(name(fig));
      if (img.right > f.right + 1 || img.left < f.left - 1) out.overflowing.push(name(fig));
    });
  var blocks = Array.prototype.slice.call(
      document.querySelectorAll('main > section > .table-wrap, main > section > figure, ' +
        'main > section > p, main > section > h3, .beside > .table-wrap, .beside > figure'))
    .filter(visible);
  for (var i = 0; i < blocks.length; i++) {
    var a = box(blocks[i]);
    for (var j = i + 1; j < blocks.length; j++) {
      var b = box(blocks[j]);
      if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
        out.overlaps.push(name(blocks[i]) + ' / ' + name(blocks[j]));
    }
  }
  out.beside = Array.prototype.slice.call(document.querySelectorAll('.beside')).map(function (b) {
    var table = box(b.querySelector('.table-wrap'));
    return Array.prototype.slice.call(b.querySelectorAll('figure')).map(function (f) {
      var r = box(f); return r.left >= table.right - 1 && r.top < table.bottom; });
  });
  out.scrollWidth = document.documentElement.scrollWidth;
  out.innerWidth = window.innerWidth;
  var node = document.createElement('pre');
  node.id = 'probe-result';
  node.textContent = JSON.stringify(out);
  document.body.appendChild(node);
});
</script>
"""


@pytest.mark.parametrize("which", ["rendered", "two_centre_rendered", "augmented_rendered"])
@pytest.mark.parametrize("width", [WIDTH, 820])
def test_no_table_or_figure_overflows_its_box(request, which, width, tmp_path):
    files = request.getfixturevalue(which)
    probe = _probe(files.html, tmp_path, _BOXES, width=width)
    assert probe["tables"] > 10 and probe["figures"] > 3
    assert probe["outside"] == [], probe["outside"]
    assert probe["overflowing"] == [], probe["overflowing"]
    assert probe["overlaps"] == [], probe["overlaps"]
    assert probe["scrollWidth"] <= probe["innerWidth"], probe
    if width < WIDTH:  # a narrow window: the wide tables scroll inside their boxes
        assert probe["scrolling"], "no table is wider than 820 px?"
    elif which == "two_centre_rendered":  # the Schoenfeld plot stands beside the flagged HR
        assert probe["beside"] and all(all(row) for row in probe["beside"]), probe["beside"]


@pytest.mark.parametrize("which", ["rendered", "two_centre_rendered"])
def test_numbers_at_risk_in_the_figures_do_not_overlap(request, which):
    from pooled.plots.km import intersecting

    files = request.getfixturevalue(which)
    km = [p.stem for p in files.figures if p.stem.startswith("km_") and p.suffix == ".png"]
    assert sorted(files.at_risk_labels) == sorted(km)
    for name, boxes in files.at_risk_labels.items():
        assert len(boxes) >= 6, name
        assert intersecting(boxes) == [], name
