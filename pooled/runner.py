"""Running an analysis config: analysis dataset -> cohort -> exposure -> models -> RunOutput.

:func:`run_analysis` is what ``pooled run CONFIG`` does after opening the store. It never
touches the file system itself (the CLI writes the outputs); it returns a
:class:`~pooled.run_output.RunOutput` that the report renders.

Order: the cohort rules (each a step of the exclusion flow), the exposure, the derived
covariates, then the models. Every model records which cohort patients it used and why it
did not use the others (:mod:`pooled.model_flow`); the run's model flow must reconcile.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from harmonization.schema import Reason
from pooled.config import SERIAL_KINDS, AnalysisConfig, check_against_data
from pooled.dataset import AnalysisDataset
from pooled.errors import ConvergenceError, DataError, PooledWarning
from pooled.exposures import as_indicator, derive_covariates, derive_exposure, evaluate_expression
from pooled.model_flow import ModelFlow, account_for_model
from pooled.run_output import ModelOutput, RunOutput

SUBTYPE = "subtype"


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in (
        "pooled-ipd",
        "numpy",
        "scipy",
        "pandas",
        "pymc",
        "arviz",
        "nutpie",
        "lifelines",
        "statsmodels",
        "duckdb",
        "openpyxl",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


DAYS_PER_MONTH = 30.4375


def apply_cohort_rules(ds: AnalysisDataset, cfg: AnalysisConfig) -> AnalysisDataset:
    """The config's setting and ``include``/``exclude`` rules, each a step of the flow.

    A rule that is missing for a patient excludes the patient in ``include`` and keeps it in
    ``exclude`` (:func:`cohort_rule`).
    """
    if cfg.cohort.setting is not None:
        ds = ds.select(
            ds.patients["setting"] == cfg.cohort.setting, Reason.SETTING, cfg.cohort.setting
        )
    for i, rule in enumerate(cfg.cohort.include):
        keep = cohort_rule(ds.patients, rule, where=cfg.where("cohort", "include", i))
        ds = ds.select(keep, Reason.COHORT_RULE, f"include: {rule}")
    for i, rule in enumerate(cfg.cohort.exclude):
        drop = cohort_rule(ds.patients, rule, where=cfg.where("cohort", "exclude", i))
        ds = ds.exclude(drop, Reason.COHORT_RULE, f"exclude: {rule}")
    return ds


def select_cohort(
    ds: AnalysisDataset, cfg: AnalysisConfig, *, progress: bool = False
) -> tuple[AnalysisDataset, list[ModelOutput]]:
    """Apply the config's cohort rules, derive the exposure and the derived covariates.

    The setting and each ``include``/``exclude`` rule is a step of the exclusion flow (a rule
    that is missing for a patient excludes the patient in ``include``, keeps it in
    ``exclude``); patients without the exposure or the primary endpoint leave too. Derived
    covariates are computed on the fields as stored (``grade == 3`` on the numeric grade),
    then categorical covariates stored as numbers become text levels.

    Returns the cohort and, for exposures from serial samples, the trajectory model and the
    serial-exposure summary it produced (as model outputs for the report).
    """
    ds = apply_cohort_rules(ds, cfg)
    patients = ds.patients.copy()
    outputs: list[ModelOutput] = []
    if cfg.exposure.kind in SERIAL_KINDS or cfg.models.trajectory:
        patients, outputs = serial_exposures(patients, ds.samples, cfg, progress=progress)
    if cfg.exposure.kind not in SERIAL_KINDS:
        patients[cfg.exposure.name] = derive_exposure(patients, cfg.exposure)
    patients = derive_covariates(
        patients,
        cfg.covariates,
        where=[cfg.where("covariates", i, "expr") for i in range(len(cfg.covariates))],
    )
    patients = _categorical_as_text(patients, cfg)
    ds = replace(ds, patients=patients)
    ds = ds.exclude(patients[cfg.exposure.name].isna(), Reason.MISSING_MARKER, cfg.exposure.name)
    primary = cfg.endpoints[0]
    missing_endpoint = (
        ds.patients[f"{primary}_months"].isna() | ds.patients[f"{primary}_event"].isna()
    )
    return ds.exclude(missing_endpoint, Reason.MISSING_ENDPOINT, primary), outputs


def samples_with_days(samples: pd.DataFrame) -> pd.DataFrame:
    """Serial samples with ``days_from_baseline`` (from sample dates where not delivered)."""
    out = samples.copy()
    if "days_from_baseline" not in out.columns:
        out["days_from_baseline"] = np.nan
    if "sample_date" in out.columns:
        dates = pd.to_datetime(out["sample_date"])
        keys = [out["centre"], out["patient_id"]]
        first = dates.groupby(keys).transform("min")
        from_dates = (dates - first).dt.days.astype(float)
        out["days_from_baseline"] = out["days_from_baseline"].astype(float).fillna(from_dates)
    out["months_from_baseline"] = out["days_from_baseline"] / DAYS_PER_MONTH
    return out


def observed_means(samples: pd.DataFrame, fit: Any) -> pd.DataFrame:
    """Observed mean CTC per 7.5 ml by assigned trajectory group and whole month (for the plot)."""
    key = fit.spec.patient
    assigned = fit.assignments[[key, "label"]].rename(columns={key: "patient_key"})
    merged = samples.merge(assigned, on="patient_key")
    merged = merged.assign(
        count=merged["ctc_count"] * 7.5 / merged["ctc_blood_volume_ml"].fillna(7.5),
        time=merged["months_from_baseline"].round(),
    )
    return merged.groupby(["label", "time"], as_index=False).agg(
        mean_count=("count", "mean"), n=("count", "size")
    )


def _arm_column(patients: pd.DataFrame) -> str | None:
    """``treatment_arm`` when the cohort has two or more arms, else no grouping."""
    arms = patients["treatment_arm"].dropna().nunique() if "treatment_arm" in patients else 0
    return "treatment_arm" if arms >= 2 else None


def _with_arm(serial_patients: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    if _arm_column(patients) is None:
        return serial_patients
    arms = patients[["patient_key", "treatment_arm"]]
    return serial_patients.merge(arms, on="patient_key", how="left")


def serial_exposures(
    patients: pd.DataFrame, samples: pd.DataFrame, cfg: AnalysisConfig, *, progress: bool = False
) -> tuple[pd.DataFrame, list[ModelOutput]]:
    """bCTC, b2CTC and tCTC per patient from the serial samples (trajectory model by BIC)."""
    from pooled.models.serial import SerialSpec, ctc_clearance, derive_serial_exposures
    from pooled.models.trajectories import TrajectorySpec, select_trajectories

    if samples.empty:
        raise DataError(
            f"exposure {cfg.exposure.name!r} ({cfg.exposure.kind}) needs serial samples, but no "
            "centre in the store sent a samples table."
        )
    samples = samples_with_days(samples)
    samples = samples.loc[samples["days_from_baseline"].notna() & samples["ctc_count"].notna()]
    samples = samples.assign(
        patient_key=samples["centre"].astype(str) + "/" + samples["patient_id"].astype(str)
    )
    patients = patients.assign(
        patient_key=patients["centre"].astype(str) + "/" + patients["patient_id"].astype(str)
    )
    trajectory_spec = TrajectorySpec(
        patient="patient_key",
        time="months_from_baseline",
        volume="ctc_blood_volume_ml",
        family=cfg.models.trajectory_family,
        n_starts=cfg.models.trajectory_starts,
        seed=cfg.seed,
    )
    selection = select_trajectories(
        samples, trajectory_spec, k_range=cfg.models.trajectory_groups, progress=progress
    )
    serial = derive_serial_exposures(
        samples,
        SerialSpec(
            patient="patient_key",
            centre=None,
            threshold=cfg.exposure.threshold,
            followup_window=cfg.exposure.follow_up_window,
        ),
        trajectories=selection.best,
        patients=patients[["patient_key"]],
    )
    per_patient = serial.patients.set_index("patient_key")
    out = patients.copy()
    for column in ("bCTC", "b2CTC", "tCTC"):
        out[column] = per_patient[column].reindex(out["patient_key"]).astype(object).to_numpy()
    if cfg.exposure.kind == "trajectory_group":
        out[cfg.exposure.name] = out["tCTC"]
    elif cfg.exposure.kind == "change_category":
        out[cfg.exposure.name] = out["b2CTC"]
    outputs = [
        ModelOutput(
            "ctc_clearance",
            "clearance",
            "",
            ctc_clearance(_with_arm(serial.patients, patients), by=_arm_column(patients)),
            "CTC clearance among baseline-positive patients"
            + (" by treatment arm" if _arm_column(patients) else ""),
        ),
        ModelOutput(
            "trajectory_selection",
            "trajectory",
            "",
            selection,
            "CTC trajectory groups (BIC)",
            {"observed": observed_means(samples, selection.best)},
        ),
        ModelOutput(
            "serial_exposures", "trajectory", "", serial, "Exposures from serial CTC counts"
        ),
    ]
    return out.drop(columns="patient_key"), outputs


def _categorical_as_text(patients: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    """Categorical covariates stored as numbers (grade 1-3) become their text labels ("1")."""
    out = patients.copy()
    for cov in cfg.covariates:
        if (
            cov.categorical
            and cov.name in out.columns
            and pd.api.types.is_numeric_dtype(out[cov.name])
        ):
            values = out[cov.name]
            out[cov.name] = values.map(lambda v: None if pd.isna(v) else f"{v:g}").astype(object)
    return out


def cohort_rule(patients: pd.DataFrame, rule: str, *, where: str = "") -> pd.Series:
    """A cohort rule evaluated per patient: True where it holds, False where it does not or
    is missing (so a missing ``include`` rule excludes and a missing ``exclude`` rule keeps).

    Examples
    --------
    >>> cohort_rule(pd.DataFrame({"age": [17, 40, None]}), "age >= 18").tolist()
    [False, True, False]
    """
    values = evaluate_expression(patients, rule, where=where)
    indicator = as_indicator(values, what=f"{where + ': ' if where else ''}cohort rule {rule!r}")
    return (indicator == 1.0).astype(bool)


def _describe(values: pd.Series) -> str:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if numbers.empty:
        return "n/a"
    q1, med, q3 = np.percentile(numbers, [25, 50, 75])
    return f"{med:.1f} ({q1:.1f}-{q3:.1f})"


def _level_text(level: Any) -> str:
    return f"{level:g}" if isinstance(level, float) else str(level)


def characteristics(patients: pd.DataFrame, by: str, cfg: AnalysisConfig) -> pd.DataFrame:
    """Patient characteristics by a grouping column: n, medians (IQR), category shares (%)."""
    groups = [("all", patients)] + [
        (f"{by} = {_level_text(level)}", g)
        for level, g in patients.groupby(by, sort=True, observed=True)
    ]
    rows: list[dict[str, Any]] = [
        {"characteristic": "patients, n", **{name: f"{len(g)}" for name, g in groups}}
    ]
    for column in ("age", "tumour_size_mm", "positive_nodes", "ki67_percent"):
        if column in patients.columns and patients[column].notna().any():
            rows.append(
                {
                    "characteristic": f"{column}, median (IQR)",
                    **{n: _describe(g[column]) for n, g in groups},
                }
            )
    for column in ("grade", "subtype", "er_status", "her2_status", "menopausal_status"):
        if column not in patients.columns or patients[column].notna().sum() == 0:
            continue
        for level in sorted(patients[column].dropna().unique(), key=str):
            label = f"{column} = {level:g}" if isinstance(level, float) else f"{column} = {level}"
            rows.append(
                {
                    "characteristic": f"{label}, n (%)",
                    **{
                        n: f"{int((g[column] == level).sum())} ({100 * (g[column] == level).mean():.1f})"
                        for n, g in groups
                    },
                }
            )
    for endpoint in cfg.endpoints:
        column = f"{endpoint}_event"
        if column in patients.columns:
            rows.append(
                {
                    "characteristic": f"{endpoint} events, n (%)",
                    **{
                        n: f"{int(g[column].fillna(0).sum())} ({100 * g[column].fillna(0).mean():.1f})"
                        for n, g in groups
                    },
                }
            )
    return pd.DataFrame(rows)


def _cox_spec(cfg: AnalysisConfig, endpoint: str, *, interactions: bool, **changes: Any) -> Any:
    from pooled.models.cox import CoxSpec

    covariates = (cfg.exposure.name,) + tuple(
        c.name for c in cfg.covariates if c.name != cfg.exposure.name
    )
    categorical = cfg.categorical
    if cfg.exposure.kind in SERIAL_KINDS:
        categorical = ((cfg.exposure.name, exposure_reference(cfg)),) + categorical
    spec = CoxSpec(
        duration=f"{endpoint}_months",
        event=f"{endpoint}_event",
        covariates=covariates,
        categorical=categorical,
        interactions=cfg.interactions if interactions else (),
        strata=cfg.strata,
        ties=cfg.models.ties,
        cluster="centre" if cfg.models.robust else None,
        seed=cfg.seed,
        analysis=cfg.name,
        endpoint=endpoint,
    )
    return replace(spec, **changes) if changes else spec


def exposure_reference(cfg: AnalysisConfig) -> str:
    """Reference level of a categorical exposure: the config's first level, else the lowest."""
    if cfg.exposure.levels:
        return cfg.exposure.levels[0]
    return {"trajectory_group": "undetectable", "change_category": "CTC-/CTC-"}.get(
        cfg.exposure.kind, ""
    )


def _comparison_outputs(cfg: AnalysisConfig, patients: pd.DataFrame) -> list[ModelOutput]:
    from pooled.models.serial import compare_exposures

    covariates = tuple(
        c.name for c in cfg.covariates if c.name not in (cfg.exposure.name, "bCTC", "b2CTC", "tCTC")
    )
    endpoints = {e: (f"{e}_months", f"{e}_event") for e in cfg.endpoints}
    data = patients.copy()
    for endpoint in cfg.endpoints:
        data[f"{endpoint}_event"] = data[f"{endpoint}_event"].astype(float)
    comparison = compare_exposures(
        data,
        ("bCTC", "b2CTC", "tCTC"),
        endpoints=endpoints,
        covariates=covariates,
        categorical=tuple((c, r) for c, r in cfg.categorical if c in covariates),
        strata=cfg.strata,
        references={"bCTC": "CTC-", "b2CTC": "CTC-/CTC-", "tCTC": "undetectable"},
        ties=cfg.models.ties,
    )
    return [
        ModelOutput(
            "exposure_comparison",
            "comparison",
            ",".join(cfg.endpoints),
            comparison,
            "bCTC vs b2CTC vs tCTC by AIC",
        )
    ]


def _endpoint_frame(patients: pd.DataFrame, endpoint: str) -> pd.DataFrame:
    data = patients.loc[
        patients[f"{endpoint}_months"].notna() & patients[f"{endpoint}_event"].notna()
    ].copy()
    data[f"{endpoint}_event"] = data[f"{endpoint}_event"].astype(float)
    return data


def _per_centre(frame: pd.DataFrame) -> pd.Series:
    return frame["centre"].astype(str).value_counts()


def _cox_flow(
    cohort: pd.DataFrame,
    data: pd.DataFrame,
    result: Any,
    model: str,
    **left_out: Any,
) -> ModelFlow:
    """The flow of a Cox fit on ``data`` (rows of the cohort): what the fit dropped, per centre,
    from its own record (``CoxResult.dropped``), attributed over the cohort."""
    spec = result.spec
    dropped = result.dropped
    lost = (
        dropped.assign(centre=dropped["centre"].astype(str)).groupby("centre")["n_dropped"].sum()
        if len(dropped)
        else pd.Series(dtype=float)
    )
    analysed = _per_centre(data).sub(lost, fill_value=0)
    needed = [] if spec.missing == "mice" else list(spec.covariates)
    needed += list(spec.strata) + ([spec.cluster] if spec.cluster else [])
    return account_for_model(
        cohort,
        model=model,
        endpoint=spec.endpoint,
        analysed=analysed,
        reported_n=result.n,
        required=(spec.duration, spec.event),
        covariates=needed,
        **left_out,
    )


def _group_names(km: Any, exposure: str) -> dict[str, str]:
    """Display names of binary exposure groups: ``dtc_positive=1.0`` -> ``dtc_positive: yes``."""
    names = {}
    for label in km.summary["label"].astype(str):
        value = label.partition("=")[2]
        if value in ("0", "0.0", "1", "1.0"):
            names[label] = f"{exposure}: {'yes' if value.startswith('1') else 'no'}"
    return names


def _km_outputs(
    cfg: AnalysisConfig, cohort: pd.DataFrame, data: pd.DataFrame, endpoint: str
) -> list[ModelOutput]:
    from pooled.models.km import KMSpec, fit_kaplan_meier, logrank_test

    duration, event = f"{endpoint}_months", f"{endpoint}_event"
    km = fit_kaplan_meier(
        data,
        KMSpec(
            duration=duration,
            event=event,
            group=cfg.exposure.name,
            times=cfg.models.km_times,
            endpoint=endpoint,
        ),
    )
    strata = tuple(s for s in cfg.strata if s in data.columns)
    logrank = logrank_test(data, duration, event, cfg.exposure.name, strata, endpoint=endpoint)
    name = f"km_{endpoint}"
    flow = account_for_model(
        cohort,
        model=name,
        endpoint=endpoint,
        analysed=_per_centre(data.loc[data[cfg.exposure.name].notna()]),
        reported_n=int(km.summary["n"].sum()),
        required=(duration, event),
        covariates=(cfg.exposure.name,),
    )
    return [
        ModelOutput(
            name,
            "km",
            endpoint,
            km,
            f"Kaplan-Meier, {endpoint.upper()} by {cfg.exposure.name}",
            {"logrank": logrank, "group_names": _group_names(km, cfg.exposure.name)},
            flow=flow,
        ),
        ModelOutput(
            f"logrank_{endpoint}",
            "logrank",
            endpoint,
            logrank,
            f"Log-rank test stratified by {', '.join(strata) or 'nothing'}",
        ),
    ]


def _cox_outputs(
    cfg: AnalysisConfig, cohort: pd.DataFrame, data: pd.DataFrame, endpoint: str
) -> list[ModelOutput]:
    from pooled.models.cox import effect_within_levels, fit_cox, interaction_lr_test
    from pooled.models.zph import proportional_hazards_test

    outputs = []
    univariable = fit_cox(
        data,
        _cox_spec(
            cfg,
            endpoint,
            interactions=False,
            covariates=(cfg.exposure.name,),
            categorical=tuple(
                pair
                for pair in _cox_spec(cfg, endpoint, interactions=False).categorical
                if pair[0] == cfg.exposure.name
            ),
            analysis=f"{cfg.name}: univariable",
        ),
    )
    name = f"cox_{endpoint}_univariable"
    outputs.append(
        ModelOutput(
            name,
            "cox",
            endpoint,
            univariable,
            f"Stratified Cox, {endpoint.upper()}, univariable",
            flow=_cox_flow(cohort, data, univariable, name),
        )
    )
    adjusted = fit_cox(data, _cox_spec(cfg, endpoint, interactions=False))
    name = f"cox_{endpoint}_adjusted"
    outputs.append(
        ModelOutput(
            name,
            "cox",
            endpoint,
            adjusted,
            f"Stratified Cox, {endpoint.upper()}, adjusted",
            flow=_cox_flow(cohort, data, adjusted, name),
        )
    )
    try:
        zph = proportional_hazards_test(adjusted, data, transform="km")
        outputs.append(
            ModelOutput(
                f"zph_{endpoint}",
                "zph",
                endpoint,
                zph,
                f"Proportional hazards (scaled Schoenfeld), {endpoint.upper()}",
            )
        )
    except DataError as exc:
        warnings.warn(f"PH test for {endpoint} skipped: {exc}", PooledWarning, stacklevel=2)
    for a, b in cfg.interactions:
        marker, by = (a, b) if a == cfg.exposure.name else (b, a)
        spec = _cox_spec(cfg, endpoint, interactions=True, term_lr_tests=False)
        fit = fit_cox(data, spec)
        result = InteractionOutput(
            fit=fit,
            test=interaction_lr_test(data, spec),
            within=effect_within_levels(fit, marker=marker, by=by),
            marker=marker,
            by=by,
        )
        name = f"interaction_{endpoint}_{by}"
        outputs.append(
            ModelOutput(
                name,
                "interaction",
                endpoint,
                result,
                f"{marker} x {by}, {endpoint.upper()}",
                flow=_cox_flow(cohort, data, fit, name),
            )
        )
    return outputs


@dataclass(frozen=True, slots=True)
class InteractionOutput:
    """A marker x subgroup interaction: the fit, its LR test and the marker's HR per level."""

    fit: Any
    test: Any
    within: pd.DataFrame
    marker: str
    by: str

    def to_frame(self) -> pd.DataFrame:
        """Within-level HRs (the subgroup forest rows), then the interaction LR test row."""
        test = self.test.to_frame().assign(model="interaction_lr_test")
        return pd.concat([self.within, test], ignore_index=True)


def _two_stage_outputs(
    cfg: AnalysisConfig, cohort: pd.DataFrame, data: pd.DataFrame, endpoint: str
) -> list[ModelOutput]:
    from pooled.models.meta import MetaSpec
    from pooled.models.two_stage import TwoStageSpec, fit_two_stage

    cox = _cox_spec(cfg, endpoint, interactions=False, strata=(), ties=cfg.models.two_stage_ties)
    spec = TwoStageSpec(
        cox=cox,
        marker=cfg.exposure.name,
        meta=MetaSpec(method=cfg.models.meta_method, knha=cfg.models.knha),
    )
    result = fit_two_stage(data, spec)
    table = result.per_centre
    included = table["included"].to_numpy(dtype=bool)
    stage_one = spec.stage_one
    name = f"two_stage_{endpoint}"
    flow = account_for_model(
        cohort,
        model=name,
        endpoint=endpoint,
        analysed={
            str(c): int(n) if inc else 0
            for c, n, inc in zip(table["centre"], table["n"], included, strict=True)
        },
        reported_n=int(table.loc[included, "n"].sum()),
        required=(stage_one.duration, stage_one.event),
        covariates=(*stage_one.covariates, *stage_one.strata),
        centre_reasons={
            str(c): str(r)
            for c, r, inc in zip(table["centre"], table["reason"], included, strict=True)
            if not inc
        },
    )
    label = f"{cfg.models.meta_method}{', Hartung-Knapp' if cfg.models.knha else ''}"
    outputs = [
        ModelOutput(
            name,
            "two_stage",
            endpoint,
            result,
            f"Two-stage random effects ({label}), {endpoint.upper()}",
            flow=flow,
        )
    ]
    if len(cfg.models.meta_methods) > 1:
        outputs.append(_two_stage_sensitivity(cfg, result, endpoint))
    return outputs


def _two_stage_sensitivity(cfg: AnalysisConfig, result: Any, endpoint: str) -> ModelOutput:
    """The pooled estimate under each further tau^2 estimator (same centres, same estimates)."""
    from pooled.models.meta import MetaSpec, fit_meta
    from pooled.results import tidy_frame

    table = result.per_centre.loc[result.per_centre["included"].astype(bool)]
    rows: list[dict[str, Any]] = []
    for method in cfg.models.meta_methods[1:]:
        spec = MetaSpec(method=method, knha=cfg.models.knha)
        label = f"two-stage {spec.label}"
        try:
            meta = fit_meta(
                table["log_hr"].to_numpy(),
                table["se"].to_numpy() ** 2,
                spec,
                labels=list(table["centre"]),
                term=cfg.exposure.name,
            )
            pooled = meta.to_frame(analysis=cfg.name, endpoint=endpoint)
            found = pooled.loc[pooled["row_type"] == "pooled"].iloc[0]
            row = {str(key): value for key, value in found.items()}
        except (DataError, ConvergenceError) as exc:
            warnings.warn(
                f"sensitivity analysis '{label}' ({endpoint}) skipped: {exc}",
                PooledWarning,
                stacklevel=3,
            )
            row = {"term": cfg.exposure.name, "note": f"not estimable: {exc}"}
        row.update(
            model=f"sensitivity: {label}",
            analysis=cfg.name,
            endpoint=endpoint,
            n=int(table["n"].sum()),
            events=int(table["events"].sum()),
        )
        rows.append(row)
    return ModelOutput(
        f"sensitivity_two_stage_{endpoint}",
        "sensitivity",
        endpoint,
        SensitivityResult(tidy_frame(rows)),
        f"Two-stage sensitivity analyses (tau^2 estimator), {endpoint.upper()}",
    )


def _bayes_outputs(
    cfg: AnalysisConfig, cohort: pd.DataFrame, data: pd.DataFrame, endpoint: str
) -> list[ModelOutput]:
    from pooled.models.bayes import BayesSpec, PriorSpec, SamplerSpec, fit_bayes_survival

    covariates = tuple(c.name for c in cfg.covariates if c.name not in (cfg.exposure.name, SUBTYPE))
    has_subtype = any(c.name == SUBTYPE for c in cfg.covariates)
    interaction = cfg.models.bayes_interaction and any(SUBTYPE in pair for pair in cfg.interactions)
    priors = (
        PriorSpec.vague()
        if cfg.models.bayes_prior == "vague" and hasattr(PriorSpec, "vague")
        else PriorSpec()
    )
    spec = BayesSpec(
        duration=f"{endpoint}_months",
        event=f"{endpoint}_event",
        marker=cfg.exposure.name,
        subtype=SUBTYPE if has_subtype else None,
        covariates=covariates,
        categorical_reference=tuple((c, r) for c, r in cfg.categorical if c != SUBTYPE),
        interaction=interaction and has_subtype,
        n_intervals=cfg.models.bayes_intervals,
        priors=priors,
        sampling=SamplerSpec(
            draws=cfg.models.bayes_draws, tune=cfg.models.bayes_tune, chains=cfg.models.bayes_chains
        ),
        thresholds=tuple(t for t in cfg.models.bayes_thresholds if t != 1.0) or (1.5,),
        analysis=cfg.name,
        endpoint=endpoint,
    )
    needed = [spec.marker, "centre", *covariates] + ([SUBTYPE] if has_subtype else [])
    complete = data.dropna(subset=[spec.duration, spec.event, *needed])
    result = fit_bayes_survival(complete, spec, seed=cfg.seed)
    name = f"bayes_{endpoint}"
    flow = account_for_model(
        cohort,
        model=name,
        endpoint=endpoint,
        analysed=_per_centre(complete),
        reported_n=int(result.n),
        required=(spec.duration, spec.event),
        covariates=needed,
    )
    return [
        ModelOutput(
            name,
            "bayes",
            endpoint,
            result,
            f"Bayesian hierarchical piecewise-exponential model, {endpoint.upper()}",
            flow=flow,
        )
    ]


def _sensitivity_outputs(
    cfg: AnalysisConfig, cohort: pd.DataFrame, data: pd.DataFrame, endpoint: str
) -> list[ModelOutput]:
    from pooled.models.cox import fit_cox
    from pooled.results import tidy_frame

    rows: list[dict[str, Any]] = []
    flows: list[ModelFlow] = []
    output = f"sensitivity_{endpoint}"
    primary = _cox_spec(cfg, endpoint, interactions=False)
    needed = [*primary.covariates, *primary.strata]
    reference = account_for_model(  # the patients of the adjusted model, to compare with
        cohort,
        model="",
        endpoint=endpoint,
        analysed=_per_centre(data.dropna(subset=needed)),
        required=(primary.duration, primary.event),
        covariates=needed,
    )

    def marker_row(
        subset: pd.DataFrame, label: str, left_out: dict[str, Any] | None = None, **changes: Any
    ) -> None:
        """The marker's HR on ``subset``; an analysis the data cannot support is a row with a note."""
        spec = _cox_spec(cfg, endpoint, interactions=False, term_lr_tests=False, **changes)
        row: dict[str, Any]
        try:
            fit = fit_cox(subset, spec)
            frame = fit.to_frame()
            found = frame.loc[frame["term"] == cfg.exposure.name].iloc[0]
            row = {str(key): value for key, value in found.items()}
            flow = _cox_flow(cohort, subset, fit, f"{output}: {label}", **(left_out or {}))
            if not ModelFlow.concat([reference, flow]).same_patients("", f"{output}: {label}"):
                flows.append(flow)
        except DataError as exc:
            warnings.warn(
                f"sensitivity analysis '{label}' ({endpoint}) skipped: {exc}",
                PooledWarning,
                stacklevel=3,
            )
            row = {"term": cfg.exposure.name, "note": f"not estimable: {exc}"}
        row.update(model=f"sensitivity: {label}", analysis=cfg.name, endpoint=endpoint)
        rows.append(row)

    for ties in cfg.models.cox_ties[1:]:
        marker_row(data, f"ties {ties}", ties=ties)
    if cfg.sensitivity.leave_one_centre_out and data["centre"].nunique() > 1:
        for centre in sorted(data["centre"].unique()):
            label = f"without {centre}"
            marker_row(
                data.loc[data["centre"] != centre],
                label,
                {"left_out": cohort["centre"] == centre, "left_out_detail": label},
            )
    for threshold in cfg.sensitivity.thresholds:
        label = f"cut-off >= {threshold:g}"
        alt = data.copy()
        alt[cfg.exposure.name] = derive_exposure(alt, cfg.exposure, threshold=threshold)
        undetermined = derive_exposure(cohort, cfg.exposure, threshold=threshold).isna()
        marker_row(
            alt.loc[alt[cfg.exposure.name].notna()],
            label,
            {
                "left_out": undetermined,
                "left_out_reason": str(Reason.MISSING_MARKER),
                "left_out_detail": label,
            },
        )
    for method in cfg.sensitivity.missing:
        marker_row(data, method.replace("_", "-"), missing=method)
    if not rows:
        return []
    return [
        ModelOutput(
            output,
            "sensitivity",
            endpoint,
            SensitivityResult(tidy_frame(rows)),
            f"Sensitivity analyses, {endpoint.upper()}",
            flow=ModelFlow.concat(flows),
        )
    ]


@dataclass(frozen=True, slots=True)
class SensitivityResult:
    """A tidy table of the marker's HR under each sensitivity analysis."""

    table: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


Step = tuple[str, Callable[[], list[ModelOutput]]]
Fit = Callable[[AnalysisConfig, pd.DataFrame, pd.DataFrame, str], list[ModelOutput]]


def run_analysis(cfg: AnalysisConfig, ds: AnalysisDataset, *, progress: bool = False) -> RunOutput:
    """Run every model the config asks for on the analysis dataset.

    Parameters
    ----------
    cfg : AnalysisConfig
        From :func:`pooled.config.load_analysis_config`.
    ds : AnalysisDataset
        From :func:`pooled.dataset.build_analysis_dataset` (the store's latest or pinned
        versions); the cohort rules, exposure and derived covariates are applied here, each
        exclusion a step in the flow.
    progress : bool
        Show a progress bar over the models.

    Returns
    -------
    RunOutput
        Deterministic for a given config, data and seed. ``model_flow`` accounts, per model
        and centre, for every cohort patient a model did not use.

    Raises
    ------
    DataError
        If a model's flow does not reconcile (cohort = analysed + excluded per centre, and
        the analysed total equals the model's ``n``).

    Examples
    --------
    >>> run = run_analysis(load_analysis_config("configs/analyses/paddy.yaml"), ds)  # doctest: +SKIP
    >>> run.results().query("term == 'dtc_positive'")  # doctest: +SKIP
    >>> run.model_flow.summary()  # doctest: +SKIP
    """
    from pooled.models.km import median_followup

    cohort, serial_outputs = select_cohort(ds, cfg, progress=progress)
    cohort.flow.check(cohort.patients)
    patients = cohort.patients
    check_against_data(cfg, patients)
    steps: list[Step] = []
    sensitivity = cfg.sensitivity
    any_sensitivity = bool(
        sensitivity.leave_one_centre_out
        or sensitivity.thresholds
        or sensitivity.missing
        or len(cfg.models.cox_ties) > 1
    )
    for endpoint in cfg.endpoints:
        data = _endpoint_frame(patients, endpoint)
        wanted: list[tuple[str, bool, Fit]] = [
            ("Kaplan-Meier", cfg.models.km, _km_outputs),
            ("Cox", cfg.models.cox, _cox_outputs),
            ("two-stage", cfg.models.two_stage and cfg.exposure.kind not in SERIAL_KINDS, _two_stage_outputs),
            ("Bayesian", cfg.models.bayes and (not cfg.models.bayes_endpoints or endpoint in cfg.models.bayes_endpoints), _bayes_outputs),
            ("sensitivity", endpoint == cfg.endpoints[0] and any_sensitivity, _sensitivity_outputs),
        ]  # fmt: skip
        for label, enabled, fit in wanted:
            if enabled:
                steps.append((f"{label} {endpoint}", partial(fit, cfg, patients, data, endpoint)))
    primary = cfg.endpoints[0]
    followup = median_followup(
        _endpoint_frame(patients, primary),
        f"{primary}_months",
        f"{primary}_event",
        endpoint=primary,
    )
    outputs: list[ModelOutput] = [
        ModelOutput(
            f"followup_{primary}",
            "followup",
            primary,
            followup,
            "Median follow-up (reverse Kaplan-Meier)",
        )
    ]
    outputs.extend(serial_outputs)
    if serial_outputs:
        steps.append(("exposure comparison", lambda: _comparison_outputs(cfg, patients)))
    skipped: list[dict[str, str]] = []
    outputs.extend(_run_steps(steps, progress, skipped))
    model_flow = ModelFlow.concat(o.flow for o in outputs)
    model_flow.check()
    exposure = cfg.exposure.name
    return RunOutput(
        name=cfg.name,
        config_text=cfg.text,
        flow=cohort.flow,
        characteristics={
            "by_exposure": characteristics(patients, exposure, cfg),
            "by_centre": characteristics(patients, "centre", cfg),
        },
        outputs=tuple(outputs),
        sample_flow=cohort.sample_flow,
        model_flow=model_flow,
        provenance={
            "config": cfg.path,
            "config_sha256": cfg.sha256,
            "schema": cfg.schema.path if cfg.schema is not None else "",
            "seed": cfg.seed,
            "store": ds.provenance.get("store", ""),
            "upload_versions": dict(ds.versions),
            "upload_sha256": dict(ds.provenance.get("upload_sha256", {})),
            "time_origin": ds.provenance.get("origin", "schema default"),
            "origin_not_converted": dict(ds.provenance.get("origin_not_converted", {})),
            "patients_analysed": int(len(patients)),
            "skipped_models": skipped,
            "packages": _package_versions(),
        },
    )


def _run_step(
    label: str, step: Callable[[], list[ModelOutput]], skipped: list[dict[str, str]]
) -> list[ModelOutput]:
    """One model step; a model the data cannot support is skipped with its reason, not fatal."""
    try:
        return step()
    except (DataError, ConvergenceError) as exc:
        warnings.warn(f"{label} skipped: {exc}", PooledWarning, stacklevel=3)
        skipped.append({"step": label, "reason": str(exc)})
        return []


def _run_steps(
    steps: list[Step], progress: bool, skipped: list[dict[str, str]]
) -> list[ModelOutput]:
    outputs: list[ModelOutput] = []
    if not progress:
        for label, step in steps:
            outputs.extend(_run_step(label, step, skipped))
        return outputs
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("models", total=len(steps))
        for label, step in steps:
            bar.update(task, description=label)
            outputs.extend(_run_step(label, step, skipped))
            bar.advance(task)
    return outputs
