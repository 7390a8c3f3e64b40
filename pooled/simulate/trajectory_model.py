"""Generative model of the CALGB 40502-like ``trajectory`` scenario (serial CTC counts).

Metastatic breast cancer patients starting first-line chemotherapy have CTCs counted at
baseline and on day 1 of later cycles, as in CALGB 40502 (Magbanua et al. 2021: 469 patients,
2,202 samples, four latent trajectory groups of 56.9 / 23.7 / 14.5 / 4.9 %, OS worse with
every higher group). :func:`simulate_trajectory_cohort` draws such a cohort with known truth;
the ``simulate`` package wraps it into consortium uploads.

The model, per patient:

* **Centre and covariates.** ``n_centres`` centres with unequal sizes (Dirichlet shares);
  treatment ``arm`` (paclitaxel, nab-paclitaxel, ixabepilone; equal thirds, no effect on counts
  or survival), ``age`` ~ N(58, 11) years, ``er_positive`` ~ Bernoulli(0.7).
* **Latent group.** Exactly ``round(n * share)`` patients per group (largest remainder), in a
  random order, shares 57 / 24 / 14 / 5 % (undetectable, low, intermediate, high), so the
  realised shares equal the design shares to the nearest patient.
* **Samples.** Baseline (day 0) and day 1 of cycles 2, 3, 4 (days 28, 56, 84 +/- up to 4 days),
  then month 6 and month 9 (days 168, 252 +/- 7). Each patient has 3 to 6 scheduled samples
  (probabilities 0.15, 0.25, 0.35, 0.25; mean 4.7), less any scheduled after death; 90 % of
  draws are 7.5 ml and 10 % 15 ml.
* **Counts.** ``count ~ Poisson(mu)`` (or NB2 with ``theta``), with
  ``log mu = b0 + b1 m + b2 m^2 + log(volume / 7.5)`` in months ``m`` since baseline:

  ============  ======  ======  ======  ===========================
  group          b0      b1      b2      mean per 7.5 ml at 0 / 3 mo
  ============  ======  ======  ======  ===========================
  undetectable  -1.61   -0.15   0.005   0.20 / 0.13
  low            1.10   -0.20   0.010   3.0 / 1.8
  intermediate   3.22   -0.25   0.015   25 / 13
  high           5.01   -0.05   0.004   150 / 139
  ============  ======  ======  ======  ===========================

  Baseline positivity: CALGB 40502's 53 % is matched with the threshold **>= 1 CTC per
  7.5 ml** (about 18 % of the undetectable group have >= 1 at baseline); with the clinical
  metastatic cut-off **>= 5 per 7.5 ml** (used by ``bCTC``) about 24 % are positive.
  ``truth["baseline_positive_share"]`` reports both as realised.
* **Survival.** Weibull proportional hazards (shape 1.1) with hazard ratios against the
  undetectable group of 2.6, 5.3, 10.8 for OS (the published estimates), and assumed 1.9, 3.1,
  5.6 for PFS and 1.6, 2.4, 3.9 for time to treatment failure; medians in the undetectable
  group 36, 11 and 7 months; log hazard ratios 0.01 per year of age and log(0.7) for
  ER-positive; a centre effect ~ N(0, 0.15^2) on the log baseline hazard. Patients are
  required to have three samples, so OS is drawn conditional on survival beyond the third
  scheduled sample (left truncation keeps proportional hazards). PFS is capped by OS (death
  without progression is a PFS event) and TTF by PFS.
* **Censoring.** Accrual uniform over 36 months, analysis 60 months after the first patient
  (administrative censoring between 24 and 60 months) and loss to follow-up at rate 0.005 per
  month.

Everything is drawn from one ``numpy.random.Generator`` seeded with ``seed``: the cohort is
deterministic for a seed.

References
----------
.. [1] Magbanua MJM, Hendrix LH, Hyslop T, et al. Serial analysis of circulating tumor cells in
   metastatic breast cancer receiving first-line chemotherapy. J Natl Cancer Inst
   2021;113:443-52.
.. [2] Rugo HS, Barry WT, Moreno-Aspitia A, et al. Randomized phase III trial of paclitaxel once
   per week compared with nanoparticle albumin-bound nab-paclitaxel once per week or
   ixabepilone with bevacizumab as first-line chemotherapy for locally recurrent or
   metastatic breast cancer: CALGB 40502/NCCTG N063H (Alliance). J Clin Oncol
   2015;33:2361-9.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd

from pooled.errors import ConfigError

GROUP_LABELS: tuple[str, ...] = ("undetectable", "low", "intermediate", "high")
GROUP_SHARES: tuple[float, ...] = (0.57, 0.24, 0.14, 0.05)
COUNT_COEFFICIENTS: dict[str, tuple[float, float, float]] = {
    "undetectable": (math.log(0.2), -0.15, 0.005),
    "low": (math.log(3.0), -0.20, 0.010),
    "intermediate": (math.log(25.0), -0.25, 0.015),
    "high": (math.log(150.0), -0.05, 0.004),
}
HAZARD_RATIOS: dict[str, tuple[float, float, float, float]] = {
    "os": (1.0, 2.6, 5.3, 10.8),
    "pfs": (1.0, 1.9, 3.1, 5.6),
    "ttf": (1.0, 1.6, 2.4, 3.9),
}
MEDIANS_UNDETECTABLE: dict[str, float] = {"os": 36.0, "pfs": 11.0, "ttf": 7.0}
WEIBULL_SHAPE = 1.1
SCHEDULE: tuple[tuple[str, int, int], ...] = (
    ("baseline", 0, 0),
    ("cycle2_day1", 28, 4),
    ("cycle3_day1", 56, 4),
    ("cycle4_day1", 84, 4),
    ("month6", 168, 7),
    ("month9", 252, 7),
)
N_SAMPLES_PROBABILITIES: tuple[float, ...] = (0.10, 0.22, 0.36, 0.32)  # 3, 4, 5, 6 samples
DAYS_PER_MONTH = 365.25 / 12
ARMS: tuple[str, ...] = ("paclitaxel", "nab_paclitaxel", "ixabepilone")
LOG_HR_AGE_PER_YEAR = 0.01
LOG_HR_ER_POSITIVE = math.log(0.7)
CENTRE_SD = 0.15


def _allocate(n: int, shares: tuple[float, ...]) -> np.ndarray:
    """Largest-remainder allocation of ``n`` patients to groups with the given shares."""
    raw = np.asarray(shares) * n
    sizes = np.floor(raw).astype(int)
    remainder = n - sizes.sum()
    sizes[np.argsort(-(raw - sizes), kind="stable")[:remainder]] += 1
    return sizes


def _weibull(
    rng: np.random.Generator, scale: np.ndarray, truncation: np.ndarray | None = None
) -> np.ndarray:
    """Weibull(shape, scale) times, optionally conditional on exceeding ``truncation``."""
    e = rng.exponential(size=scale.shape)
    start = 0.0 if truncation is None else (truncation / scale) ** WEIBULL_SHAPE
    return scale * (start + e) ** (1.0 / WEIBULL_SHAPE)


def simulate_trajectory_cohort(
    n_patients: int = 469,
    seed: int = 40502,
    *,
    n_centres: int = 8,
    count_family: Literal["poisson", "negbin"] = "poisson",
    theta: float = 5.0,
    share_15ml: float = 0.1,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Simulate a CALGB 40502-like cohort with serial CTC counts and survival.

    Parameters
    ----------
    n_patients : int
        Patients (469 as in CALGB 40502).
    seed : int
        Seed of the one random generator; the cohort is deterministic for a seed.
    n_centres : int
        Centres, labelled ``C01``, ``C02``, ...
    count_family : {"poisson", "negbin"}
        Count distribution given the group's mean curve.
    theta : float
        NB2 size (variance ``mu + mu^2 / theta``) when ``count_family="negbin"``.
    share_15ml : float
        Share of blood draws of 15 ml instead of 7.5 ml.

    Returns
    -------
    patients : pandas.DataFrame
        One row per patient: ``patient_id, centre, arm, age, er_positive, true_group`` (1-4),
        ``true_label, os_months, os_event, pfs_months, pfs_event, ttf_months, ttf_event``.
    samples : pandas.DataFrame
        One row per sample: ``centre, patient_id, timepoint, days_from_baseline, months,
        ctc_count, ctc_blood_volume_ml``.
    truth : dict
        The generating values (group labels, shares and realised sizes, count coefficients,
        hazard ratios, medians, Weibull shape, covariate and centre effects, realised
        baseline positivity at >= 1 and >= 5 CTC per 7.5 ml).

    References
    ----------
    .. [1] Magbanua MJM, Hendrix LH, Hyslop T, et al. J Natl Cancer Inst 2021;113:443-52.

    Examples
    --------
    >>> patients, samples, truth = simulate_trajectory_cohort(469, seed=1)
    >>> len(patients), truth["group_sizes"]["undetectable"]
    (469, 267)
    """
    if n_patients < 20:
        raise ConfigError(f"n_patients must be at least 20; got {n_patients}.")
    if n_centres < 1:
        raise ConfigError(f"n_centres must be at least 1; got {n_centres}.")
    if count_family not in ("poisson", "negbin"):
        raise ConfigError(f"count_family must be 'poisson' or 'negbin'; got {count_family!r}.")
    if count_family == "negbin" and theta <= 0:
        raise ConfigError(f"theta must be positive; got {theta}.")
    if not 0 <= share_15ml <= 1:
        raise ConfigError(f"share_15ml must lie in [0, 1]; got {share_15ml}.")
    rng = np.random.default_rng(seed)
    n = n_patients
    ids = np.array([f"T{i + 1:04d}" for i in range(n)])

    centre_shares = rng.dirichlet(np.full(n_centres, 4.0))
    centre_labels = np.array([f"C{c + 1:02d}" for c in range(n_centres)])
    centre = rng.choice(n_centres, size=n, p=centre_shares)
    centre_effect = rng.normal(0.0, CENTRE_SD, size=n_centres)
    arm = rng.choice(len(ARMS), size=n)
    age = np.round(rng.normal(58.0, 11.0, size=n), 1)
    er_positive = (rng.random(n) < 0.7).astype(int)

    sizes = _allocate(n, GROUP_SHARES)
    group = rng.permutation(np.repeat(np.arange(len(GROUP_LABELS)), sizes))

    # scheduled samples
    n_planned = 3 + rng.choice(len(N_SAMPLES_PROBABILITIES), size=n, p=N_SAMPLES_PROBABILITIES)
    jitter = np.stack(
        [rng.integers(-w, w + 1, size=n) if w else np.zeros(n, int) for _, _, w in SCHEDULE],
        axis=1,
    )
    days = np.array([d for _, d, _ in SCHEDULE])[None, :] + jitter  # (n, 6)

    # survival: Weibull PH, OS conditional on surviving past the third scheduled sample
    linear = LOG_HR_AGE_PER_YEAR * (age - 58.0) + LOG_HR_ER_POSITIVE * er_positive
    linear = linear + centre_effect[centre]

    def scale(endpoint: str) -> np.ndarray:
        base = MEDIANS_UNDETECTABLE[endpoint] / math.log(2.0) ** (1.0 / WEIBULL_SHAPE)
        log_hr = np.log(np.asarray(HAZARD_RATIOS[endpoint]))[group] + linear
        return base * np.exp(-log_hr / WEIBULL_SHAPE)

    third = days[:, 2] / DAYS_PER_MONTH
    os_true = _weibull(rng, scale("os"), truncation=third)
    pfs_true = np.minimum(_weibull(rng, scale("pfs")), os_true)
    ttf_true = np.minimum(_weibull(rng, scale("ttf")), pfs_true)
    accrual = rng.uniform(0.0, 36.0, size=n)
    censor = np.minimum(60.0 - accrual, rng.exponential(1 / 0.005, size=n))
    censor = np.maximum(censor, third)  # patients with three samples are followed past them

    def observe(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.minimum(t, censor), (t <= censor).astype(int)

    os_months, os_event = observe(os_true)
    pfs_months, pfs_event = observe(pfs_true)
    ttf_months, ttf_event = observe(ttf_true)

    # samples before death, at least three
    rows = []
    coefficients = np.array([COUNT_COEFFICIENTS[label] for label in GROUP_LABELS])
    for i in range(n):
        for j in range(n_planned[i]):
            day = int(days[i, j])
            months = day / DAYS_PER_MONTH
            if j >= 3 and months >= os_true[i]:
                break
            rows.append((i, j, day, months))
    sample_patient = np.array([r[0] for r in rows])
    sample_slot = np.array([r[1] for r in rows])
    sample_day = np.array([r[2] for r in rows])
    sample_months = np.array([r[3] for r in rows])
    volume = np.where(rng.random(len(rows)) < share_15ml, 15.0, 7.5)
    b = coefficients[group[sample_patient]]
    log_mu = b[:, 0] + b[:, 1] * sample_months + b[:, 2] * sample_months**2
    mu = np.exp(log_mu) * volume / 7.5
    if count_family == "poisson":
        counts = rng.poisson(mu)
    else:
        counts = rng.negative_binomial(theta, theta / (theta + mu))

    patients = pd.DataFrame(
        {
            "patient_id": ids,
            "centre": centre_labels[centre],
            "arm": np.asarray(ARMS)[arm],
            "age": age,
            "er_positive": er_positive,
            "true_group": group + 1,
            "true_label": np.asarray(GROUP_LABELS)[group],
            "os_months": os_months,
            "os_event": os_event,
            "pfs_months": pfs_months,
            "pfs_event": pfs_event,
            "ttf_months": ttf_months,
            "ttf_event": ttf_event,
        }
    )
    samples = pd.DataFrame(
        {
            "centre": centre_labels[centre[sample_patient]],
            "patient_id": ids[sample_patient],
            "timepoint": np.asarray([s[0] for s in SCHEDULE])[sample_slot],
            "days_from_baseline": sample_day,
            "months": sample_months,
            "ctc_count": counts.astype(int),
            "ctc_blood_volume_ml": volume,
        }
    )
    baseline = samples[samples["timepoint"] == "baseline"]
    per_75 = baseline["ctc_count"].to_numpy() * 7.5 / baseline["ctc_blood_volume_ml"].to_numpy()
    truth: dict[str, Any] = {
        "seed": seed,
        "n_patients": n,
        "n_samples": len(samples),
        "group_labels": GROUP_LABELS,
        "group_shares": dict(zip(GROUP_LABELS, GROUP_SHARES, strict=True)),
        "group_sizes": dict(zip(GROUP_LABELS, sizes.tolist(), strict=True)),
        "count_family": count_family,
        "theta": theta if count_family == "negbin" else None,
        "count_coefficients": dict(COUNT_COEFFICIENTS),
        "time_unit": "months",
        "hazard_ratios": {
            endpoint: dict(zip(GROUP_LABELS, values, strict=True))
            for endpoint, values in HAZARD_RATIOS.items()
        },
        "medians_undetectable_months": dict(MEDIANS_UNDETECTABLE),
        "weibull_shape": WEIBULL_SHAPE,
        "log_hr_age_per_year": LOG_HR_AGE_PER_YEAR,
        "log_hr_er_positive": LOG_HR_ER_POSITIVE,
        "centre_log_hazard": dict(zip(centre_labels.tolist(), centre_effect.tolist(), strict=True)),
        "baseline_positive_share": {
            ">=1": float(np.mean(per_75 >= 1)),
            ">=5": float(np.mean(per_75 >= 5)),
        },
    }
    return patients, samples, truth
