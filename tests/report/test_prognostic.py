"""The report's section on prognostic value beyond one cut-off: its tables and figures, read
from real runs (count categories and the continuous count), and the section in headless
Chromium: images load, nothing overflows its box or overlaps (skipped without Chromium)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

from pooled.config import parse_analysis_config
from pooled.errors import PooledWarning
from pooled.runner import run_analysis
from pooled.simulate.cohort import simulate_patients
from pooled.simulate.scenarios import centre_sizes, get_scenario
from tests.pooled.helpers import dataset

CONFIG = """\
name: prognostic
cohort: {{setting: metastatic}}
endpoints: [os]
exposure: {{name: ctc, kind: {kind}}}
covariates: [age, line_of_therapy, {{name: subtype, reference: luminal_a}}]
models:
  cox: {{ties: efron}}
  count_response: {{breaks: [0, 4, 19]}}
  added_value: {{clinical: [age, line_of_therapy, subtype], bootstrap: 30}}
  validity: {{iecv: {iecv}}}
"""


def _run(kind: str, iecv: str = "true"):
    spec = get_scenario("ctc-count")
    sizes = centre_sizes([c.weight for c in spec.centres], 1200)
    frames = [simulate_patients(spec, c, int(n), np.random.default_rng([8, i]))
              for i, (c, n) in enumerate(zip(spec.centres, sizes, strict=True))]  # fmt: skip
    data = pd.concat(frames, ignore_index=True)
    data["os_event"] = data["os_event"].astype(float)
    cfg = parse_analysis_config(CONFIG.format(kind=kind, iecv=iecv), path="prognostic.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PooledWarning)
        return run_analysis(cfg, dataset(data))


@pytest.fixture(scope="module")
def prognostic_rendered(tmp_path_factory):
    from pooled.report import render_report

    return render_report(_run("continuous"), tmp_path_factory.mktemp("prognostic"))


def _section(page: str) -> str:
    match = re.search(r'<section id="prognostic">(.*?)</section>', page, re.S)
    assert match, "no prognostic section"
    return match.group(1)


def test_section_reads_the_results(prognostic_rendered):
    page = prognostic_rendered.html.read_text(encoding="utf-8")
    section = _section(page)
    assert section.count("<figure") == 2
    assert "knots at" in section and "Test of non-linearity" in section
    assert "likelihood-ratio chi-square" in section and "on 3 df" in section  # 3 spline columns
    assert "bootstrap by centre (" in section
    assert "C, internal-external cross-validation" in section
    assert "Calibration slope, internal-external cross-validation" in section
    # the HR table stops at the largest count seen; the rest is said, not shown
    assert "above the largest count observed" in section or "count-curve" in section
    order = [page.index(t) for t in ('id="random_effects"', 'id="prognostic"', 'id="subgroups"')
             if t in page]  # fmt: skip
    assert order == sorted(order)


def test_categories_without_iecv(tmp_path):
    from pooled.report import render_report

    files = render_report(_run("count_categories", iecv="false"), tmp_path, formats=("png",),
                          dpi=60)  # fmt: skip
    section = _section(files.html.read_text(encoding="utf-8"))
    assert "1 (reference)" in section and "&gt;=20" in section
    assert "C, model fitted in the centre" in section
    assert "calibration slope, IECV" not in section


@pytest.mark.browser
@pytest.mark.skipif(not __import__("pathlib").Path("/usr/bin/chromium").exists(),
                    reason="headless Chromium not installed at /usr/bin/chromium")  # fmt: skip
@pytest.mark.parametrize("width", [1400, 820])
def test_section_in_the_browser(prognostic_rendered, tmp_path, width):
    from tests.report.test_browser import _BOXES, _PROBE, _probe

    (tmp_path / "images").mkdir()
    (tmp_path / "boxes").mkdir()
    images = _probe(prognostic_rendered.html, tmp_path / "images", _PROBE, width=width)
    assert images["broken"] == [] and images["wide"] == []
    probe = _probe(prognostic_rendered.html, tmp_path / "boxes", _BOXES, width=width)
    assert probe["outside"] == [], probe["outside"]
    assert probe["overflowing"] == [], probe["overflowing"]
    assert probe["overlaps"] == [], probe["overlaps"]
    assert probe["scrollWidth"] <= probe["innerWidth"]
