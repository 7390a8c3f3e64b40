"""The bootstrap by centre (cluster bootstrap) of any estimate: refit on resampled centres.

Each replicate draws as many centres as there are, with replacement, and keeps every drawn
centre's patients whole; a centre drawn twice enters twice, each copy as a centre of its own
(own label ``<centre>#<draw>``, so its own baseline stratum in a model stratified by centre
and its own unit in a two-stage or random-effects model; Stata's ``bootstrap, cluster()
idcluster()``). Every estimate is refitted on the same resampled data, so their bootstrap
distributions are joint. The interval is the percentile interval of the replicates that gave
an estimate; the bootstrap SE their standard deviation.

The resampling respects the consortium's design: patients of one centre share its baseline
hazard, follow-up and recording, so resampling patients would understate the uncertainty of
anything that varies between centres (a pooled HR under heterogeneity, tau^2).

Replicates are tasks (:func:`pooled.distributed.engine.run_tasks`): replicate ``b`` draws from
``task_seed(seed, b, stream=BOOTSTRAP_STREAM)`` wherever it runs, so the same seed gives the
same intervals in this process and on any number of workers.

References
----------
.. [1] Davison AC, Hinkley DV. Bootstrap Methods and their Application. Cambridge University
   Press; 1997 (section 3.8, multi-stage sampling).
.. [2] Field CA, Welsh AH. Bootstrapping clustered data. J R Stat Soc B 2007;69:369-90.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pooled.distributed.engine import ExecutionSpec, Task, run_tasks, task_seed
from pooled.errors import ConfigError, ConvergenceError, DataError
from pooled.results import tidy_frame

__all__ = [
    "BOOTSTRAP_STREAM",
    "BootstrapTarget",
    "CentreBootstrapResult",
    "CentreBootstrapSpec",
    "fit_centre_bootstrap",
    "resample_centres",
]

#: The seed stream of the bootstrap (separate from the imputations' of the same seed).
BOOTSTRAP_STREAM = 0xB007
_NOT_ESTIMABLE = (DataError, ConvergenceError, np.linalg.LinAlgError)


@dataclass(frozen=True, slots=True, kw_only=True)
class CentreBootstrapSpec:
    """Options of the bootstrap by centre.

    Parameters
    ----------
    replicates : int
        Bootstrap replicates (at least 2; 200 for SEs, 1,000 or more for the tails of a
        percentile interval).
    level : float
        Level of the percentile interval.
    seed : int
        Replicate ``b`` draws from ``task_seed(seed, b, stream=BOOTSTRAP_STREAM)``.
    centre : str
        The column identifying centres.
    """

    replicates: int = 200
    level: float = 0.95
    seed: int = 2026
    centre: str = "centre"

    def __post_init__(self) -> None:
        if self.replicates < 2:
            raise ConfigError(
                f"CentreBootstrapSpec.replicates must be >= 2; got {self.replicates}."
            )
        if not 0 < self.level < 1:
            raise ConfigError(f"CentreBootstrapSpec.level must lie in (0, 1); got {self.level}.")


@dataclass(frozen=True, slots=True)
class BootstrapTarget:
    """One estimate to bootstrap: how to compute it from (resampled) data, and its labels.

    ``estimate(data) -> float`` must be picklable (a module-level function, or a
    ``functools.partial`` of one) to run on a cluster; it raises ``DataError`` or
    ``ConvergenceError`` when a replicate cannot support the model. Estimates are log hazard
    ratios (the table reports ``exp`` of them as ``hr`` and the interval).
    """

    name: str
    estimate: Callable[[pd.DataFrame], float]
    term: str = ""
    endpoint: str = ""
    analysis: str = ""
    source: str = ""
    n: float = math.nan
    events: float = math.nan


def resample_centres(
    data: pd.DataFrame, rng: np.random.Generator, *, centre: str = "centre"
) -> pd.DataFrame:
    """The patients of ``K`` centres drawn with replacement from the ``K`` centres of ``data``.

    Each draw keeps its centre's patients whole and is labelled ``<centre>#<draw>`` (draws
    numbered from 1), so a centre drawn twice is two centres.

    Examples
    --------
    >>> data = pd.DataFrame({"centre": list("aabbc"), "x": range(5)})
    >>> out = resample_centres(data, np.random.default_rng(1))
    >>> out["centre"].str.split("#").str[1].nunique()
    3
    """
    labels = data[centre].astype(str)
    centres = np.array(sorted(labels.unique()))
    if len(centres) < 2:
        raise DataError(
            f"The bootstrap by centre needs at least 2 centres; got {len(centres)} "
            f"({', '.join(centres)})."
        )
    positions = {c: np.flatnonzero(labels.to_numpy() == c) for c in centres}
    drawn = rng.integers(0, len(centres), len(centres))
    parts = []
    for j, k in enumerate(drawn):
        part = data.iloc[positions[centres[k]]].copy()
        part[centre] = f"{centres[k]}#{j + 1}"
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def bootstrap_replicate(
    spec: CentreBootstrapSpec,
    index: int,
    targets: Sequence[BootstrapTarget],
    *,
    data: pd.DataFrame,
) -> pd.DataFrame:
    """Replicate ``index`` (0-based): resample the centres, refit every target (a task)."""
    rng = np.random.default_rng(task_seed(spec.seed, index, stream=BOOTSTRAP_STREAM))
    sample = resample_centres(data, rng, centre=spec.centre)
    rows = []
    for target in targets:
        note = ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                value = float(target.estimate(sample))
            except _NOT_ESTIMABLE as exc:
                value, note = math.nan, f"{type(exc).__name__}: {exc}"[:200]
        rows.append({"replicate": index + 1, "name": target.name, "value": value, "note": note})
    return pd.DataFrame(rows, columns=["replicate", "name", "value", "note"])


@dataclass(frozen=True, slots=True)
class CentreBootstrapResult:
    """Bootstrap distributions and percentile intervals of several estimates.

    Attributes
    ----------
    spec : the :class:`CentreBootstrapSpec` used.
    targets : what was bootstrapped (labels; the functions are not needed to read it).
    original : name -> the estimate on the original data (``NaN`` with a note when it could
        not be computed).
    replicates : ``replicate, name, value, note``: each replicate's estimate (``NaN`` with the
        reason when the replicate could not support the model).
    notes : name -> why an estimate could not be bootstrapped at all (``""`` otherwise).
    execution : where the replicates ran (in words).
    n_centres : centres in the data (the clusters drawn from; 0 when not recorded).
    """

    spec: CentreBootstrapSpec
    targets: tuple[BootstrapTarget, ...]
    original: dict[str, float]
    replicates: pd.DataFrame
    notes: dict[str, str] = field(default_factory=dict)
    execution: str = ""
    n_centres: int = 0

    def values(self, name: str) -> np.ndarray:
        """The finite replicate estimates of ``name``."""
        part = self.replicates.loc[self.replicates["name"] == name, "value"].to_numpy(dtype=float)
        return part[np.isfinite(part)]

    def interval(self, name: str) -> tuple[float, float]:
        """Percentile interval of ``name`` on the estimate's (log) scale."""
        values = self.values(name)
        if len(values) < 2:
            return math.nan, math.nan
        alpha = 1 - self.spec.level
        lower, upper = np.quantile(values, [alpha / 2, 1 - alpha / 2])
        return float(lower), float(upper)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per estimate: ``estimate`` (on the original data),
        ``std_error`` (SD of the replicates), ``hr``, ``ci_lower``/``ci_upper`` (percentile
        interval, HR scale), ``n``/``events`` (of the original fit); extra columns
        ``bootstrap_of`` (the output re-estimated), ``replicates``, ``replicates_failed``,
        ``level``, ``bootstrap_mean``, ``note`` and ``row_type = "bootstrap"``."""
        rows = []
        for target in self.targets:
            values = self.values(target.name)
            lower, upper = self.interval(target.name)
            est = self.original.get(target.name, math.nan)
            failed = int(
                (self.replicates["name"] == target.name).sum() - len(values)
            ) if len(self.replicates) else self.spec.replicates  # fmt: skip
            rows.append(
                {
                    "analysis": target.analysis,
                    "endpoint": target.endpoint,
                    "model": "centre_bootstrap",
                    "term": target.term,
                    "estimate": est,
                    "std_error": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                    "hr": math.exp(est) if math.isfinite(est) else math.nan,
                    "ci_lower": math.exp(lower) if math.isfinite(lower) else math.nan,
                    "ci_upper": math.exp(upper) if math.isfinite(upper) else math.nan,
                    "n": target.n,
                    "events": target.events,
                    "bootstrap_of": target.source,
                    "replicates": len(values),
                    "replicates_failed": failed,
                    "level": self.spec.level,
                    "bootstrap_mean": float(values.mean()) if len(values) else math.nan,
                    "note": self.notes.get(target.name, "")
                    or _failure_note(self.replicates, target.name),
                    "row_type": "bootstrap",
                }
            )
        return tidy_frame(rows)


def _failure_note(replicates: pd.DataFrame, name: str) -> str:
    if not len(replicates):
        return ""
    notes = replicates.loc[(replicates["name"] == name) & (replicates["note"] != ""), "note"]
    if not len(notes):
        return ""
    first = notes.value_counts().index[0]
    return f"{len(notes)} replicates not estimable (e.g. {first})"


def fit_centre_bootstrap(
    data: pd.DataFrame,
    targets: Sequence[BootstrapTarget],
    spec: CentreBootstrapSpec,
    *,
    execution: ExecutionSpec | None = None,
    original: dict[str, float] | None = None,
) -> CentreBootstrapResult:
    """Bootstrap the ``targets`` by resampling centres; percentile intervals.

    Parameters
    ----------
    data : DataFrame
        One row per patient with the centre column; each target's ``estimate`` receives a
        resampled copy.
    targets : sequence of BootstrapTarget
        The estimates (unique names).
    spec : CentreBootstrapSpec
        Replicates, level, seed, centre column.
    execution : ExecutionSpec, optional
        Where the replicates run (default: in this process, or the enclosing engine).
    original : dict, optional
        The estimates on the original data when already known (else computed here).

    Returns
    -------
    CentreBootstrapResult

    References
    ----------
    .. [1] Davison AC, Hinkley DV. Bootstrap Methods and their Application. Cambridge
       University Press; 1997.
    .. [2] Field CA, Welsh AH. Bootstrapping clustered data. J R Stat Soc B 2007;69:369-90.

    Examples
    --------
    >>> # fit_centre_bootstrap(cohort, [BootstrapTarget("cox", partial(refit, spec=s))],
    >>> #                      CentreBootstrapSpec(replicates=200), execution=ExecutionSpec(workers=2))
    """
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"bootstrap targets need unique names; got {names}.")
    values = dict(original or {})
    notes: dict[str, str] = {}
    for target in targets:
        if target.name not in values:
            try:
                values[target.name] = float(target.estimate(data))
            except _NOT_ESTIMABLE as exc:
                values[target.name] = math.nan
                notes[target.name] = f"not estimable on the original data: {exc}"
    tasks = [
        Task(f"bootstrap-{b + 1:05d}", bootstrap_replicate, (spec, b, tuple(targets)))
        for b in range(spec.replicates)
    ]
    run = run_tasks(tasks, execution=execution, shared={"data": data}, description="bootstrap")
    replicates = pd.concat(run.values(), ignore_index=True)
    return CentreBootstrapResult(
        spec=spec,
        targets=tuple(targets),
        original=values,
        replicates=replicates,
        notes=notes,
        execution=run.execution.describe(),
        n_centres=int(data[spec.centre].nunique()),
    )
