"""The count exposures and the steps `count_response`, `added_value`, `validity`: parsed,
run on a simulated ``ctc-count`` cohort, equal to direct fits, flows reconciled, rendered."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pooled.config import parse_analysis_config
from pooled.errors import ConfigError, PooledWarning
from pooled.exposures import CountScale, ExposureSpec, count_exposure_columns
from pooled.models.added_value import AddedValueSpec, fit_added_value
from pooled.models.count_response import CountResponseSpec, fit_count_response
from pooled.models.cox import CoxSpec, fit_cox
from pooled.models.validity import ValiditySpec, fit_validity
from pooled.runner import run_analysis
from pooled.simulate.cohort import simulate_patients
from pooled.simulate.scenarios import centre_sizes, get_scenario
from tests.pooled.helpers import dataset

CONFIG = """\
name: count
cohort: {{setting: metastatic}}
endpoints: [os]
exposure: {{name: ctc, kind: {kind}}}
covariates: [age, line_of_therapy]
models:
  km: {{times: [12, 24]}}
  cox: {{ties: efron}}
  count_response: {count}
  added_value: {{clinical: [age, line_of_therapy], bootstrap: 20}}
  validity: {{iecv: true}}
"""


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    spec = get_scenario("ctc-count")
    sizes = centre_sizes([c.weight for c in spec.centres], 1500)
    frames = [
        simulate_patients(spec, c, int(n), np.random.default_rng([5, i]))
        for i, (c, n) in enumerate(zip(spec.centres, sizes, strict=True))
    ]
    data = pd.concat(frames, ignore_index=True)
    for endpoint in ("os", "pfs"):
        data[f"{endpoint}_event"] = data[f"{endpoint}_event"].astype(float)
    return data


def _config(kind: str = "continuous", count: str = "{df: 3}", **replace: str):
    text = CONFIG.format(kind=kind, count=count)
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_analysis_config(text, path="count.yaml")


def _run(cfg, cohort):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PooledWarning)
        return run_analysis(cfg, dataset(cohort))


@pytest.fixture(scope="module")
def continuous_run(cohort):
    return _run(_config(), cohort)


def _output(run, kind):
    (found,) = [o for o in run.outputs if o.kind == kind]
    return found


def test_continuous_exposure_enters_cox_as_the_spline(continuous_run, cohort):
    adjusted = next(o for o in continuous_run.outputs if o.name == "cox_os_adjusted").result
    assert adjusted.term_names[:3] == ("ctc_ns1", "ctc_ns2", "ctc_ns3")
    curve = _output(continuous_run, "count_response").result
    # the curve's spline model is the adjusted Cox model (same basis, patients, covariates)
    np.testing.assert_allclose(curve.spline.coefficients, adjusted.coefficients, rtol=1e-8)
    assert curve.n == adjusted.n
    direct = fit_count_response(
        cohort.loc[cohort["ctc_per_7_5ml"].notna()],
        CountResponseSpec(duration="os_months", event="os_event",
                          covariates=("age", "line_of_therapy"), df=3),
    )  # fmt: skip
    np.testing.assert_allclose(direct.basis.knots, curve.basis.knots, rtol=1e-12)
    np.testing.assert_allclose(direct.grid["log_hr"], curve.grid["log_hr"], rtol=1e-8, atol=1e-12)
    assert curve.knots_count[0] > 0  # quantiles of the non-zero counts


def test_added_value_and_validity_equal_direct_fits(continuous_run, cohort):
    added = _output(continuous_run, "added_value")
    patients = count_exposure_columns(cohort, ExposureSpec("ctc", kind="continuous"), CountScale())
    direct = fit_added_value(
        patients,
        AddedValueSpec(duration="os_months", event="os_event", clinical=("age", "line_of_therapy"),
                       marker=("ctc_ns1", "ctc_ns2", "ctc_ns3"), n_bootstrap=0),
    )  # fmt: skip
    assert added.result.lr_test.chisq == pytest.approx(direct.lr_test.chisq, rel=1e-8)
    assert added.result.lr_test.df == 3
    harrell = added.result.concordance["harrell"]
    assert harrell.difference == pytest.approx(direct.concordance["harrell"].difference, rel=1e-8)
    assert len(added.result.bootstrap) + added.result.n_bootstrap_failed == 20
    validity = _output(continuous_run, "validity")
    direct_validity = fit_validity(
        patients,
        ValiditySpec(duration="os_months", event="os_event",
                     covariates=("ctc_ns1", "ctc_ns2", "ctc_ns3", "age", "line_of_therapy")),
    )  # fmt: skip
    pd.testing.assert_frame_equal(validity.result.per_centre, direct_validity.per_centre,
                                  rtol=1e-8)  # fmt: skip
    assert set(validity.result.meta) == {"apparent_c", "iecv_c", "calibration_slope"}


def test_flows_reconcile(continuous_run):
    for kind in ("count_response", "added_value", "validity"):
        output = _output(continuous_run, kind)
        flow = output.flow.to_frame()
        analysed = flow.loc[flow["step"] == "analysed", "n"].sum()
        assert analysed == output.result.n, kind
    results = continuous_run.results()
    assert {"count_spline", "added_value_lr", "validity_iecv_c"} <= set(results["model"])


def test_count_categories(cohort):
    run = _run(_config("count_categories", "{breaks: [0, 4, 19], df: 3}"), cohort)
    adjusted = next(o for o in run.outputs if o.name == "cox_os_adjusted").result
    assert adjusted.term_names[:3] == ("ctc1-4", "ctc5-19", "ctc>=20")
    km = _output(run, "km").result
    assert set(km.summary["label"].astype(str)) == {"ctc=0", "ctc=1-4", "ctc=5-19", "ctc=>=20"}
    curve = _output(run, "count_response").result
    cats = curve.categories.set_index("level")
    direct = fit_cox(
        count_exposure_columns(cohort, ExposureSpec("ctc", kind="count_categories"),
                               CountScale(breaks=(0.0, 4.0, 19.0))),
        CoxSpec(duration="os_months", event="os_event", covariates=("ctc", "age", "line_of_therapy"),
                categorical=(("ctc", "0"),)),
    )  # fmt: skip
    for level in ("1-4", "5-19", ">=20"):
        assert cats.loc[level, "estimate"] == pytest.approx(direct.coefficient(f"ctc{level}"),
                                                            rel=1e-8)  # fmt: skip
        assert adjusted.coefficient(f"ctc{level}") == pytest.approx(cats.loc[level, "estimate"])
    assert curve.categories["n"].sum() == curve.n


@pytest.mark.parametrize(
    "count, replace, message",
    [
        ("{breaks: [2, 1]}", {}, "ascending"),
        ("{breaks: [0, 4], labels: [a, b]}", {}, "3 categories"),
        ("{df: 1}", {}, "df >= 2"),
        ("{knots: [0, 5]}", {}, "knots expected"),
        ("{grid: [-1]}", {}, "grid expected"),
        ("{df: 3}", {"clinical: [age, line_of_therapy]": "clinical: [ecog]"}, "not a covariate"),
        ("{df: 3}", {"clinical: [age, line_of_therapy]": "clinical: [ctc]"}, "the exposure"),
        ("{df: 3}", {"clinical: [age, line_of_therapy], ": ""}, "clinical model's covariates"),
        ("{df: 3}", {"covariates: [age, line_of_therapy]":
                     "covariates: [age, line_of_therapy, {name: subtype, reference: luminal_a}]\n"
                     "interactions: [[ctc, subtype]]"}, "not supported"),
    ],
)  # fmt: skip
def test_config_errors_name_the_line(count, replace, message):
    with pytest.raises(ConfigError, match=message) as info:
        _config("continuous", count, **replace)
    assert "count.yaml line" in str(info.value)


def test_report_section(continuous_run, tmp_path):
    from pooled.report import render_report

    files = render_report(continuous_run, tmp_path / "report", formats=("png",), dpi=60)
    page = files.html.read_text(encoding="utf-8")
    assert "Prognostic value beyond one cut-off" in page
    assert 'class="count-curve"' in page and 'class="added-value"' in page
    assert 'class="validity-pooled"' in page
    names = {p.stem for p in files.figures}
    assert any(n.startswith("count_response_") for n in names)
    assert any(n.startswith("validity_") for n in names)
    assert "Test of non-linearity" in page


def test_count_exposure_columns_and_terms():
    from pooled.exposures import count_exposure_terms, derive_exposure

    patients = pd.DataFrame({"ctc_count": [0, 1, 3, 9, 0, 40.0, np.nan],
                             "ctc_blood_volume_ml": [7.5, 15, 7.5, 15, 7.5, 7.5, 7.5]})  # fmt: skip
    categories = ExposureSpec("ctc", kind="count_categories")
    out = count_exposure_columns(patients, categories, CountScale())
    assert out["ctc"].tolist() == ["0", "1", "3-4", ">=5", "0", ">=5", None]  # 9 in 15 ml: 4.5
    assert "ctc_ns1" not in out
    continuous = ExposureSpec("ctc", kind="continuous")
    out = count_exposure_columns(patients, continuous, CountScale(df=2, knots_at="all"))
    assert {"ctc_log1p", "ctc_ns1", "ctc_ns2"} <= set(out.columns)
    assert np.isnan(out["ctc_ns1"].iloc[-1])
    np.testing.assert_allclose(out["ctc_log1p"].iloc[:6], np.log1p([0, 0.5, 3, 4.5, 0, 40]))
    assert count_exposure_terms(continuous, CountScale(df=1)) == (("ctc_log1p",), ())
    assert count_exposure_terms(continuous, CountScale(knots=(2.0, 10.0))) == (
        ("ctc_ns1", "ctc_ns2", "ctc_ns3"), ())  # fmt: skip
    with pytest.raises(ConfigError, match="cohort step"):
        derive_exposure(patients, continuous)


def test_models_needing_a_binary_exposure_step_aside(cohort):
    """Two-stage is not run, the random-effects Cox model is skipped with its reason, the
    leave-one-centre-out rows say why they have no HR: none stops the run."""
    text = CONFIG.format(kind="count_categories", count="{}").replace(
        "  validity: {iecv: true}\n",
        "  validity: {iecv: true}\n  two_stage: {method: REML}\n  mixed_cox: {random: [marker]}\n"
        "sensitivity: {leave_one_centre_out: true}\n",
    )
    run = _run(parse_analysis_config(text, path="count.yaml"), cohort)
    kinds = {o.kind for o in run.outputs}
    assert "two_stage" not in kinds and "mixed_cox" not in kinds
    assert {"count_response", "added_value", "validity", "sensitivity"} <= kinds
    skipped = {s["step"]: s["reason"] for s in run.provenance["skipped_models"]}
    assert "0/1 exposure" in skipped["mixed Cox os"]
    table = _output(run, "sensitivity").result.table
    assert table["note"].str.contains("no single hazard ratio").all()


def test_sensitivity_refits_of_a_count_exposure_are_not_run(cohort, monkeypatch):
    """No refit is made (each would be thrown away) and one warning per endpoint says why."""
    import pooled.steps.sensitivity as sensitivity

    def refit(*args, **kwargs):
        raise AssertionError("a sensitivity refit was run for a count exposure")

    monkeypatch.setattr(sensitivity, "_fit_all", refit)
    text = CONFIG.format(kind="count_categories", count="{}") + (
        "sensitivity: {leave_one_centre_out: true}\n"
    )
    cfg = parse_analysis_config(text, path="count.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = run_analysis(cfg, dataset(cohort))
    said = [str(w.message) for w in caught if "sensitivity" in str(w.message)]
    assert len(said) == len(cfg.endpoints) and all("not run" in m for m in said)
    rows = _output(run, "sensitivity").result.table
    assert len(rows) == cohort["centre"].nunique() and rows["note"].notna().all()
