"""A study on a local Dask cluster: the same tables as in this process, every replicate
exactly once when workers are lost (the cluster restarted, a worker process killed), and an
interrupted study resumed by computing only the replicates it lacks."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pooled.distributed.engine import ExecutionSpec, engine
from pooled.study.run import StudyResult, run_study
from tests.study.conftest import SMALL


class Interrupted(Exception):
    """Stands for Ctrl-C or a killed job, after some replicates were stored."""


@pytest.fixture(scope="module")
def serial() -> StudyResult:
    return run_study(SMALL)


def _same_tables(a: StudyResult, b: StudyResult) -> None:
    pd.testing.assert_frame_equal(a.estimates, b.estimates, check_exact=True)
    pd.testing.assert_frame_equal(a.performance, b.performance, check_exact=True)


def _stored(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.parquet"))


ALL = [f"replicate-{i:06d}" for i in range(1, SMALL.replicates + 1)]


def test_serial_and_two_workers_give_identical_tables(serial: StudyResult, tmp_path: Path) -> None:
    parallel = run_study(SMALL, execution=ExecutionSpec(workers=2), checkpoint=tmp_path / "tasks")
    _same_tables(serial, parallel)
    assert parallel.provenance["workers"] == 2 and parallel.provenance["replicates_computed"] == 8
    assert _stored(tmp_path / "tasks") == ALL
    assert serial.estimates["replicate"].tolist() == sorted(serial.estimates["replicate"])


def test_a_restarted_cluster_still_gives_every_replicate_once(
    serial: StudyResult, tmp_path: Path
) -> None:
    recorded: list[str] = []
    with engine(ExecutionSpec(workers=2)) as cluster:

        def restart_after_two(key: str, frame: Any) -> None:
            recorded.append(key)
            if len(recorded) == 2:
                cluster.client.restart()  # every worker killed and replaced, futures cancelled

        result = run_study(SMALL, execution=cluster.spec, checkpoint=tmp_path / "tasks",
                           on_result=restart_after_two)  # fmt: skip
    assert sorted(recorded) == ALL  # each recorded once
    assert result.provenance["resubmitted"]  # the cancelled replicates ran again
    assert _stored(tmp_path / "tasks") == ALL
    _same_tables(serial, result)


def test_a_killed_worker_process_loses_no_replicate(serial: StudyResult, tmp_path: Path) -> None:
    recorded: list[str] = []
    killed: list[int] = []
    with engine(ExecutionSpec(workers=2)) as cluster:
        pids = cluster.client.run(os.getpid)

        def kill_a_busy_worker(key: str, frame: Any) -> None:
            recorded.append(key)
            if killed:
                return
            busy = [w for w, keys in cluster.client.processing().items() if keys]
            if busy:
                killed.append(pids[busy[0]])
                os.kill(pids[busy[0]], signal.SIGKILL)  # the nanny starts a new one

        result = run_study(SMALL, execution=cluster.spec, checkpoint=tmp_path / "tasks",
                           on_result=kill_a_busy_worker)  # fmt: skip
        assert killed and killed[0] not in cluster.client.run(os.getpid).values()
    assert sorted(recorded) == ALL
    assert _stored(tmp_path / "tasks") == ALL
    _same_tables(serial, result)


@pytest.mark.parametrize(
    "first", [ExecutionSpec(), ExecutionSpec(workers=2)], ids=["serial", "cluster"]
)
def test_an_interrupted_study_resumes_with_only_the_missing_replicates(
    serial: StudyResult, tmp_path: Path, first: ExecutionSpec
) -> None:
    folder = tmp_path / "tasks"

    def stop_after_three(key: str, frame: Any) -> None:
        if len(_stored(folder)) == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_study(SMALL, execution=first, checkpoint=folder, on_result=stop_after_three)
    done = _stored(folder)
    assert len(done) == 3
    computed: list[str] = []
    resumed = run_study(SMALL, execution=ExecutionSpec(workers=2) if first.kind == "serial" else ExecutionSpec(),
                        checkpoint=folder, on_result=lambda key, frame: computed.append(key))  # fmt: skip
    assert sorted(computed) == sorted(set(ALL) - set(done))
    assert resumed.provenance["replicates_reused"] == 3
    assert resumed.provenance["replicates_computed"] == SMALL.replicates - 3
    _same_tables(serial, resumed)


def test_a_longer_study_reuses_the_replicates_of_a_shorter_one(tmp_path: Path) -> None:
    from dataclasses import replace

    short = replace(SMALL, replicates=3)
    run_study(short, checkpoint=tmp_path)
    longer = run_study(replace(SMALL, replicates=5), checkpoint=tmp_path)
    assert longer.provenance["replicates_reused"] == 3
    assert longer.provenance["replicates_computed"] == 2
