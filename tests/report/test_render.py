"""The rendered report: files, self-containment, forest rows equal to the tidy results."""

from __future__ import annotations

import base64
import pickle
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from pooled.plots.forest import format_ratio_ci, heterogeneity_text


class _Collector(HTMLParser):
    """Images, forest-row tables (with their row attributes and cell texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict] = []
        self.links: list[str] = []
        self.tables: dict[str, list[dict]] = {}
        self._table: str | None = None
        self._row: dict | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        if tag in ("link", "script", "a") and (a.get("href") or a.get("src")):
            self.links.append(a.get("href") or a.get("src"))
        if tag == "table" and "forest-rows" in (a.get("class") or ""):
            self._table = a["data-output"]
            self.tables[self._table] = []
        if tag == "tr" and self._table and "data-hr" in a:
            self._row = {**a, "cells": []}
        if tag == "td" and self._row is not None:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row["cells"].append("".join(self._cell))
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        if tag == "table":
            self._table = None


@pytest.fixture(scope="module")
def page(rendered):
    parser = _Collector()
    parser.feed(rendered.html.read_text(encoding="utf-8"))
    return parser


def test_files_written(rendered):
    assert rendered.html.exists() and rendered.xlsx.exists()
    names = {p.name for p in rendered.figures}
    stems = {p.stem for p in rendered.figures}
    for stem in stems:  # every figure in PNG and SVG
        assert f"{stem}.png" in names and f"{stem}.svg" in names
        assert (rendered.folder / "figures" / f"{stem}.png").stat().st_size > 1000
    for expected in (
        "forest_two_stage_os",
        "km_os",
        "subgroups_interaction_os_subtype",
        "schoenfeld_zph_os",
        "trajectories_trajectory_selection",
        "exclusion_flow",
    ):
        assert expected in stems


def test_self_contained(rendered, page):
    text = rendered.html.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert not [link for link in page.links if not link.startswith("#")]
    pngs = [p for p in rendered.figures if p.suffix == ".png"]
    assert len(page.images) == len(pngs)
    for image in page.images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix)
        assert base64.b64decode(image["src"][len(prefix) :])[:8] == b"\x89PNG\r\n\x1a\n"
        assert image["alt"]


def test_forest_rows_match_the_results_table(run_output, rendered, page):
    results = run_output.results()
    expected = results[results["output"] == "two_stage_os"]
    rows = page.tables["two_stage_os"]
    assert len(rows) == len(expected)
    labels = expected["centre"].where(expected["row_type"] != "pooled", "Pooled (REML)")
    assert [r["data-label"] for r in rows] == labels.astype(str).tolist()
    np.testing.assert_array_equal([float(r["data-hr"]) for r in rows], expected["hr"].to_numpy())
    np.testing.assert_array_equal(
        [float(r["data-ci-lower"]) for r in rows], expected["ci_lower"].to_numpy()
    )
    # the visible text is the same numbers, rounded only here
    for row, rec in zip(rows, expected.itertuples(), strict=True):
        assert row["cells"][1] == format_ratio_ci(rec.hr, rec.ci_lower, rec.ci_upper)
    # and the figure drew exactly these rows
    drawn = rendered.forest_rows["forest_two_stage_os"]
    np.testing.assert_array_equal(drawn["hr"].to_numpy(), expected["hr"].to_numpy())


def test_forest_figure_ticks_match_results(run_output):
    import matplotlib.pyplot as plt

    from pooled.plots.forest import forest_plot

    out = next(o for o in run_output.outputs if o.name == "two_stage_os")
    ax = forest_plot(out.result)
    results = run_output.results()
    expected = results[results["output"] == "two_stage_os"]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[:-1] == expected.loc[expected["row_type"] == "centre", "centre"].tolist()
    assert ticks[-1].startswith("Pooled")
    plt.close("all")


def test_subgroup_rows_match_results(run_output, rendered):
    results = run_output.results()
    within = results[(results["output"] == "interaction_os_subtype") & results["level"].notna()]
    drawn = rendered.forest_rows["subgroups_interaction_os_subtype"]
    assert drawn["label"].tolist() == within["level"].tolist()
    np.testing.assert_array_equal(drawn["hr"].to_numpy(), within["hr"].to_numpy())


def test_heterogeneity_line_and_footer(run_output, rendered):
    text = rendered.html.read_text(encoding="utf-8")
    meta = next(o for o in run_output.outputs if o.name == "two_stage_os").result.meta
    assert heterogeneity_text(meta) in text
    assert "Interaction likelihood-ratio test" in text
    prov = run_output.provenance
    assert prov["config_sha256"] in text
    for centre, sha in prov["upload_sha256"].items():
        assert sha in text and f">{centre}<" in text
    assert "Package versions" in text and "pooled-ipd" in text
    assert "Number at risk" not in text  # it lives in the KM figure, not as page text
    assert 'id="reproducibility"' in text


def test_numbers_in_results_stay_raw(run_output):
    results = run_output.results()
    hr = results["hr"].dropna().to_numpy()
    assert np.any(np.abs(hr * 100 - np.round(hr * 100)) > 1e-9)


def test_rerender_from_pickle(run_output, rendered, tmp_path):
    from pooled.report import render_report
    from pooled.run_output import load_run

    run_output.save(tmp_path)
    again = load_run(tmp_path)
    assert pickle.loads(pickle.dumps(again)).name == run_output.name
    files = render_report(again, tmp_path / "again", formats=("png",))
    np.testing.assert_array_equal(
        files.forest_rows["forest_two_stage_os"]["hr"].to_numpy(),
        rendered.forest_rows["forest_two_stage_os"]["hr"].to_numpy(),
    )
    assert all(p.suffix == ".png" for p in files.figures)


def test_rerender_removes_figures_of_an_earlier_render(run_output, tmp_path):
    from pooled.report import render_report

    stale = tmp_path / "figures" / "forest_of_a_config_no_longer_run.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    files = render_report(run_output, tmp_path, formats=("png",))
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(
        p.name for p in files.figures
    )


def test_unrenderable_result_names_the_output(run_output, tmp_path):
    from dataclasses import replace

    from pooled.errors import PooledError
    from pooled.report import render_report
    from pooled.run_output import ModelOutput

    broken = ModelOutput("km_broken", "km", "os", object(), "A broken result")
    run = replace(run_output, outputs=(*run_output.outputs[:2], broken))
    with pytest.raises(PooledError, match="'km_broken' \\(kind 'km', result object\\)"):
        render_report(run, tmp_path)


def test_bayesian_section(run_output, rendered):
    results = run_output.results()
    rows = results[
        (results["output"] == "bayes_meta_os")
        & results["quantity"].isin(["centre", "pooled", "predictive"])
    ]
    drawn = rendered.forest_rows["bayes_forest_bayes_meta_os"]
    assert drawn["label"].tolist()[-2:] == ["Pooled", "New centre"]
    assert drawn["label"].tolist()[:-2] == rows.loc[rows["quantity"] == "centre", "level"].tolist()
    assert sorted(drawn["hr"]) == sorted(rows["hr"])
    stems = {p.stem for p in rendered.figures}
    assert {"posterior_plot_bayes_meta_os", "trace_plot_bayes_meta_os"} <= stems
    text = rendered.html.read_text(encoding="utf-8")
    bayes = next(o for o in run_output.outputs if o.name == "bayes_meta_os").result
    if bayes.problems:
        assert "Sampling diagnostics out of bounds" in text
    else:
        assert "no divergences" in text
    assert "r_hat" in text and "ess_bulk" in text


def test_report_refuses_a_damaged_or_foreign_run_pkl(run_output, tmp_path):
    """`pooled report` reads only the run.pkl `pooled run` wrote (checksum in run.json), and
    never unpickles anything but the classes a run is made of."""
    import hashlib
    import json
    import os

    from typer.testing import CliRunner

    from pooled.cli import app
    from pooled.errors import PooledError
    from pooled.run_output import load_run

    run_output.save(tmp_path)
    pkl = tmp_path / "run.pkl"
    pkl.write_bytes(pkl.read_bytes()[:200])  # damaged
    with pytest.raises(PooledError, match="changed or damaged"):
        load_run(tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    pkl.write_bytes(pickle.dumps(Evil()))
    record = json.loads((tmp_path / "run.json").read_text())
    record["run_pkl_sha256"] = hashlib.sha256(pkl.read_bytes()).hexdigest()  # a forged record
    (tmp_path / "run.json").write_text(json.dumps(record))
    with pytest.raises(PooledError, match="refusing to load"):
        load_run(tmp_path)
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "run.json").unlink()
    with pytest.raises(PooledError, match="run.json is missing"):
        load_run(tmp_path)


def test_footer_shows_nested_provenance_as_text_and_skips_empty_mappings(run_output):
    from dataclasses import replace

    from pooled.report.render import _footer

    prov = {
        **run_output.provenance,
        "time_origins": {"A": {"diagnosis": 325}, "B": {"surgery": 260, "diagnosis": 4}},
        "origin_not_converted": {},
    }
    text = _footer(replace(run_output, provenance=prov))
    assert "diagnosis (325)" in text and "surgery (260), diagnosis (4)" in text
    assert "{'" not in text  # no Python reprs
    assert "What the delivered durations count from" in text
    assert "origin_not_converted" not in text and "left at their delivered origin" not in text
