"""Simulation studies of the estimators on consortia with known truth (``pooled study``).

:class:`StudySpec` says what to simulate (scenario, replicates, seed, size, endpoints,
estimators); :func:`run_study` runs one task per replicate on the task engine
(:mod:`pooled.distributed`) and returns a :class:`StudyResult` with every replicate's
estimates and the performance measures of Morris, White and Crowther (2019) with their Monte
Carlo SEs; :func:`write_study` writes the tidy table, the workbook and the report page.
"""

from pooled.study.design import METHODS, StudySpec, simulate_replicate, study_targets
from pooled.study.performance import performance_measures
from pooled.study.run import StudyResult, run_study

__all__ = [
    "METHODS",
    "StudyResult",
    "StudySpec",
    "performance_measures",
    "run_study",
    "simulate_replicate",
    "study_targets",
]
