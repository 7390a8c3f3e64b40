"""Fixtures of the study and engine tests: small studies, a local Dask cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pooled.distributed.engine import ExecutionSpec, engine
from pooled.study.design import StudySpec

#: A study small enough for a test: EPAC-like consortia of 600 patients in 17 centres, both
#: endpoints, the four default methods (about 0.1 s a replicate).
SMALL = StudySpec(scenario="epac", replicates=8, n_patients=600, seed=11)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A local Dask cluster of 2 worker processes for the module's tests."""
    with engine(ExecutionSpec(workers=2)) as opened:
        yield opened
