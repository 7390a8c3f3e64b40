"""The generative models: one centre's patients as a clean harmonised table with known truth.

:func:`simulate_patients` draws ``n`` patients of one centre of a scenario and returns them as
the harmonised table that a perfect harmonisation of the centre's upload gives back (schema
field names, harmonised units and codes, ``datetime64`` dates, fields the centre does not
deliver left missing), plus the derived fields (``subtype``, ``ctc_per_7_5ml``,
``marker_positive`` and the endpoints ``<endpoint>_months`` / ``<endpoint>_event``, derived from
the dates by the rules of ``harmonization/derive.py``). Everything is vectorised; memory is
linear in ``n`` so large consortia are drawn in chunks.

The models (early disease: cause-specific recurrence and other-cause death with distant
recurrence and breast-cancer death after it; metastatic disease: Weibull death and
progression) and their parameters are in :mod:`pooled.simulate.scenarios` and
``docs/scenarios.md``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from pooled.simulate.profiles import Profile, get_profile
from pooled.simulate.scenarios import (
    SUBTYPES,
    CentreSpec,
    CountEffect,
    CountMetastaticModel,
    ScenarioSpec,
)

DAYS_PER_YEAR = 365.25
DAYS_PER_MONTH = 30.4375
EPOCH = np.datetime64("1970-01-01", "D")
EARLY_ENDPOINTS: tuple[str, ...] = ("os", "bcss", "dfs", "ddfs")
METASTATIC_ENDPOINTS: tuple[str, ...] = ("os", "pfs", "ttf")
ENDPOINT_EVENTS: dict[str, tuple[str, ...]] = {
    "os": ("death_date",),
    "bcss": ("death_date",),
    "dfs": ("recurrence_date", "distant_recurrence_date", "death_date"),
    "ddfs": ("distant_recurrence_date", "death_date"),
    "pfs": ("progression_date", "death_date"),
    "ttf": ("treatment_failure_date", "progression_date", "death_date"),
}
EARLY_DATES: tuple[str, ...] = (
    "diagnosis_date",
    "surgery_date",
    "sample_date",
    "last_contact_date",
    "recurrence_date",
    "distant_recurrence_date",
    "death_date",
)
METASTATIC_DATES: tuple[str, ...] = (
    "diagnosis_date",
    "sample_date",
    "last_contact_date",
    "progression_date",
    "treatment_failure_date",
    "death_date",
)
NO_DAY = np.iinfo(np.int64).min  # integer marker of a missing date


def expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def year_to_day(year: np.ndarray) -> np.ndarray:
    """Decimal calendar years to whole days since 1970-01-01."""
    return np.floor((np.asarray(year, dtype=float) - 1970.0) * DAYS_PER_YEAR).astype(np.int64)


def days_to_dates(days: np.ndarray) -> pd.Series:
    """Day numbers (``NO_DAY`` = missing) to a ``datetime64[ns]`` Series."""
    days = np.asarray(days, dtype=np.int64)
    out = (EPOCH + np.where(days == NO_DAY, 0, days)).astype("datetime64[ns]")
    out[days == NO_DAY] = np.datetime64("NaT")
    return pd.Series(out)


def _negbin(rng: np.random.Generator, size: float, mean: float, n: int) -> np.ndarray:
    return rng.negative_binomial(size, size / (size + mean), n)


def _weibull_time(
    rng: np.random.Generator, median: np.ndarray | float, shape: float, log_hr: np.ndarray
) -> np.ndarray:
    """Weibull PH times with the given median at ``log_hr = 0``."""
    scale = np.asarray(median, dtype=float) / math.log(2.0) ** (1.0 / shape)
    e = rng.exponential(size=np.shape(log_hr))
    return scale * (e * np.exp(-log_hr)) ** (1.0 / shape)


def subtype_rule(
    er_pos: np.ndarray,
    pr_pos: np.ndarray,
    her2_pos: np.ndarray,
    grade: np.ndarray,
    ki67: np.ndarray,
) -> np.ndarray:
    """PADDY surrogate subtype from recorded values (Ki-67 missing counts as low)."""
    hr_pos = er_pos | pr_pos
    with np.errstate(invalid="ignore"):
        high = (grade == 3) | (ki67 >= 20)
    out = np.where(
        her2_pos,
        "her2_positive",
        np.where(~hr_pos, "triple_negative", np.where(high, "luminal_b", "luminal_a")),
    )
    return out.astype(object)


def _receptor_percents(
    rng: np.random.Generator, er_pos: np.ndarray, pr_pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n = len(er_pos)
    er = np.where(er_pos, np.clip(np.round(rng.beta(4.0, 1.5, n) * 100), 1, 100), 0.0)
    pr = np.where(pr_pos, np.clip(np.round(rng.beta(2.5, 1.8, n) * 100), 1, 100), 0.0)
    return er, pr


def _her2(rng: np.random.Generator, her2_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IHC score and ISH result consistent with a HER2 status."""
    n = len(her2_pos)
    u = rng.random(n)
    ihc_pos = np.where(u < 0.8, "3+", "2+")
    ihc_neg = np.where(u < 0.40, "0", np.where(u < 0.78, "1+", "2+"))
    ihc = np.where(her2_pos, ihc_pos, ihc_neg).astype(object)
    ish = np.full(n, None, dtype=object)
    ish[(ihc == "2+") & her2_pos] = "amplified"
    ish[(ihc == "2+") & ~her2_pos] = "not_amplified"
    return ihc, ish


@functools.lru_cache(maxsize=16)
def positivity_intercept(
    spec_name: str, setting: str, log_odds: tuple[tuple[str, float], ...], target: float
) -> float:
    """Logistic intercept giving the target positivity on a large draw of the covariates."""
    rng = np.random.default_rng(20_240_101)
    n = 400_000
    x = _positivity_design(_draw_covariates(setting, rng, n), dict(log_odds))
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if expit(mid + x).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _positivity_design(cov: dict[str, np.ndarray], log_odds: dict[str, float]) -> np.ndarray:
    terms = {
        "log_size": cov.get("log_size"),
        "node_positive": cov.get("node_positive"),
        "hormone_negative": ~(cov["er_pos"] | cov["pr_pos"]),
        "hormone_positive": cov["er_pos"] | cov["pr_pos"],
        "her2_positive": cov["her2_pos"],
        "grade3": cov["grade"] == 3,
        "later_line": cov.get("line", np.ones(1)) >= 2,
    }
    x = np.zeros(len(cov["age"]))
    for name, coefficient in log_odds.items():
        x = x + coefficient * np.asarray(terms[name], dtype=float)
    return x


def _draw_covariates(setting: str, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Patient characteristics (the latent truth, before what a centre records)."""
    if setting == "early":
        age = np.clip(np.round(rng.normal(54.0, 11.0, n)), 25, 90)
        log_size = np.log(20.0) + rng.normal(0.0, 0.55, n)
        size = np.clip(np.round(np.exp(log_size)), 2, 150)
        ls = np.log(size / 20.0)
        node_positive = rng.random(n) < expit(-0.45 + 1.0 * ls)
        nodes = np.where(node_positive, np.minimum(1 + _negbin(rng, 1.2, 2.0, n), 45), 0)
        z = 0.4 * ls + rng.normal(0.0, 1.0, n)
        grade = np.where(z < -1.0, 1, np.where(z > 0.45, 3, 2))
        g3 = grade == 3
        er_pos = rng.random(n) < expit(2.1 - 1.7 * g3)
        pr_pos = np.where(er_pos, rng.random(n) < 0.82, rng.random(n) < 0.08)
        her2_pos = rng.random(n) < np.where(g3, 0.25, 0.11)
        line = np.ones(n, dtype=np.int64)
    else:
        age = np.clip(np.round(rng.normal(58.0, 12.0, n)), 25, 90)
        size = np.full(n, np.nan)
        ls = np.zeros(n)
        node_positive = np.zeros(n, dtype=bool)
        nodes = np.full(n, np.nan)
        group = rng.choice(3, size=n, p=[0.6, 0.2, 0.2])  # HR+HER2-, HER2+, TN
        her2_pos = group == 1
        er_pos = np.where(group == 0, rng.random(n) < 0.95, (group == 1) & (rng.random(n) < 0.5))
        pr_pos = np.where(
            group == 0, ~er_pos | (rng.random(n) < 0.7), (group == 1) & (rng.random(n) < 0.35)
        )
        g3_p = np.where(group == 0, 0.3, 0.6)
        u = rng.random(n)
        grade = np.where(u < g3_p, 3, np.where(u < g3_p + 0.12, 1, 2))
        line = rng.choice(np.arange(1, 7), size=n, p=[0.45, 0.25, 0.15, 0.08, 0.05, 0.02])
    ki67 = np.clip(
        np.round(np.exp(np.log(14.0) + 0.6 * (grade == 3) + rng.normal(0, 0.6, n))), 1, 95
    )
    return {
        "age": age.astype(float),
        "tumour_size_mm": size.astype(float),
        "log_size": ls,
        "node_positive": node_positive,
        "positive_nodes": nodes.astype(float),
        "grade": grade.astype(float),
        "er_pos": er_pos.astype(bool),
        "pr_pos": pr_pos.astype(bool),
        "her2_pos": her2_pos.astype(bool),
        "ki67": ki67.astype(float),
        "line": line.astype(np.int64),
    }


def _intercept(spec: ScenarioSpec) -> float:
    return positivity_intercept(
        spec.name, spec.setting, tuple(sorted(spec.positivity_log_odds.items())), spec.positivity
    )


def _marker_counts(
    spec: ScenarioSpec, positive: np.ndarray, rng: np.random.Generator, volume: float
) -> np.ndarray:
    """Marker counts: DTC per 2e6 cells, or CTC in the centre's blood volume."""
    n = len(positive)
    if spec.marker == "dtc":
        count = np.where(positive, 1 + np.minimum(_negbin(rng, 0.7, 1.2, n), 300), 0)
    elif spec.marker_threshold <= 1:
        count = np.where(positive, 1 + np.minimum(_negbin(rng, 0.5, 1.5, n), 500), 0)
    else:
        below = np.where(rng.random(n) < 0.55, 0, rng.integers(1, 5, n))
        above = 5 + np.minimum(_negbin(rng, 0.45, 45.0, n), 5000)
        count = np.where(positive, above, below)
    if spec.marker == "ctc" and volume == 15.0:
        # the centre counts in 15 ml: twice the cells, give or take one
        count = 2 * count + ((count > 0) & (rng.random(n) < 0.5))
    count = np.where(count == 999, 1000, count)  # 999 is a missing-value code somewhere
    return count.astype(float)


def _continuous_counts(
    effect: CountEffect, rng: np.random.Generator, n: int, volume: float
) -> np.ndarray:
    """CTC in the centre's blood volume: zero-inflated Poisson-lognormal (``ctc-count``)."""
    zero = rng.random(n) < effect.zero_share
    rate = np.exp(rng.normal(effect.log_mean, effect.log_sd, n))
    count = np.where(zero, 0, rng.poisson(np.minimum(rate, 1e5) * volume / 7.5))
    count = np.where(count == 999, 1000, count)  # 999 is a missing-value code somewhere
    return count.astype(float)


def simulate_patients(
    spec: ScenarioSpec,
    centre: CentreSpec,
    n: int,
    rng: np.random.Generator,
    *,
    first_number: int = 1,
    missingness: bool = True,
) -> pd.DataFrame:
    """Draw ``n`` patients of one centre as a clean harmonised table.

    Parameters
    ----------
    spec : ScenarioSpec
        The scenario (not ``trajectory``: see :mod:`pooled.simulate.trajectory_model`).
    centre : CentreSpec
        The centre (its profile decides which fields are recorded).
    n : int
        Patients to draw.
    rng : numpy.random.Generator
        The source of randomness (the table is deterministic given its state).
    first_number : int
        Running number of the first patient (patient ids continue across chunks).

    Returns
    -------
    pandas.DataFrame
        Schema fields of the patients table (fields the centre does not deliver missing),
        the derived ``subtype`` (the one the model used), ``ctc_per_7_5ml`` (CTC scenarios),
        ``marker_positive`` and the endpoints ``<endpoint>_months`` / ``<endpoint>_event``.

    Examples
    --------
    >>> from pooled.simulate.scenarios import get_scenario
    >>> spec = get_scenario("paddy")
    >>> df = simulate_patients(spec, spec.centres[0], 100, np.random.default_rng(1))
    >>> len(df)
    100
    """
    profile = get_profile(centre.profile)
    cov = _draw_covariates(spec.setting, rng, n)
    if spec.setting == "early":
        frame = _early(spec, centre, profile, cov, rng)
    else:
        frame = _metastatic(spec, centre, profile, cov, rng)
    prefix = "".join(ch for ch in centre.name.upper() if ch.isalnum())[:3]
    frame.insert(
        0, "patient_id", [f"{prefix}-{i:06d}" for i in range(first_number, first_number + n)]
    )
    frame.insert(0, "centre", centre.name)
    frame.insert(2, "setting", spec.setting)
    if missingness:
        _mcar(frame, rng)
    return _apply_delivery(frame, spec, profile)


MCAR_SHARES: dict[str, float] = {
    "menopausal_status": 0.05,
    "tumour_size_mm": 0.02,
    "positive_nodes": 0.02,
    "bisphosphonate": 0.15,
    "er_percent": 0.08,
    "pr_percent": 0.08,
}


def _mcar(frame: pd.DataFrame, rng: np.random.Generator) -> None:
    """Covariates missing completely at random (as recorded; the model used the values)."""
    n = len(frame)
    for name, share in MCAR_SHARES.items():
        if name not in frame:
            continue
        gone = rng.random(n) < share
        if frame[name].dtype.kind == "f":
            frame.loc[gone, name] = np.nan
        else:
            column = frame[name].astype(object)
            column[gone] = None
            frame[name] = column


def _recorded_receptors(
    cov: dict[str, np.ndarray], profile: Profile, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    n = len(cov["age"])
    er_pct, pr_pct = _receptor_percents(rng, cov["er_pos"], cov["pr_pos"])
    ihc, ish = _her2(rng, cov["her2_pos"])
    ki67 = np.where(rng.random(n) < profile.ki67_observed, cov["ki67"], np.nan)
    subtype = subtype_rule(cov["er_pos"], cov["pr_pos"], cov["her2_pos"], cov["grade"], ki67)
    return {"er_percent": er_pct, "pr_percent": pr_pct, "her2_ihc": ihc, "her2_ish": ish,
            "ki67_percent": ki67, "subtype": subtype}  # fmt: skip


def _status(flag: np.ndarray) -> np.ndarray:
    return np.where(flag, "positive", "negative").astype(object)


def _early(
    spec: ScenarioSpec,
    centre: CentreSpec,
    profile: Profile,
    cov: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> pd.DataFrame:
    m = spec.early
    assert m is not None
    n = len(cov["age"])
    age = cov["age"]
    rec = _recorded_receptors(cov, profile, rng)
    subtype = rec["subtype"]
    sub_index = pd.Categorical(subtype, categories=SUBTYPES).codes
    g3 = cov["grade"] == 3
    hr_neg = ~(cov["er_pos"] | cov["pr_pos"])
    u = rng.random(n)
    meno = np.where(
        age < 45,
        "pre",
        np.where(age > 55, "post", np.where(u < 0.25, "pre", np.where(u < 0.5, "peri", "post"))),
    ).astype(object)
    # dates of diagnosis, surgery and sampling
    diag_year = rng.uniform(centre.accrual[0], centre.accrual[1], n)
    diag = year_to_day(diag_year)
    surgery = diag + rng.integers(7, 46, n)
    sample = (
        surgery.copy()
        if spec.marker == "dtc"
        else np.minimum(diag + rng.integers(0, 15, n), surgery)
    )
    # marker
    x = _positivity_design(cov, dict(spec.positivity_log_odds))
    positive = rng.random(n) < expit(_intercept(spec) + x)
    count = _marker_counts(spec, positive, rng, profile.ctc_volume_ml)
    # therapies
    chemo = rng.random(n) < expit(-0.8 + 1.3 * cov["node_positive"] + 1.0 * g3 + 1.0 * hr_neg
                                  + 0.8 * cov["her2_pos"] - 0.04 * (age - 54))  # fmt: skip
    endocrine = ~hr_neg & (rng.random(n) < 0.95)
    anti_her2 = cov["her2_pos"] & (diag_year >= 2006.0) & (rng.random(n) < 0.9)
    bisphosphonate = rng.random(n) < 0.12
    # event times (years from diagnosis)
    beta = np.array([m.marker_log_hr[s] for s in SUBTYPES])[sub_index] + centre.log_hr_deviation
    lp = (
        centre.log_baseline
        + m.log_hr_size * cov["log_size"]
        + m.log_hr_node_positive * cov["node_positive"]
        + m.log_hr_nodes_4plus * (cov["positive_nodes"] >= 4)
        + m.log_hr_grade3 * g3
        + np.array([m.log_hr_subtype[s] for s in SUBTYPES])[sub_index]
        + m.log_hr_age_per_year * (age - 54.0)
        + beta * positive
    )
    t_rec = (rng.exponential(size=n) / (m.recurrence_scale * np.exp(lp))) ** (
        1.0 / m.recurrence_shape
    )
    g = m.other_death_gompertz
    t_other = (
        np.log1p(
            rng.exponential(size=n) * g / (m.other_death_rate_at_60 * np.exp(g * (age - 60.0)))
        )
        / g
    )
    recurs = t_rec < t_other
    first_distant = rng.random(n) < expit(m.distant_logit + m.distant_marker * positive)
    later = rng.random(n) < m.later_distant
    delay = rng.exponential(m.later_distant_mean_years, n)
    t_dist = np.where(first_distant, t_rec, np.where(later, t_rec + delay, np.inf))
    t_dist = np.where(recurs, t_dist, np.inf)
    median = np.array([m.bc_death_median_years[s] for s in SUBTYPES])[sub_index]
    t_bc = t_dist + _weibull_time(
        rng, median, m.bc_death_shape, m.bc_death_marker_log_hr * positive
    )
    t_death = np.minimum(t_other, t_bc)
    cause = np.where(t_bc < t_other, "breast_cancer", "other").astype(object)
    cause[rng.random(n) < m.unknown_cause_share] = "unknown"
    # censoring
    admin = spec_cutoff_years(centre, diag_year)
    ltfu = rng.exponential(1.0 / spec.loss_rate, n)
    follow = np.maximum(np.minimum(admin, ltfu), 0.25)
    dead = t_death <= follow
    rec_seen = recurs & (t_rec <= follow)
    dist_seen = (t_dist < t_other) & (t_dist <= follow)
    to_day = lambda t: np.round(np.where(np.isfinite(t), t, 0.0) * DAYS_PER_YEAR).astype(np.int64)  # noqa: E731
    death_day = np.where(dead, diag + to_day(t_death), NO_DAY)
    rec_day = np.where(rec_seen, diag + to_day(t_rec), NO_DAY)
    dist_day = np.where(dist_seen, diag + to_day(t_dist), NO_DAY)
    contact = diag + to_day(follow)
    if profile.last_contact_if_dead == "death":
        contact = np.where(dead, death_day, contact)
    else:
        contact = np.where(dead, NO_DAY, contact)
    frame = pd.DataFrame(
        {
            "age": age,
            "menopausal_status": meno,
            "tumour_size_mm": cov["tumour_size_mm"],
            "positive_nodes": cov["positive_nodes"],
            "grade": cov["grade"],
            "er_status": _status(cov["er_pos"]),
            "pr_status": _status(cov["pr_pos"]),
            "er_percent": rec["er_percent"],
            "pr_percent": rec["pr_percent"],
            "her2_ihc": rec["her2_ihc"],
            "her2_ish": rec["her2_ish"],
            "her2_status": _status(cov["her2_pos"]),
            "ki67_percent": rec["ki67_percent"],
            "subtype": subtype,
            "chemotherapy": chemo,
            "endocrine_therapy": endocrine,
            "anti_her2_therapy": anti_her2,
            "bisphosphonate": bisphosphonate,
            "diagnosis_date": days_to_dates(diag),
            "surgery_date": days_to_dates(surgery),
            "sample_date": days_to_dates(sample),
            "last_contact_date": days_to_dates(contact),
            "recurrence_date": days_to_dates(rec_day),
            "distant_recurrence_date": days_to_dates(dist_day),
            "death_date": days_to_dates(death_day),
            "death_cause": np.where(dead, cause, np.array(None, dtype=object)),
        }
    )
    _add_marker(frame, spec, count, profile)
    frame["marker_positive"] = positive
    end = np.where(dead, death_day, diag + to_day(follow))
    _add_endpoints(frame, diag, end, {"recurrence_date": rec_day, "distant_recurrence_date": dist_day,
                                       "death_date": death_day}, cause, dead, EARLY_ENDPOINTS)  # fmt: skip
    return frame


def spec_cutoff_years(centre: CentreSpec, start_year: np.ndarray) -> np.ndarray:
    """Potential follow-up (years) until the centre's data cut-off."""
    return centre.cutoff - start_year


def _metastatic(
    spec: ScenarioSpec,
    centre: CentreSpec,
    profile: Profile,
    cov: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> pd.DataFrame:
    m = spec.metastatic
    assert m is not None
    n = len(cov["age"])
    age = cov["age"]
    line = cov["line"]
    rec = _recorded_receptors(cov, profile, rng)
    subtype = rec["subtype"]
    hr_pos = cov["er_pos"] | cov["pr_pos"]
    sample_year = rng.uniform(centre.accrual[0], centre.accrual[1], n)
    sample = year_to_day(sample_year)
    diag = sample - np.where(line == 1, rng.integers(0, 61, n), rng.integers(180, 1500, n))
    effect = m.count_effect if isinstance(m, CountMetastaticModel) else None
    if effect is None:
        x = _positivity_design(cov, dict(spec.positivity_log_odds))
        positive = rng.random(n) < expit(_intercept(spec) + x)
        count = _marker_counts(spec, positive, rng, profile.ctc_volume_ml)
    else:  # the count itself drives the hazards
        count = _continuous_counts(effect, rng, n, profile.ctc_volume_ml)
        per_7_5ml = count * 7.5 / profile.ctc_volume_ml
        positive = per_7_5ml >= spec.marker_threshold
    chemo = rng.random(n) < 0.7
    endocrine = hr_pos & (rng.random(n) < 0.6)
    anti_her2 = cov["her2_pos"] & (rng.random(n) < 0.9)
    base = (
        centre.log_baseline
        + m.log_hr_age_per_year * (age - 58.0)
        + m.log_hr_line * (line - 1)
        + np.array([m.log_hr_subtype[s] for s in SUBTYPES])[
            pd.Categorical(subtype, categories=SUBTYPES).codes
        ]
    )
    dev = centre.log_hr_deviation
    if effect is None:
        death_marker = (m.os_marker_log_hr + dev) * positive
        progression_marker = (m.progression_marker_log_hr + dev) * positive
    else:
        death_marker = effect.log_hr(per_7_5ml)
        progression_marker = effect.progression_scale * death_marker
    t_death = _weibull_time(rng, m.os_median_negative, m.os_shape, base + death_marker)
    t_prog = _weibull_time(
        rng, m.progression_median_negative, m.progression_shape, base + progression_marker
    )
    cause = np.where(rng.random(n) < 0.9, "breast_cancer", "other").astype(object)
    cause[rng.random(n) < m.unknown_cause_share] = "unknown"
    admin = 12.0 * spec_cutoff_years(centre, sample_year)
    ltfu = rng.exponential(12.0 / spec.loss_rate, n)
    follow = np.maximum(np.minimum(admin, ltfu), 1.0)
    dead = t_death <= follow
    prog_seen = (t_prog < t_death) & (t_prog <= follow)
    to_day = lambda t: np.round(t * DAYS_PER_MONTH).astype(np.int64)  # noqa: E731
    death_day = np.where(dead, sample + to_day(t_death), NO_DAY)
    prog_day = np.where(prog_seen, sample + to_day(t_prog), NO_DAY)
    contact = sample + to_day(follow)
    if profile.last_contact_if_dead == "death":
        contact = np.where(dead, death_day, contact)
    else:
        contact = np.where(dead, NO_DAY, contact)
    frame = pd.DataFrame(
        {
            "age": age,
            "grade": cov["grade"],
            "er_status": _status(cov["er_pos"]),
            "pr_status": _status(cov["pr_pos"]),
            "er_percent": rec["er_percent"],
            "pr_percent": rec["pr_percent"],
            "her2_ihc": rec["her2_ihc"],
            "her2_ish": rec["her2_ish"],
            "her2_status": _status(cov["her2_pos"]),
            "ki67_percent": rec["ki67_percent"],
            "subtype": subtype,
            "chemotherapy": chemo,
            "endocrine_therapy": endocrine,
            "anti_her2_therapy": anti_her2,
            "line_of_therapy": line.astype(float),
            "diagnosis_date": days_to_dates(diag),
            "sample_date": days_to_dates(sample),
            "last_contact_date": days_to_dates(contact),
            "progression_date": days_to_dates(prog_day),
            "death_date": days_to_dates(death_day),
            "death_cause": np.where(dead, cause, np.array(None, dtype=object)),
        }
    )
    _add_marker(frame, spec, count, profile)
    frame["marker_positive"] = positive
    end = np.where(dead, death_day, sample + to_day(follow))
    _add_endpoints(frame, sample, end, {"progression_date": prog_day, "death_date": death_day},
                   cause, dead, ("os", "pfs"))  # fmt: skip
    return frame


def _add_marker(
    frame: pd.DataFrame, spec: ScenarioSpec, count: np.ndarray, profile: Profile
) -> None:
    if spec.marker == "dtc":
        frame["dtc_count"] = count
    else:
        frame["ctc_count"] = count
        frame["ctc_blood_volume_ml"] = profile.ctc_volume_ml
        frame["ctc_per_7_5ml"] = count * 7.5 / profile.ctc_volume_ml


def _add_endpoints(
    frame: pd.DataFrame,
    origin: np.ndarray,
    end: np.ndarray,
    event_days: dict[str, np.ndarray],
    cause: np.ndarray,
    dead: np.ndarray,
    endpoints: tuple[str, ...],
) -> None:
    """Endpoints from day numbers, by the rules of ``harmonization/derive.py``."""
    for name in endpoints:
        first = np.full(len(origin), NO_DAY, dtype=np.int64)
        for field in ENDPOINT_EVENTS[name]:
            day = event_days.get(field)
            if day is None:
                continue
            if name == "bcss" and field == "death_date":
                day = np.where(dead & (cause == "breast_cancer"), day, NO_DAY)
            take = (day != NO_DAY) & ((first == NO_DAY) | (day < first))
            first = np.where(take, day, first)
        event = first != NO_DAY
        stop = np.where(event, first, end)
        frame[f"{name}_months"] = (stop - origin) / DAYS_PER_MONTH
        frame[f"{name}_event"] = event


def _apply_delivery(frame: pd.DataFrame, spec: ScenarioSpec, profile: Profile) -> pd.DataFrame:
    """Blank the fields the centre does not deliver (as a perfect harmonisation would see it)."""
    out = frame
    drop: list[str] = []
    if not profile.percents:
        drop += ["er_percent", "pr_percent", "her2_ihc", "her2_ish"]
    if profile.ki67_observed == 0:
        drop.append("ki67_percent")
    for name in drop:
        out[name] = np.nan if out[name].dtype.kind == "f" else None
    if profile.delivers == "durations":
        keep = {"diagnosis_date", "sample_date"}
        for name in EARLY_DATES + METASTATIC_DATES:
            if name in out and name not in keep:
                out[name] = pd.NaT
        out["death_cause"] = None
    return out


def delivered_fields(spec: ScenarioSpec, profile: Profile) -> tuple[str, ...]:
    """The schema fields (patients table) a centre with ``profile`` delivers in ``spec``."""
    fields = ["patient_id", "age"]
    if spec.setting == "early":
        fields += ["menopausal_status", "tumour_size_mm", "positive_nodes"]
    fields += ["grade", "er_status", "pr_status"]
    if profile.percents:
        fields += ["er_percent", "pr_percent", "her2_ihc", "her2_ish"]
    fields.append("her2_status")
    if profile.ki67_observed > 0:
        fields.append("ki67_percent")
    if profile.delivers_subtype:
        fields.append("subtype")
    fields += ["dtc_count"] if spec.marker == "dtc" else ["ctc_count"]
    fields += ["chemotherapy", "endocrine_therapy", "anti_her2_therapy"]
    if spec.setting == "early":
        fields.append("bisphosphonate")
    else:
        fields.append("line_of_therapy")
    if profile.delivers == "durations":
        fields += ["diagnosis_date", "sample_date"]
        for name in spec.endpoints:
            fields += [f"{name}_months", f"{name}_event"]
    else:
        dates = EARLY_DATES if spec.setting == "early" else METASTATIC_DATES
        fields += [d for d in dates if d != "treatment_failure_date"]
        fields.append("death_cause")
        if profile.os_flag_with_dates:
            fields.append("os_event")
    return tuple(fields)
