"""A real cohort end to end: survival's ``colon`` trial sent by three centres, against R.

The trial (Moertel et al. 1990; survival's ``colon``, recurrence and death recorded
separately) is split by patient id into three uploads in three shapes
(``colon_uploads.py``): Leiden's xlsx in Dutch with a title block, Münster's Latin-1 csv in
German with decimal commas and times in weeks, Boston's SPSS file with coded values. Each is
mapped by its centre mapping (``colon/<centre>.yaml``, deriving relapse-free survival from
the separate recurrence and death records), validated and ingested through the ``pooled``
command against the consortium schema plus ``colon/schema_extension.yaml``, and analysed by
``colon/colon.yaml`` (exposure: more than 4 positive nodes; covariates derived by
expressions). The stratified Cox models, the per-centre fits and the REML pooling in
``results.csv`` must equal what R computes on the same data
(``tests/reference/make_colon.R`` -> ``expected_colon.json``) to 1e-6 relative; patient and
event counts and the exclusion counts (cohort flow and ``model_flow.csv``) exactly.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pooled.cli import app
from tests.e2e.colon_uploads import (
    CENTRES,
    colon_patients,
    pipeline_months,
    write_colon_uploads,
)

HERE = Path(__file__).resolve().parent
COLON = HERE / "colon"
ROOT = HERE.parent.parent
REFERENCE = ROOT / "tests" / "reference"
EXPECTED: dict[str, Any] = json.loads((REFERENCE / "expected_colon.json").read_text())
ENDPOINTS = ("dfs", "os")
COVARIATES = ("age", "treatment_arm", "female", "poor", "deep", "obstructed")
EXPOSURE = "nodes5"
TODAY = "2024-03-01"
# One tolerance per kind of quantity: estimates, SEs, tau^2, I^2, Q to 1e-6 relative;
# counts exactly; times (one multiplication apart from R's division) to 1e-15 relative.
REL = 1e-6
TIME_REL = 1e-15

runner = CliRunner()


# ---------------------------------------------------------------------------------------
# Where the pipeline's outputs keep each number. The only place that knows how results.csv
# and the flow files name models, terms and steps: adjust here when those names change.
# ---------------------------------------------------------------------------------------
def pipeline_term(r_term: str) -> str:
    """The results.csv term of an R coefficient (R and the config use the same names:
    ``nodes5, age, treatment_armLev, treatment_armLev+5FU, female, poor, deep, obstructed``)."""
    return r_term


def pipeline_rows(results: pd.DataFrame, endpoint: str, model: str) -> pd.DataFrame:
    """The results.csv rows of one model.

    ``model``: ``"adjusted"`` / ``"univariable"`` (stratified Cox, one row per term),
    ``"per_centre"`` (two-stage stage one, one row per centre), ``"pooled"`` (two-stage
    REML pooled row).
    """
    if model in ("adjusted", "univariable"):
        rows = results.loc[results["output"] == f"cox_{endpoint}_{model}"]
    elif model in ("per_centre", "pooled"):
        row_type = "centre" if model == "per_centre" else "pooled"
        rows = results.loc[
            (results["output"] == f"two_stage_{endpoint}") & (results["row_type"] == row_type)
        ]
    else:  # pragma: no cover - a typo in this file
        raise ValueError(model)
    assert len(rows), f"no rows for {endpoint} {model} in results.csv"
    return rows


def cohort_flow_counts(flow: pd.DataFrame) -> dict[str, dict[str, int]]:
    """From exclusion_flow.csv: per centre ``received``, ``missing_marker`` (the exposure
    could not be derived: nodes missing), ``other_exclusions`` (every other step) and
    ``analysed``."""
    excluded = [c for c in flow.columns if c.startswith("excluded:")]
    marker = [c for c in excluded if "marker missing" in c and EXPOSURE in c]
    assert len(marker) == 1, f"one 'marker missing ({EXPOSURE})' step expected: {excluded}"
    out = {}
    for _, row in flow.loc[flow["centre"] != "total"].iterrows():
        out[str(row["centre"])] = {
            "received": int(row["received"]),
            "missing_marker": int(row[marker[0]]),
            "other_exclusions": int(sum(row[c] for c in excluded if c != marker[0])),
            "analysed": int(row["analysed"]),
        }
    return out


def model_flow_dropped(flow: pd.DataFrame, endpoint: str, model: str) -> dict[str, dict[str, int]]:
    """From model_flow.csv (``model, endpoint, centre, step, reason, detail, n``): per centre,
    patients of the cohort a model dropped, by the covariate named in the step's reason or
    detail (``"missing: poor"``); steps with n = 0, and steps naming no covariate (received,
    analysed, the cohort's marker step) are left out, other "missing" steps kept by their
    text.

    ``model``: ``"adjusted"`` / ``"univariable"`` (stratified Cox) or ``"per_centre"``
    (two-stage stage one).
    """
    names = {
        "adjusted": f"cox_{endpoint}_adjusted",
        "univariable": f"cox_{endpoint}_univariable",
        "per_centre": f"two_stage_{endpoint}",
    }
    rows = flow.loc[(flow["model"] == names[model]) & (flow["endpoint"] == endpoint)]
    assert len(rows) or model == "univariable", f"no model_flow rows for {names[model]}"
    out: dict[str, dict[str, int]] = {}
    for _, row in rows.iterrows():
        n = int(row["n"])
        text = f"{row['reason']} {row['detail']}"
        if n == 0 or row["step"] != "excluded":
            continue  # cohort / analysed totals, and per-covariate missingness counts
        named = [c for c in COVARIATES if re.search(rf"(?<![\w]){re.escape(c)}(?![\w])", text)]
        if named:
            key = named[0]
        elif "missing" in text and EXPOSURE not in text:  # a loss R does not have: show it
            key = text.strip()
        else:  # received / analysed rows, or the cohort's own steps repeated
            continue
        centre = out.setdefault(str(row["centre"]), {})
        centre[key] = centre.get(key, 0) + n
    return out


# ---------------------------------------------------------------------------------------
# What R computed, by centre
# ---------------------------------------------------------------------------------------
def _by_centre(values: list[Any]) -> dict[str, Any]:
    return dict(zip(EXPECTED["exclusions"]["centre"], values, strict=True))


def expected_dropped(endpoint: str) -> dict[str, dict[str, int]]:
    """Per centre, the adjusted model's complete-case losses by first missing covariate."""
    out: dict[str, dict[str, int]] = {}
    for covariate, counts in EXPECTED["exclusions"]["missing_covariate"].items():
        for centre, n in _by_centre(counts).items():
            if n:
                out.setdefault(centre, {})[covariate] = n
    return out


# ---------------------------------------------------------------------------------------
# Needs no planned feature
# ---------------------------------------------------------------------------------------
def test_reference_made_from_committed_csv() -> None:
    pinned = {d["file"]: d["sha256"] for d in EXPECTED["data"]}
    digest = hashlib.sha256((REFERENCE / "colon.csv").read_bytes()).hexdigest()
    assert digest == pinned["colon.csv"]
    assert EXPECTED["packages"] == {"survival": "3.5.3", "metafor": "3.8.1"}


def test_uploads_are_deterministic(tmp_path: Path) -> None:
    first = write_colon_uploads(tmp_path / "a")
    second = write_colon_uploads(tmp_path / "b")
    assert sorted(first) == sorted(CENTRES)
    for centre in CENTRES:
        assert first[centre].read_bytes() == second[centre].read_bytes(), centre


def test_times_have_r_ties() -> None:
    """The pipeline's months (number delivered x unit factor) against R's (x * 7 / 30.4375,
    x / 30.4375): within an ulp, and the same order and ties within every centre, so the
    Cox partial likelihood is the same."""
    patients = colon_patients()
    times = pd.DataFrame(
        {k: EXPECTED["times"][k] for k in ("patient_id", "centre", "dfs_months", "os_months")}
    )
    assert times["patient_id"].tolist() == patients["id"].tolist()
    assert times["centre"].tolist() == patients["centre"].tolist()
    dfs_days = np.where(patients["rec"] == 1, patients["rec_days"], patients["death_days"])
    for centre in CENTRES:
        mask = (patients["centre"] == centre).to_numpy()
        for endpoint, days in (("dfs", dfs_days), ("os", patients["death_days"].to_numpy())):
            ours = pipeline_months(days[mask], centre)
            theirs = times.loc[mask, f"{endpoint}_months"].to_numpy()
            np.testing.assert_allclose(ours, theirs, rtol=TIME_REL, atol=0)
            rank = pd.Series(ours).rank(method="min").to_numpy()
            rank_r = pd.Series(theirs).rank(method="min").to_numpy()
            assert np.array_equal(rank, rank_r), (centre, endpoint)


def _colon_analysis_frame() -> pd.DataFrame:
    """The analysis variables computed by hand (what the mappings and config should give)."""
    p = colon_patients()
    dfs_days = np.where(p["rec"] == 1, p["rec_days"], p["death_days"])
    out = pd.DataFrame({"centre": p["centre"], "age": p["age"].astype(float)})
    out["treatment_arm"] = p["rx"].astype(object)
    out["female"] = (p["sex"] == 0).astype(float)
    out["poor"] = np.where(p["differ"].isna(), np.nan, (p["differ"] == 3).astype(float))
    out["deep"] = (p["extent"] >= 3).astype(float)
    out["obstructed"] = p["obstruct"].astype(float)
    out[EXPOSURE] = np.where(p["nodes"].isna(), np.nan, (p["nodes"] >= 5).astype(float))
    out["dfs_event"] = ((p["rec"] == 1) | (p["death"] == 1)).astype(float)
    out["os_event"] = p["death"].astype(float)
    out["dfs_months"] = np.nan
    out["os_months"] = np.nan
    for centre in CENTRES:
        mask = (p["centre"] == centre).to_numpy()
        out.loc[mask, "dfs_months"] = pipeline_months(dfs_days[mask], centre)
        out.loc[mask, "os_months"] = pipeline_months(p.loc[mask, "death_days"].to_numpy(), centre)
    return out.loc[out[EXPOSURE].notna()].reset_index(drop=True)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_models_alone_reproduce_r(endpoint: str) -> None:
    """The Cox and two-stage models on the hand-computed analysis frame equal R: the
    reference and the models agree, so a failure of the pipeline tests below lies in the
    mapping, the config or the runner."""
    from pooled.models.cox import CoxSpec, fit_cox
    from pooled.models.meta import MetaSpec
    from pooled.models.two_stage import TwoStageSpec, fit_two_stage

    data = _colon_analysis_frame()
    spec = CoxSpec(
        duration=f"{endpoint}_months",
        event=f"{endpoint}_event",
        covariates=(EXPOSURE, *COVARIATES),
        categorical=(("treatment_arm", "Obs"),),
        strata=("centre",),
        term_lr_tests=False,
    )
    for model, fit_spec in (
        ("adjusted", spec),
        ("univariable", CoxSpec(**{**_fields(spec), "covariates": (EXPOSURE,), "categorical": ()})),
    ):
        fit = fit_cox(data, fit_spec)
        r = EXPECTED["fits"][f"{endpoint}_{model}"]
        assert list(fit.term_names) == [pipeline_term(t) for t in r["coef"]]
        assert fit.coefficients == pytest.approx(list(r["coef"].values()), rel=REL)
        assert fit.std_errors == pytest.approx(list(r["se"].values()), rel=REL)
        assert fit.loglik == pytest.approx(r["loglik"], rel=REL)
        assert (fit.n, fit.events) == (r["n"], r["events"])
    two = fit_two_stage(
        data,
        TwoStageSpec(cox=CoxSpec(**{**_fields(spec), "strata": ()}), marker=EXPOSURE,
                     meta=MetaSpec(method="REML", knha=False)),
    )  # fmt: skip
    per = two.per_centre.set_index("centre")
    r_centre = EXPECTED["per_centre"][endpoint]
    for i, centre in enumerate(r_centre["centre"]):
        assert per.loc[centre, "log_hr"] == pytest.approx(r_centre["nodes5_log_hr"][i], rel=REL)
        assert per.loc[centre, "se"] == pytest.approx(r_centre["nodes5_se"][i], rel=REL)
        assert (per.loc[centre, "n"], per.loc[centre, "events"]) == (
            r_centre["n"][i],
            r_centre["events"][i],
        )
    r_meta = EXPECTED["meta"][endpoint]["REML"]
    assert two.meta.estimate == pytest.approx(r_meta["estimate"], rel=REL)
    assert two.meta.se == pytest.approx(r_meta["se"], rel=REL)
    assert two.meta.tau2 == pytest.approx(r_meta["tau2"], rel=REL)


def _fields(spec: Any) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(spec, f.name) for f in fields(spec)}


# ---------------------------------------------------------------------------------------
# The pipeline, through the `pooled` command (needs the planned features)
# ---------------------------------------------------------------------------------------
def _invoke(*args: str) -> Any:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def write_merged_schema(path: Path) -> Path:
    """configs/schema.yaml with the fields of colon/schema_extension.yaml added."""
    schema = yaml.safe_load((ROOT / "configs" / "schema.yaml").read_text(encoding="utf-8"))
    extension = yaml.safe_load((COLON / "schema_extension.yaml").read_text(encoding="utf-8"))
    fields = schema["tables"]["patients"]["fields"]
    for name, spec in extension["tables"]["patients"]["fields"].items():
        assert name not in fields, (
            f"{name} is in configs/schema.yaml now: drop it from the extension"
        )
        fields[name] = spec
    path.write_text(yaml.safe_dump(schema, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uploads -> validate -> ingest -> run, once for the module; the paths it wrote."""
    work = tmp_path_factory.mktemp("colon")
    uploads = write_colon_uploads(work / "uploads")
    schema = write_merged_schema(work / "schema.yaml")
    config = work / "colon.yaml"  # beside schema.yaml, which the config names
    config.write_text((COLON / "colon.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    store = work / "pooled.db"
    for centre, upload in uploads.items():
        mapping = COLON / f"{centre}.yaml"
        result = _invoke(
            "validate", upload, "--mapping", mapping, "--schema", schema,
            "--out", work / "validation" / centre, "--today", TODAY,
        )  # fmt: skip
        assert result.exit_code == 0, f"validate {centre}: {result.output}"
        result = _invoke(
            "ingest", upload, "--mapping", mapping, "--schema", schema,
            "--store", store, "--today", TODAY,
        )  # fmt: skip
        assert result.exit_code == 0, f"ingest {centre}: {result.output}"
        assert "stored version 1" in result.output, result.output
    out = work / "run"
    result = _invoke("run", config, "--store", store, "--out", out)
    assert result.exit_code == 0, f"run: {result.output}"
    return {"work": work, "store": store, "schema": schema, "run": out}


@pytest.fixture(scope="module")
def results(pipeline: dict[str, Path]) -> pd.DataFrame:
    return pd.read_csv(pipeline["run"] / "results.csv")


def test_uploads_validate_without_errors(pipeline: dict[str, Path]) -> None:
    for centre in CENTRES:
        findings = pd.DataFrame(
            json.loads((pipeline["work"] / "validation" / centre / "validation.json").read_text())
        )
        errors = findings.loc[findings["severity"] == "error"] if len(findings) else findings
        assert errors.empty, f"{centre}: {errors.to_dict('records')[:5]}"
        # columns read only by expressions count as used
        unmapped = (
            findings.loc[findings["rule"] == "unmapped_column"] if len(findings) else findings
        )
        assert unmapped.empty, f"{centre}: unmapped {unmapped['column'].tolist()}"


def test_mapped_endpoints_equal_r(pipeline: dict[str, Path]) -> None:
    """dfs (derived by the mapping expressions) and os per patient, as stored, against R."""
    out = pipeline["work"] / "analysis.csv"
    result = _invoke("dataset", "--store", pipeline["store"], "--out", out)
    assert result.exit_code == 0, result.output
    stored = pd.read_csv(out)
    stored["id"] = stored["patient_id"].astype(str).str.replace(r"\D", "", regex=True).astype(int)
    times = pd.DataFrame({k: v for k, v in EXPECTED["times"].items() if k != "note"})
    merged = times.merge(stored, left_on="patient_id", right_on="id", suffixes=("_r", ""))
    assert len(merged) == len(times) == 929
    assert (merged["centre_r"] == merged["centre"]).all()
    for endpoint in ENDPOINTS:
        np.testing.assert_allclose(
            merged[f"{endpoint}_months"], merged[f"{endpoint}_months_r"], rtol=TIME_REL, atol=0
        )
        flags = {"true": 1, "false": 0, "1": 1, "0": 0, "1.0": 1, "0.0": 0}
        events = merged[f"{endpoint}_event"].astype(str).str.lower().map(flags)
        assert events.tolist() == merged[f"{endpoint}_event_r"].tolist(), endpoint


@pytest.mark.parametrize("model", ["adjusted", "univariable"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_stratified_cox(results: pd.DataFrame, endpoint: str, model: str) -> None:
    r = EXPECTED["fits"][f"{endpoint}_{model}"]
    rows = pipeline_rows(results, endpoint, model).set_index("term")
    terms = [pipeline_term(t) for t in r["coef"]]
    assert rows.index.tolist() == terms
    for r_term, term in zip(r["coef"], terms, strict=True):
        assert rows.loc[term, "estimate"] == pytest.approx(r["coef"][r_term], rel=REL), term
        assert rows.loc[term, "std_error"] == pytest.approx(r["se"][r_term], rel=REL), term
    assert set(rows["n"].astype(int)) == {r["n"]}
    assert set(rows["events"].astype(int)) == {r["events"]}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_per_centre_fits(results: pd.DataFrame, endpoint: str) -> None:
    rows = pipeline_rows(results, endpoint, "per_centre").set_index("centre")
    r = EXPECTED["per_centre"][endpoint]
    assert sorted(rows.index) == sorted(r["centre"])
    for i, centre in enumerate(r["centre"]):
        row = rows.loc[centre]
        assert bool(row["included"]), f"{centre}: {row['reason']}"
        assert row["term"] == pipeline_term(EXPOSURE)
        assert row["estimate"] == pytest.approx(r["nodes5_log_hr"][i], rel=REL), centre
        assert row["std_error"] == pytest.approx(r["nodes5_se"][i], rel=REL), centre
        assert (int(row["n"]), int(row["events"])) == (r["n"][i], r["events"][i]), centre


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_reml_pooling(results: pd.DataFrame, endpoint: str) -> None:
    row = pipeline_rows(results, endpoint, "pooled").iloc[0]
    r = EXPECTED["meta"][endpoint]["REML"]
    assert row["method"] == "REML" and not bool(row["knha"])
    assert row["estimate"] == pytest.approx(r["estimate"], rel=REL)
    assert row["std_error"] == pytest.approx(r["se"], rel=REL)
    assert row["tau2"] == pytest.approx(r["tau2"], rel=REL)
    assert row["i2"] == pytest.approx(r["I2"], rel=REL)
    assert row["q"] == pytest.approx(r["Q"], rel=REL)
    assert row["ci_lower"] == pytest.approx(np.exp(r["ci_lower"]), rel=REL)  # ratio scale
    assert row["ci_upper"] == pytest.approx(np.exp(r["ci_upper"]), rel=REL)
    assert int(row["n"]) == sum(EXPECTED["per_centre"][endpoint]["n"])
    assert int(row["events"]) == sum(EXPECTED["per_centre"][endpoint]["events"])


def test_cohort_flow(pipeline: dict[str, Path]) -> None:
    flow = cohort_flow_counts(pd.read_csv(pipeline["run"] / "exclusion_flow.csv"))
    ex = EXPECTED["exclusions"]
    expected = {
        centre: {
            "received": ex["patients"][i],
            "missing_marker": ex["missing_nodes"][i],
            "other_exclusions": 0,
            "analysed": ex["with_nodes"][i],
        }
        for i, centre in enumerate(ex["centre"])
    }
    assert flow == expected


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_model_flow(pipeline: dict[str, Path], endpoint: str) -> None:
    """Complete-case losses of each model by covariate (only `poor`, from a missing grade),
    and what remains equals R's n per centre."""
    path = pipeline["run"] / "model_flow.csv"
    assert path.exists(), "model_flow.csv not written (planned: model, endpoint, centre, step, ...)"
    flow = pd.read_csv(path)
    expected = expected_dropped(endpoint)
    assert model_flow_dropped(flow, endpoint, "adjusted") == expected
    assert model_flow_dropped(flow, endpoint, "per_centre") == expected
    assert model_flow_dropped(flow, endpoint, "univariable") == {}
    ex = EXPECTED["exclusions"]
    for i, centre in enumerate(ex["centre"]):
        lost = sum(expected.get(centre, {}).values())
        assert (
            ex["with_nodes"][i] - lost
            == ex["analysed"][i]
            == EXPECTED["per_centre"][endpoint]["n"][i]
        )
