"""Guideline items: the REMARK profile (patients and events of each analysis, every exclusion
with its reason, model level included) and the PRISMA-IPD checklist."""

from __future__ import annotations

import pytest

from pooled.report.guidelines import cohort_profile, prisma_checklist, remark_profile
from tests.report.page import Page


def test_cohort_profile_from_received_to_the_cohort(run_output):
    profile = cohort_profile(run_output)
    received = int(sum(run_output.flow.received.values()))
    assert profile["stage"].iloc[0] == "received" and profile["patients"].iloc[0] == received
    excluded = profile.loc[profile["stage"].str.startswith("excluded")]
    assert excluded["detail"].tolist() == ["age"]
    assert profile["patients"].iloc[-1] == received - int(excluded["patients"].sum())


def test_remark_profile_accounts_for_every_patient_of_every_analysis(two_centre):
    profile = remark_profile(two_centre)
    flow = two_centre.model_flow
    assert profile["model"].tolist() == list(flow.models)
    assert (profile["cohort"] == profile["not used"] + profile["analysed"]).all()
    adjusted = profile.set_index("model").loc["cox_dfs_adjusted"]
    fit = next(o for o in two_centre.outputs if o.name == "cox_dfs_adjusted").result
    assert adjusted["analysed"] == fit.n and adjusted["events"] == fit.events
    missing_age = int(
        two_centre.characteristics["by_centre"]
        .set_index("characteristic")
        .loc["age: missing, n (%)", "all"]
        .split()[0]
    )
    assert adjusted["reasons"] == f"covariate missing (complete-case): age {missing_age}"
    left_out = profile.loc[profile["model"].str.contains(": without B")].iloc[0]
    assert "left out by the sensitivity analysis: without B 260" in left_out["reasons"]
    assert left_out["analysis"].endswith("without B")
    sensitivity = next(o for o in two_centre.outputs if o.name == "sensitivity_dfs").to_frame()
    expected = sensitivity.loc[sensitivity["model"] == "sensitivity: without B", "events"]
    assert left_out["events"] == expected.iloc[0]


def test_remark_profile_in_the_report_and_workbook(two_centre_rendered):
    from openpyxl import load_workbook

    page = Page(two_centre_rendered.html)
    assert page.section_ids[:3] == ["definitions", "profile", "flow"]
    table = page.table("remark-profile", "profile")
    assert table.header == [
        "analysis",
        "model",
        "endpoint",
        "cohort",
        "not used",
        "reasons",
        "analysed",
        "events",
    ]
    first = table.records()[0]
    assert first["analysis"] == "Kaplan-Meier, DFS by pr_positive" and first["reasons"] == "none"
    names = load_workbook(two_centre_rendered.xlsx).sheetnames
    assert {"Reporting profile", "Cohort profile", "Definitions", "PRISMA-IPD"} <= set(names)


def test_prisma_checklist_says_what_is_covered(two_centre):
    checklist = prisma_checklist(two_centre).set_index("item")
    assert set(checklist["covered"]) <= {"yes", "partly", "no"}
    obtained = checklist.loc["IPD obtained (flow of centres and patients)"]
    assert (
        obtained["covered"] == "yes"
        and "2 of 2 centres delivered IPD: 680 patients" in (obtained["what the run shows"])
    )
    integrity = checklist.loc["IPD integrity checks and their results"]
    assert integrity["covered"] == "partly"
    assert "version and sha256 for 2 centres" in integrity["what the run shows"]
    assert "Not in this report" in integrity["what the run shows"]
    het = checklist.loc["Methods for heterogeneity (tau^2, I^2, Q, prediction interval)"]
    assert "REML, Hartung-Knapp, k = 2 centres" in het["what the run shows"]
    sens = checklist.loc["Sensitivity analyses"]
    assert sens["covered"] == "yes" and "without A, without B" in sens["what the run shows"]
    assert checklist.loc["Exploration of variation (subgroups, interactions)", "covered"] == "no"
    assert checklist.loc["Certainty of the evidence (e.g. GRADE)", "covered"] == "no"
    origin = checklist.loc["Harmonised definitions of exposure and outcomes", "what the run shows"]
    assert "durations of B (260) could not be converted" in origin


def test_prisma_counts_blocking_exclusions(run_output):
    from dataclasses import replace

    flow = run_output.flow.add(
        run_output.flow.steps["centre"].iloc[:3], "blocking validation error", "date_order"
    )
    checklist = prisma_checklist(replace(run_output, flow=flow)).set_index("item")
    text = checklist.loc["IPD integrity checks and their results", "what the run shows"]
    assert "3 rows with blocking findings excluded (rules: date_order)" in text


@pytest.mark.parametrize("section", ["prisma", "profile", "definitions"])
def test_sections_render_for_the_reference_run(rendered, section):
    assert Page(rendered.html).section_html(section)
