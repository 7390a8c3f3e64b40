"""Scenario definitions: the generative models' parameters and their calibration targets.

A :class:`ScenarioSpec` holds everything the generator needs to draw a consortium: the
centres (size, upload format, accrual window, data cut-off, centre effects), the covariate
model, how marker positivity depends on covariates, the event-time model and the censoring
model. :data:`SCENARIOS` holds the four calibrated scenarios and ``ctc-count`` (the CTC count
as a continuous marker with a known concave hazard-ratio curve, :class:`CountEffect`); :func:`get_scenario` returns one,
optionally with another number of centres. The models themselves are documented in
``docs/scenarios.md``; the numbers here are the single source of truth.

The centre effects (a centre's log baseline hazard ``u_c`` and its deviation ``b_c`` of the
marker log hazard ratio, ``b_c ~ N(0, tau^2)``) are drawn once per scenario from a fixed seed
(``effects_seed``), not from the simulation seed: every draw of a scenario shares the same
true parameters, so the estimands of ``truth.json`` are constants of the scenario.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from pooled.errors import ConfigError

ScenarioName = Literal["paddy", "epac", "early-ctc", "trajectory", "ctc-count", "ctc-clearance"]
Setting = Literal["early", "metastatic"]
Marker = Literal["dtc", "ctc"]
SUBTYPES: tuple[str, ...] = ("luminal_a", "luminal_b", "her2_positive", "triple_negative")
ProfileName = Literal["xlsx_german", "csv_latin1", "sav_spss", "xlsx_serial", "csv_durations"]
PROFILES: tuple[str, ...] = (
    "xlsx_german",
    "csv_latin1",
    "sav_spss",
    "xlsx_serial",
    "csv_durations",
)


@dataclass(frozen=True, slots=True)
class CentreSpec:
    """One centre of a scenario.

    Attributes
    ----------
    name : consortium centre code (file stem of its upload and mapping).
    weight : share of the scenario's patients (weights are normalised).
    profile : the upload format (see :mod:`pooled.simulate.uploads`).
    accrual : first and last year of diagnosis / sampling (decimal years).
    cutoff : data cut-off (decimal year): administrative censoring.
    log_baseline : ``u_c``, the centre's log baseline hazard (added for every event hazard).
    log_hr_deviation : ``b_c``, the centre's deviation of the marker log hazard ratio.
    description : shown in the mapping YAML.
    """

    name: str
    weight: float
    profile: str
    accrual: tuple[float, float]
    cutoff: float
    log_baseline: float = 0.0
    log_hr_deviation: float = 0.0
    description: str = ""


@dataclass(frozen=True, slots=True)
class EarlyModel:
    """Event-time model of early disease (times in years from diagnosis).

    Cause-specific hazards: first recurrence (Weibull PH in covariates and marker, with a
    marker log HR per subtype), other-cause death (Gompertz in attained age, unaffected by the
    marker). A first recurrence is distant with probability ``expit(distant_logit +
    distant_marker * marker)``; a loco-regional first recurrence becomes distant later with
    probability ``later_distant`` after an exponential delay. After distant recurrence, death
    from breast cancer follows a Weibull time (median per subtype, shortened by the marker).
    """

    recurrence_shape: float
    recurrence_scale: float  # Weibull lambda in H(t) = lambda * t^shape (years)
    marker_log_hr: MappingProxyType[str, float]  # per subtype, recurrence hazard
    log_hr_size: float  # per log(size / 20 mm)
    log_hr_node_positive: float
    log_hr_nodes_4plus: float
    log_hr_grade3: float
    log_hr_subtype: MappingProxyType[str, float]
    log_hr_age_per_year: float
    distant_logit: float
    distant_marker: float
    later_distant: float
    later_distant_mean_years: float
    bc_death_median_years: MappingProxyType[str, float]
    bc_death_shape: float
    bc_death_marker_log_hr: float
    other_death_rate_at_60: float  # Gompertz hazard per year at age 60
    other_death_gompertz: float  # Gompertz slope per year of age
    unknown_cause_share: float


@dataclass(frozen=True, slots=True)
class MetastaticModel:
    """Event-time model of metastatic disease (times in months from the sample).

    Death: Weibull PH (shape ``os_shape``) with the marker log HR ``os_marker_log_hr`` (no
    interaction: the same HR in every subtype) and covariate effects. Progression: an
    independent Weibull PH time; PFS is the earlier of progression and death.
    """

    os_shape: float
    os_median_negative: float  # months, marker-negative reference patient
    os_marker_log_hr: float
    progression_shape: float
    progression_median_negative: float
    progression_marker_log_hr: float
    log_hr_age_per_year: float
    log_hr_line: float  # per line beyond the first
    log_hr_subtype: MappingProxyType[str, float]
    unknown_cause_share: float


@dataclass(frozen=True, slots=True)
class CountEffect:
    """The CTC count as a continuous marker: counts and their effect on the hazards.

    Counts per 7.5 ml: a structural zero with probability ``zero_share``, otherwise
    ``Poisson(lambda * volume / 7.5)`` with ``lambda ~ lognormal(log_mean, log_sd)`` per 7.5 ml
    (a heavy right tail). The log hazard ratio of death against a count of 0 is a concave,
    increasing, saturating curve of ``x = log1p(count per 7.5 ml)`` (:meth:`log_hr`):
    ``form = "tanh"``, ``f(x) = log_hr_max * tanh(rate * x)`` (no curvature at 0, as a natural
    spline assumes at its boundary knot); ``form = "exponential"``, ``f(x) = log_hr_max *
    (1 - exp(-rate * x))`` (the curve of ``make_splines.R``, curved most at 0); ``form =
    "linear"``, ``f(x) = rate * x`` (a control for the benchmark: inside every spline's span).
    Progression has ``progression_scale * f``.
    """

    log_hr_max: float = 1.6
    rate: float = 0.5
    form: Literal["tanh", "exponential", "linear"] = "tanh"
    zero_share: float = 0.15
    log_mean: float = math.log(6.0)
    log_sd: float = 1.6
    progression_scale: float = 0.6

    def log_hr(self, count_per_7_5ml: np.ndarray | float) -> np.ndarray:
        """True log hazard ratio of death at these counts per 7.5 ml against a count of 0.

        Examples
        --------
        >>> float(CountEffect().log_hr(0.0)), round(float(CountEffect().log_hr(20.0)), 3)
        (0.0, 1.455)
        """
        x = np.log1p(np.asarray(count_per_7_5ml, dtype=float))
        if self.form == "exponential":
            return self.log_hr_max * (1.0 - np.exp(-self.rate * x))
        if self.form == "linear":
            return self.rate * x
        return self.log_hr_max * np.tanh(self.rate * x)

    @property
    def description(self) -> str:
        if self.form == "linear":
            return f"f(x) = {self.rate:g} x, x = log1p(CTC per 7.5 ml)"
        curve = (
            f"(1 - exp(-{self.rate:g} x))"
            if self.form == "exponential"
            else f"tanh({self.rate:g} x)"
        )
        return f"f(x) = {self.log_hr_max:g} * {curve}, x = log1p(CTC per 7.5 ml)"


@dataclass(frozen=True, slots=True)
class CountMetastaticModel(MetastaticModel):
    """:class:`MetastaticModel` whose marker is the CTC count itself (:class:`CountEffect`):
    death and progression depend on the count through a smooth curve, not on positivity."""

    count_effect: CountEffect = field(default_factory=CountEffect)


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """A scenario: its centres, covariate and marker model, event and censoring model.

    Attributes
    ----------
    name, setting, marker : what is simulated.
    n_patients : default number of patients.
    centres : the centres (sizes from ``weight``).
    marker_threshold : positive at ``marker >= threshold`` (DTC per 2e6 cells, CTC per 7.5 ml).
    positivity : target share of marker-positive patients (the logistic intercept is
        calibrated to it on a large draw of the covariates).
    positivity_log_odds : log odds ratios of positivity for the covariates.
    early, metastatic : the event-time model of the setting.
    loss_rate : loss to follow-up per year (exponential censoring).
    tau : between-centre SD of the marker log hazard ratio (``b_c``).
    centre_baseline_sd : SD of the centres' log baseline hazards (``u_c``).
    effects_seed : seed of the centre effects (fixed per scenario).
    adjust_for : covariates of the adjusted Cox model whose limit is reported as the estimand.
    targets : published calibration targets (documentation and tests).
    reference : the publication(s) calibrated to.
    """

    name: str
    setting: Setting
    marker: Marker
    n_patients: int
    centres: tuple[CentreSpec, ...]
    marker_threshold: float
    positivity: float
    positivity_log_odds: MappingProxyType[str, float]
    early: EarlyModel | None = None
    metastatic: MetastaticModel | None = None
    loss_rate: float = 0.02
    tau: float = 0.0
    centre_baseline_sd: float = 0.0
    effects_seed: int = 0
    adjust_for: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()
    targets: MappingProxyType[str, float] = field(default_factory=lambda: MappingProxyType({}))
    reference: str = ""

    @property
    def n_centres(self) -> int:
        return len(self.centres)


def _frozen(d: dict[str, float]) -> MappingProxyType[str, float]:
    return MappingProxyType(dict(d))


_PADDY_CENTRES = (
    ("tuebingen", 0.21, "csv_latin1"),
    ("munich", 0.17, "xlsx_german"),
    ("oslo", 0.13, "csv_durations"),
    ("duesseldorf", 0.11, "xlsx_serial"),
    ("vienna", 0.09, "sav_spss"),
    ("heidelberg", 0.07, "xlsx_german"),
    ("ulm", 0.06, "csv_latin1"),
    ("hamburg", 0.055, "xlsx_serial"),
    ("kiel", 0.045, "csv_durations"),
    ("leeds", 0.035, "xlsx_german"),
    ("essen", 0.025, "sav_spss"),
)
_EARLY_CTC_CENTRES = (
    ("success_a", 0.47, "csv_latin1"),
    ("success_b", 0.19, "xlsx_german"),
    ("paris", 0.14, "xlsx_serial"),
    ("barcelona", 0.11, "sav_spss"),
    ("houston", 0.09, "csv_durations"),
)
_EPAC_CENTRES = (
    ("immc_houston", 0.14, "csv_latin1"),
    ("paris_curie", 0.11, "xlsx_german"),
    ("tuebingen_m", 0.09, "xlsx_serial"),
    ("hamburg_m", 0.08, "sav_spss"),
    ("milan", 0.07, "csv_durations"),
    ("rotterdam", 0.065, "xlsx_german"),
    ("leuven", 0.06, "csv_latin1"),
    ("barcelona_m", 0.055, "xlsx_serial"),
    ("duesseldorf_m", 0.05, "xlsx_german"),
    ("heidelberg_m", 0.045, "csv_latin1"),
    ("chicago", 0.04, "xlsx_serial"),
    ("montpellier", 0.035, "sav_spss"),
    ("munich_m", 0.03, "xlsx_german"),
    ("nijmegen", 0.025, "csv_latin1"),
    ("prato", 0.02, "xlsx_serial"),
    ("oslo_m", 0.02, "csv_durations"),
    ("vienna_m", 0.015, "xlsx_german"),
)
_CTC_COUNT_CENTRES = (
    ("rome", 0.18, "csv_latin1"),
    ("lyon", 0.14, "xlsx_german"),
    ("graz", 0.12, "xlsx_serial"),
    ("utrecht", 0.11, "sav_spss"),
    ("padua", 0.10, "csv_durations"),
    ("ghent", 0.09, "xlsx_german"),
    ("bergen", 0.08, "csv_latin1"),
    ("porto", 0.07, "xlsx_serial"),
    ("basel", 0.06, "xlsx_german"),
    ("turku", 0.05, "csv_latin1"),
)
_TRAJECTORY_CENTRES = tuple(
    (f"c{i + 1:02d}", 1.0, profile)
    for i, profile in enumerate(("xlsx_german", "xlsx_serial", "xlsx_german", "xlsx_serial") * 2)
)


def _centres(
    table: tuple[tuple[str, float, str], ...],
    *,
    accrual: tuple[float, float],
    cutoff: float,
    tau: float,
    baseline_sd: float,
    seed: int,
) -> tuple[CentreSpec, ...]:
    """Centres with their effects drawn from ``seed`` (fixed per scenario).

    Each centre's accrual window is shifted by up to a year and its cut-off by up to half a
    year, deterministically from the same seed.
    """
    rng = np.random.default_rng(seed)
    k = len(table)
    u = rng.normal(0.0, baseline_sd, size=k) if baseline_sd > 0 else np.zeros(k)
    b = rng.normal(0.0, tau, size=k) if tau > 0 else np.zeros(k)
    shift = rng.uniform(-1.0, 1.0, size=k)
    cut = rng.uniform(-0.5, 0.5, size=k)
    return tuple(
        CentreSpec(
            name=name,
            weight=weight,
            profile=profile,
            accrual=(round(accrual[0] + shift[i], 3), round(accrual[1] + shift[i], 3)),
            cutoff=round(cutoff + cut[i], 3),
            log_baseline=float(u[i]),
            log_hr_deviation=float(b[i]),
        )
        for i, (name, weight, profile) in enumerate(table)
    )


_EARLY_POSITIVITY = {
    "log_size": 0.35,
    "node_positive": 0.45,
    "hormone_negative": 0.30,
    "her2_positive": 0.35,
    "grade3": 0.30,
}

# Covariate effects on the recurrence hazard, the same in both early-disease scenarios.
_EARLY_COVARIATE_EFFECTS: dict[str, Any] = {
    "log_hr_size": 0.45,
    "log_hr_node_positive": 0.55,
    "log_hr_nodes_4plus": 0.40,
    "log_hr_grade3": 0.30,
    "log_hr_subtype": _frozen(
        {"luminal_a": 0.0, "luminal_b": 0.30, "her2_positive": 0.35, "triple_negative": 0.55}
    ),
    "log_hr_age_per_year": -0.005,
}
# Distant recurrence after a first local one: share and mean delay (years), both scenarios.
_LATER_DISTANT: dict[str, Any] = {"later_distant": 0.40, "later_distant_mean_years": 2.0}

PADDY = ScenarioSpec(
    name="paddy",
    setting="early",
    marker="dtc",
    n_patients=10_307,
    centres=_centres(
        _PADDY_CENTRES,
        accrual=(2005.5, 2015.5),
        cutoff=2019.5,
        tau=0.08,
        baseline_sd=0.15,
        seed=10_307,
    ),
    marker_threshold=1.0,
    positivity=0.273,
    positivity_log_odds=_frozen(_EARLY_POSITIVITY),
    early=EarlyModel(
        recurrence_shape=0.95,
        recurrence_scale=0.0135,
        marker_log_hr=_frozen(
            {
                "luminal_a": math.log(1.20),
                "luminal_b": math.log(1.68),
                "her2_positive": math.log(1.225),
                "triple_negative": math.log(1.27),
            }
        ),
        **_EARLY_COVARIATE_EFFECTS,
        distant_logit=0.30,
        distant_marker=0.0,
        **_LATER_DISTANT,
        bc_death_median_years=_frozen(
            {"luminal_a": 3.0, "luminal_b": 2.4, "her2_positive": 2.6, "triple_negative": 1.2}
        ),
        bc_death_shape=1.2,
        bc_death_marker_log_hr=math.log(1.08),
        other_death_rate_at_60=0.006,
        other_death_gompertz=0.09,
        unknown_cause_share=0.03,
    ),
    loss_rate=0.03,
    tau=0.08,
    centre_baseline_sd=0.15,
    effects_seed=10_307,
    adjust_for=("age", "tumour_size_mm", "positive_nodes", "grade", "subtype"),
    endpoints=("os", "bcss", "dfs", "ddfs"),
    targets=_frozen(
        {
            "positivity": 0.273,
            "median_followup_years": 7.6,
            "hr_os": 1.23,
            "hr_bcss": 1.38,
            "hr_dfs": 1.30,
        }
    ),
    reference=(
        "Hartkopf AD, Brucker SY, Taran FA, et al. Disseminated tumour cells from the bone "
        "marrow of early breast cancer patients: results from an international pooled "
        "analysis. Eur J Cancer 2021;154:128-37."
    ),
)

EARLY_CTC = ScenarioSpec(
    name="early-ctc",
    setting="early",
    marker="ctc",
    n_patients=3_173,
    centres=_centres(
        _EARLY_CTC_CENTRES,
        accrual=(2002.0, 2011.0),
        cutoff=2013.1,
        tau=0.06,
        baseline_sd=0.12,
        seed=3_173,
    ),
    marker_threshold=1.0,
    positivity=0.20,
    positivity_log_odds=_frozen(
        {
            "log_size": 0.25,
            "node_positive": 0.30,
            "hormone_negative": 0.10,
            "her2_positive": 0.10,
            "grade3": 0.15,
        }
    ),
    early=EarlyModel(
        recurrence_shape=0.95,
        recurrence_scale=0.0150,
        marker_log_hr=_frozen(
            {
                "luminal_a": math.log(1.775),
                "luminal_b": math.log(1.88),
                "her2_positive": math.log(1.775),
                "triple_negative": math.log(1.775),
            }
        ),
        **_EARLY_COVARIATE_EFFECTS,
        distant_logit=0.45,
        distant_marker=0.45,
        **_LATER_DISTANT,
        bc_death_median_years=_frozen(
            {"luminal_a": 2.6, "luminal_b": 2.0, "her2_positive": 2.2, "triple_negative": 1.0}
        ),
        bc_death_shape=1.2,
        bc_death_marker_log_hr=math.log(1.08),
        other_death_rate_at_60=0.001,
        other_death_gompertz=0.09,
        unknown_cause_share=0.02,
    ),
    loss_rate=0.03,
    tau=0.06,
    centre_baseline_sd=0.12,
    effects_seed=3_173,
    adjust_for=("age", "tumour_size_mm", "positive_nodes", "grade", "subtype"),
    endpoints=("os", "bcss", "dfs", "ddfs"),
    targets=_frozen(
        {
            "positivity": 0.20,
            "median_followup_years": 63 / 12,
            "hr_dfs": 1.8,
            "hr_ddfs": 1.9,
            "hr_bcss": 2.0,
            "hr_os": 2.0,
        }
    ),
    reference=(
        "Janni WJ, Rack B, Terstappen LWMM, et al. Pooled analysis of the prognostic relevance "
        "of circulating tumor cells in primary breast cancer. Clin Cancer Res 2016;22:2583-93."
    ),
)

EPAC = ScenarioSpec(
    name="epac",
    setting="metastatic",
    marker="ctc",
    n_patients=1_944,
    centres=_centres(
        _EPAC_CENTRES,
        accrual=(2004.0, 2013.0),
        cutoff=2016.0,
        tau=0.08,
        baseline_sd=0.12,
        seed=1_944,
    ),
    marker_threshold=5.0,
    positivity=0.50,
    positivity_log_odds=_frozen({"hormone_positive": 0.35, "later_line": 0.30}),
    metastatic=MetastaticModel(
        os_shape=1.27,
        os_median_negative=38.5,
        os_marker_log_hr=math.log(2.8),
        progression_shape=1.15,
        progression_median_negative=9.5,
        progression_marker_log_hr=math.log(1.72),
        log_hr_age_per_year=0.005,
        log_hr_line=0.08,
        log_hr_subtype=_frozen(
            {"luminal_a": 0.0, "luminal_b": 0.0, "her2_positive": 0.0, "triple_negative": 0.0}
        ),
        unknown_cause_share=0.05,
    ),
    loss_rate=0.03,
    tau=0.08,
    centre_baseline_sd=0.12,
    effects_seed=1_944,
    adjust_for=("age", "line_of_therapy", "subtype"),
    endpoints=("os", "pfs"),
    targets=_frozen(
        {
            "positivity": 0.50,
            "hr_pfs": 1.9,
            "hr_os": 2.8,
            "median_os_negative_months": 36.0,
            "median_os_positive_months": 16.0,
        }
    ),
    reference=(
        "Cristofanilli M, Pierga JY, Reuben J, et al. The clinical use of circulating tumor "
        "cells (CTCs) enumeration for staging of metastatic breast cancer (MBC): international "
        "expert consensus paper. Crit Rev Oncol Hematol 2019;134:39-45; Bidard FC, Peeters DJ, "
        "Fehm T, et al. Lancet Oncol 2014;15:406-14."
    ),
)

TRAJECTORY = ScenarioSpec(
    name="trajectory",
    setting="metastatic",
    marker="ctc",
    n_patients=469,
    centres=_centres(
        _TRAJECTORY_CENTRES,
        accrual=(2008.75, 2011.75),
        cutoff=2013.75,
        tau=0.0,
        baseline_sd=0.0,
        seed=40_502,
    ),
    marker_threshold=1.0,
    positivity=0.53,
    positivity_log_odds=_frozen({}),
    loss_rate=0.06,
    effects_seed=40_502,
    adjust_for=(),
    endpoints=("os", "pfs", "ttf"),
    targets=_frozen(
        {
            "positivity": 0.53,
            "share_undetectable": 0.57,
            "share_low": 0.24,
            "share_intermediate": 0.14,
            "share_high": 0.05,
            "hr_os_low": 2.6,
            "hr_os_intermediate": 5.3,
            "hr_os_high": 10.8,
        }
    ),
    reference=(
        "Magbanua MJM, Hendrix LH, Hyslop T, et al. Serial analysis of circulating tumor cells "
        "in metastatic breast cancer receiving first-line chemotherapy. J Natl Cancer Inst "
        "2021;113:443-52."
    ),
)

CTC_COUNT = ScenarioSpec(
    name="ctc-count",
    setting="metastatic",
    marker="ctc",
    n_patients=2_000,
    centres=_centres(
        _CTC_COUNT_CENTRES,
        accrual=(2008.0, 2014.0),
        cutoff=2018.0,
        tau=0.0,
        baseline_sd=0.15,
        seed=2_000,
    ),
    marker_threshold=5.0,
    positivity=0.47,  # share with >= 5 CTC per 7.5 ml under the count model (documentation)
    positivity_log_odds=_frozen({}),
    metastatic=CountMetastaticModel(
        os_shape=1.2,
        os_median_negative=40.0,
        os_marker_log_hr=1.6,  # the curve's plateau, log_hr_max (documentation)
        progression_shape=1.15,
        progression_median_negative=10.0,
        progression_marker_log_hr=0.96,  # 0.6 x the curve's plateau (documentation)
        log_hr_age_per_year=0.005,
        log_hr_line=0.08,
        log_hr_subtype=_frozen(
            {"luminal_a": 0.0, "luminal_b": 0.0, "her2_positive": 0.0, "triple_negative": 0.0}
        ),
        unknown_cause_share=0.05,
        count_effect=CountEffect(),
    ),
    loss_rate=0.03,
    tau=0.0,
    centre_baseline_sd=0.15,
    effects_seed=2_000,
    adjust_for=("age", "line_of_therapy", "subtype"),
    endpoints=("os", "pfs"),
    targets=_frozen({"zero_share": 0.15, "log_hr_max": 1.6, "hr_os_20_vs_0": math.exp(1.4545)}),
    reference=(
        "A simulated metastatic consortium for the CTC count as a continuous marker (no "
        "publication calibrated to), for the count as a continuous marker (Riley RD et al. BMJ "
        "2019;364:k4597: keep continuous markers continuous); counts as make_splines.R's."
    ),
)

_CLEARANCE_CENTRES = tuple(
    (f"s{i + 1:02d}", 1.0, profile) for i, profile in enumerate(("xlsx_serial", "xlsx_german") * 3)
)
CTC_CLEARANCE = ScenarioSpec(
    name="ctc-clearance",
    setting="metastatic",
    marker="ctc",
    n_patients=1200,
    centres=_centres(
        _CLEARANCE_CENTRES,
        accrual=(2006.2, 2009.2),
        cutoff=2012.0,
        tau=0.0,
        baseline_sd=0.0,
        seed=500,
    ),
    marker_threshold=5.0,
    positivity=0.55,
    positivity_log_odds=_frozen({}),
    loss_rate=0.0,
    effects_seed=500,
    adjust_for=(),
    endpoints=("os", "bcss"),
    targets=_frozen({"log_hr_current_status": 0.9, "baseline_positive": 0.55}),
    reference=(
        "Smerage JB, Barlow WE, Hortobagyi GN, et al. Circulating tumor cells and response to "
        "chemotherapy in metastatic breast cancer: SWOG S0500. J Clin Oncol 2014;32:3483-9. "
        "Model: pooled/simulate/clearance_model.py (a CTC status that changes over time)."
    ),
)

SCENARIOS: MappingProxyType[str, ScenarioSpec] = MappingProxyType(
    {s.name: s for s in (PADDY, EPAC, EARLY_CTC, TRAJECTORY, CTC_COUNT, CTC_CLEARANCE)}
)
#: Scenarios without one marker hazard ratio to estimate, and why (``pooled study`` refuses
#: them).
NO_SINGLE_MARKER_HR: MappingProxyType[str, str] = MappingProxyType(
    {
        "trajectory": "its exposure is a latent trajectory group, with no single marker hazard "
        "ratio",
        "ctc-clearance": "its CTC status changes over time, so a baseline-status hazard ratio is "
        "not its truth; bench/bench_time.py checks the time-dependent and landmark estimators",
    }
)
#: Scenarios ``pooled study`` can simulate: each has a marker hazard ratio per endpoint.
STUDY_SCENARIOS: tuple[str, ...] = tuple(s for s in SCENARIOS if s not in NO_SINGLE_MARKER_HR)


def get_scenario(name: str, *, n_centres: int | None = None) -> ScenarioSpec:
    """Return the scenario ``name``, optionally with ``n_centres`` centres.

    With another number of centres, the first centres keep their definitions (truncating the
    list), and extra centres are added with decreasing sizes, the upload formats cycled and
    their own centre effects drawn from the scenario's ``effects_seed``.

    Parameters
    ----------
    name : {"paddy", "epac", "early-ctc", "trajectory", "ctc-count", "ctc-clearance"}
    n_centres : int, optional

    Raises
    ------
    ConfigError
        Unknown scenario or a number of centres below 1.

    Examples
    --------
    >>> get_scenario("paddy").n_patients
    10307
    """
    try:
        spec = SCENARIOS[name]
    except KeyError:
        raise ConfigError(
            f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}."
        ) from None
    if n_centres is None or n_centres == spec.n_centres:
        return spec
    if n_centres < 1:
        raise ConfigError(f"n_centres must be at least 1; got {n_centres}.")
    if n_centres < spec.n_centres:
        return replace(spec, centres=spec.centres[:n_centres])
    rng = np.random.default_rng([spec.effects_seed, n_centres])
    extra = []
    last = spec.centres[-1]
    for i in range(spec.n_centres, n_centres):
        template = spec.centres[i % spec.n_centres]
        extra.append(
            replace(
                template,
                name=f"{spec.name.replace('-', '_')}_{i + 1:03d}",
                weight=last.weight * 0.97 ** (i - spec.n_centres + 1),
                log_baseline=float(rng.normal(0.0, spec.centre_baseline_sd))
                if spec.centre_baseline_sd > 0
                else 0.0,
                log_hr_deviation=float(rng.normal(0.0, spec.tau)) if spec.tau > 0 else 0.0,
            )
        )
    return replace(spec, centres=spec.centres + tuple(extra))


def centre_sizes(weights: np.ndarray | list[float], n: int) -> np.ndarray:
    """Split ``n`` patients by ``weights`` (largest remainder; every centre gets >= 1 if n allows)."""
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    raw = w * n
    sizes = np.floor(raw).astype(np.int64)
    remainder = n - int(sizes.sum())
    order = np.argsort(-(raw - sizes), kind="stable")
    sizes[order[:remainder]] += 1
    if n >= len(w):
        while (sizes == 0).any():
            sizes[np.argmax(sizes)] -= 1
            sizes[np.argmin(sizes)] += 1
    return sizes
