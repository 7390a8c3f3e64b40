"""What one analysis run produces: the hand-over from the runner to the report.

The runner (``pooled.runner``) walks the analysis steps (``pooled.steps``), which fit models
and return :class:`ModelOutput` s, and returns a :class:`RunOutput`; the report
(``pooled.report``) renders it and never goes back to the data. A run folder keeps the
pickled :class:`RunOutput` (``run.pkl``) so ``pooled report DIR`` rebuilds the report
without refitting.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from pooled.dataset import ExclusionFlow
from pooled.model_flow import ModelFlow
from pooled.results import tidy_frame

OutputKind = Literal[
    "cox",  # CoxResult (one-stage, stratified)
    "interaction",  # InteractionOutput: the fit, its LR test, the HR per level (subgroup forest)
    "two_stage",  # TwoStageResult (per-centre Cox + MetaResult)
    "km",  # KMResult (+ LogrankResult in `extra`)
    "logrank",  # LogrankResult
    "followup",  # FollowUpResult
    "zph",  # ProportionalHazardsResult
    "bayes",  # BayesResult
    "bayes_meta",  # BayesMetaResult
    "trajectory",  # TrajectorySelection / TrajectoryResult
    "comparison",  # exposure comparison (AIC table)
    "clearance",  # CTC clearance result
    "sensitivity",  # SensitivityResult: HR per sensitivity analysis (leave-one-centre-out, ...)
    "time_split",  # TimeSplitResult: the exposure's HR per period of follow-up, test of equality
    "mixed_cox",  # MixedCoxResult: random-effects Cox (coxme), tau, PI, shrunken centre HRs
    "count_response",  # CountResponseResult: HR curve of the count (spline), categories, AIC
    "added_value",  # AddedValueResult: LR test, Harrell's/Uno's C with and without the marker
    "validity",  # ValidityResult: per-centre C, IECV C and calibration slope, pooled
    "time_dependent",  # TimeDependentResult: Cox with the serial status carried forward
    "landmark",  # LandmarkResult: the Cox model at one landmark time
    "exposure_timing",  # ExposureTimingResult: baseline vs time-dependent vs landmark HRs
    "competing",  # CompetingRisksResult: cumulative incidence, Gray, cause-specific, Fine-Gray
    "bootstrap",  # CentreBootstrapResult: bootstrap-by-centre SEs and percentile intervals
]
RUN_PICKLE = "run.pkl"


@dataclass(frozen=True, slots=True)
class ModelOutput:
    """One fitted model of a run, with what a report needs to show it.

    ``flow`` accounts for the cohort patients the model (or, for a sensitivity table, each
    fit whose patients differ from the main model's) did not use.
    """

    name: str
    kind: OutputKind
    endpoint: str
    result: Any
    label: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    flow: ModelFlow | None = None

    def to_frame(self) -> pd.DataFrame:
        """The result's tidy table (empty when the result has none)."""
        to_frame = getattr(self.result, "to_frame", None)
        if to_frame is None:
            return tidy_frame([])
        frame = to_frame()
        if isinstance(frame, pd.DataFrame):
            frame = frame.copy()
            frame.insert(0, "output", self.name)
            return frame
        return tidy_frame([])


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


@dataclass(frozen=True, slots=True)
class SensitivityResult:
    """A tidy table of the marker's HR under each sensitivity analysis."""

    table: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


@dataclass(frozen=True, slots=True)
class RunOutput:
    """Everything one run of an analysis config produced.

    Attributes
    ----------
    name : the analysis name (from the config).
    config_text : the config file's text as run.
    flow : the exclusion flow of the analysis cohort (received -> analysed, per centre).
    characteristics : named tables of patient characteristics (e.g. ``by_marker``,
        ``by_centre``), ready to print.
    outputs : the fitted models, in report order.
    provenance : config and data hashes, upload versions per centre, package versions, seed.
    sample_flow : the serial samples' flow (received, excluded by reason, analysed), if any.
    model_flow : per model, endpoint and centre: the cohort, the patients the model did not
        use with the reason (endpoint or covariate missing, centre not estimable, left out
        by a sensitivity analysis) and the patients it analysed (``model_flow.csv``).
    """

    name: str
    config_text: str
    flow: ExclusionFlow
    characteristics: Mapping[str, pd.DataFrame]
    outputs: tuple[ModelOutput, ...]
    provenance: Mapping[str, Any]
    sample_flow: ExclusionFlow | None = None
    model_flow: ModelFlow | None = None

    def results(self) -> pd.DataFrame:
        """The tidy table of every model (``results.csv``)."""
        frames = [o.to_frame() for o in self.outputs]
        frames = [f for f in frames if len(f)]
        if not frames:
            return tidy_frame([])
        return pd.concat(frames, ignore_index=True)

    def of_kind(self, kind: OutputKind) -> list[ModelOutput]:
        return [o for o in self.outputs if o.kind == kind]

    def save(self, folder: str | Path) -> Path:
        """Pickle the run into ``folder/run.pkl`` and write ``folder/run.json`` (name,
        outputs, provenance and run.pkl's sha256, which :func:`load_run` checks)."""
        import hashlib
        import json

        path = Path(folder) / RUN_PICKLE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            pickle.dump(self, handle, protocol=pickle.HIGHEST_PROTOCOL)
        record = {
            "name": self.name,
            "outputs": [o.name for o in self.outputs],
            **dict(self.provenance),
            "run_pkl_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        (path.parent / "run.json").write_text(
            json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8"
        )
        return path


#: Modules whose classes a saved run may contain (anything else is refused when unpickling).
_TRUSTED_MODULES = (
    "pooled", "harmonization", "numpy", "pandas", "scipy", "xarray", "arviz", "datetime",
    "collections", "copyreg", "_codecs", "types", "functools", "builtins", "pytz", "dateutil",
    "zoneinfo", "cftime", "enum", "pathlib", "decimal", "uuid", "_operator", "operator",
)  # fmt: skip
_UNSAFE_BUILTINS = frozenset(
    {"eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr",
     "globals", "locals", "vars", "input", "breakpoint", "exit", "quit", "help", "memoryview"}
)  # fmt: skip


class _RunUnpickler(pickle.Unpickler):
    """Unpickles only classes of the modules a run is made of."""

    def find_class(self, module: str, name: str) -> Any:
        root = module.split(".")[0]
        if root not in _TRUSTED_MODULES or (root == "builtins" and name in _UNSAFE_BUILTINS):
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if root in ("operator", "_operator") and name in ("attrgetter", "methodcaller"):
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_run(folder: str | Path) -> RunOutput:
    """Read a run saved by :meth:`RunOutput.save` (by ``pooled run``).

    Only a ``run.pkl`` whose sha256 equals the one ``pooled run`` recorded in the folder's
    ``run.json`` is read, and only classes of the modules a run consists of are unpickled:
    a damaged or foreign file is refused with :class:`~pooled.errors.PooledError`.
    """
    import hashlib
    import json

    from pooled.errors import PooledError

    folder = Path(folder)
    path = folder / RUN_PICKLE
    if not path.is_file():
        raise PooledError(
            f"{folder}: no saved run ({RUN_PICKLE}); run `pooled run CONFIG --out {folder}` first."
        )
    try:
        record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        expected = record.get("run_pkl_sha256") if isinstance(record, dict) else None
    except (OSError, ValueError):
        expected = None
    if not expected:
        raise PooledError(
            f"{folder}: run.json is missing, damaged or does not record run.pkl's checksum, so "
            f"{RUN_PICKLE} is not read (it could be any file); run the analysis again."
        )
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise PooledError(
            f"{path}: does not match the run.pkl that `pooled run` wrote (checksum in run.json); "
            "it was changed or damaged, so it is not read. Run the analysis again."
        )
    try:
        with open(path, "rb") as handle:
            run = _RunUnpickler(handle).load()
    except Exception as exc:  # a damaged pickle raises many types
        raise PooledError(f"{path}: cannot be read ({type(exc).__name__}: {exc}).") from None
    if not isinstance(run, RunOutput):
        raise PooledError(f"{path}: not a saved pooled run.")
    return run
