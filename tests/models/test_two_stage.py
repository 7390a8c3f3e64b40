"""Two-stage IPD meta-analysis: per-centre Cox fits against R, pooling against metafor, and
the two-stage interaction on a simulated consortium with a known interaction.

R's per-centre reference (``two_stage_per_centre``, survival 3.5-3) is reproduced by
``coxph(Surv(os_months, os_event) ~ ctc_positive + age + node_positive + grade3)`` within each
centre (Efron ties, complete cases on age): adding ``subtype`` changes the C03 log HR by 45 %,
so the reference model has no subtype term.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pooled.errors import ConfigError, DataError
from pooled.models.cox import CoxSpec
from pooled.models.meta import MetaSpec
from pooled.models.two_stage import (
    TwoStageSpec,
    fit_two_stage,
    fit_two_stage_interaction,
)
from pooled.results import TIDY_COLUMNS
from tests.models.test_meta import TWO_STAGE_KEYS, check_against_r, spec_from_key

REL = 1e-6

R_STAGE_ONE = CoxSpec(
    duration="os_months",
    event="os_event",
    covariates=("ctc_positive", "age", "node_positive", "grade3"),
    ties="efron",
    tol=1e-12,
)


@pytest.fixture(scope="module")
def two_stage_reml(cohort):
    return fit_two_stage(cohort, TwoStageSpec(cox=R_STAGE_ONE, meta=MetaSpec(method="REML")))


def test_per_centre_estimates_match_r(two_stage_reml, survival_reference):
    ref = survival_reference["two_stage_per_centre"]
    table = two_stage_reml.per_centre
    assert list(table["centre"]) == ref["centre"]
    assert table["n"].tolist() == ref["n"]
    assert table["events"].tolist() == ref["events"]
    np.testing.assert_allclose(table["log_hr"], ref["log_hr"], rtol=REL)
    np.testing.assert_allclose(table["se"], ref["se"], rtol=REL)
    assert table["included"].all()
    # complete-case losses (missing age) are counted per centre
    assert table["n_dropped"].sum() == 3000 - 2899


@pytest.mark.parametrize("key", TWO_STAGE_KEYS)
def test_pooled_matches_metafor(key, cohort, survival_reference):
    res = fit_two_stage(cohort, TwoStageSpec(cox=R_STAGE_ONE, meta=spec_from_key(key)))
    check_against_r(res.meta, survival_reference["two_stage_meta_analysis"][key])
    assert res.meta.k == 8


def test_centre_strata_are_removed_in_stage_one():
    spec = TwoStageSpec(cox=R_STAGE_ONE)  # CoxSpec's default strata is ("centre",)
    assert R_STAGE_ONE.strata == ("centre",)
    assert spec.stage_one.strata == ()


def test_tidy_frame(two_stage_reml):
    frame = two_stage_reml.to_frame()
    assert tuple(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    assert list(frame["row_type"]) == ["centre"] * 8 + ["pooled"]
    pooled = frame.iloc[-1]
    assert pooled["hr"] == pytest.approx(np.exp(two_stage_reml.meta.estimate))
    assert pooled["n"] == 2899 and pooled["events"] == 1200
    assert frame.loc[frame["row_type"] == "centre", "weight_percent"].sum() == pytest.approx(100)


def test_centres_without_estimate_are_reported_not_dropped(cohort):
    df = cohort.copy()
    # C08: no events among CTC-positive patients; C07: no events at all
    df.loc[(df["centre"] == "C08") & (df["ctc_positive"] == 1), "os_event"] = 0
    df.loc[df["centre"] == "C07", "os_event"] = 0
    # C06: nobody CTC-positive
    df.loc[df["centre"] == "C06", "ctc_positive"] = 0
    res = fit_two_stage(df, TwoStageSpec(cox=R_STAGE_ONE, meta=MetaSpec(method="DL")))
    table = res.per_centre.set_index("centre")
    assert len(table) == 8
    assert not table.loc["C08", "included"]
    assert table.loc["C08", "reason"].startswith("no events among ctc_positive=1")
    assert table.loc["C07", "reason"] == "no events"
    assert "constant" in table.loc["C06", "reason"]
    assert res.meta.k == 5
    assert set(res.excluded["centre"]) == {"C06", "C07", "C08"}
    assert np.isnan(table.loc["C08", "log_hr"]) and np.isnan(table.loc["C08", "weight_percent"])
    frame = res.to_frame()
    assert (frame["row_type"] == "centre").sum() == 8


def test_constant_covariate_in_a_centre_is_left_out_with_a_note(cohort):
    df = cohort.copy()
    df.loc[df["centre"] == "C05", "grade3"] = 0
    res = fit_two_stage(df, TwoStageSpec(cox=R_STAGE_ONE))
    row = res.per_centre.set_index("centre").loc["C05"]
    assert row["included"] and "grade3" in row["note"]
    # the note reaches the tidy table (results.csv), not only the result object
    tidy = res.to_frame().set_index("centre")
    assert "grade3" in tidy.loc["C05", "note"] and tidy.loc["C01", "note"] == ""


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [("os_event", 2, "'os_event' expected 0"), ("os_months", -1.0, "'os_months' expected")],
)
def test_a_bad_outcome_value_is_an_error_not_a_centre_left_out(cohort, column, value, match):
    """One invalid outcome cell must not drop its whole centre from the meta-analysis: it
    is an error of the data, as in the one-stage Cox model."""
    df = cohort.copy()
    row = df.index[(df["centre"] == "C03") & df[column].notna()][0]
    df.loc[row, column] = value
    with pytest.raises(DataError, match=match):
        fit_two_stage(df, TwoStageSpec(cox=R_STAGE_ONE))
    spec = TwoStageSpec(
        cox=CoxSpec(
            duration="os_months",
            event="os_event",
            covariates=("ctc_positive", "age", "subtype"),
            categorical=(("subtype", "luminal_a"),),
        )
    )
    with pytest.raises(DataError, match=match):
        fit_two_stage_interaction(df, spec, by="subtype")


def test_no_centre_with_an_estimate_raises(cohort):
    df = cohort.assign(os_event=0)
    with pytest.raises(DataError, match="no centre gives an estimate"):
        fit_two_stage(df, TwoStageSpec(cox=R_STAGE_ONE))


def test_spec_errors():
    with pytest.raises(ConfigError, match="marker 'ki67'"):
        TwoStageSpec(cox=R_STAGE_ONE, marker="ki67")
    spec = TwoStageSpec(cox=R_STAGE_ONE)
    with pytest.raises(ConfigError, match="categorical covariate"):
        fit_two_stage_interaction(pd.DataFrame(), spec, by="subtype")


# --------------------------------------------------------------------------------------------
# Two-stage interaction
# --------------------------------------------------------------------------------------------

INTERACTION_SPEC = CoxSpec(
    duration="os_months",
    event="os_event",
    covariates=("ctc_positive", "subtype", "age", "node_positive", "grade3"),
    categorical=(("subtype", "luminal_a"),),
    tol=1e-12,
)


def test_one_stage_interaction_beside_matches_r(cohort, survival_reference):
    res = fit_two_stage_interaction(cohort, TwoStageSpec(cox=INTERACTION_SPEC), by="subtype")
    ref = survival_reference["cox_strat_interaction_efron"]
    comp = res.comparison.set_index("term")
    for term in comp.index:
        assert comp.loc[term, "one_stage_estimate"] == pytest.approx(ref["coef"][term], rel=REL)
        assert comp.loc[term, "one_stage_se"] == pytest.approx(ref["se"][term], rel=REL)
    # C08's her2_positive / triple_negative patients lack events in one marker group
    c08 = res.per_centre[res.per_centre["centre"] == "C08"].set_index("level")
    assert not c08.loc["her2_positive", "included"]
    assert c08.loc["her2_positive", "reason"].startswith("subtype=her2_positive: no events among")
    assert c08.loc["luminal_b", "included"]
    assert comp.loc["ctc_positive:subtypeluminal_b", "k"] == 8
    assert comp.loc["ctc_positive:subtypeher2_positive", "k"] == 7
    frame = res.to_frame()
    assert tuple(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    assert set(frame["row_type"]) == {"centre", "pooled", "one_stage"}


def simulate_consortium(seed: int, drop_level_in: str | None = None) -> pd.DataFrame:
    """Six centres with different baseline hazards and subtype mixes; the marker's log HR is
    0.0 in subtype A, 0.6 in B and -0.4 in C (interactions 0.6 and -0.4 against A)."""
    rng = np.random.default_rng(seed)
    frames = []
    mixes = [
        (0.6, 0.3, 0.1),
        (0.3, 0.4, 0.3),
        (0.2, 0.3, 0.5),
        (0.5, 0.2, 0.3),
        (0.4, 0.4, 0.2),
        (0.3, 0.3, 0.4),
    ]
    for c, mix in enumerate(mixes):
        n = 1500
        subtype = rng.choice(["A", "B", "C"], size=n, p=mix)
        if drop_level_in == f"S{c + 1}":
            subtype = np.where(subtype == "C", "A", subtype)
        marker = (rng.random(n) < 0.2 + 0.1 * (c % 3)).astype(int)
        age = rng.normal(58, 10, n)
        lp = (
            0.3 * (subtype == "B")
            + 0.5 * (subtype == "C")
            + marker * (0.6 * (subtype == "B") - 0.4 * (subtype == "C"))
            + 0.01 * (age - 58)
        )
        base = 0.01 * (1 + 0.4 * c)
        t_event = rng.exponential(1 / (base * np.exp(lp)))
        t_cens = rng.uniform(24, 120, n)
        time = np.ceil(np.minimum(t_event, t_cens))
        frames.append(
            pd.DataFrame(
                {
                    "centre": f"S{c + 1}",
                    "subtype": subtype,
                    "ctc_positive": marker,
                    "age": age,
                    "os_months": time,
                    "os_event": (t_event <= t_cens).astype(int),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


SIM_SPEC = CoxSpec(
    duration="os_months",
    event="os_event",
    covariates=("ctc_positive", "subtype", "age"),
    categorical=(("subtype", "A"),),
)


def test_two_stage_interaction_recovers_known_interaction():
    data = simulate_consortium(seed=404)
    res = fit_two_stage_interaction(
        data, TwoStageSpec(cox=SIM_SPEC, meta=MetaSpec(method="REML")), by="subtype"
    )
    comp = res.comparison.set_index("level")
    truth = {"B": 0.6, "C": -0.4}
    for level, value in truth.items():
        row = comp.loc[level]
        assert row["two_stage_ci_lower"] < value < row["two_stage_ci_upper"], level
        assert row["k"] == 6
        # the one-stage estimate targets the same quantity here
        assert row["one_stage_ci_lower"] < value < row["one_stage_ci_upper"], level
    assert res.per_centre["included"].all()


def test_centre_lacking_a_subtype_is_reported_not_dropped():
    data = simulate_consortium(seed=405, drop_level_in="S3")
    res = fit_two_stage_interaction(data, TwoStageSpec(cox=SIM_SPEC), by="subtype")
    table = res.per_centre
    s3 = table[table["centre"] == "S3"].set_index("level")
    assert set(s3.index) == {"B", "C"}  # a row for every term, even the missing level
    assert not s3.loc["C", "included"]
    assert s3.loc["C", "reason"] == "no patients with subtype=C"
    assert s3.loc["B", "included"]
    comp = res.comparison.set_index("level")
    assert comp.loc["C", "k"] == 5 and comp.loc["B", "k"] == 6
    assert len(table) == 6 * 2
