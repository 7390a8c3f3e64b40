"""The task engine: many independent fits, in this process or on a Dask cluster.

A simulation study, a bootstrap, the refits of a sensitivity analysis and the imputations of
a multiple imputation are each a list of independent :class:`Task` s. :func:`run_tasks` runs
them where an :class:`ExecutionSpec` says:

* ``ExecutionSpec()`` (``workers=0``): in this process, one after another;
* ``ExecutionSpec(workers=N)``: on a local Dask cluster (``dask.distributed.LocalCluster``)
  of ``N`` worker processes with one thread each, started for the call (or once for several
  calls inside :func:`engine`), importing the same ``pooled`` as this process;
* ``ExecutionSpec(scheduler="tcp://HOST:PORT")``: on an existing Dask cluster.

Determinism. A task's randomness comes from its own arguments (:func:`task_seed` gives the
``numpy.random.SeedSequence`` of task ``i`` of a run seeded ``seed``, the ``i``-th child of
``SeedSequence(seed)`` whatever order the tasks run in), and every task runs with one BLAS
thread, so the same tasks give the same numbers in this process and on any number of workers.

Resilience. A worker that dies (its process killed, the cluster restarted) loses the tasks it
was running; Dask retries them on another worker, and a task whose future was cancelled or
killed is submitted again (up to ``retries`` times). Results are recorded by task key, so
each task's result is kept exactly once however often it ran. With a
:class:`~pooled.distributed.checkpoint.TaskCheckpoint` every result is written as it arrives
and the tasks already stored are not run again: an interrupted run resumes where it stopped.

Only the process calling :func:`run_tasks` writes (the checkpoint); workers compute and
return.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from pooled.distributed.checkpoint import TaskCheckpoint, check_task_key, round_trip
from pooled.errors import ConfigError, PooledError

__all__ = [
    "Engine",
    "ExecutionSpec",
    "Task",
    "TaskRun",
    "engine",
    "run_tasks",
    "task_seed",
]

EngineKind = Literal["serial", "local", "scheduler"]
_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionSpec:
    """Where the tasks of a run go.

    Parameters
    ----------
    workers : int
        ``0`` (default): in this process, one task after another. ``N >= 1``: a local Dask
        cluster of ``N`` worker processes, one thread each.
    scheduler : str
        Address of an existing Dask scheduler (``tcp://HOST:PORT``); then ``workers`` must be
        0 (the cluster has its own).
    retries : int
        How often a task lost with its worker (cancelled, killed) is submitted again.
    progress : bool
        Show a progress bar over the tasks.

    Examples
    --------
    >>> ExecutionSpec(workers=2).kind
    'local'
    >>> ExecutionSpec(scheduler="tcp://10.0.0.5:8786").describe()
    'the Dask cluster at tcp://10.0.0.5:8786'
    """

    workers: int = 0
    scheduler: str = ""
    retries: int = 3
    progress: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(
                f"ExecutionSpec.workers must be a whole number >= 0; got {self.workers!r}."
            )
        if self.scheduler:
            if self.workers:
                raise ConfigError(
                    f"ExecutionSpec: give workers (a local cluster) or scheduler (an existing "
                    f"cluster), not both; got workers={self.workers}, scheduler={self.scheduler!r}."
                )
            if not self.scheduler.startswith(_SCHEMES):
                raise ConfigError(
                    f"ExecutionSpec.scheduler expected an address such as tcp://HOST:PORT; got "
                    f"{self.scheduler!r}."
                )
        if self.retries < 0:
            raise ConfigError(f"ExecutionSpec.retries must be >= 0; got {self.retries}.")

    @property
    def kind(self) -> EngineKind:
        if self.scheduler:
            return "scheduler"
        return "local" if self.workers else "serial"

    def describe(self) -> str:
        """In words, for reports and progress messages."""
        if self.kind == "scheduler":
            return f"the Dask cluster at {self.scheduler}"
        if self.kind == "local":
            plural = "es" if self.workers > 1 else ""
            return f"a local Dask cluster of {self.workers} worker process{plural}"
        return "this process, one task after another"


@dataclass(frozen=True, slots=True)
class Task:
    """One independent piece of work: ``function(*args, **kwargs, **shared)``.

    ``key`` names the task in the checkpoint (a file name) and in the results; it must be the
    same for the same work in every run (``"replicate-000017"``). ``function`` and its
    arguments must be picklable (module-level functions, frozen specs, arrays, frames).
    """

    key: str
    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_task_key(self.key)


@dataclass(frozen=True, slots=True)
class TaskRun:
    """What :func:`run_tasks` did.

    Attributes
    ----------
    results : task key -> result, in the order of the tasks.
    computed : the keys computed in this call (task order).
    reused : the keys read from the checkpoint instead.
    resubmitted : task key -> how often it was submitted again after its worker was lost.
    duplicates : results that arrived for a task already recorded (dropped).
    task_seconds : key -> seconds the task's function ran (computed tasks).
    wall_seconds : seconds of the whole call (engine start included when it started here).
    execution : the :class:`ExecutionSpec` used.
    """

    results: Mapping[str, Any]
    computed: tuple[str, ...]
    reused: tuple[str, ...]
    resubmitted: Mapping[str, int]
    duplicates: int
    task_seconds: Mapping[str, float]
    wall_seconds: float
    execution: ExecutionSpec

    def values(self) -> list[Any]:
        """The results in task order."""
        return list(self.results.values())


def task_seed(seed: int, index: int, *, stream: int = 0) -> np.random.SeedSequence:
    """The seed sequence of task ``index`` of a run seeded ``seed``.

    The ``index``-th child of ``SeedSequence(seed)`` (``stream=0``), computed without
    spawning the ones before it, so it does not depend on the order or place the tasks run
    in. ``stream`` separates independent uses of one seed (the bootstrap and the imputations
    of one config).

    Examples
    --------
    >>> a = task_seed(7, 3)
    >>> b = np.random.SeedSequence(7).spawn(4)[3]
    >>> bool((a.generate_state(4) == b.generate_state(4)).all())
    True
    """
    key = (int(index),) if stream == 0 else (int(stream), int(index))
    return np.random.SeedSequence(int(seed), spawn_key=key)


_CONTROLLER: Any = None


def _one_blas_thread() -> Any:
    """A context with one BLAS/OpenMP thread (the process's controller, made once: finding
    the libraries costs milliseconds, switching their threads microseconds)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1)


def execute(
    function: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[Any, float]:
    """Run one task with one BLAS thread; return its result and the seconds it took."""
    with _one_blas_thread():
        start = time.perf_counter()
        result = function(*args, **kwargs)
        elapsed = time.perf_counter() - start
    return result, elapsed


Record = Callable[[str, Any, float], None]


class Engine(Protocol):
    """Runs tasks; :func:`engine` opens one."""

    spec: ExecutionSpec

    def map(
        self, tasks: Sequence[Task], shared: Mapping[str, Any], record: Record
    ) -> dict[str, int]:
        """Run ``tasks``, calling ``record(key, result, seconds)`` as each finishes; return
        the number of resubmissions per key."""
        ...


class SerialEngine:
    """Tasks in this process, in order."""

    def __init__(self, spec: ExecutionSpec) -> None:
        self.spec = spec

    def map(
        self, tasks: Sequence[Task], shared: Mapping[str, Any], record: Record
    ) -> dict[str, int]:
        for task in tasks:
            result, seconds = execute(task.function, task.args, {**task.kwargs, **shared})
            record(task.key, result, seconds)
        return {}


def _package_root() -> str:
    import pooled

    return str(Path(pooled.__file__).resolve().parent.parent)


class DaskEngine:
    """Tasks on a Dask cluster: a local one started here, or an existing one by address."""

    def __init__(self, spec: ExecutionSpec) -> None:
        from distributed import Client, LocalCluster

        self.spec = spec
        self.cluster: Any = None
        if spec.kind == "local":
            root = _package_root()
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
            self.cluster = LocalCluster(
                n_workers=spec.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # no fixed port: clusters side by side
                silence_logs=logging.ERROR,
                env={"PYTHONPATH": path},
            )
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(spec.scheduler, timeout="20s")
            except OSError as exc:
                raise PooledError(
                    f"cannot reach the Dask scheduler at {spec.scheduler} ({exc}); start it "
                    "(`dask scheduler`, then `dask worker ADDRESS`) or check the address."
                ) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()

    def _scatter(self, shared: Mapping[str, Any]) -> dict[str, Any]:
        if not shared:
            return {}
        names = list(shared)
        futures = self.client.scatter([shared[n] for n in names], broadcast=True, hash=False)
        return dict(zip(names, futures, strict=True))

    def map(
        self, tasks: Sequence[Task], shared: Mapping[str, Any], record: Record
    ) -> dict[str, int]:
        from distributed import as_completed

        client = self.client
        token = uuid.uuid4().hex[:8]
        scattered = self._scatter(shared)
        attempts: dict[str, int] = {}
        running: dict[str, tuple[Task, Any]] = {}

        def submit(task: Task) -> Any:
            n = attempts.get(task.key, 0)
            future = client.submit(
                execute,
                task.function,
                task.args,
                {**task.kwargs, **scattered},
                key=f"{task.key}-{token}-{n}",
                pure=False,
            )
            running[str(future.key)] = (task, future)
            return future

        queue = as_completed([submit(task) for task in tasks])
        try:
            for future in queue:
                task, _ = running.pop(str(future.key))
                if future.status == "finished":
                    try:
                        result, seconds = future.result()
                    except Exception as exc:  # lost between finishing and being fetched
                        if not _lost(exc):
                            raise
                    else:
                        future.release()
                        record(task.key, result, seconds)
                        continue
                elif future.status == "error" and not _lost(future.exception()):
                    future.result()  # the task's own exception, raised here with its traceback
                attempts[task.key] = attempts.get(task.key, 0) + 1
                if attempts[task.key] > self.spec.retries:
                    raise PooledError(
                        f"task {task.key} was lost with its worker {attempts[task.key]} times "
                        f"(last state: {future.status}); the cluster ({self.spec.describe()}) "
                        "keeps losing workers: check their memory and logs, then run again to "
                        "resume."
                    )
                if any(f.status != "finished" for f in scattered.values()):
                    scattered = self._scatter(shared)  # the shared data went with the workers
                queue.add(submit(task))
        finally:
            if running:  # interrupted: nothing left running for this call
                with contextlib.suppress(Exception):
                    client.cancel([future for _, future in running.values()])
        return attempts


def _lost(exc: BaseException | None) -> bool:
    """Whether an exception says the worker went away (not the task's own failure)."""
    if exc is None:
        return True
    import asyncio
    import concurrent.futures

    from distributed.scheduler import KilledWorker

    lost_types: tuple[type[BaseException], ...] = (
        KilledWorker,
        asyncio.CancelledError,
        concurrent.futures.CancelledError,
    )
    try:
        from distributed.comm.core import CommClosedError

        lost_types += (CommClosedError,)
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, lost_types)


_ACTIVE: contextvars.ContextVar[Engine | None] = contextvars.ContextVar(
    "pooled_engine", default=None
)


def _open(spec: ExecutionSpec) -> Engine:
    if spec.kind == "serial":
        return SerialEngine(spec)
    try:
        import distributed  # noqa: F401
    except ImportError:  # pragma: no cover - dask is a dependency
        raise ConfigError(
            f"{spec.describe()} needs dask.distributed; install it with "
            "`pip install 'dask[distributed]'`, or run with workers: 0."
        ) from None
    return DaskEngine(spec)


@contextlib.contextmanager
def engine(spec: ExecutionSpec) -> Iterator[Engine]:
    """Open the engine of ``spec`` once for every :func:`run_tasks` call inside the block.

    A local cluster starts when the block is entered and stops when it is left; a client of
    an existing cluster disconnects. ``run_tasks`` calls inside the block with the same spec
    (or none) use it.

    Examples
    --------
    >>> with engine(ExecutionSpec(workers=2)) as e:  # doctest: +SKIP
    ...     first = run_tasks(tasks_a, execution=e.spec)
    ...     second = run_tasks(tasks_b, execution=e.spec)
    """
    opened = _open(spec)
    token = _ACTIVE.set(opened)
    try:
        yield opened
    finally:
        _ACTIVE.reset(token)
        close = getattr(opened, "close", None)
        if close is not None:
            close()


def active_engine() -> Engine | None:
    """The engine of the enclosing :func:`engine` block, if any."""
    return _ACTIVE.get()


def run_tasks(
    tasks: Sequence[Task],
    *,
    execution: ExecutionSpec | None = None,
    shared: Mapping[str, Any] | None = None,
    checkpoint: TaskCheckpoint | None = None,
    progress: bool | None = None,
    description: str = "tasks",
    on_result: Callable[[str, Any], None] | None = None,
) -> TaskRun:
    """Run independent tasks where ``execution`` says; keep each result exactly once.

    Parameters
    ----------
    tasks : sequence of Task
        Unique keys. Task ``t`` runs ``t.function(*t.args, **t.kwargs, **shared)``.
    execution : ExecutionSpec, optional
        Where to run (default: the enclosing :func:`engine` block's, else in this process).
    shared : mapping, optional
        Inputs every task receives as keyword arguments (a cohort): sent to a cluster once,
        not once per task.
    checkpoint : TaskCheckpoint, optional
        Tasks stored there are not run again; every result is stored as it arrives (results
        must then be DataFrames, returned as they read back from parquet).
    progress : bool, optional
        A progress bar over the tasks (default ``execution.progress``).
    description : str
        The progress bar's label.
    on_result : callable, optional
        ``on_result(key, result)`` after each new result is recorded (tests use it to
        interrupt a run or restart the cluster mid-way).

    Returns
    -------
    TaskRun

    Raises
    ------
    PooledError
        A task was lost with its worker more than ``execution.retries`` times, or the
        scheduler cannot be reached. A task's own exception is raised as it is.

    Examples
    --------
    >>> def square(x: int) -> int:
    ...     return x * x
    >>> run = run_tasks([Task(f"t{i}", square, (i,)) for i in range(3)])
    >>> run.values()
    [0, 1, 4]
    """
    start = time.perf_counter()
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"task keys must be unique; repeated: {', '.join(twice[:5])}.")
    active = active_engine()
    spec = execution if execution is not None else (active.spec if active else ExecutionSpec())
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    reused: list[str] = []
    if checkpoint is not None:
        stored = checkpoint.done()
        for key in keys:
            if key in stored:
                results[key] = checkpoint.load(key)
                reused.append(key)
    pending = [t for t in tasks if t.key not in results]
    duplicates = 0
    show = spec.progress if progress is None else progress
    with _progress(show, len(tasks), len(reused), description) as advance:

        def record(key: str, result: Any, elapsed: float) -> None:
            nonlocal duplicates
            if key in results:
                duplicates += 1
                return
            if checkpoint is not None:
                result = checkpoint.save(key, result)
            results[key] = result
            seconds[key] = elapsed
            advance()
            if on_result is not None:
                on_result(key, result)

        resubmitted: dict[str, int] = {}
        if pending:
            if active is not None and active.spec == spec:
                resubmitted = active.map(pending, dict(shared or {}), record)
            else:
                with engine(spec) as opened:
                    resubmitted = opened.map(pending, dict(shared or {}), record)
    computed = tuple(k for k in keys if k in seconds)
    return TaskRun(
        results={k: results[k] for k in keys},
        computed=computed,
        reused=tuple(reused),
        resubmitted={k: v for k, v in resubmitted.items() if v},
        duplicates=duplicates,
        task_seconds={k: seconds[k] for k in computed},
        wall_seconds=time.perf_counter() - start,
        execution=spec,
    )


@contextlib.contextmanager
def _progress(
    enabled: bool, total: int, done: int, description: str
) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ) as bar:
        task = bar.add_task(description, total=total, completed=done)
        yield lambda: bar.advance(task)


def as_stored(frame: Any) -> Any:
    """A DataFrame result as a checkpoint gives it back (for runs without a checkpoint that
    must equal runs with one)."""
    import pandas as pd

    return round_trip(frame) if isinstance(frame, pd.DataFrame) else frame
