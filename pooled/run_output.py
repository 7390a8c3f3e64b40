"""What one analysis run produces: the hand-over from the runner to the report.

The runner (``pooled.runner``) fits models and returns a :class:`RunOutput`; the report
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
    "interaction",  # InteractionTestResult + effect_within_levels frame (subgroup forest)
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
    "sensitivity",  # a frame of sensitivity estimates (leave-one-centre-out, cut-offs, ...)
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
        """Pickle the run into ``folder/run.pkl`` (read back with :func:`load_run`)."""
        path = Path(folder) / RUN_PICKLE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            pickle.dump(self, handle, protocol=pickle.HIGHEST_PROTOCOL)
        return path


def load_run(folder: str | Path) -> RunOutput:
    """Read a run saved by :meth:`RunOutput.save`."""
    from pooled.errors import PooledError

    path = Path(folder) / RUN_PICKLE
    if not path.exists():
        raise PooledError(
            f"{folder}: no saved run ({RUN_PICKLE}); run `pooled run CONFIG --out {folder}` first."
        )
    with open(path, "rb") as handle:
        run = pickle.load(handle)
    if not isinstance(run, RunOutput):
        raise PooledError(f"{path}: not a saved pooled run.")
    return run
