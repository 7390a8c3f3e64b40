"""The task engine: seeds, keys, order, errors, in this process and on a local cluster."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pooled
from pooled.distributed.checkpoint import TaskCheckpoint
from pooled.distributed.engine import ExecutionSpec, Task, run_tasks, task_seed
from pooled.errors import ConfigError, DataError, OutputExistsError


def draw(seed: int, index: int) -> pd.DataFrame:
    rng = np.random.default_rng(task_seed(seed, index))
    return pd.DataFrame({"index": [index], "value": [rng.normal()], "pid": [os.getpid()]})


def fails(index: int) -> int:
    if index == 2:
        raise DataError("no events in replicate 3")
    return index


def column_sum(index: int, *, data: pd.DataFrame) -> float:
    return float(data["x"].sum()) * index


def package_file() -> str:
    return pooled.__file__


def test_task_seed_is_the_child_of_the_run_seed_whatever_the_order() -> None:
    children = np.random.SeedSequence(5).spawn(6)
    for index in (5, 0, 3):
        mine = task_seed(5, index).generate_state(4)
        assert (mine == children[index].generate_state(4)).all()
    assert not (
        task_seed(5, 1).generate_state(2) == task_seed(5, 1, stream=9).generate_state(2)
    ).all()


def test_results_come_back_in_task_order_in_this_process() -> None:
    run = run_tasks([Task(f"t{i}", draw, (3, i)) for i in (4, 1, 7)])
    assert list(run.results) == ["t4", "t1", "t7"]
    assert [f["index"].item() for f in run.values()] == [4, 1, 7]
    assert run.computed == ("t4", "t1", "t7") and run.reused == ()
    assert run.execution.kind == "serial"


def test_keys_must_be_unique_and_file_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        run_tasks([Task("a", draw, (1, 1)), Task("a", draw, (1, 2))])
    with pytest.raises(ValueError, match="file name"):
        Task("../escape", draw)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": -1}, "whole number >= 0"),
        ({"workers": 2, "scheduler": "tcp://h:1"}, "not both"),
        ({"scheduler": "localhost:8786"}, "tcp://HOST:PORT"),
        ({"retries": -1}, "retries"),
    ],
)
def test_an_execution_spec_says_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExecutionSpec(**kwargs)


def test_a_task_error_is_raised_as_it_is_in_this_process() -> None:
    with pytest.raises(DataError, match="replicate 3"):
        run_tasks([Task(f"t{i}", fails, (i,)) for i in range(4)])


def test_the_checkpoint_refuses_another_runs_folder(tmp_path: Path) -> None:
    TaskCheckpoint(tmp_path / "tasks", {"seed": 1}).save("t1", draw(1, 1))
    with pytest.raises(OutputExistsError, match="seed: 1 there, 2 here"):
        TaskCheckpoint(tmp_path / "tasks", {"seed": 2})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="other files"):
        TaskCheckpoint(tmp_path / "other", {"seed": 1})


def test_checkpointed_tasks_are_not_run_again(tmp_path: Path) -> None:
    tasks = [Task(f"t{i}", draw, (8, i)) for i in range(5)]
    store = TaskCheckpoint(tmp_path, {"what": "draws"})
    first = run_tasks(tasks[:3], checkpoint=store)
    assert first.computed == ("t0", "t1", "t2")
    again = run_tasks(tasks, checkpoint=TaskCheckpoint(tmp_path, {"what": "draws"}))
    assert again.reused == ("t0", "t1", "t2") and again.computed == ("t3", "t4")
    fresh = run_tasks(tasks, checkpoint=TaskCheckpoint(tmp_path / "fresh", {"what": "draws"}))
    for a, b in zip(again.values(), fresh.values(), strict=True):
        pd.testing.assert_frame_equal(
            a.drop(columns="pid"), b.drop(columns="pid"), check_exact=True
        )
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == [f"t{i}.parquet" for i in range(5)]
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind


def test_a_non_frame_result_cannot_be_checkpointed(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="DataFrame"):
        run_tasks([Task("t", fails, (1,))], checkpoint=TaskCheckpoint(tmp_path, {}))


def test_workers_import_this_pooled_and_give_the_same_numbers(cluster) -> None:
    where = set(cluster.client.run(package_file).values())
    assert where == {pooled.__file__}
    tasks = [Task(f"t{i}", draw, (21, i)) for i in range(12)]
    here = run_tasks(tasks, execution=ExecutionSpec())
    there = run_tasks(tasks, execution=cluster.spec)
    assert list(there.results) == list(here.results)
    for a, b in zip(here.values(), there.values(), strict=True):
        pd.testing.assert_frame_equal(
            a.drop(columns="pid"), b.drop(columns="pid"), check_exact=True
        )
    assert len({f["pid"].item() for f in there.values()}) == 2  # both workers took tasks
    assert os.getpid() not in {f["pid"].item() for f in there.values()}


def test_shared_inputs_reach_every_task_on_the_cluster(cluster) -> None:
    data = pd.DataFrame({"x": np.arange(1000.0)})
    run = run_tasks([Task(f"t{i}", column_sum, (i,)) for i in range(6)], shared={"data": data},
                    execution=cluster.spec)  # fmt: skip
    assert run.values() == [float(data["x"].sum()) * i for i in range(6)]


def test_a_task_error_on_the_cluster_is_raised_with_its_type(cluster) -> None:
    with pytest.raises(DataError, match="replicate 3"):
        run_tasks([Task(f"t{i}", fails, (i,)) for i in range(4)], execution=cluster.spec)
