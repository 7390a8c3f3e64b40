"""Assumption checks that speak: a PH flag where the HR is shown (with its Schoenfeld plot and
the period-specific HRs), fit statistics when the Cox results carry them, a caveat for few
centres and no prediction interval below 3, one-stage against two-stage side by side."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pooled.report.checks import (
    fit_statistics,
    one_vs_two_stage,
    ph_checks,
    two_stage_caveat,
    zph_alpha,
)
from pooled.report.tables import fit_statistics_table, hazard_ratio_table
from tests.report.conftest import TIME_SPLIT_ROWS
from tests.report.page import Page


@pytest.fixture(scope="module")
def page(two_centre_rendered):
    return Page(two_centre_rendered.html)


@pytest.fixture(scope="module")
def augmented_page(augmented_rendered):
    return Page(augmented_rendered.html)


# --------------------------------------------------------------------------- proportional hazards


def test_ph_check_reads_the_exposure_and_global_tests(two_centre):
    checks = ph_checks(two_centre)
    dfs = checks["dfs"]
    table = dfs.zph.result.table.set_index("term")
    assert dfs.exposure == "pr_positive" and dfs.terms == ("pr_positive",)
    assert dfs.exposure_p == table.loc["pr_positive", "p_value"]
    assert dfs.global_p == table.loc["GLOBAL", "p_value"]
    assert dfs.alpha == 0.05 and dfs.rejects and dfs.rejects_exposure
    assert dfs.model == "Stratified Cox, DFS, adjusted"


def test_alpha_comes_from_the_config_and_decides_the_flag(two_centre):
    p = ph_checks(two_centre)["dfs"].exposure_p
    strict = replace(
        two_centre, config_text=two_centre.config_text.replace("alpha: 0.05", "alpha: 1.0e-20")
    )
    assert zph_alpha(strict) == 1e-20
    check = ph_checks(strict)["dfs"]
    assert p > 1e-20 and check.global_p > 1e-20
    assert not check.rejects and check.flag() == ""
    table = hazard_ratio_table(strict.outputs, ph_checks(strict))
    assert (table["PH check"] == "").all()
    assert zph_alpha(replace(two_centre, config_text="name: x\n")) == 0.05


def test_flag_where_the_hr_is_shown(page):
    table = page.table("cox", "cox", **{"data-output": "cox_dfs_adjusted"})
    records = table.records()
    flagged = [r for r in records if r.get("PH check")]
    assert [r["term"] for r in flagged] == ["pr_positive"]
    assert flagged[0]["PH check"].startswith("PH violated (pr_positive test p < 0.001")
    assert table.row_classes[table.column("term").index("pr_positive")] == "flagged"
    # the tested model's terms carry their own PH p-value
    assert table.column("PH test p")[table.column("term").index("age")] == "0.643"
    text = page.text("cox")
    assert "Proportional hazards rejected at alpha = 0.05" in text
    assert "chi^2 = 52.52 on 1 df" in text
    # the univariable HR of the same exposure is flagged too
    uni = page.table("cox", "cox", **{"data-output": "cox_dfs_univariable"})
    assert uni.records()[0]["PH check"].startswith("PH violated")


def test_schoenfeld_plot_beside_the_flagged_hr(two_centre_rendered, page):
    stems = {p.stem for p in two_centre_rendered.figures}
    assert "schoenfeld_cox_dfs_adjusted_pr_positive" in stems
    cox = page.section_html("cox")
    beside = cox[cox.index('<div class="beside">') :]
    assert beside.index('data-output="cox_dfs_adjusted"') < beside.index(
        'id="fig-schoenfeld_cox_dfs_adjusted_pr_positive"'
    )


def test_flag_in_the_xlsx_hazard_ratios(two_centre_rendered):
    from openpyxl import load_workbook

    sheet = load_workbook(two_centre_rendered.xlsx)["Hazard ratios"]
    header = [c.value for c in sheet[1]]
    rows = [
        dict(zip(header, r, strict=False)) for r in sheet.iter_rows(min_row=2, values_only=True)
    ]
    rows = [r for r in rows if r.get("Term")]
    flagged = {(r["Analysis"], r["Term"]) for r in rows if r.get("PH check")}
    assert ("Stratified Cox, DFS, adjusted", "pr_positive") in flagged
    assert ("Stratified Cox, DFS, adjusted", "age") not in flagged
    two_stage = [
        r for r in rows if r["Analysis"].startswith("Two-stage") and r["Endpoint"] == "DFS"
    ]
    assert two_stage and two_stage[0]["PH check"]


def test_flag_in_the_two_stage_and_sensitivity_text(page):
    assert (
        "PH violated (pr_positive test p < 0.001) in Stratified Cox, DFS, adjusted: the centres' "
        "HRs and their pooled HR average an effect of pr_positive that changes over time"
    ) in page.text("centres")
    assert "these HRs average an effect of pr_positive" in page.text("centres")  # caption
    assert "the HRs here average an effect of pr_positive" in page.text("sensitivity")


def test_no_period_specific_hrs_said_when_none_were_fitted(page):
    assert "No period-specific HRs were fitted (models.cox.time_split)" in page.text("cox")


def test_period_specific_hrs_beside_the_flag(augmented_page):
    table = augmented_page.table("time-split", "cox", **{"data-output": "time_split_dfs"})
    assert table.column("period") == ["0-24 months", "24-60 months", "> 60 months"]
    assert table.column("hr") == ["0.31", "2.71", "2.95"]  # the exposure's rows only
    assert "Period-specific hazard ratios" in augmented_page.text("cox")
    cox = augmented_page.section_html("cox")
    assert cox.index('data-output="cox_dfs_adjusted"') < cox.index('data-output="time_split_dfs"')
    assert cox.count('data-output="time_split_dfs"') == 1  # not shown twice
    assert "The period-specific HRs below show how the effect changes" in augmented_page.text("cox")


def test_period_specific_hrs_in_the_workbook(augmented_rendered):
    from openpyxl import load_workbook

    sheet = load_workbook(augmented_rendered.xlsx)["Period-specific HRs"]
    header = [c.value for c in sheet[1]]
    hr = [r[header.index("hr")] for r in sheet.iter_rows(min_row=2, max_row=4, values_only=True)]
    assert hr == [r["hr"] for r in TIME_SPLIT_ROWS[:3]]


# --------------------------------------------------------------------------- fit statistics


def test_fit_statistics_of_a_plain_cox_result(two_centre):
    fit = next(o for o in two_centre.outputs if o.name == "cox_dfs_adjusted").result
    stats = fit_statistics(fit)
    assert stats["loglik"] == fit.loglik and stats["loglik_null"] == fit.loglik_null
    assert stats["lr_chisq"] == pytest.approx(2 * (fit.loglik - fit.loglik_null))
    assert stats["lr_df"] == 5 and stats["wald_df"] == 5 and stats["score_df"] == 5
    assert stats["aic"] == pytest.approx(-2 * fit.loglik + 10)
    assert stats["concordance"] == fit.concordance and 0.5 < stats["concordance"] < 1
    assert stats["concordance_se"] == fit.concordance_se
    assert "robust_score_df" not in stats  # no cluster, no robust score test


def _without_concordance(outputs):
    """The outputs with Cox results that carry no C (as CoxSpec(concordance=False) gives)."""
    from dataclasses import replace

    out = []
    for o in outputs:
        result = o.result
        if hasattr(result, "concordance") and hasattr(result, "concordance_se"):
            result = replace(result, concordance=float("nan"), concordance_se=float("nan"))
        out.append(replace(o, result=result))
    return out


def test_fit_statistics_pick_up_what_a_result_carries(augmented):
    out = next(o for o in augmented.outputs if o.name == "cox_dfs_adjusted")
    stats = fit_statistics(out.result)
    assert stats["concordance"] == 0.634 and stats["concordance_se"] == 0.0123
    extra = SimpleNamespace(
        loglik=-10.0, fit_statistics=lambda: {"concordance": 0.7, "brier_score": 0.2}
    )
    assert fit_statistics(extra) == {"loglik": -10.0, "concordance": 0.7, "brier_score": 0.2}
    table = fit_statistics_table(augmented.outputs)
    assert "C (Harrell)" in table and "C SE" in table
    row = table.loc[table["Analysis"] == "Stratified Cox, DFS, adjusted"].iloc[0]
    assert row["C (Harrell)"] == 0.634
    plain = fit_statistics_table(_without_concordance(augmented.outputs[:4]))
    assert "C (Harrell)" not in plain


def test_fit_statistics_in_the_report_and_workbook(augmented_page, page, augmented_rendered):
    from openpyxl import load_workbook

    table = augmented_page.table("fit-statistics", "cox", **{"data-output": "cox_dfs_adjusted"})
    record = table.records()[0]
    assert record["C (Harrell)"] == "0.634" and record["C SE"] == "0.012"
    assert record["LR df"] == "5" and record["LR p"] == "<0.001"
    assert {"Log-lik (null)", "Log-lik", "Wald chi^2", "Score chi^2", "AIC"} <= set(table.header)
    real = page.table("fit-statistics", "cox", **{"data-output": "cox_dfs_adjusted"})
    assert "C (Harrell)" in real.header  # the real fit carries its C (the fake above 0.634)
    assert real.records()[0]["C (Harrell)"] != "0.634"
    sheet = load_workbook(augmented_rendered.xlsx)["Fit statistics"]
    header = [c.value for c in sheet[1]]
    values = [r[header.index("C (Harrell)")] for r in sheet.iter_rows(min_row=2, values_only=True)]
    assert 0.634 in values


# --------------------------------------------------------------------------- two-stage


@pytest.mark.parametrize(
    ("k", "caveat", "prediction_note"),
    [(1, True, True), (2, True, True), (3, True, False), (4, True, False), (5, False, False)],
)
def test_few_centre_caveat(k, caveat, prediction_note):
    meta = SimpleNamespace(k=k, spec=SimpleNamespace(label="REML_knha", knha=True))
    text = two_stage_caveat(meta)
    assert bool(text) == caveat
    assert ("no prediction interval" in text) == prediction_note
    if caveat:
        assert "REML, Hartung-Knapp" in text and f"t distribution with {k - 1} df" in text


def test_two_centres_carry_the_caveat_and_no_prediction_interval(page, two_centre_rendered):
    from openpyxl import load_workbook

    text = page.text("centres")
    assert text.count("Only 2 centres pooled") == 2  # DFS and OS
    assert "no prediction interval with 2 centres" in text
    assert "dotted line the 95% prediction interval" not in text
    sheet = load_workbook(two_centre_rendered.xlsx)["Heterogeneity"]
    header = [c.value for c in sheet[1]]
    first = next(sheet.iter_rows(min_row=2, max_row=2, values_only=True))
    assert first[header.index("PI lower")] is None and first[header.index("PI upper")] is None
    assert first[header.index("Caveat")].startswith("Only 2 centres pooled")


def test_eight_centres_keep_the_prediction_interval_without_caveat(rendered):
    text = Page(rendered.html).text("centres")
    assert "dotted line the 95% prediction interval" in text
    assert "centres pooled: with fewer than" not in text


def test_terms_dropped_in_a_centre_are_listed(page):
    table = page.tables("centre-differences", "centres")[0]
    assert table.records() == [
        {
            "centre": "B",
            "pooled": "yes",
            "n": "249",
            "events": "223",
            "difference": "constant in this centre, left out: grade",
        }
    ]


def test_one_stage_and_two_stage_side_by_side(two_centre, page):
    rows = one_vs_two_stage(two_centre).set_index("endpoint")
    dfs = rows.loc["dfs"]
    cox = next(o for o in two_centre.outputs if o.name == "cox_dfs_adjusted").to_frame()
    marker = cox.loc[cox["term"] == "pr_positive"].iloc[0]
    meta = next(o for o in two_centre.outputs if o.name == "two_stage_dfs").result.meta
    assert dfs["one_stage_hr"] == marker["hr"] and dfs["one_stage_se"] == marker["std_error"]
    assert dfs["two_stage_log_hr"] == meta.estimate and dfs["two_stage_se"] == meta.se
    assert dfs["difference_log_hr"] == pytest.approx(meta.estimate - marker["estimate"])
    assert dfs["disagree"] == (
        abs(meta.estimate - marker["estimate"]) > max(meta.se, marker["std_error"])
    )
    assert "B: constant in this centre, left out: grade" in dfs["centre_differences"]
    table = page.table("one-vs-two-stage", "comparison")
    first = table.records()[0]
    assert first["endpoint"] == "DFS"
    assert first["one-stage HR (95% CI)"].startswith(f"{marker['hr']:.2f} (")
    assert first["per-centre model differences"] == "B: constant in this centre, left out: grade"
    text = page.text("comparison")
    assert f"one-stage HR {marker['hr']:.2f}, two-stage HR {np.exp(meta.estimate):.2f}" in text
    assert "stage-one models differ by centre: B: constant in this centre" in text


def test_disagreement_beyond_the_standard_errors_is_said(two_centre, tmp_path):
    from pooled.report import render_report

    outputs = []
    for out in two_centre.outputs:
        if out.name == "two_stage_dfs":
            meta = replace(out.result.meta, estimate=out.result.meta.estimate - 1.0, se=0.1)
            out = replace(out, result=replace(out.result, meta=meta))
        outputs.append(out)
    shifted = replace(two_centre, outputs=tuple(outputs))
    row = one_vs_two_stage(shifted).set_index("endpoint").loc["dfs"]
    assert bool(row["disagree"]) and not bool(one_vs_two_stage(two_centre)["disagree"].iloc[0])
    shifted_page = Page(render_report(shifted, tmp_path, formats=("png",)).html)
    assert "more than the larger standard error" in shifted_page.text("comparison")
    records = shifted_page.table("one-vs-two-stage", "comparison").records()
    assert [r["beyond the larger SE"] for r in records] == ["yes", "no"]


def test_hazard_ratio_table_columns_without_checks(run_output):
    table = hazard_ratio_table(run_output.outputs)
    assert {"PH test p", "PH check"} <= set(table.columns)
    assert (table["PH check"] == "").all() and table["PH test p"].isna().all()
    assert isinstance(table, pd.DataFrame)


def test_a_rejecting_global_test_flags_the_exposure_too(run_output, rendered):
    check = ph_checks(run_output)["os"]
    assert not check.rejects_exposure and check.rejects_global
    assert check.flag() == "PH violated (global test p = 0.015)"
    assert check.flag(tested=False) == ""  # a univariable HR is not flagged for other terms
    assert check.rejecting_terms == ("subtypetriple_negative",)
    sentence = check.sentence()
    assert "rejected by the global test" in sentence
    assert "the effect of subtypetriple_negative changes with time" in sentence
    page = Page(rendered.html)
    stems = {p.stem for p in rendered.figures}
    assert {
        "schoenfeld_cox_os_adjusted_ctc_positive",
        "schoenfeld_cox_os_adjusted_subtypetriple_negative",
    } <= stems
    table = page.table("cox", "cox", **{"data-output": "cox_os_adjusted"})
    flags = dict(zip(table.column("term"), table.column("PH check"), strict=True))
    assert flags["ctc_positive"] == "PH violated (global test p = 0.015)"
    assert flags["age"] == ""
    assert (
        "PH violated (global test p = 0.015) in Cox, adjusted: the effect of "
        "subtypetriple_negative changes over time; the HRs within each level come from models "
        "that assume proportional hazards"
    ) in page.text("subgroups")


def test_sensitivity_table_starts_with_the_main_estimate(two_centre, page):
    cox = next(o for o in two_centre.outputs if o.name == "cox_dfs_adjusted").to_frame()
    marker = cox.loc[cox["term"] == "pr_positive"].iloc[0]
    table = page.table("sensitivity", "sensitivity", **{"data-output": "sensitivity_dfs"})
    first = table.records()[0]
    assert first["label"] == "Main: Stratified Cox, DFS, adjusted"
    assert first["hr"] == f"{marker['hr']:.2f}" and first["n"] == f"{int(marker['n'])}"
    assert table.column("label")[1:] == ["without A", "without B"]
    assert "not estimable" in table.records()[1]["note"]  # why 'without A' has no HR


def test_period_rows_of_a_real_time_split_fit():
    """The report's period table reads a real TimeSplitResult (not only the test fake)."""
    import pandas as pd

    from pooled.models.cox import CoxSpec
    from pooled.models.timesplit import TimeSplitSpec, fit_time_split
    from pooled.report.checks import time_split_rows
    from pooled.run_output import ModelOutput
    from tests.models.conftest import REFERENCE

    cohort = pd.read_csv(REFERENCE / "cohort_multicentre.csv").dropna()
    spec = TimeSplitSpec(
        cox=CoxSpec(duration="os_months", event="os_event",
                    covariates=("ctc_positive", "age", "node_positive", "grade3")),
        exposure="ctc_positive", cuts=(24.0, 60.0),
    )  # fmt: skip
    result = fit_time_split(cohort, spec)
    rows = time_split_rows(ModelOutput("time_split_os", "time_split", "os", result), "ctc_positive")
    assert rows["period"].tolist() == ["(0,24] months", "(24,60] months", "(60,Inf) months"]
    assert rows["hr"].to_numpy() == pytest.approx(result.periods["hr"].to_numpy(), rel=1e-12)
