"""What a simulation study simulates: :class:`StudySpec`, one replicate's consortium in
memory (:func:`simulate_replicate`) and the targets the estimators are compared with
(:func:`study_targets`).

A replicate is a whole consortium of the scenario (its centres, sizes and generative model,
:mod:`pooled.simulate.cohort`), drawn in memory as the clean harmonised table a perfect
harmonisation of the uploads gives (no files, no planted errors), with the covariates
missing completely at random as the centres record them (``missingness``). Replicate ``i``
draws from the ``i``-th child of ``SeedSequence(seed)`` (one grandchild per centre), so it is
the same consortium whichever worker draws it and however many replicates the study has.

The targets come from ``truth.json`` / ``pooled/simulate/estimands.json``: per endpoint, the
log hazard ratio of the marker that the adjusted Cox model stratified by centre converges to
(computed once from 1,000,000 patients), with the Monte Carlo SE of that computation.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from pooled.distributed.engine import task_seed
from pooled.errors import ConfigError
from pooled.simulate.scenarios import NO_SINGLE_MARKER_HR, SCENARIOS, STUDY_SCENARIOS

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "STUDY_SCENARIOS",
    "Method",
    "StudySpec",
    "StudyTarget",
    "analysis_covariates",
    "simulate_replicate",
    "study_targets",
]

Method = Literal["cox_stratified", "two_stage_reml", "two_stage_reml_knha", "mixed_cox", "bayes"]
METHODS: tuple[str, ...] = (
    "cox_stratified",
    "two_stage_reml",
    "two_stage_reml_knha",
    "mixed_cox",
    "bayes",
)
DEFAULT_METHODS: tuple[Method, ...] = (
    "cox_stratified",
    "two_stage_reml",
    "two_stage_reml_knha",
    "mixed_cox",
)
#: Version of what a replicate computes; part of the checkpoint manifest, so results of an
#: earlier version of the estimators are not mixed into a resumed study (2: REML tau^2 no
#: longer fails where Fisher scoring cycles, so two-stage fits that failed now have estimates).
STUDY_FORMAT = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class StudySpec:
    """A simulation study of the estimators on consortia of one scenario.

    Parameters
    ----------
    scenario : {"paddy", "epac", "early-ctc"}
        The scenario (``docs/scenarios.md``); ``trajectory`` has no single marker HR.
    replicates : int
        Simulated consortia.
    seed : int
        Replicate ``i`` draws from the ``i``-th child of ``SeedSequence(seed)``.
    n_patients, n_centres : int, optional
        Patients per consortium and centres (default: the scenario's published size).
    endpoints : tuple of str
        Endpoints analysed in every replicate (default: all of the scenario's).
    methods : tuple of str
        Estimators (``METHODS``): the adjusted Cox model stratified by centre, two-stage
        REML without and with Hartung-Knapp, the mixed-effects Cox model (random marker slope
        by centre, stratified baselines) and, optionally, the Bayesian one-stage model.
    level : float
        Confidence (credible) level of the intervals whose coverage is assessed.
    missingness : bool
        Covariates missing completely at random as the centres record them (complete-case
        analyses); false: every value recorded.

    Examples
    --------
    >>> StudySpec(scenario="paddy", replicates=500).endpoints_used
    ('os', 'bcss', 'dfs', 'ddfs')
    """

    scenario: str = "paddy"
    replicates: int = 500
    seed: int = 2026
    n_patients: int | None = None
    n_centres: int | None = None
    endpoints: tuple[str, ...] = ()
    methods: tuple[Method, ...] = DEFAULT_METHODS
    level: float = 0.95
    missingness: bool = True
    bayes_draws: int = field(default=500)

    def __post_init__(self) -> None:
        if self.scenario not in STUDY_SCENARIOS:
            why = NO_SINGLE_MARKER_HR.get(self.scenario)
            raise ConfigError(
                f"StudySpec.scenario must be one of {', '.join(STUDY_SCENARIOS)}; got "
                f"{self.scenario!r}" + (f" ({why})." if why else ".")
            )
        if self.replicates < 1:
            raise ConfigError(f"StudySpec.replicates must be >= 1; got {self.replicates}.")
        if self.seed < 0:
            raise ConfigError(f"StudySpec.seed must be >= 0; got {self.seed}.")
        if isinstance(self.endpoints, str) or isinstance(self.methods, str):
            raise ConfigError("StudySpec.endpoints and .methods expected tuples; got a string.")
        scenario = SCENARIOS[self.scenario]
        unknown = [e for e in self.endpoints if e not in scenario.endpoints]
        if unknown:
            raise ConfigError(
                f"StudySpec.endpoints: {', '.join(unknown)} not an endpoint of scenario "
                f"{self.scenario} ({', '.join(scenario.endpoints)})."
            )
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ConfigError(
                f"StudySpec.methods expected distinct methods among {', '.join(METHODS)}; got "
                f"{list(self.methods)}."
            )
        if not 0 < self.level < 1:
            raise ConfigError(f"StudySpec.level must lie in (0, 1); got {self.level}.")
        n = self.n_patients
        if n is not None and n < 10 * len(self.scenario_spec.centres):
            raise ConfigError(
                f"StudySpec.n_patients must be at least 10 per centre "
                f"({10 * len(self.scenario_spec.centres)}); got {n}."
            )

    @property
    def scenario_spec(self) -> Any:
        """The :class:`~pooled.simulate.scenarios.ScenarioSpec` simulated."""
        from pooled.simulate.scenarios import get_scenario

        return get_scenario(self.scenario, n_centres=self.n_centres)

    @property
    def endpoints_used(self) -> tuple[str, ...]:
        return self.endpoints or tuple(self.scenario_spec.endpoints)

    @property
    def patients(self) -> int:
        return int(self.n_patients or self.scenario_spec.n_patients)

    @property
    def marker(self) -> str:
        """The exposure column: ``dtc_positive`` or ``ctc_positive``."""
        return f"{self.scenario_spec.marker}_positive"

    def manifest(self) -> dict[str, Any]:
        """What one replicate's result depends on (everything but the number of replicates,
        so a study can be extended and its replicates reused)."""
        from pooled.simulate.truth import fingerprint

        record = asdict(self)
        record.pop("replicates")
        record["endpoints"] = list(self.endpoints_used)
        record["methods"] = list(self.methods)
        record["scenario_fingerprint"] = fingerprint(self.scenario_spec)
        record["format"] = STUDY_FORMAT
        return record

    def describe(self) -> str:
        return (
            f"{self.replicates} consortia of scenario {self.scenario} ({self.patients:,} "
            f"patients in {len(self.scenario_spec.centres)} centres each), seed {self.seed}"
        )

    def digest(self) -> str:
        """A short hash of :meth:`manifest` (names the study's settings)."""
        import json

        text = json.dumps(self.manifest(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def analysis_covariates(setting: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Adjustment covariates and categorical references, as ``configs/analyses/<scenario>.yaml``
    (and the adjusted estimand of ``truth.json``)."""
    if setting == "early":
        covariates = ("age", "tumour_size_mm", "positive_nodes", "grade", "subtype")
        return covariates, (("grade", "1"), ("subtype", "luminal_a"))
    return ("age", "subtype", "line_of_therapy"), (("subtype", "luminal_a"),)


def simulate_replicate(spec: StudySpec, index: int) -> pd.DataFrame:
    """Replicate ``index`` (0-based): one consortium of the study's scenario, in memory.

    Returns
    -------
    DataFrame
        One row per patient: ``centre``, the exposure (``spec.marker``, 1/0 from the marker
        count at the scenario's cut-off as the config derives it), ``marker_positive`` (the
        generating model's), the covariates (grade as text levels ``"1"``, ``"2"``, ``"3"``)
        and ``<endpoint>_months`` / ``<endpoint>_event`` (0/1 float).

    Examples
    --------
    >>> frame = simulate_replicate(StudySpec(scenario="epac", n_patients=400), 0)
    >>> len(frame), sorted(frame["ctc_positive"].unique())
    (400, [0.0, 1.0])
    """
    from pooled.simulate.cohort import simulate_patients
    from pooled.simulate.scenarios import centre_sizes

    scenario = spec.scenario_spec
    sizes = centre_sizes([c.weight for c in scenario.centres], spec.patients)
    children = task_seed(spec.seed, index).spawn(len(sizes))
    parts = [
        simulate_patients(
            scenario, centre, int(size), np.random.default_rng(child), missingness=spec.missingness
        )
        for centre, size, child in zip(scenario.centres, sizes, children, strict=True)
        if size > 0
    ]
    frame = pd.concat(parts, ignore_index=True)
    if scenario.marker == "dtc":
        count = frame["dtc_count"].to_numpy(dtype=float)
    else:
        count = frame["ctc_per_7_5ml"].to_numpy(dtype=float)
    marker = np.where(np.isnan(count), np.nan, (count >= scenario.marker_threshold).astype(float))
    covariates, _ = analysis_covariates(scenario.setting)
    out = pd.DataFrame({"centre": frame["centre"].astype(str), spec.marker: marker})
    out["marker_positive"] = frame["marker_positive"].to_numpy(dtype=bool)
    for name in covariates:
        if name == "grade":
            out["grade"] = [None if pd.isna(g) else f"{int(g)}" for g in frame["grade"]]
        else:
            out[name] = frame[name].to_numpy()
    for endpoint in spec.endpoints_used:
        out[f"{endpoint}_months"] = frame[f"{endpoint}_months"].to_numpy(dtype=float)
        out[f"{endpoint}_event"] = frame[f"{endpoint}_event"].to_numpy(dtype=float)
    return out


@dataclass(frozen=True, slots=True)
class StudyTarget:
    """The value an estimator's estimate is compared with, and where it comes from."""

    endpoint: str
    log_hr: float
    se: float
    source: str

    @property
    def hr(self) -> float:
        return float(np.exp(self.log_hr))


def study_targets(spec: StudySpec) -> dict[str, StudyTarget]:
    """Per endpoint: the adjusted stratified-Cox estimand of ``truth.json`` (log HR of the
    marker, with the Monte Carlo SE of its large-draw computation).

    Every estimator is compared with it: it is the only estimand the generating model defines
    for a main-effects marker HR (see ``docs/studies/paddy.md`` for why the two-stage and
    random-effects estimators may converge to slightly different values).
    """
    from pooled.simulate.truth import scenario_estimands

    estimands = scenario_estimands(spec.scenario_spec)
    out = {}
    for endpoint in spec.endpoints_used:
        adjusted = estimands["endpoints"][endpoint]["adjusted"]
        out[endpoint] = StudyTarget(
            endpoint=endpoint,
            log_hr=float(adjusted["log_hr"]),
            se=float(adjusted["se"]),
            source=(
                f"truth.json estimands.endpoints.{endpoint}.adjusted (stratified Cox, "
                f"{int(estimands['n_draw']):,} patients, seed {estimands['seed']})"
            ),
        )
    return out
