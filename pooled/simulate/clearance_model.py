"""Generative model of the ``ctc-clearance`` scenario: a CTC status that changes over time.

Metastatic patients have CTCs counted at baseline and on day 1 of cycles 2, 3 and 4 (days
28, 56 and 84, +/- up to 4 days), as in SWOG S0500 / DETECT-like designs; their status
(>= 5 CTC per 7.5 ml) changes from sample to sample and the hazard of death depends on the
**current** status, the status of the last sample carried forward. So the Cox model with the
status as a time-dependent covariate is correctly specified and estimates the generating log
hazard ratio ``log_hr_status``; since every sample is taken before 3 months, so is a landmark
analysis at 3 months or later (the status no longer changes after the landmark). A naive
exposure built from the whole series and analysed from time zero ("ever cleared": a
baseline-positive patient with a later negative sample) is open to immortal-time bias: to
clear, a patient had to survive to the follow-up sample.

The model, per patient:

* **Centre and age.** ``n_centres`` centres with Dirichlet(4) shares and a log baseline
  hazard ~ N(0, 0.2^2); age ~ N(60, 11^2) truncated to [28, 90] years, 0.1 year.
* **Latent status.** Positive at baseline with probability 0.55; from sample to sample a
  positive patient stays positive with probability 0.5 (clears otherwise) and a negative one
  turns positive with probability 0.1.
* **Counts.** Latent positive: NB(mu = 40 v / 7.5, size 1.2); latent negative: NB(mu = 1 v /
  7.5, size 0.8), ``v`` the blood volume (15 ml with probability 0.25, else 7.5 ml). The
  observed status is ``count * 7.5 / v >= 5``.
* **Survival.** Piecewise-constant hazard ``lambda exp(u_c + log_hr_status * status(t) +
  0.02 (age - 60))`` per month, ``lambda = 0.03``, ``status(t)`` the observed status of the
  last sample at or before ``t``; the event time by inversion of the cumulative hazard. A
  planned sample is taken only if the patient is alive and under follow-up.
* **Censoring.** Uniform(12, 48) months after baseline. Times are whole days
  (``os_months = days / 30.4375``; event days rounded up).

Everything is drawn from one ``numpy.random.Generator`` seeded with ``seed``.

References
----------
.. [1] Smerage JB, Barlow WE, Hortobagyi GN, et al. Circulating tumor cells and response to
   chemotherapy in metastatic breast cancer: SWOG S0500. J Clin Oncol 2014;32:3483-9.
.. [2] Suissa S. Immortal time bias in pharmaco-epidemiology. Am J Epidemiol 2008;167:492-9.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from pooled.errors import ConfigError

DAYS_PER_MONTH = 30.4375
SCHEDULE: tuple[tuple[str, int, int], ...] = (
    ("baseline", 0, 0),
    ("cycle2_day1", 28, 4),
    ("cycle3_day1", 56, 4),
    ("cycle4_day1", 84, 4),
)
LOG_HR_STATUS = 0.9
LOG_HR_AGE_PER_YEAR = 0.02
BASELINE_HAZARD = 0.03  # per month
BASELINE_POSITIVE = 0.55
STAY_POSITIVE = 0.5
TURN_POSITIVE = 0.1
CENTRE_SD = 0.2
THRESHOLD = 5.0  # CTC per 7.5 ml


def simulate_clearance_cohort(
    n_patients: int = 1200,
    seed: int = 500,
    *,
    n_centres: int = 6,
    log_hr_status: float = LOG_HR_STATUS,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Simulate metastatic patients whose CTC status changes over time (module doc).

    Parameters
    ----------
    n_patients : int
    seed : int
        Seed of the one random generator; the cohort is deterministic for a seed.
    n_centres : int
        Centres, labelled ``C01``, ``C02``, ...
    log_hr_status : float
        Log hazard ratio of a positive current status (>= 5 CTC per 7.5 ml).

    Returns
    -------
    patients : DataFrame
        ``patient_id, centre, age, os_days, os_months, os_event, baseline_positive`` (the
        observed baseline status), ``ever_cleared`` (baseline positive, a later sample
        negative), ``final_positive`` (status of the last sample).
    samples : DataFrame
        ``centre, patient_id, timepoint, days_from_baseline, months, ctc_count,
        ctc_blood_volume_ml, positive``.
    truth : dict
        The generating values.

    Examples
    --------
    >>> patients, samples, truth = simulate_clearance_cohort(200, seed=1)
    >>> len(patients), truth["log_hr_status"]
    (200, 0.9)
    """
    if n_patients < 20:
        raise ConfigError(f"n_patients must be at least 20; got {n_patients}.")
    if n_centres < 1:
        raise ConfigError(f"n_centres must be at least 1; got {n_centres}.")
    rng = np.random.default_rng(seed)
    n, k = n_patients, len(SCHEDULE)
    ids = np.array([f"S{i + 1:05d}" for i in range(n)])
    shares = rng.dirichlet(np.full(n_centres, 4.0))
    labels = np.array([f"C{c + 1:02d}" for c in range(n_centres)])
    centre = rng.choice(n_centres, size=n, p=shares)
    centre_effect = rng.normal(0.0, CENTRE_SD, size=n_centres)
    age = np.round(np.clip(rng.normal(60.0, 11.0, n), 28.0, 90.0), 1)

    jitter = np.stack(
        [rng.integers(-w, w + 1, size=n) if w else np.zeros(n, int) for _, _, w in SCHEDULE],
        axis=1,
    )
    days = np.array([d for _, d, _ in SCHEDULE])[None, :] + jitter  # (n, k)
    latent = np.zeros((n, k), dtype=bool)
    latent[:, 0] = rng.random(n) < BASELINE_POSITIVE
    for j in range(1, k):
        u = rng.random(n)
        latent[:, j] = np.where(latent[:, j - 1], u < STAY_POSITIVE, u < TURN_POSITIVE)
    volume = np.where(rng.random((n, k)) < 0.25, 15.0, 7.5)
    mu = np.where(latent, 40.0, 1.0) * volume / 7.5
    size = np.where(latent, 1.2, 0.8)
    counts = rng.negative_binomial(size, size / (size + mu))
    observed = counts * 7.5 / volume >= THRESHOLD

    # event time under the piecewise-constant hazard of the observed status
    months = days / DAYS_PER_MONTH
    linear = centre_effect[centre] + LOG_HR_AGE_PER_YEAR * (age - 60.0)
    rate = BASELINE_HAZARD * np.exp(linear[:, None] + log_hr_status * observed)
    ends = np.column_stack([months[:, 1:], np.full(n, np.inf)])
    target = rng.exponential(size=n)
    cumulative = np.zeros(n)
    event_months = np.full(n, np.inf)
    for j in range(k):
        piece = rate[:, j] * (ends[:, j] - months[:, j])
        here = np.isinf(event_months) & (cumulative + piece >= target)
        event_months[here] = months[here, j] + (target[here] - cumulative[here]) / rate[here, j]
        cumulative = cumulative + np.where(np.isinf(event_months), piece, 0.0)
    censor_months = rng.uniform(12.0, 48.0, n)
    event = event_months <= censor_months
    end_days = np.ceil(np.minimum(event_months, censor_months) * DAYS_PER_MONTH).astype(np.int64)
    taken = days < end_days[:, None]  # alive and under follow-up (baseline always)
    taken[:, 0] = True

    sample_patient, sample_slot = np.nonzero(taken)
    samples = pd.DataFrame(
        {
            "centre": labels[centre[sample_patient]],
            "patient_id": ids[sample_patient],
            "timepoint": sample_slot,
            "days_from_baseline": days[sample_patient, sample_slot],
            "months": days[sample_patient, sample_slot] / DAYS_PER_MONTH,
            "ctc_count": counts[sample_patient, sample_slot].astype(int),
            "ctc_blood_volume_ml": volume[sample_patient, sample_slot],
            "positive": observed[sample_patient, sample_slot].astype(int),
        }
    )
    seen = np.where(taken, observed, np.nan)
    later_negative = np.nanmin(np.where(taken[:, 1:], observed[:, 1:], np.inf), axis=1) == 0
    last_slot = taken.sum(axis=1) - 1
    patients = pd.DataFrame(
        {
            "patient_id": ids,
            "centre": labels[centre],
            "age": age,
            "os_days": end_days,
            "os_months": end_days / DAYS_PER_MONTH,
            "os_event": event.astype(int),
            "baseline_positive": observed[:, 0].astype(int),
            "ever_cleared": (observed[:, 0] & later_negative).astype(int),
            "final_positive": seen[np.arange(n), last_slot].astype(int),
        }
    )
    truth: dict[str, Any] = {
        "seed": seed,
        "n_patients": n,
        "n_samples": len(samples),
        "log_hr_status": log_hr_status,
        "log_hr_cleared": -log_hr_status,
        "log_hr_age_per_year": LOG_HR_AGE_PER_YEAR,
        "baseline_hazard_per_month": BASELINE_HAZARD,
        "threshold_per_7_5ml": THRESHOLD,
        "schedule_days": [d for _, d, _ in SCHEDULE],
        "transition": {
            "baseline_positive": BASELINE_POSITIVE,
            "stay_positive": STAY_POSITIVE,
            "turn_positive": TURN_POSITIVE,
        },
        "centre_log_hazard": dict(zip(labels.tolist(), centre_effect.tolist(), strict=True)),
        "estimand": "log hazard ratio of a positive current status (the last sample carried "
        "forward), conditional on age and centre: what the time-dependent Cox model and the "
        "landmark models at >= 3 months (after the last sample) converge to",
        "patients_changing_status": int((np.nanmax(seen, axis=1) != np.nanmin(seen, axis=1)).sum()),
        "events": int(event.sum()),
        "hazard_ratio_status": math.exp(log_hr_status),
    }
    return patients, samples, truth
