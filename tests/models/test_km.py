"""Kaplan-Meier, log-rank and reverse Kaplan-Meier against R's survival package.

Reference numbers: ``survival_reference`` (R 4.2.2, survival 3.5-3; see
tests/reference/SOURCE.md). The few numbers pinned in this module (four-group log-rank by
subtype, quantiles by subtype, the small flat-curve examples) were computed with the same R
and survival versions on cohort_multicentre.csv, with the R call written beside each.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.duration.survfunc import survdiff

from pooled.errors import ConfigError, DataError
from pooled.models.km import (
    KMSpec,
    fit_kaplan_meier,
    kaplan_meier_arrays,
    logrank_test,
    median_followup,
)
from pooled.results import TIDY_COLUMNS

REL = 1e-6  # coefficients, survival, SE: relative
P_ABS = 1e-6  # p-values: absolute


def rel_close(actual, expected, rel=REL):
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=rel)


@pytest.fixture(scope="module")
def km_ctc(cohort):
    return fit_kaplan_meier(
        cohort,
        KMSpec(
            duration="os_months",
            event="os_event",
            group="ctc_positive",
            times=(12, 24, 36, 60),
            endpoint="os",
        ),
    )


class TestKaplanMeierAgainstR:
    def test_counts_and_medians(self, km_ctc, survival_reference):
        ref = survival_reference["km_by_ctc"]
        summary = km_ctc.summary
        assert list(summary["label"]) == ref["strata"]
        assert summary["n"].tolist() == ref["n"]
        assert summary["events"].tolist() == ref["events"]
        rel_close(summary["median"], ref["median"])
        rel_close(summary["median_lower"], ref["median_lower"])
        rel_close(summary["median_upper"], ref["median_upper"])

    def test_survival_at_fixed_times(self, km_ctc, survival_reference):
        ref = survival_reference["km_by_ctc_at_times"]
        at = km_ctc.at_times
        assert list(at["label"]) == ref["strata"]
        assert at["time"].tolist() == ref["time"]
        assert at["n_risk"].tolist() == ref["n_risk"]
        rel_close(at["survival"], ref["surv"])
        rel_close(at["std_err"], ref["std_err"])  # summary.survfit: SE of S (Greenwood)
        rel_close(at["ci_lower"], ref["lower"])
        rel_close(at["ci_upper"], ref["upper"])

    def test_cumhaz_se_is_se_over_survival(self, km_ctc):
        c = km_ctc.curves
        ok = c["survival"] > 0
        rel_close(c.loc[ok, "std_err"] / c.loc[ok, "survival"], c.loc[ok, "cumhaz_std_err"])

    def test_quantiles_by_subtype_four_groups(self, cohort):
        # R: quantile(survfit(Surv(os_months, os_event) ~ subtype, conf.type = "log-log"), .5)
        res = fit_kaplan_meier(cohort, KMSpec(group="subtype"))
        s = res.summary.set_index("group")
        expected = {
            "her2_positive": (75, 63, 89),
            "luminal_a": (101, 91, 109),
            "luminal_b": (66, 58, 72),
            "triple_negative": (50, 46, 64),
        }
        for level, (med, lo, hi) in expected.items():
            assert (s.loc[level, "median"], s.loc[level, "median_lower"]) == (med, lo)
            assert s.loc[level, "median_upper"] == hi

    def test_median_midpoint_on_flat_stretch(self):
        # R: quantile(survfit(Surv(t, e) ~ 1, conf.type = "log-log"), .5) gives 5, lower 1,
        # upper NA (S = 0.5 exactly from t = 4 until the next event at t = 6)
        df = pd.DataFrame({"t": [1, 2, 3, 4, 5, 6, 7, 8], "e": [1, 1, 1, 1, 0, 1, 1, 1]})
        s = fit_kaplan_meier(df, KMSpec(duration="t", event="e")).summary.iloc[0]
        assert s["median"] == 5.0
        assert s["median_lower"] == 1.0
        assert np.isnan(s["median_upper"])

    def test_median_flat_at_end_of_curve(self):
        # R gives 3: the curve ends at exactly 0.5, so the midpoint of (2, last time 4)
        df = pd.DataFrame({"t": [1, 2, 3, 4], "e": [1, 1, 0, 0]})
        s = fit_kaplan_meier(df, KMSpec(duration="t", event="e")).summary.iloc[0]
        assert s["median"] == 3.0

    def test_everyone_dies_gives_zero_and_missing_band(self):
        # R: survfit(Surv(c(1, 2, 3), c(1, 1, 1)) ~ 1): std.err Inf and lower NA at t = 3
        df = pd.DataFrame({"t": [1.0, 2.0, 3.0], "e": [1, 1, 1]})
        c = fit_kaplan_meier(df, KMSpec(duration="t", event="e")).curves
        assert c["survival"].iloc[-1] == 0.0
        assert np.isinf(c["cumhaz_std_err"].iloc[-1])
        assert np.isnan(c["ci_lower"].iloc[-1])
        rel_close(c["cumhaz_std_err"].iloc[:2], [0.4082482904638631, 0.8164965809277261])


class TestKaplanMeierProperties:
    def test_recovers_exponential_median(self):
        rng = np.random.default_rng(20260401)
        n = 4000
        rate = np.log(2) / 30.0  # true median 30
        t_event = rng.exponential(1 / rate, n)
        t_cens = rng.uniform(20, 120, n)
        df = pd.DataFrame({"t": np.minimum(t_event, t_cens), "e": (t_event <= t_cens).astype(int)})
        s = fit_kaplan_meier(df, KMSpec(duration="t", event="e", times=(30,)))
        row = s.summary.iloc[0]
        assert row["median_lower"] <= 30.0 <= row["median_upper"]
        at = s.at_times.iloc[0]
        assert at["ci_lower"] <= 0.5 <= at["ci_upper"]

    def test_no_censoring_equals_empirical_survival(self):
        rng = np.random.default_rng(7)
        t = rng.integers(1, 50, 500).astype(float)
        out = kaplan_meier_arrays(t, np.ones_like(t))
        empirical = np.array([(t > u).mean() for u in out["time"]])
        rel_close(out["survival"], empirical, rel=1e-12)

    def test_risk_table_and_step_frame(self, km_ctc, cohort):
        res = fit_kaplan_meier(cohort, KMSpec(group="ctc_positive", risk_times=(0, 24, 48, 72, 96)))
        table = res.risk_table.set_index(["group", "time"])["n_risk"]
        for g in (0, 1):
            sub = cohort[cohort["ctc_positive"] == g]
            for t in (0, 24, 48, 72, 96):
                assert table[(g, float(t))] == int((sub["os_months"] >= t).sum())
        steps = km_ctc.step_frame()
        first = steps.groupby("label").head(1)
        assert (first["time"] == 0).all() and (first["survival"] == 1).all()
        assert steps.groupby("label")["time"].apply(lambda s: s.is_monotonic_increasing).all()

    def test_groups_are_independent_of_row_order(self, cohort):
        spec = KMSpec(group="subtype", times=(24, 60))
        a = fit_kaplan_meier(cohort, spec)
        b = fit_kaplan_meier(cohort.sample(frac=1.0, random_state=3), spec)
        pd.testing.assert_frame_equal(a.curves, b.curves)
        pd.testing.assert_frame_equal(a.at_times, b.at_times)

    def test_whole_and_fractional_times_take_equal_paths(self, cohort):
        # whole months use the radix sort; fractional times fall back to np.lexsort
        shifted = cohort.assign(os_months=cohort["os_months"] + 0.25)
        spec = KMSpec(group="subtype")
        a = fit_kaplan_meier(cohort, spec).curves
        b = fit_kaplan_meier(shifted, spec).curves
        np.testing.assert_array_equal(a["time"] + 0.25, b["time"])
        np.testing.assert_array_equal(a["survival"], b["survival"])
        lr_a = logrank_test(cohort, "os_months", "os_event", "subtype", strata=("centre",))
        lr_b = logrank_test(shifted, "os_months", "os_event", "subtype", strata=("centre",))
        assert lr_a.chisq == pytest.approx(lr_b.chisq, rel=1e-12)

    def test_to_frame_is_tidy(self, km_ctc):
        frame = km_ctc.to_frame()
        assert tuple(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
        assert set(frame["term"]) == {"median_survival", "survival"}
        assert (frame["endpoint"] == "os").all()
        assert len(frame) == 2 + 8

    def test_missing_rows_dropped_and_counted(self, cohort):
        df = cohort.copy()
        df.loc[:9, "ctc_positive"] = np.nan
        res = fit_kaplan_meier(df, KMSpec(group="ctc_positive"))
        assert res.n_dropped == 10
        assert res.summary["n"].sum() == len(cohort) - 10


class TestErrors:
    def test_missing_column(self, cohort):
        with pytest.raises(DataError, match="missing \\['nope'\\]"):
            fit_kaplan_meier(cohort, KMSpec(group="nope"))

    def test_bad_event_codes(self, cohort):
        df = cohort.assign(os_event=cohort["os_event"] * 2)
        with pytest.raises(DataError, match="must be 0 \\(censored\\) or 1"):
            fit_kaplan_meier(df, KMSpec())

    def test_bad_level(self):
        with pytest.raises(ConfigError, match="level"):
            KMSpec(level=95)


class TestLogrank:
    def test_stratified_by_centre_against_r(self, cohort, survival_reference):
        ref = survival_reference["logrank_stratified_by_centre"]
        res = logrank_test(
            cohort, "os_months", "os_event", "ctc_positive", strata=("centre",), endpoint="os"
        )
        rel_close(res.chisq, ref["chisq"])
        assert res.df == ref["df"]
        assert abs(res.p_value - ref["p"]) < P_ABS
        rel_close(res.observed, ref["observed"])
        rel_close(res.expected, ref["expected"])
        assert res.n_strata == 8

    def test_unstratified_against_r(self, cohort, survival_reference):
        ref = survival_reference["logrank_unstratified"]
        res = logrank_test(cohort, "os_months", "os_event", "ctc_positive")
        rel_close(res.chisq, ref["chisq"])
        assert abs(res.p_value - ref["p"]) < P_ABS

    def test_four_groups_against_r(self, cohort):
        # R: survdiff(Surv(os_months, os_event) ~ subtype + strata(centre))
        res = logrank_test(cohort, "os_months", "os_event", "subtype", strata=("centre",))
        rel_close(res.chisq, 85.654781780334972)
        assert res.df == 3
        rel_close(res.observed, [183, 420, 391, 245])
        rel_close(
            res.expected,
            [183.66084599116309, 559.84361978065806, 329.77751609970426, 165.71801812847463],
        )
        # R: survdiff(Surv(os_months, os_event) ~ subtype)
        unstrat = logrank_test(cohort, "os_months", "os_event", "subtype")
        rel_close(unstrat.chisq, 87.664748904325023)

    def test_agrees_with_statsmodels_survdiff(self, cohort):
        stat, p = survdiff(
            cohort["os_months"].to_numpy(float),
            cohort["os_event"].to_numpy(float),
            cohort["subtype"].to_numpy(),
            strata=cohort["centre"].to_numpy(),
        )
        res = logrank_test(cohort, "os_months", "os_event", "subtype", strata=("centre",))
        rel_close(res.chisq, stat, rel=1e-9)
        assert abs(res.p_value - p) < 1e-12

    def test_two_strata_columns_equal_their_combination(self, cohort):
        df = cohort.assign(node_centre=cohort["centre"] + "_" + cohort["node_positive"].astype(str))
        a = logrank_test(
            df, "os_months", "os_event", "ctc_positive", strata=("centre", "node_positive")
        )
        b = logrank_test(df, "os_months", "os_event", "ctc_positive", strata=("node_centre",))
        rel_close(a.chisq, b.chisq, rel=1e-12)
        assert a.n_strata == 16

    def test_null_simulation_calibrated(self):
        # under H0 the stratified statistic is chi-square(1): check its mean over replicates
        rng = np.random.default_rng(11)
        stats_ = []
        for _ in range(200):
            n = 300
            centre = rng.integers(0, 5, n)
            t = np.ceil(rng.exponential(20 * (1 + centre), n))
            e = rng.random(n) < 0.7
            g = rng.integers(0, 2, n)
            df = pd.DataFrame({"t": t, "e": e.astype(int), "g": g, "c": centre})
            stats_.append(logrank_test(df, "t", "e", "g", strata=("c",)).chisq)
        assert 0.75 < np.mean(stats_) < 1.3

    def test_to_frame(self, cohort):
        frame = logrank_test(
            cohort, "os_months", "os_event", "ctc_positive", strata=("centre",)
        ).to_frame()
        assert tuple(frame.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
        assert list(frame["term"]) == ["ctc_positive=0", "ctc_positive=1"]
        assert {"observed", "expected", "chisq", "df"} <= set(frame.columns)


class TestMedianFollowup:
    def test_reverse_km_against_r(self, cohort, survival_reference):
        ref = survival_reference["median_followup_reverse_km"]
        res = median_followup(cohort, "os_months", "os_event")
        assert (res.median, res.ci_lower, res.ci_upper) == (
            ref["median"],
            ref["lower"],
            ref["upper"],
        )
        assert res.n == 3000 and res.n_censored == 3000 - 1239

    def test_equals_km_of_censoring(self, cohort):
        flipped = cohort.assign(cens=1 - cohort["os_event"])
        km = fit_kaplan_meier(flipped, KMSpec(event="cens", conf_type="log"))
        res = median_followup(cohort, "os_months", "os_event", conf_type="log")
        assert res.median == km.summary["median"].iloc[0]
        assert res.to_frame()["term"].iloc[0] == "median_followup"


# -- R's conventions: log-log limits where S = 1, summary(fit, times =, extend =) ------------
# Reference: expected_estimators.json (`km`, make_estimators.R) on km_small.csv (censored
# before the first event, ties, a curve ending at S = 0) and aml.csv (survival's aml). R's NA
# is null in the JSON; 1e-12 relative (the same arithmetic).


def assert_same(actual, expected, what: str) -> None:
    expected = np.array([np.nan if e is None else e for e in expected], dtype=float)
    actual = np.asarray(actual, dtype=float)
    missing = np.isnan(expected)
    assert np.array_equal(np.isnan(actual) | np.isinf(actual), missing), what
    np.testing.assert_allclose(actual[~missing], expected[~missing], rtol=1e-12, err_msg=what)


@pytest.fixture(scope="module")
def km_small(reference_dir) -> pd.DataFrame:
    return pd.read_csv(reference_dir / "km_small.csv")


@pytest.fixture(scope="module")
def aml(reference_dir) -> pd.DataFrame:
    return pd.read_csv(reference_dir / "aml.csv")


@pytest.mark.parametrize("conf_type", ["log-log", "log", "plain"])
def test_curve_table_matches_survfit(km_small, estimators_reference, conf_type):
    ref = estimators_reference["km"]["curves"][f"km_small_{conf_type}"]
    spec = KMSpec(duration="time", event="status", group="group", conf_type=conf_type)
    c = fit_kaplan_meier(km_small, spec).curves
    assert list(c["label"]) == ref["strata"]
    for col, key in [
        ("time", "time"),
        ("n_risk", "n_risk"),
        ("n_event", "n_event"),
        ("n_censor", "n_censor"),
    ]:
        assert c[col].tolist() == ref[key], col
    assert_same(c["survival"], ref["surv"], "surv")
    assert_same(c["cumhaz_std_err"], ref["std_err_cumhaz"], "std.err")
    assert_same(c["ci_lower"], ref["lower"], "lower")
    assert_same(c["ci_upper"], ref["upper"], "upper")


def test_log_log_limits_are_missing_where_survival_is_one(km_small):
    c = fit_kaplan_meier(km_small, KMSpec(duration="time", event="status", group="group")).curves
    at_one = c["survival"] == 1.0
    assert at_one.sum() == 3
    assert c.loc[at_one, ["ci_lower", "ci_upper"]].isna().all().all()


@pytest.mark.parametrize(
    ("data", "key", "extend"),
    [
        ("aml", "aml_extend", True),
        ("aml", "aml_no_extend", False),
        ("km_small", "km_small_extend", True),
        ("km_small", "km_small_no_extend", False),
    ],
)
def test_survival_at_times_matches_summary_survfit(
    data, key, extend, aml, km_small, estimators_reference
):
    ref = estimators_reference["km"]["at_times"][key]
    frame, group = (aml, "x") if data == "aml" else (km_small, "group")
    spec = KMSpec(
        duration="time",
        event="status",
        group=group,
        times=tuple(ref["times_requested"]),
        extend=extend,
    )
    at = fit_kaplan_meier(frame, spec).at_times
    assert list(at["label"]) == ref["strata"]
    assert at["time"].tolist() == ref["time"]
    assert at["n_risk"].tolist() == ref["n_risk"]
    assert at["n_event"].tolist() == ref["n_event"]
    assert at["n_censor"].tolist() == ref["n_censor"]
    assert_same(at["survival"], ref["surv"], "surv")
    assert_same(at["std_err"], ref["std_err"], "std.err")
    assert_same(at["ci_lower"], ref["lower"], "lower")
    assert_same(at["ci_upper"], ref["upper"], "upper")


def test_cumulative_counts_add_up_the_intervals(aml, estimators_reference):
    ref = estimators_reference["km"]["at_times"]["aml_extend"]
    times = tuple(ref["times_requested"])
    interval = fit_kaplan_meier(
        aml, KMSpec(duration="time", event="status", group="x", times=times)
    ).at_times
    cumulative = fit_kaplan_meier(
        aml, KMSpec(duration="time", event="status", group="x", times=times, counts="cumulative")
    ).at_times
    for col in ("n_event", "n_censor"):
        summed = interval.groupby("label")[col].cumsum()
        assert cumulative[col].tolist() == summed.tolist()
    # everything up to 200 months: all events and censorings of each arm
    last = cumulative.groupby("label").tail(1)
    assert last["n_event"].tolist() == [7, 11] and last["n_censor"].tolist() == [4, 1]


def test_times_are_sorted_and_options_checked():
    assert KMSpec(times=(24, 12, 24)).times == (12.0, 24.0)
    with pytest.raises(ConfigError, match="counts"):
        KMSpec(counts="total")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="non-negative"):
        KMSpec(times=(-1.0,))
