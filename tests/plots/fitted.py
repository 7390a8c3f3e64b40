"""Real fitted results on the reference cohort, for the plot and report tests.

Every result is produced by the project's own model functions on
``tests/reference/cohort_multicentre.csv`` (and ``serial_ctc.csv`` for trajectories), never
faked, so the plots and the report are tested on what the runner hands over.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from tests.conftest import REFERENCE

DURATION, EVENT, MARKER = "os_months", "os_event", "ctc_positive"
CENTRE_ORDER = ("C03", "C01", "C08", "C02", "C05", "C04", "C07", "C06")  # not sorted on purpose


@lru_cache(maxsize=1)
def cohort() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "cohort_multicentre.csv")


@lru_cache(maxsize=1)
def serial() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "serial_ctc.csv")


def cox_spec(**changes):
    from dataclasses import replace

    from pooled.models.cox import CoxSpec

    spec = CoxSpec(
        duration=DURATION,
        event=EVENT,
        covariates=(MARKER, "subtype", "age"),
        categorical=(("subtype", "luminal_a"),),
        analysis="reference",
        endpoint="os",
    )
    return replace(spec, **changes) if changes else spec


@lru_cache(maxsize=1)
def km():
    from pooled.models.km import KMSpec, fit_kaplan_meier

    return fit_kaplan_meier(
        cohort(),
        KMSpec(
            group=MARKER,
            times=(12.0, 24.0, 36.0, 60.0),
            risk_times=(0.0, 24.0, 48.0, 72.0, 96.0, 120.0),
            endpoint="os",
        ),
    )


@lru_cache(maxsize=1)
def logrank():
    from pooled.models.km import logrank_test

    return logrank_test(cohort(), DURATION, EVENT, MARKER, strata=("centre",), endpoint="os")


@lru_cache(maxsize=1)
def followup():
    from pooled.models.km import median_followup

    return median_followup(cohort(), DURATION, EVENT, endpoint="os")


@lru_cache(maxsize=1)
def cox_adjusted():
    from pooled.models.cox import fit_cox

    return fit_cox(cohort(), cox_spec())


@lru_cache(maxsize=1)
def cox_interaction():
    from pooled.models.cox import fit_cox

    return fit_cox(cohort(), cox_spec(interactions=((MARKER, "subtype"),), term_lr_tests=False))


@lru_cache(maxsize=1)
def interaction_test():
    from pooled.models.cox import interaction_lr_test

    return interaction_lr_test(
        cohort(), cox_spec(interactions=((MARKER, "subtype"),), term_lr_tests=False)
    )


@lru_cache(maxsize=1)
def within_levels() -> pd.DataFrame:
    from pooled.models.cox import effect_within_levels

    return effect_within_levels(cox_interaction(), marker=MARKER, by="subtype")


@lru_cache(maxsize=1)
def zph():
    from pooled.models.zph import proportional_hazards_test

    return proportional_hazards_test(cox_adjusted(), cohort())


@lru_cache(maxsize=1)
def two_stage():
    from pooled.models.meta import MetaSpec
    from pooled.models.two_stage import TwoStageSpec, fit_two_stage

    spec = TwoStageSpec(
        cox=cox_spec(covariates=(MARKER, "age"), categorical=(), strata=()),
        marker=MARKER,
        meta=MetaSpec(method="REML"),
    )
    return fit_two_stage(cohort(), spec)


@lru_cache(maxsize=1)
def meta_in_given_order():
    """Per-centre Cox log HRs pooled by ``fit_meta`` with the centres in CENTRE_ORDER."""
    from pooled.models.cox import fit_cox
    from pooled.models.meta import MetaSpec, fit_meta

    data = cohort()
    estimates, variances = [], []
    for centre in CENTRE_ORDER:
        fit = fit_cox(
            data[data["centre"] == centre],
            cox_spec(covariates=(MARKER,), categorical=(), strata=()),
        )
        estimates.append(float(fit.coefficients[0]))
        variances.append(float(fit.covariance[0, 0]))
    return fit_meta(
        estimates, variances, MetaSpec(method="DL"), labels=list(CENTRE_ORDER), term=MARKER
    )


@lru_cache(maxsize=1)
def trajectories():
    from pooled.models.trajectories import TrajectorySpec, select_trajectories

    spec = TrajectorySpec(
        time="months", volume="blood_volume_ml", n_starts=4, seed=7, compute_se=False
    )
    return select_trajectories(serial(), spec, k_range=(1, 2, 3, 4))


def observed_means(selection) -> pd.DataFrame:
    """Observed mean count per 7.5 ml by assigned group and whole month (what the runner
    would hand over as ``extra["observed"]``)."""
    fit = selection.best
    samples = serial().merge(fit.assignments[["patient_id", "label"]], on="patient_id")
    samples = samples.assign(
        count=samples["ctc_count"] * 7.5 / samples["blood_volume_ml"],
        time=samples["months"].round(),
    )
    return samples.groupby(["label", "time"], as_index=False).agg(
        mean_count=("count", "mean"), n=("count", "size")
    )
