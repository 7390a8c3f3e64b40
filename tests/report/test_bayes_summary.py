"""Bayes: one summary convention (posterior median, equal-tailed 95% interval) in the posterior
plot, the forest and the table."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from tests.report.page import Page


def test_posterior_plot_shows_the_tables_median_and_interval(run_output):
    from pooled.plots.bayes import SUMMARY_GID, posterior_plot

    out = next(o for o in run_output.outputs if o.name == "bayes_meta_os")
    pooled = out.to_frame().query("quantity == 'pooled'").iloc[0]
    ax = posterior_plot(out.result)
    (bar,) = [line for line in ax.lines if line.get_gid() == SUMMARY_GID]
    assert list(bar.get_xdata()) == pytest.approx([pooled["ci_lower"], pooled["ci_upper"]])
    medians = [line for line in ax.lines if list(line.get_xdata()) == [pooled["hr"]] * 2]
    assert medians, "no vertical line at the posterior median"
    texts = " ".join(t.get_text() for t in ax.texts)
    assert f"median {pooled['hr']:.2f}" in texts
    assert f"{pooled['ci_lower']:.2f}\u2013{pooled['ci_upper']:.2f}" in texts
    assert "HDI" not in texts and "mean" not in texts.lower()
    plt.close("all")


def test_tau_posterior_uses_the_heterogeneity_row(run_output):
    from pooled.plots.bayes import SUMMARY_GID, posterior_plot

    out = next(o for o in run_output.outputs if o.name == "bayes_meta_os")
    tau = out.to_frame().query("quantity == 'heterogeneity'").iloc[0]
    ax = posterior_plot(out.result, var_name="tau")
    (bar,) = [line for line in ax.lines if line.get_gid() == SUMMARY_GID]
    assert list(bar.get_xdata()) == pytest.approx([tau["ci_lower"], tau["ci_upper"]])
    plt.close("all")


def test_report_states_the_convention(rendered):
    text = Page(rendered.html).text("bayes")
    assert "posterior medians with equal-tailed 95% credible intervals" in text
    assert "HDI" not in text


def test_few_centres_caveat_and_no_predictive_row_below_three(run_output, rendered, tmp_path):
    from dataclasses import replace

    import pandas as pd

    from pooled.report import render_report

    out = next(o for o in run_output.outputs if o.name == "bayes_meta_os")
    table = out.result.table
    two = pd.concat(
        [
            table.loc[table["quantity"] != "centre"],
            table.loc[table["quantity"] == "centre"].head(2),
        ],
        ignore_index=True,
    )
    run = replace(run_output, outputs=(replace(out, result=replace(out.result, table=two)),))
    files = render_report(run, tmp_path, formats=("png",))
    text = Page(files.html).text("bayes")
    assert "Only 2 centres: the between-centre SD (tau) is informed mostly by its prior" in text
    drawn = files.forest_rows["bayes_forest_bayes_meta_os"]["label"].tolist()
    assert "New centre" not in drawn and "Pooled" in drawn
    # the reference run's eight centres carry no caveat and keep the predictive row
    assert "informed mostly by its prior" not in Page(rendered.html).text("bayes")
    assert "New centre" in rendered.forest_rows["bayes_forest_bayes_meta_os"]["label"].tolist()
