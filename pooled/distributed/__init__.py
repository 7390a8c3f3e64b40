"""Many independent fits on Dask: simulation studies, bootstraps, sensitivity grids.

:func:`run_tasks` runs a list of :class:`Task` s in this process or on a Dask cluster (a
local one of ``N`` worker processes, or an existing one by address; :class:`ExecutionSpec`),
with per-task seeds (:func:`task_seed`), results kept exactly once when workers are lost, a
progress bar, and a :class:`TaskCheckpoint` (one parquet file per finished task) from which
an interrupted run resumes. See :mod:`pooled.distributed.engine`.
"""

from pooled.distributed.checkpoint import TaskCheckpoint
from pooled.distributed.engine import ExecutionSpec, Task, TaskRun, engine, run_tasks, task_seed

__all__ = ["ExecutionSpec", "Task", "TaskCheckpoint", "TaskRun", "engine", "run_tasks", "task_seed"]
