"""Definitions first: the description, cohort, exposure, each endpoint's definition and how each
centre delivered it, the time origin, covariates with reference levels and derived expressions,
the models and their options; before any result."""

from __future__ import annotations

import pytest

from tests.report.page import Page


@pytest.fixture(scope="module")
def page(two_centre_rendered):
    return Page(two_centre_rendered.html)


def test_definitions_come_first(page):
    assert page.section_ids[0] == "definitions"
    assert page.section_ids.index("definitions") < page.section_ids.index("flow")
    assert page.html.index('id="definitions"') < page.html.index('id="cox"')


def test_description_cohort_and_exposure(page):
    text = page.text("definitions")
    assert "PR status and disease-free survival, two centres" in text
    rows = {(r[0], r[1]): r[2] for r in page.table("definitions-list").rows}
    assert rows[("Cohort", "setting")] == "early"
    assert rows[("Cohort", "centres")] == "2: A (420), B (260)"
    exposure = rows[("Exposure", "pr_positive")]
    assert "pr_percent" in exposure and ">= 1" in exposure and "else 0 (no)" in exposure


def test_each_endpoint_with_its_schema_definition(page):
    rows = {(r[0], r[1]): r[2] for r in page.table("definitions-list").rows}
    dfs = rows[("Endpoint", "dfs")]
    assert dfs.startswith("primary endpoint")
    assert "recurrence_date, distant_recurrence_date, death_date" in dfs
    assert "censored at death or the last contact" in rows[("Endpoint", "os")]
    assert "death_date" in rows[("Endpoint", "os")]


def test_covariates_reference_levels_and_derived_expressions(page):
    rows = {(r[0], r[1]): r[2] for r in page.table("definitions-list").rows}
    assert rows[("Covariate", "grade")].startswith("categorical, reference level 1")
    assert rows[("Covariate", "node_positive")] == "derived: positive_nodes > 0"
    assert rows[("Covariate", "age")].startswith("continuous")
    assert rows[("Strata", "strata")] == "centre"


def test_models_and_their_options(page):
    rows = {(r[0], r[1]): r[2] for r in page.table("definitions-list").rows}
    assert rows[("Model", "Kaplan-Meier")] == "times: 0, 12, 24"
    assert rows[("Model", "PH test")] == "alpha: 0.05"
    assert "meta methods: REML" in rows[("Model", "two-stage")]
    assert "knha: yes" in rows[("Model", "two-stage")]
    assert "leave one centre out: yes" in rows[("Model", "sensitivity")]
    assert "median follow-up" in {item for _section, item in rows}


def test_how_each_centre_delivered_its_endpoints(page):
    table = page.table("delivery")
    records = {r["centre"]: r for r in table.records()}
    assert records["A"]["from dates"] == "420" and records["A"]["from delivered durations"] == "0"
    assert records["B"]["from delivered durations"] == "260"
    assert records["A"]["time origin"] == "diagnosis (420)"
    assert records["B"]["time origin"] == "surgery (260)"
    text = page.text("definitions")
    assert "Time origin of the analysis: diagnosis" in text
    assert "could not be converted" in text and "B: 260 patients" in text
    assert "different origins (diagnosis, surgery)" in text


def test_an_older_run_without_definitions_shows_the_config(rendered):
    text = Page(rendered.html).text("definitions")
    assert "predates the definitions table" in text
    assert "endpoints" in text and "os" in text


def test_zph_alpha_key_is_parsed_and_checked():
    from pooled.config import parse_analysis_config
    from pooled.errors import ConfigError
    from tests.report.cohorts import CONFIG

    cfg = parse_analysis_config(CONFIG.replace("alpha: 0.05", "alpha: 0.01"), path="c.yaml")
    assert cfg.section("zph").alpha == 0.01
    assert parse_analysis_config(CONFIG, path="c.yaml").models.zph_alpha == 0.05
    with pytest.raises(ConfigError, match="'alpha' must lie strictly between 0 and 1"):
        parse_analysis_config(CONFIG.replace("alpha: 0.05", "alpha: 1.5"), path="c.yaml")
    off = parse_analysis_config(CONFIG.replace("zph: {alpha: 0.05}", "zph: false"), path="c.yaml")
    assert not off.section("zph")
