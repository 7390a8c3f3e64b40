"""Running an analysis config: analysis dataset -> cohort -> exposure -> models -> RunOutput.

:func:`run_analysis` is what ``pooled run CONFIG`` does after opening the store. It never
touches the file system itself (the CLI writes the outputs); it returns a
:class:`~pooled.run_output.RunOutput` that the report renders.
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
from pooled.config import AnalysisConfig, check_against_data
from pooled.dataset import AnalysisDataset
from pooled.errors import ConvergenceError, DataError, PooledWarning
from pooled.exposures import derive_exposure
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


SERIAL_KINDS = ("change_category", "trajectory_group")
DAYS_PER_MONTH = 30.4375


def select_cohort(
    ds: AnalysisDataset, cfg: AnalysisConfig, *, progress: bool = False
) -> tuple[AnalysisDataset, list[ModelOutput]]:
    """Apply the config's cohort rules and derive the exposure, each step in the flow.

    Returns the cohort and, for exposures from serial samples, the trajectory model and the
    serial-exposure summary it produced (as model outputs for the report).
    """
    if cfg.cohort.setting is not None:
        ds = ds.select(
            ds.patients["setting"] == cfg.cohort.setting, Reason.SETTING, cfg.cohort.setting
        )
    for rule in cfg.cohort.include:
        ds = ds.select(_evaluate(ds.patients, rule, cfg), Reason.COHORT_RULE, f"include: {rule}")
    for rule in cfg.cohort.exclude:
        ds = ds.exclude(_evaluate(ds.patients, rule, cfg), Reason.COHORT_RULE, f"exclude: {rule}")
    patients = _categorical_as_text(ds.patients, cfg)
    outputs: list[ModelOutput] = []
    if cfg.exposure.kind in SERIAL_KINDS or cfg.models.trajectory:
        patients, outputs = serial_exposures(patients, ds.samples, cfg, progress=progress)
    if cfg.exposure.kind not in SERIAL_KINDS:
        patients[cfg.exposure.name] = derive_exposure(patients, cfg.exposure)
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


def _evaluate(patients: pd.DataFrame, rule: str, cfg: AnalysisConfig) -> pd.Series:
    from pooled.errors import ConfigError

    try:
        result = patients.eval(rule)
    except Exception as exc:  # pandas raises many types for a bad expression
        raise ConfigError(
            f"{cfg.where('cohort')}: cohort rule {rule!r} cannot be evaluated: {exc}."
        ) from None
    return pd.Series(result, index=patients.index).fillna(False).astype(bool)


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


def _group_names(km: Any, exposure: str) -> dict[str, str]:
    """Display names of binary exposure groups: ``dtc_positive=1.0`` -> ``dtc_positive: yes``."""
    names = {}
    for label in km.summary["label"].astype(str):
        value = label.partition("=")[2]
        if value in ("0", "0.0", "1", "1.0"):
            names[label] = f"{exposure}: {'yes' if value.startswith('1') else 'no'}"
    return names


def _km_outputs(cfg: AnalysisConfig, data: pd.DataFrame, endpoint: str) -> list[ModelOutput]:
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
    return [
        ModelOutput(
            f"km_{endpoint}",
            "km",
            endpoint,
            km,
            f"Kaplan-Meier, {endpoint.upper()} by {cfg.exposure.name}",
            {"logrank": logrank, "group_names": _group_names(km, cfg.exposure.name)},
        ),
        ModelOutput(
            f"logrank_{endpoint}",
            "logrank",
            endpoint,
            logrank,
            f"Log-rank test stratified by {', '.join(strata) or 'nothing'}",
        ),
    ]


def _cox_outputs(cfg: AnalysisConfig, data: pd.DataFrame, endpoint: str) -> list[ModelOutput]:
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
    outputs.append(
        ModelOutput(
            f"cox_{endpoint}_univariable",
            "cox",
            endpoint,
            univariable,
            f"Stratified Cox, {endpoint.upper()}, univariable",
        )
    )
    adjusted = fit_cox(data, _cox_spec(cfg, endpoint, interactions=False))
    outputs.append(
        ModelOutput(
            f"cox_{endpoint}_adjusted",
            "cox",
            endpoint,
            adjusted,
            f"Stratified Cox, {endpoint.upper()}, adjusted",
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
        result = InteractionOutput(
            fit=fit_cox(data, spec),
            test=interaction_lr_test(data, spec),
            within=effect_within_levels(fit_cox(data, spec), marker=marker, by=by),
            marker=marker,
            by=by,
        )
        outputs.append(
            ModelOutput(
                f"interaction_{endpoint}_{by}",
                "interaction",
                endpoint,
                result,
                f"{marker} x {by}, {endpoint.upper()}",
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


def _two_stage_outputs(cfg: AnalysisConfig, data: pd.DataFrame, endpoint: str) -> list[ModelOutput]:
    from pooled.models.meta import MetaSpec
    from pooled.models.two_stage import TwoStageSpec, fit_two_stage

    cox = _cox_spec(cfg, endpoint, interactions=False, strata=())
    spec = TwoStageSpec(
        cox=cox,
        marker=cfg.exposure.name,
        meta=MetaSpec(method=cfg.models.meta_method, knha=cfg.models.knha),
    )
    result = fit_two_stage(data, spec)
    return [
        ModelOutput(
            f"two_stage_{endpoint}",
            "two_stage",
            endpoint,
            result,
            f"Two-stage random effects ({cfg.models.meta_method}), {endpoint.upper()}",
        )
    ]


def _bayes_outputs(cfg: AnalysisConfig, data: pd.DataFrame, endpoint: str) -> list[ModelOutput]:
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
    columns = [spec.duration, spec.event, spec.marker, "centre", *covariates] + (
        [SUBTYPE] if has_subtype else []
    )
    complete = data.dropna(subset=columns)
    result = fit_bayes_survival(complete, spec, seed=cfg.seed)
    return [
        ModelOutput(
            f"bayes_{endpoint}",
            "bayes",
            endpoint,
            result,
            f"Bayesian hierarchical piecewise-exponential model, {endpoint.upper()}",
        )
    ]


def _sensitivity_outputs(
    cfg: AnalysisConfig, data: pd.DataFrame, endpoint: str
) -> list[ModelOutput]:
    from pooled.models.cox import fit_cox
    from pooled.results import tidy_frame

    rows: list[dict[str, Any]] = []

    def marker_row(subset: pd.DataFrame, label: str, **changes: Any) -> None:
        """The marker's HR on ``subset``; an analysis the data cannot support is a row with a note."""
        spec = _cox_spec(cfg, endpoint, interactions=False, term_lr_tests=False, **changes)
        row: dict[str, Any]
        try:
            frame = fit_cox(subset, spec).to_frame()
            found = frame.loc[frame["term"] == cfg.exposure.name].iloc[0]
            row = {str(key): value for key, value in found.items()}
        except DataError as exc:
            warnings.warn(
                f"sensitivity analysis '{label}' ({endpoint}) skipped: {exc}",
                PooledWarning,
                stacklevel=3,
            )
            row = {"term": cfg.exposure.name, "note": f"not estimable: {exc}"}
        row.update(model=f"sensitivity: {label}", analysis=cfg.name, endpoint=endpoint)
        rows.append(row)

    if cfg.sensitivity.leave_one_centre_out and data["centre"].nunique() > 1:
        for centre in sorted(data["centre"].unique()):
            marker_row(data.loc[data["centre"] != centre], f"without {centre}")
    for threshold in cfg.sensitivity.thresholds:
        alt = data.copy()
        alt[cfg.exposure.name] = derive_exposure(alt, cfg.exposure, threshold=threshold)
        marker_row(alt.loc[alt[cfg.exposure.name].notna()], f"cut-off >= {threshold:g}")
    for method in cfg.sensitivity.missing:
        marker_row(data, method.replace("_", "-"), missing=method)
    if not rows:
        return []
    return [
        ModelOutput(
            f"sensitivity_{endpoint}",
            "sensitivity",
            endpoint,
            SensitivityResult(tidy_frame(rows)),
            f"Sensitivity analyses, {endpoint.upper()}",
        )
    ]


@dataclass(frozen=True, slots=True)
class SensitivityResult:
    """A tidy table of the marker's HR under each sensitivity analysis."""

    table: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


Step = tuple[str, Callable[[], list[ModelOutput]]]


def run_analysis(cfg: AnalysisConfig, ds: AnalysisDataset, *, progress: bool = False) -> RunOutput:
    """Run every model the config asks for on the analysis dataset.

    Parameters
    ----------
    cfg : AnalysisConfig
        From :func:`pooled.config.load_analysis_config`.
    ds : AnalysisDataset
        From :func:`pooled.dataset.build_analysis_dataset` (the store's latest or pinned
        versions); the cohort rules and exposure are applied here, each step in the flow.
    progress : bool
        Show a progress bar over the models.

    Returns
    -------
    RunOutput
        Deterministic for a given config, data and seed.

    Examples
    --------
    >>> run = run_analysis(load_analysis_config("configs/analyses/paddy.yaml"), ds)  # doctest: +SKIP
    >>> run.results().query("term == 'dtc_positive'")  # doctest: +SKIP
    """
    from pooled.models.km import median_followup

    cohort, serial_outputs = select_cohort(ds, cfg, progress=progress)
    cohort.flow.check(cohort.patients)
    patients = cohort.patients
    check_against_data(cfg, patients)
    steps: list[Step] = []
    sensitivity = cfg.sensitivity
    for endpoint in cfg.endpoints:
        data = _endpoint_frame(patients, endpoint)
        wanted: list[tuple[str, bool, Callable[[AnalysisConfig, pd.DataFrame, str], list[ModelOutput]]]] = [
            ("Kaplan-Meier", cfg.models.km, _km_outputs),
            ("Cox", cfg.models.cox, _cox_outputs),
            ("two-stage", cfg.models.two_stage and cfg.exposure.kind not in SERIAL_KINDS, _two_stage_outputs),
            ("Bayesian", cfg.models.bayes and (not cfg.models.bayes_endpoints or endpoint in cfg.models.bayes_endpoints), _bayes_outputs),
            ("sensitivity", endpoint == cfg.endpoints[0] and bool(sensitivity.leave_one_centre_out or sensitivity.thresholds or sensitivity.missing), _sensitivity_outputs),
        ]  # fmt: skip
        for label, enabled, fit in wanted:
            if enabled:
                steps.append((f"{label} {endpoint}", partial(fit, cfg, data, endpoint)))
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
        provenance={
            "config": cfg.path,
            "config_sha256": cfg.sha256,
            "seed": cfg.seed,
            "store": ds.provenance.get("store", ""),
            "upload_versions": dict(ds.versions),
            "upload_sha256": dict(ds.provenance.get("upload_sha256", {})),
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
