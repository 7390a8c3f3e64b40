"""A two-centre consortium like the one a statistician reviewed: crossing hazards, a covariate
constant in one centre, a field one centre did not collect, dates in one centre and delivered
durations in the other, follow-up to about 230 months.

Run through the real config parser and runner (:func:`two_centre_run`), so the report is tested
on what ``pooled run`` hands over.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pooled.dataset import AnalysisDataset, ExclusionFlow

CONFIG = """
name: two-centre
description: PR status and disease-free survival, two centres (a crossing-hazards example)
cohort: {setting: early}
endpoints: [dfs, os]
exposure: {name: pr_positive, marker: pr_percent, threshold: 1}
covariates:
  - age
  - {name: node_positive, expr: "positive_nodes > 0"}
  - {name: grade, categorical: true, reference: "1"}
strata: [centre]
models:
  km: {times: [0, 12, 24]}
  cox: {ties: efron}
  zph: {alpha: 0.05}
  two_stage: {method: REML, knha: true}
sensitivity:
  leave_one_centre_out: true
seed: 11
"""


def _piecewise_times(
    rng: np.random.Generator, rate_early: np.ndarray, rate_late: np.ndarray, change: float
) -> np.ndarray:
    """Event times with hazard ``rate_early`` before ``change`` months, ``rate_late`` after."""
    u = rng.exponential(1.0, len(rate_early))
    early = u / rate_early
    late = change + (u - rate_early * change) / rate_late
    return np.where(early < change, early, late)


def two_centre_cohort(seed: int = 3) -> pd.DataFrame:
    """Centre A (420 patients, dates, diagnosis origin) and B (260, delivered durations
    counted from surgery, every patient grade 2, no tumour size). PR-positive patients have a
    third of the hazard for 24 months and three times it afterwards."""
    rng = np.random.default_rng(seed)
    sizes = {"A": 420, "B": 260}
    frames = []
    for centre, n in sizes.items():
        pr = rng.uniform(0, 60, n)
        pr[rng.random(n) < 0.45] = 0.0
        positive = pr >= 1
        age = rng.normal(56, 10, n).round()
        age[rng.random(n) < 0.05] = np.nan
        nodes = rng.poisson(1.2, n).astype(float)
        grade = rng.integers(1, 4, n).astype(float) if centre == "A" else np.full(n, 2.0)
        base = 0.012 * np.exp(0.015 * (np.nan_to_num(age, nan=56) - 56) + 0.4 * (nodes > 0))
        time = _piecewise_times(
            rng, base * np.where(positive, 0.3, 1.0), base * np.where(positive, 3.0, 1.0), 24.0
        )
        censor = rng.uniform(60.0, 232.0, n)
        dfs_months = np.minimum(time, censor).round(2)
        dfs_event = (time <= censor).astype(float)
        death = time + rng.exponential(40.0, n)
        os_months = np.minimum(death, censor).round(2)
        os_event = (death <= censor).astype(float)
        size = rng.gamma(2.0, 10.0, n).round(1) if centre == "A" else np.full(n, np.nan)
        frames.append(
            pd.DataFrame(
                {
                    "centre": centre,
                    "patient_id": [f"{centre}{i:04d}" for i in range(n)],
                    "setting": "early",
                    "age": age,
                    "tumour_size_mm": size,
                    "positive_nodes": nodes,
                    "grade": grade,
                    "subtype": "luminal_a",
                    "pr_percent": pr,
                    "dfs_months": dfs_months,
                    "dfs_event": dfs_event,
                    "os_months": os_months,
                    "os_event": os_event,
                    "endpoints_from": "dates" if centre == "A" else "durations",
                    "time_origin": "diagnosis" if centre == "A" else "surgery",
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def two_centre_run():
    """The two-centre consortium run by ``run_analysis`` with :data:`CONFIG`."""
    import warnings

    from pooled.config import parse_analysis_config
    from pooled.runner import run_analysis

    patients = two_centre_cohort()
    ds = AnalysisDataset(
        patients=patients,
        samples=pd.DataFrame(),
        flow=ExclusionFlow.start(patients["centre"]),
        versions={"A": 2, "B": 1},
        provenance={
            "store": "<test>",
            "upload_sha256": {"A": "a" * 64, "B": "b" * 64},
            "origin": "diagnosis",
            "origin_not_converted": {"B": 260},
        },
    )
    cfg = parse_analysis_config(CONFIG, path="two-centre.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_analysis(cfg, ds)
