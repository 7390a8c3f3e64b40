"""Benchmark: the task engine on this machine (1 and 2 Dask workers) and its overhead per task.

Two parts, written to ``bench/results/study.md``:

1. Wall time of a simulation study (``pooled.study``, scenario ``paddy`` at its published
   size, 10,307 patients in 11 centres, all four endpoints, the four default estimators) on a
   local Dask cluster of 1 and of 2 worker processes, and in this process without Dask. The
   cluster is started and warmed up (every worker has imported pooled and compiled the numba
   kernels on one replicate) before the clock starts, and every run writes its checkpoint, as
   ``pooled study`` does; the order 1, 2, 1, 2 workers is repeated and each setting's best
   run reported, with the load average of the machine before and after each run.
2. Overhead per task: tasks that do nothing but return a one-row frame, through the engine
   (in this process; 1 and 2 workers), with and without the parquet checkpoint. Overhead per
   task = (wall time - time inside the tasks / workers) / tasks: the wall time a task costs
   beyond its own work.

    .venv/bin/python -m bench.bench_study            # 120 replicates per run (about 8 minutes)
    .venv/bin/python -m bench.bench_study --quick    # 30 replicates

Both need the machine to themselves to mean anything: other jobs on the cores show up as a
lower speed-up, and the load average printed beside each run says how busy it was.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pandas as pd  # noqa: E402

from pooled.distributed.checkpoint import TaskCheckpoint  # noqa: E402
from pooled.distributed.engine import ExecutionSpec, Task, engine, run_tasks  # noqa: E402
from pooled.study.design import StudySpec  # noqa: E402
from pooled.study.estimators import run_replicate  # noqa: E402
from pooled.study.run import run_study  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "study.md"
SPEC = StudySpec(scenario="paddy", replicates=120, seed=2026)


def nothing(index: int) -> pd.DataFrame:
    """A task that does nothing: the engine's own cost is all there is."""
    return pd.DataFrame({"index": [index], "value": [float(index)]})


def load() -> float:
    return os.getloadavg()[0]


def warm(spec: StudySpec) -> None:
    """On a worker: import pooled and compile its kernels on one (small) replicate."""
    run_replicate(replace(spec, n_patients=2000), 0)


def time_study(spec: StudySpec, workers: int, folder: Path) -> dict[str, Any]:
    execution = ExecutionSpec(workers=workers)
    shutil.rmtree(folder, ignore_errors=True)
    with engine(execution) as opened:
        if workers:
            opened.client.run(warm, spec)  # type: ignore[attr-defined]
        else:
            warm(spec)
        before = load()
        start = time.perf_counter()
        result = run_study(spec, execution=execution, checkpoint=folder)
        wall = time.perf_counter() - start
    prov = result.provenance
    return {
        "workers": workers,
        "wall_s": wall,
        "replicate_s": prov["replicate_seconds_mean"],
        "replicates": prov["replicates_computed"],
        "load_before": before,
        "load_after": load(),
    }


def time_overhead(workers: int, checkpoint: bool, n: int, folder: Path) -> dict[str, Any]:
    execution = ExecutionSpec(workers=workers)
    shutil.rmtree(folder, ignore_errors=True)
    tasks = [Task(f"t{i:05d}", nothing, (i,)) for i in range(n)]
    with engine(execution):
        run_tasks(tasks[:20], execution=execution)  # warm up
        store = TaskCheckpoint(folder, {"bench": "overhead"}) if checkpoint else None
        start = time.perf_counter()
        run = run_tasks(tasks, execution=execution, checkpoint=store)
        wall = time.perf_counter() - start
    inside = sum(run.task_seconds.values())
    slots = max(workers, 1)
    return {
        "workers": workers,
        "checkpoint": checkpoint,
        "tasks": n,
        "wall_s": wall,
        "per_task_ms": 1000 * wall / n,
        "overhead_ms": 1000 * (wall - inside / slots) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 replicates, 300 empty tasks")
    parser.add_argument("--replicates", type=int, default=None)
    args = parser.parse_args()
    reps = args.replicates or (30 if args.quick else SPEC.replicates)
    spec = replace(SPEC, replicates=reps)
    n_empty = 300 if args.quick else 1000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tasks"
        for workers in (1, 2, 1, 2):
            row = time_study(spec, workers, folder)
            rows.append(row)
            print(row, flush=True)
        rows.append(time_study(spec, 0, folder))
        print(rows[-1], flush=True)
        overhead = []
        for workers in (0, 1, 2):
            for checkpoint in (False, True):
                row = time_overhead(workers, checkpoint, n_empty, folder)
                overhead.append(row)
                print(row, flush=True)
    write_report(spec, rows, overhead)


def write_report(
    spec: StudySpec, rows: list[dict[str, Any]], overhead: list[dict[str, Any]]
) -> None:
    frame = pd.DataFrame(rows)
    best = frame.groupby("workers")["wall_s"].min()
    speed_up = best.get(1, float("nan")) / best.get(2, float("nan"))
    lines = [
        "## Simulation studies on Dask (`bench/bench_study.py`)",
        "",
        f"`pooled.study` on {platform.machine()} with {os.cpu_count()} cores, Python "
        f"{platform.python_version()}: {spec.replicates} replicates of scenario `paddy` at its "
        f"published size ({spec.patients:,} patients, 11 centres), four endpoints x four "
        "estimators per replicate (stratified Cox, two-stage REML, two-stage REML + "
        "Hartung-Knapp, mixed Cox), each replicate's result written to the parquet checkpoint "
        "as it arrives. Local Dask cluster of 1 or 2 worker processes (one thread each), started "
        "and warmed up before timing; `in process` = `workers: 0` (no Dask). Load average "
        "(1 min) of the shared machine before and after each run.",
        "",
        "| run | workers | wall (s) | replicates / s | s per replicate (in the task) | load before | load after |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for i, row in enumerate(rows, 1):
        name = (
            "in process"
            if row["workers"] == 0
            else f"{row['workers']} worker" + ("s" if row["workers"] > 1 else "")
        )
        lines.append(
            f"| {i} | {name} | {row['wall_s']:.1f} | {row['replicates'] / row['wall_s']:.2f} | "
            f"{row['replicate_s']:.3f} | {row['load_before']:.2f} | {row['load_after']:.2f} |"
        )
    lines += [
        "",
        f"- Speed-up, best 1-worker run / best 2-worker run: **{speed_up:.2f}x** "
        f"({best.get(1, float('nan')):.1f} s / {best.get(2, float('nan')):.1f} s; target >= 1.7x "
        f"on 2 cores: {'met' if speed_up >= 1.7 else 'MISSED'}).",
        "",
        "Overhead per task: tasks that only return a one-row frame (no work), "
        f"{overhead[0]['tasks']:,} per run after a warm-up. `overhead` = (wall - time inside the "
        "tasks / workers) / tasks, the wall time a task costs beyond its own work: scheduling, "
        "sending, receiving and (with the checkpoint) writing each result as a parquet file. "
        "The driver (and the scheduler, a thread of it) shares the 2 cores with the workers.",
        "",
        "| engine | checkpoint | wall (s) | wall per task (ms) | overhead per task (ms) |",
        "|---|---|---:|---:|---:|",
    ]
    for row in overhead:
        name = (
            "in process"
            if row["workers"] == 0
            else f"{row['workers']} worker" + ("s" if row["workers"] > 1 else "")
        )
        lines.append(
            f"| {name} | {'yes' if row['checkpoint'] else 'no'} | {row['wall_s']:.2f} | "
            f"{row['per_task_ms']:.2f} | {row['overhead_ms']:.2f} |"
        )
    replicate = frame.loc[frame["workers"] > 0, "replicate_s"].mean()
    dask = [r for r in overhead if r["workers"] == 1 and r["checkpoint"]]
    if dask:
        share = dask[0]["overhead_ms"] / 1000 / replicate
        lines += [
            "",
            f"- A `paddy` replicate takes {replicate:.2f} s inside its task; the engine adds "
            f"{dask[0]['overhead_ms']:.1f} ms per task on a cluster with the checkpoint "
            f"({share:.1%} of a replicate).",
        ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
