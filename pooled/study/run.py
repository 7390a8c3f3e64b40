"""Running a simulation study on the task engine: :func:`run_study` -> :class:`StudyResult`.

One task per replicate (:func:`pooled.study.estimators.run_replicate`: simulate the
consortium in memory, fit every estimator to every endpoint), run where the
:class:`~pooled.distributed.engine.ExecutionSpec` says, each result checkpointed as it arrives
when a folder is given (``<out>/tasks/replicate-000001.parquet``, ...), so an interrupted
study resumes and only its missing replicates are computed. The result's tables are the same
whatever the number of workers.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pooled.distributed.checkpoint import TaskCheckpoint
from pooled.distributed.engine import ExecutionSpec, Task, TaskRun, as_stored, run_tasks
from pooled.study.design import StudySpec, StudyTarget, study_targets
from pooled.study.estimators import ESTIMATE_COLUMNS, run_replicate
from pooled.study.performance import performance_measures, performance_wide

__all__ = ["StudyResult", "replicate_tasks", "run_study"]


@dataclass(frozen=True, slots=True)
class StudyResult:
    """A finished simulation study.

    Attributes
    ----------
    spec : the :class:`~pooled.study.design.StudySpec`.
    estimates : every replicate's estimates (columns of
        :data:`pooled.study.estimators.ESTIMATE_COLUMNS`; log-HR scale), replicates in order.
    performance : the tidy performance table (:func:`pooled.study.performance.performance_measures`).
    targets : endpoint -> the :class:`~pooled.study.design.StudyTarget` compared with.
    provenance : how it ran: the engine, wall time, tasks computed and reused, resubmitted
        tasks, package versions (not part of the tables, which do not depend on it).
    """

    spec: StudySpec
    estimates: pd.DataFrame
    performance: pd.DataFrame
    targets: Mapping[str, StudyTarget]
    provenance: Mapping[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """The tidy performance table (``performance.csv``)."""
        return self.performance.copy()

    def wide(self) -> pd.DataFrame:
        """One row per endpoint and method, measures and their Monte Carlo SEs side by side."""
        return performance_wide(self.performance)

    def targets_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"endpoint": t.endpoint, "target_log_hr": t.log_hr, "target_hr": t.hr,
                 "target_se": t.se, "source": t.source}
                for t in self.targets.values()
            ]
        )  # fmt: skip


def replicate_tasks(spec: StudySpec) -> list[Task]:
    """One task per replicate, keyed ``replicate-000001`` ..."""
    return [
        Task(f"replicate-{i + 1:06d}", run_replicate, (spec, i)) for i in range(spec.replicates)
    ]


def run_study(
    spec: StudySpec,
    *,
    execution: ExecutionSpec | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    on_result: Callable[[str, Any], None] | None = None,
) -> StudyResult:
    """Run a simulation study of the estimators on consortia of ``spec.scenario``.

    Parameters
    ----------
    spec : StudySpec
        Scenario, replicates, seed, size, endpoints, methods.
    execution : ExecutionSpec, optional
        Where the replicates run (default: in this process; ``ExecutionSpec(workers=2)`` a
        local Dask cluster; ``ExecutionSpec(scheduler="tcp://HOST:PORT")`` an existing one).
    checkpoint : path, optional
        Folder of finished replicates (created; ``manifest.json`` records the settings).
        Replicates found there are reused, not recomputed; a folder of another study's
        settings is refused. The number of replicates is not part of the settings, so a
        study can be extended.
    progress : bool
        A progress bar over the replicates.
    on_result : callable, optional
        ``on_result(key, frame)`` after each replicate is recorded.

    Returns
    -------
    StudyResult

    References
    ----------
    .. [1] Morris TP, White IR, Crowther MJ. Using simulation studies to evaluate statistical
       methods. Stat Med 2019;38:2074-102.

    Examples
    --------
    >>> res = run_study(StudySpec(scenario="epac", replicates=4, n_patients=600))  # doctest: +SKIP
    >>> res.wide()[["endpoint", "method", "bias", "bias_mcse", "coverage"]]  # doctest: +SKIP
    """
    targets = study_targets(spec)
    store = TaskCheckpoint(checkpoint, spec.manifest()) if checkpoint is not None else None
    run = run_tasks(
        replicate_tasks(spec),
        execution=execution,
        checkpoint=store,
        progress=progress,
        description=f"{spec.scenario}: replicates",
        on_result=on_result,
    )
    frames = [as_stored(f) if store is None else f for f in run.values()]
    estimates = pd.concat(frames, ignore_index=True)[list(ESTIMATE_COLUMNS)]
    performance = performance_measures(estimates, targets)
    return StudyResult(
        spec=spec,
        estimates=estimates,
        performance=performance,
        targets=targets,
        provenance=_provenance(spec, run, checkpoint),
    )


def _provenance(spec: StudySpec, run: TaskRun, checkpoint: str | Path | None) -> dict[str, Any]:
    from pooled.runner import _package_versions

    computed = list(run.task_seconds.values())
    return {
        "settings": spec.manifest(),
        "settings_digest": spec.digest(),
        "replicates": spec.replicates,
        "execution": run.execution.describe(),
        "workers": run.execution.workers,
        "scheduler": run.execution.scheduler,
        "wall_seconds": run.wall_seconds,
        "replicates_computed": len(run.computed),
        "replicates_reused": len(run.reused),
        "replicate_seconds_mean": sum(computed) / len(computed) if computed else float("nan"),
        "replicate_seconds_total": sum(computed),
        "resubmitted": dict(run.resubmitted),
        "duplicates_dropped": run.duplicates,
        "checkpoint": str(checkpoint) if checkpoint is not None else "",
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "packages": _package_versions(),
    }
