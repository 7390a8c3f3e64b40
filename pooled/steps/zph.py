"""The proportional-hazards test of each endpoint's adjusted Cox model (scaled Schoenfeld).

Runs after the Cox step of the same endpoint, on its adjusted fit, when the Cox models run
(``models.cox``); no section of its own.
"""

from __future__ import annotations

from pooled.dataset import AnalysisDataset
from pooled.errors import DataError
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, Step, endpoint_frame
from pooled.steps.cox import COX, CoxSection


def run_zph(
    cohort: AnalysisDataset, section: CoxSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The PH test of the adjusted Cox model of the endpoint (KM-transformed time)."""
    from pooled.models.zph import proportional_hazards_test

    endpoint = ctx.endpoint
    adjusted = ctx.output(f"cox_{endpoint}_adjusted")
    if adjusted is None:
        raise DataError(f"no adjusted Cox model of {endpoint} to test.")
    zph = proportional_hazards_test(
        adjusted.result, endpoint_frame(cohort.patients, endpoint), transform="km"
    )
    return [
        ModelOutput(
            f"zph_{endpoint}",
            "zph",
            endpoint,
            zph,
            f"Proportional hazards (scaled Schoenfeld), {endpoint.upper()}",
        )
    ]


ZPH = Step(name="zph", label="PH test", run=run_zph, uses=COX.name, requires=COX.name)
