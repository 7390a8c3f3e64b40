"""Exposures derived from serial CTC counts, CTC clearance, and their comparison by AIC.

From the long table of serial samples (one row per blood draw) this module derives, per
patient:

* ``bCTC``: CTC status at baseline (``CTC+`` when the count per 7.5 ml reaches the threshold,
  5 in metastatic disease by default), as in Cristofanilli et al. 2004;
* ``b2CTC``: the change category from baseline to a named follow-up sample (``CTC-/CTC-``,
  ``CTC+/CTC-``, ``CTC-/CTC+``, ``CTC+/CTC+``), e.g. day 1 of cycle 2 (days 22-36);
* ``tCTC``: the trajectory group of a :class:`~pooled.models.trajectories.TrajectoryResult`;

then CTC clearance (among baseline-positive patients, the share negative at follow-up, with
exact Clopper-Pearson limits and a test between arms, as DETECT III's endpoint), and the
comparison of Cox models with each exposure on the same patients by AIC, as CALGB 40502 did.

Public API: :class:`SerialSpec`, :func:`derive_serial_exposures` -> :class:`SerialExposures`,
:func:`ctc_clearance` -> :class:`ClearanceResult`, :func:`compare_exposures` ->
:class:`ExposureComparison`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from pooled.errors import ConfigError, DataError
from pooled.models.cox import CoxResult, CoxSpec, fit_cox
from pooled.models.trajectories import TrajectoryResult
from pooled.results import tidy_frame

DAYS_PER_MONTH = 365.25 / 12
POSITIVE, NEGATIVE = "CTC+", "CTC-"
BCTC_LEVELS: tuple[str, ...] = (NEGATIVE, POSITIVE)
B2CTC_LEVELS: tuple[str, ...] = ("CTC-/CTC-", "CTC+/CTC-", "CTC-/CTC+", "CTC+/CTC+")
DEFAULT_ENDPOINTS: dict[str, tuple[str, str]] = {
    "OS": ("os_months", "os_event"),
    "PFS": ("pfs_months", "pfs_event"),
    "TTF": ("ttf_months", "ttf_event"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialSpec:
    """How serial samples become per-patient exposures.

    Parameters
    ----------
    patient, centre, count, volume, time, timepoint
        Column names of the serial-samples table (``centre`` and ``timepoint`` may be
        ``None``; ``volume=None`` treats every draw as ``reference_volume_ml``).
    time_unit
        Unit of ``time``: ``"days"`` (``days_from_baseline``) or ``"months"``; windows are
        always in days (a month is 365.25 / 12 days).
    baseline_timepoint
        The ``timepoint`` label of the baseline sample; ``None`` takes the latest sample with
        ``time`` in ``baseline_window``.
    baseline_window
        Days relative to baseline (inclusive) that count as baseline, default -30 to 0.
    followup_timepoint
        The ``timepoint`` label of the follow-up sample (e.g. ``"cycle2_day1"``); ``None``
        uses the window only.
    followup_window
        Days (inclusive) in which the follow-up sample must lie, default 22-36 (day 1 of
        cycle 2 of three-weekly chemotherapy, +/- a week); ``None``: any time after baseline.
        When several samples qualify, the one nearest the window's middle is used.
    threshold
        CTC+ when the count per ``reference_volume_ml`` is at least this (5 per 7.5 ml in
        metastatic breast cancer, Cristofanilli 2004; 1 per 7.5 ml in early disease).
    reference_volume_ml
        Counts are standardised to this volume: ``count * reference / volume``.
    """

    patient: str = "patient_id"
    centre: str | None = "centre"
    count: str = "ctc_count"
    volume: str | None = "ctc_blood_volume_ml"
    time: str = "days_from_baseline"
    time_unit: Literal["days", "months"] = "days"
    timepoint: str | None = "timepoint"
    baseline_timepoint: str | None = None
    baseline_window: tuple[float, float] = (-30.0, 0.0)
    followup_timepoint: str | None = None
    followup_window: tuple[float, float] | None = (22.0, 36.0)
    threshold: float = 5.0
    reference_volume_ml: float = 7.5

    def __post_init__(self) -> None:
        if self.time_unit not in ("days", "months"):
            raise ConfigError(
                f"SerialSpec.time_unit must be 'days' or 'months'; got {self.time_unit!r}."
            )
        for name in ("baseline_window", "followup_window"):
            window = getattr(self, name)
            if window is not None and (len(window) != 2 or window[0] > window[1]):
                raise ConfigError(
                    f"SerialSpec.{name} must be (first_day, last_day) with first <= last; "
                    f"got {window!r}."
                )
        if (
            self.baseline_timepoint is not None or self.followup_timepoint is not None
        ) and self.timepoint is None:
            raise ConfigError(
                "SerialSpec names a baseline or follow-up timepoint but timepoint=None; set "
                "timepoint= to the column holding the sample labels."
            )
        if self.threshold <= 0 or self.reference_volume_ml <= 0:
            raise ConfigError(
                f"SerialSpec.threshold and reference_volume_ml must be positive; got "
                f"{self.threshold} and {self.reference_volume_ml}."
            )


@dataclass(frozen=True, slots=True)
class SerialExposures:
    """Per-patient exposures derived from serial samples.

    Attributes
    ----------
    spec : SerialSpec
    patients : pandas.DataFrame
        One row per patient: ``<patient>, [centre], n_samples, baseline_day, baseline_count,
        baseline_volume_ml, baseline_ctc_per_ref, bCTC, followup_day, followup_timepoint,
        followup_count, followup_volume_ml, followup_ctc_per_ref, followup_ctc, b2CTC, tCTC,
        baseline_reason, followup_reason, trajectory_reason`` (``""`` when nothing is
        missing). ``bCTC``, ``followup_ctc``, ``b2CTC`` and ``tCTC`` are pandas Categoricals
        with the reference level first.
    missing : pandas.DataFrame
        ``exposure, reason, n_patients``: every patient without an exposure, by reason.
    """

    spec: SerialSpec
    patients: pd.DataFrame
    missing: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: patients per exposure level (``estimate`` the share among patients
        with the exposure, ``n`` the number) and per missing reason (``term``
        ``<exposure>: <reason>``)."""
        rows = []
        for exposure in ("bCTC", "b2CTC", "tCTC", "followup_ctc"):
            values = self.patients[exposure]
            known = int(values.notna().sum())
            for level, n in values.value_counts(sort=False).items():
                rows.append(
                    {
                        "analysis": "serial_ctc_exposures",
                        "endpoint": exposure,
                        "term": f"{exposure}={level}",
                        "estimate": n / known if known else np.nan,
                        "n": int(n),
                    }
                )
        for row in self.missing.to_dict("records"):
            rows.append(
                {
                    "analysis": "serial_ctc_exposures",
                    "endpoint": row["exposure"],
                    "term": f"{row['exposure']}: {row['reason']}",
                    "n": int(row["n_patients"]),
                }
            )
        return tidy_frame(rows)


def _days(values: pd.Series, spec: SerialSpec) -> np.ndarray:
    days = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return days * DAYS_PER_MONTH if spec.time_unit == "months" else days


def _status(per_ref: pd.Series, threshold: float) -> pd.Series:
    status = pd.Series(np.where(per_ref >= threshold, POSITIVE, NEGATIVE), index=per_ref.index)
    return status.where(per_ref.notna())


def derive_serial_exposures(
    samples: pd.DataFrame,
    spec: SerialSpec | None = None,
    *,
    trajectories: TrajectoryResult | None = None,
    patients: pd.DataFrame | None = None,
) -> SerialExposures:
    """Derive bCTC, b2CTC and tCTC per patient from the serial-samples table.

    Parameters
    ----------
    samples : pandas.DataFrame
        Long table, one row per blood draw, with the columns named in ``spec``.
    spec : SerialSpec, optional
        Column names, windows and threshold; default ``SerialSpec()``.
    trajectories : TrajectoryResult, optional
        A fitted trajectory model; its patient assignments become ``tCTC``.
    patients : pandas.DataFrame, optional
        All patients of the analysis (a column ``spec.patient``); patients without any
        sample are then kept, with the reason ``no samples``, so none disappears uncounted.

    Returns
    -------
    SerialExposures

    Raises
    ------
    DataError
        A named column is missing, or a count or volume is negative.

    References
    ----------
    .. [1] Cristofanilli M, Budd GT, Ellis MJ, et al. Circulating tumor cells, disease
       progression, and survival in metastatic breast cancer. N Engl J Med 2004;351:781-91.
    .. [2] Hayes DF, Cristofanilli M, Budd GT, et al. Circulating tumor cells at each follow-up
       time point during therapy of metastatic breast cancer patients predict progression-free
       and overall survival. Clin Cancer Res 2006;12:4218-24.
    .. [3] Magbanua MJM, Hendrix LH, Hyslop T, et al. J Natl Cancer Inst 2021;113:443-52.

    Examples
    --------
    >>> spec = SerialSpec(time="days_from_baseline", followup_window=(22, 36))
    >>> exposures = derive_serial_exposures(samples, spec)  # doctest: +SKIP
    >>> exposures.missing  # doctest: +SKIP
    """
    spec = spec or SerialSpec()
    needed = [spec.patient, spec.count, spec.time]
    needed += [c for c in (spec.volume, spec.timepoint, spec.centre) if c]
    absent = [c for c in needed if c not in samples.columns]
    if absent:
        raise DataError(
            f"The serial-samples table lacks the column(s) {', '.join(absent)} named in "
            f"SerialSpec; it has {', '.join(map(str, samples.columns))}. Rename the columns or "
            "set them in SerialSpec (centre=None, timepoint=None, volume=None if absent)."
        )
    frame = pd.DataFrame(
        {
            "patient": samples[spec.patient].to_numpy(),
            "day": _days(samples[spec.time], spec),
            "count": pd.to_numeric(samples[spec.count], errors="coerce").to_numpy(dtype=float),
            "volume": (
                pd.to_numeric(samples[spec.volume], errors="coerce").to_numpy(dtype=float)
                if spec.volume
                else np.full(len(samples), spec.reference_volume_ml)
            ),
            "timepoint": (
                samples[spec.timepoint].astype("string").to_numpy()
                if spec.timepoint
                else np.full(len(samples), pd.NA)
            ),
        }
    )
    if (frame["count"] < 0).any() or (frame["volume"] <= 0).any():
        raise DataError(
            f"Serial samples need counts >= 0 and volumes > 0 in {spec.count!r} / "
            f"{spec.volume!r}; found negative counts or non-positive volumes. Fix the upload."
        )
    frame["per_ref"] = frame["count"] * spec.reference_volume_ml / frame["volume"]
    frame["usable"] = frame["per_ref"].notna() & np.isfinite(frame["day"])

    ids = pd.unique(frame["patient"])
    if patients is not None:
        if spec.patient not in patients.columns:
            raise DataError(
                f"The patient table lacks the column {spec.patient!r}; it has "
                f"{', '.join(map(str, patients.columns))}."
            )
        ids = pd.unique(np.concatenate([patients[spec.patient].to_numpy(), ids]))
    out = pd.DataFrame({spec.patient: ids})
    if spec.centre:
        centres = samples.groupby(spec.patient, sort=False)[spec.centre].first()
        if patients is not None and spec.centre in patients.columns:
            centres = patients.set_index(spec.patient)[spec.centre].combine_first(centres)
        out[spec.centre] = out[spec.patient].map(centres)
    out["n_samples"] = out[spec.patient].map(frame.groupby("patient").size()).fillna(0)
    out["n_samples"] = out["n_samples"].astype(int)

    # baseline: the latest usable sample in the baseline window (or with the baseline label)
    if spec.baseline_timepoint is not None:
        in_baseline = frame["timepoint"] == spec.baseline_timepoint
    else:
        lo, hi = spec.baseline_window
        in_baseline = (frame["day"] >= lo) & (frame["day"] <= hi)
    in_baseline = in_baseline.fillna(False).astype(bool)
    candidates = frame[in_baseline]
    has_candidate = set(candidates["patient"])
    chosen = candidates[candidates["usable"]].sort_values("day", kind="stable")
    baseline = chosen.groupby("patient", sort=False).tail(1).set_index("patient")

    for column, source in (
        ("baseline_day", "day"),
        ("baseline_count", "count"),
        ("baseline_volume_ml", "volume"),
        ("baseline_ctc_per_ref", "per_ref"),
    ):
        out[column] = out[spec.patient].map(baseline[source])
    out["bCTC"] = _status(out["baseline_ctc_per_ref"], spec.threshold)
    out["baseline_reason"] = np.select(
        [
            out["n_samples"] == 0,
            ~out[spec.patient].isin(has_candidate),
            out["baseline_ctc_per_ref"].isna(),
        ],
        ["no samples", "no sample in the baseline window", "baseline count or volume missing"],
        default="",
    )

    # follow-up: after the baseline sample, in the window / with the label, nearest the middle
    frame["baseline_day"] = frame["patient"].map(baseline["day"])
    after = frame["day"] > frame["baseline_day"]
    qualifies = after.fillna(False).astype(bool)
    if spec.followup_timepoint is not None:
        qualifies &= (frame["timepoint"] == spec.followup_timepoint).fillna(False).astype(bool)
    if spec.followup_window is not None:
        lo, hi = spec.followup_window
        qualifies &= (frame["day"] >= lo) & (frame["day"] <= hi)
        target = (lo + hi) / 2
    else:
        target = -np.inf
    follow = frame[qualifies].copy()
    has_follow_candidate = set(follow["patient"])
    follow = follow[follow["usable"]]
    follow["distance"] = np.abs(follow["day"] - target)
    follow = follow.sort_values(["distance", "day"], kind="stable")
    follow = follow.groupby("patient", sort=False).head(1).set_index("patient")
    for column, source in (
        ("followup_day", "day"),
        ("followup_timepoint", "timepoint"),
        ("followup_count", "count"),
        ("followup_volume_ml", "volume"),
        ("followup_ctc_per_ref", "per_ref"),
    ):
        out[column] = out[spec.patient].map(follow[source])
    out["followup_ctc"] = _status(out["followup_ctc_per_ref"], spec.threshold)
    where = []
    if spec.followup_timepoint is not None:
        where.append(f"labelled {spec.followup_timepoint!r}")
    if spec.followup_window is not None:
        where.append(f"on days {spec.followup_window[0]:g}-{spec.followup_window[1]:g}")
    no_follow = "no follow-up sample " + (" ".join(where) if where else "after baseline")
    out["followup_reason"] = np.select(
        [
            out["baseline_reason"] != "",
            ~out[spec.patient].isin(has_follow_candidate),
            out["followup_ctc_per_ref"].isna(),
        ],
        ["no baseline", no_follow, "follow-up count or volume missing"],
        default="",
    )
    out.loc[out["baseline_reason"] != "", "followup_ctc"] = np.nan
    both = out["bCTC"].notna() & out["followup_ctc"].notna()
    b2 = out["bCTC"].astype("string") + "/" + out["followup_ctc"].astype("string")
    out["b2CTC"] = b2.where(both)

    # trajectory group
    if trajectories is not None:
        assignments = trajectories.assignments.set_index(trajectories.spec.patient)["label"]
        out["tCTC"] = out[spec.patient].map(assignments)
        tctc_levels: tuple[str, ...] = trajectories.labels
        out["trajectory_reason"] = np.where(
            out["tCTC"].isna(), "not in the trajectory model (no usable samples)", ""
        )
    else:
        out["tCTC"] = pd.Series(pd.NA, index=out.index, dtype="object")
        tctc_levels = ()
        out["trajectory_reason"] = "no trajectory model given"

    out["bCTC"] = pd.Categorical(out["bCTC"], categories=BCTC_LEVELS)
    out["followup_ctc"] = pd.Categorical(out["followup_ctc"], categories=BCTC_LEVELS)
    out["b2CTC"] = pd.Categorical(out["b2CTC"], categories=B2CTC_LEVELS)
    out["tCTC"] = pd.Categorical(out["tCTC"], categories=tctc_levels)

    missing_rows = []
    for exposure, reason_column in (
        ("bCTC", "baseline_reason"),
        ("b2CTC", "followup_reason"),
        ("tCTC", "trajectory_reason"),
    ):
        counts = out.loc[out[exposure].isna(), reason_column].value_counts(sort=True)
        for reason, n in counts.items():
            missing_rows.append({"exposure": exposure, "reason": reason, "n_patients": int(n)})
    missing = pd.DataFrame(missing_rows, columns=["exposure", "reason", "n_patients"])
    return SerialExposures(spec=spec, patients=out, missing=missing)


# ---------------------------------------------------------------------------------------------
# CTC clearance


@dataclass(frozen=True, slots=True)
class ClearanceResult:
    """CTC clearance among baseline-positive patients.

    Attributes
    ----------
    by : str or None
    table : pandas.DataFrame
        One row per level of ``by`` and an ``all`` row: ``level, n_baseline_positive,
        n_no_followup, n_evaluable, n_cleared, share_cleared, ci_lower, ci_upper``
        (Clopper-Pearson).
    test : str
        ``"fisher"`` (two levels), ``"chi2"`` (more) or ``""`` (no ``by``).
    statistic, df, p_value : float
        Odds ratio (Fisher) or Pearson chi-square and its degrees of freedom; NaN if no test.
    confidence : float
    n_baseline_negative, n_no_baseline : int
        Patients outside the clearance denominator, counted.
    """

    by: str | None
    table: pd.DataFrame
    test: str
    statistic: float
    df: float
    p_value: float
    confidence: float
    n_baseline_negative: int
    n_no_baseline: int

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per level (``estimate`` the share cleared, ``n`` evaluable,
        ``events`` cleared); the test's p-value on every row."""
        rows = []
        for row in self.table.to_dict("records"):
            rows.append(
                {
                    "analysis": "ctc_clearance",
                    "endpoint": "clearance",
                    "model": "clopper_pearson",
                    "term": f"{self.by}={row['level']}" if self.by else str(row["level"]),
                    "estimate": row["share_cleared"],
                    "ci_lower": row["ci_lower"],
                    "ci_upper": row["ci_upper"],
                    "p_value": self.p_value,
                    "n": row["n_evaluable"],
                    "events": row["n_cleared"],
                    "n_baseline_positive": row["n_baseline_positive"],
                    "n_no_followup": row["n_no_followup"],
                    "test": self.test,
                }
            )
        return tidy_frame(rows)


def _clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def ctc_clearance(
    data: pd.DataFrame | SerialExposures,
    *,
    by: str | None = None,
    confidence: float = 0.95,
) -> ClearanceResult:
    """Share of baseline CTC-positive patients who are CTC-negative at follow-up.

    Parameters
    ----------
    data : pandas.DataFrame or SerialExposures
        One row per patient with ``bCTC`` and ``followup_ctc`` (as made by
        :func:`derive_serial_exposures`) and the ``by`` column (merge the arm in first).
    by : str, optional
        Column of groups compared (treatment arm, trajectory group).
    confidence : float
        Level of the exact (Clopper-Pearson) interval.

    Returns
    -------
    ClearanceResult
        Shares with exact limits; Fisher's exact test for two groups, Pearson's chi-square
        test of independence otherwise. Baseline-positive patients without a follow-up
        sample are counted (``n_no_followup``), not silently dropped.

    References
    ----------
    .. [1] Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated in the
       case of the binomial. Biometrika 1934;26:404-13.
    .. [2] Smerage JB, Barlow WE, Hortobagyi GN, et al. Circulating tumor cells and response to
       chemotherapy in metastatic breast cancer: SWOG S0500. J Clin Oncol 2014;32:3483-9.
    .. [3] Fehm T, Mueller V, Banys-Paluchowski M, et al. Efficacy of lapatinib in patients
       with HER2-negative metastatic breast cancer and HER2-positive circulating tumor cells:
       the DETECT III clinical trial. Clin Chem 2024;70:307-18.

    Examples
    --------
    >>> res = ctc_clearance(exposures.patients.merge(arms), by="arm")  # doctest: +SKIP
    >>> res.table, res.p_value  # doctest: +SKIP
    """
    frame = data.patients if isinstance(data, SerialExposures) else data
    for column in ("bCTC", "followup_ctc") + ((by,) if by else ()):
        if column not in frame.columns:
            raise DataError(
                f"ctc_clearance needs the column {column!r}; the data have "
                f"{', '.join(map(str, frame.columns))}. Derive the exposures with "
                "derive_serial_exposures and merge the grouping column in."
            )
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1); got {confidence}.")
    baseline = frame["bCTC"].astype("string")
    positive = frame[baseline == POSITIVE]
    n_negative = int((baseline == NEGATIVE).sum())
    n_no_baseline = int(baseline.isna().sum())
    if by is not None:
        positive = positive[positive[by].notna()]
        levels = list(pd.unique(positive[by]))
        if isinstance(frame[by].dtype, pd.CategoricalDtype):
            levels = [c for c in frame[by].cat.categories if c in set(levels)]
        else:
            levels = sorted(levels, key=str)
    else:
        levels = []
    rows = []
    counts = []
    for level in [*levels, "all"]:
        part = positive if level == "all" else positive[positive[by] == level]
        follow = part["followup_ctc"].astype("string")
        evaluable = int(follow.notna().sum())
        cleared = int((follow == NEGATIVE).sum())
        lo, hi = _clopper_pearson(cleared, evaluable, confidence)
        rows.append(
            {
                "level": level,
                "n_baseline_positive": len(part),
                "n_no_followup": len(part) - evaluable,
                "n_evaluable": evaluable,
                "n_cleared": cleared,
                "share_cleared": cleared / evaluable if evaluable else np.nan,
                "ci_lower": lo,
                "ci_upper": hi,
            }
        )
        if level != "all" and evaluable:
            counts.append([cleared, evaluable - cleared])
    table = pd.DataFrame(rows)
    test, statistic, df, p_value = "", np.nan, np.nan, np.nan
    if len(counts) == 2:
        test = "fisher"
        result = stats.fisher_exact(np.asarray(counts))
        statistic, df, p_value = float(result[0]), 1.0, float(result[1])
    elif len(counts) > 2:
        test = "chi2"
        table_counts = np.asarray(counts)
        if (table_counts.sum(axis=0) == 0).any():
            statistic, df, p_value = 0.0, float(len(counts) - 1), 1.0
        else:
            chi = stats.chi2_contingency(table_counts, correction=False)
            statistic, df, p_value = float(chi[0]), float(chi[2]), float(chi[1])
    return ClearanceResult(
        by=by,
        table=table,
        test=test,
        statistic=statistic,
        df=df,
        p_value=p_value,
        confidence=confidence,
        n_baseline_negative=n_negative,
        n_no_baseline=n_no_baseline,
    )


# ---------------------------------------------------------------------------------------------
# comparison of exposures by AIC


@dataclass(frozen=True, slots=True, kw_only=True)
class ExposureComparisonSpec:
    """Options of :func:`compare_exposures` (see there)."""

    exposures: tuple[str, ...] = ("bCTC", "b2CTC", "tCTC")
    endpoints: tuple[tuple[str, str, str], ...] = ()
    covariates: tuple[str, ...] = ()
    categorical: tuple[tuple[str, str], ...] = ()
    strata: tuple[str, ...] = ("centre",)
    references: tuple[tuple[str, str], ...] = ()
    ties: Literal["efron", "breslow"] = "efron"


@dataclass(frozen=True, slots=True)
class ExposureComparison:
    """Cox models of each endpoint on each serial-CTC exposure, compared by AIC.

    Attributes
    ----------
    spec : ExposureComparisonSpec
    table : pandas.DataFrame
        One row per endpoint, exposure and non-reference level: ``endpoint, exposure, level,
        reference, log_hr, std_error, hr, ci_lower, ci_upper, p_value, n, events, aic,
        delta_aic, lowest_aic``.
    models : pandas.DataFrame
        One row per endpoint and exposure: ``endpoint, exposure, n, events, df, loglik, aic,
        delta_aic, lowest_aic``.
    excluded : pandas.DataFrame
        ``endpoint, reason, n_patients`` of the patients left out of the common set.
    fits : Mapping[tuple[str, str], CoxResult]
        The Cox fits by ``(endpoint, exposure)``.
    """

    spec: ExposureComparisonSpec
    table: pd.DataFrame
    models: pd.DataFrame
    excluded: pd.DataFrame
    fits: Mapping[tuple[str, str], CoxResult] = field(repr=False)

    def best(self, endpoint: str) -> str:
        """The exposure with the lowest AIC for ``endpoint``."""
        rows = self.models[(self.models["endpoint"] == endpoint) & self.models["lowest_aic"]]
        if rows.empty:
            raise ConfigError(
                f"Endpoint {endpoint!r} expected among {sorted(set(self.models['endpoint']))}."
            )
        return str(rows["exposure"].iloc[0])

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per level (``term`` ``<exposure>=<level>``); extra columns
        ``exposure, level, reference, aic, delta_aic, lowest_aic`` and
        ``exposure_lr_p_value`` (likelihood-ratio test of the exposure as a whole against the
        covariates alone, on the same patients)."""
        rows = []
        for row in self.table.to_dict("records"):
            rows.append(
                {
                    "analysis": "serial_ctc_comparison",
                    "endpoint": row["endpoint"],
                    "model": f"cox_stratified {row['exposure']}"
                    if self.spec.strata
                    else f"cox {row['exposure']}",
                    "term": f"{row['exposure']}={row['level']}",
                    "estimate": row["log_hr"],
                    "std_error": row["std_error"],
                    "hr": row["hr"],
                    "ci_lower": row["ci_lower"],
                    "ci_upper": row["ci_upper"],
                    "p_value": row["p_value"],
                    "n": row["n"],
                    "events": row["events"],
                    "exposure": row["exposure"],
                    "level": row["level"],
                    "reference": row["reference"],
                    "aic": row["aic"],
                    "delta_aic": row["delta_aic"],
                    "lowest_aic": row["lowest_aic"],
                    "exposure_lr_p_value": row["lr_p_value"],
                }
            )
        return tidy_frame(rows)


def _reference(series: pd.Series, exposure: str, given: Mapping[str, str]) -> str:
    if exposure in given:
        return given[exposure]
    present = set(series.dropna().astype(str))
    if isinstance(series.dtype, pd.CategoricalDtype):
        for level in series.cat.categories:
            if str(level) in present:
                return str(level)
    for defaults in (BCTC_LEVELS, B2CTC_LEVELS):
        for level in defaults:
            if level in present:
                return level
    return sorted(present)[0]


def compare_exposures(
    patients: pd.DataFrame,
    exposures: Sequence[str] = ("bCTC", "b2CTC", "tCTC"),
    *,
    endpoints: Mapping[str, tuple[str, str]] | None = None,
    covariates: Sequence[str] = (),
    categorical: Sequence[tuple[str, str]] = (),
    strata: Sequence[str] = ("centre",),
    references: Mapping[str, str] | None = None,
    ties: Literal["efron", "breslow"] = "efron",
) -> ExposureComparison:
    """Fit a Cox model per endpoint and exposure on the same patients and compare AICs.

    For every endpoint, the patients are those with the endpoint, every exposure, every
    covariate and the strata known (complete cases across all exposures), so the AICs are
    comparable; the exposure with the lowest AIC is flagged, as in the CALGB 40502 analysis.

    Parameters
    ----------
    patients : pandas.DataFrame
        One row per patient: exposures (e.g. from :func:`derive_serial_exposures` merged with
        the outcomes), endpoint columns, covariates, strata.
    exposures : sequence of str
        Categorical exposure columns, each entered alone (with the covariates) in its own model.
    endpoints : mapping of name -> (time column, event column), optional
        Default: those of OS (``os_months, os_event``), PFS and TTF present in ``patients``.
    covariates, categorical : sequence
        Adjustment covariates and which of them are categorical (with reference level).
    strata : sequence of str
        Stratification of the baseline hazard (default by centre).
    references : mapping, optional
        Reference level per exposure; default the first category (``CTC-``, ``CTC-/CTC-``,
        the lowest trajectory group).
    ties : {"efron", "breslow"}

    Returns
    -------
    ExposureComparison

    References
    ----------
    .. [1] Akaike H. A new look at the statistical model identification. IEEE Trans Automat
       Contr 1974;19:716-23.
    .. [2] Magbanua MJM, Hendrix LH, Hyslop T, et al. Serial analysis of circulating tumor
       cells in metastatic breast cancer receiving first-line chemotherapy. J Natl Cancer Inst
       2021;113:443-52.

    Examples
    --------
    >>> cmp = compare_exposures(data, covariates=("age",), strata=("centre",))  # doctest: +SKIP
    >>> cmp.best("OS")  # doctest: +SKIP
    'tCTC'
    """
    exposures = tuple(exposures)
    if not exposures:
        raise ConfigError("compare_exposures needs at least one exposure; got none.")
    if endpoints is None:
        endpoints = {
            name: cols
            for name, cols in DEFAULT_ENDPOINTS.items()
            if all(c in patients.columns for c in cols)
        }
        if not endpoints:
            raise ConfigError(
                "compare_exposures found none of the default endpoint columns "
                "(os_months/os_event, pfs_months/pfs_event, ttf_months/ttf_event); pass "
                "endpoints={'OS': ('time_column', 'event_column')}."
            )
    given_refs = dict(references or {})
    spec = ExposureComparisonSpec(
        exposures=exposures,
        endpoints=tuple((name, t, e) for name, (t, e) in endpoints.items()),
        covariates=tuple(covariates),
        categorical=tuple(categorical),
        strata=tuple(strata),
        references=tuple(given_refs.items()),
        ties=ties,
    )
    needed = [*exposures, *covariates, *strata]
    for _, t, e in spec.endpoints:
        needed += [t, e]
    absent = [c for c in dict.fromkeys(needed) if c not in patients.columns]
    if absent:
        raise ConfigError(
            f"compare_exposures: column(s) {', '.join(absent)} expected in the patient table; "
            f"it has {', '.join(map(str, patients.columns))}."
        )
    rows, model_rows, excluded_rows = [], [], []
    fits: dict[tuple[str, str], CoxResult] = {}
    for name, time_col, event_col in spec.endpoints:
        order = [time_col, event_col, *exposures, *covariates, *strata]
        missing = patients[list(dict.fromkeys(order))].isna()
        first_missing = missing.idxmax(axis=1).where(missing.any(axis=1))
        for column, n in first_missing.value_counts(sort=False).items():
            excluded_rows.append(
                {"endpoint": name, "reason": f"missing {column}", "n_patients": int(n)}
            )
        data = patients[~missing.any(axis=1)].copy()
        if data.empty:
            raise DataError(
                f"compare_exposures: no patient has {name}, every exposure and covariate "
                "known; check the exclusions."
            )
        for exposure in exposures:
            data[exposure] = data[exposure].astype(str).where(data[exposure].notna())
        # the exposure's likelihood-ratio test: against the covariates alone, same patients
        base_loglik: float | None = None
        if covariates:
            base = fit_cox(
                data,
                CoxSpec(
                    duration=time_col, event=event_col, covariates=tuple(covariates),
                    categorical=tuple(categorical), strata=tuple(strata), ties=ties,
                    term_lr_tests=False,
                ),
            )  # fmt: skip
            base_loglik = base.loglik
        for exposure in exposures:
            reference = _reference(patients[exposure], exposure, given_refs)
            if isinstance(patients[exposure].dtype, pd.CategoricalDtype):
                data[exposure] = pd.Categorical(
                    data[exposure], categories=[str(c) for c in patients[exposure].cat.categories]
                )
            cox_spec = CoxSpec(
                duration=time_col,
                event=event_col,
                covariates=(exposure, *covariates),
                categorical=((exposure, reference), *categorical),
                strata=tuple(strata),
                ties=ties,
                term_lr_tests=False,
                analysis="serial_ctc_comparison",
                endpoint=name,
            )
            fit = fit_cox(data, cox_spec)
            fits[(name, exposure)] = fit
            levels = dict(fit.levels)[exposure]
            frame = fit.to_frame().set_index("term")
            for level in levels[1:]:
                term = f"{exposure}{level}"
                r = frame.loc[term]
                rows.append(
                    {
                        "endpoint": name,
                        "exposure": exposure,
                        "level": level,
                        "reference": levels[0],
                        "log_hr": r["estimate"],
                        "std_error": r["std_error"],
                        "hr": r["hr"],
                        "ci_lower": r["ci_lower"],
                        "ci_upper": r["ci_upper"],
                        "p_value": r["p_value"],
                        "n": fit.n,
                        "events": fit.events,
                        "aic": fit.aic,
                    }
                )
            lr_chisq = 2.0 * (
                fit.loglik - (fit.loglik_null if base_loglik is None else base_loglik)
            )
            lr_df = len(levels) - 1
            model_rows.append(
                {
                    "endpoint": name,
                    "exposure": exposure,
                    "n": fit.n,
                    "events": fit.events,
                    "df": fit.n_parameters,
                    "loglik": fit.loglik,
                    "aic": fit.aic,
                    "lr_chisq": lr_chisq,
                    "lr_df": lr_df,
                    "lr_p_value": float(stats.chi2.sf(lr_chisq, lr_df)),
                }
            )
    models = pd.DataFrame(model_rows)
    lowest = models.groupby("endpoint")["aic"].transform("min")
    models["delta_aic"] = models["aic"] - lowest
    models["lowest_aic"] = models["delta_aic"] == 0
    table = pd.DataFrame(rows)
    table = table.merge(
        models[["endpoint", "exposure", "delta_aic", "lowest_aic", "lr_p_value"]],
        on=["endpoint", "exposure"],
    )
    excluded = pd.DataFrame(excluded_rows, columns=["endpoint", "reason", "n_patients"])
    return ExposureComparison(spec=spec, table=table, models=models, excluded=excluded, fits=fits)
