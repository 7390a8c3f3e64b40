"""The proportional-hazards test of each endpoint's adjusted Cox model (scaled Schoenfeld).

Runs after the Cox step of the same endpoint, on its adjusted fit, when the Cox models run
(``models.cox``). Its section ``models.zph`` holds ``alpha``, the level at which the
report flags a hazard ratio whose PH test rejects.
"""

from __future__ import annotations

from dataclasses import dataclass

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.errors import DataError
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, ModelSection, Step, endpoint_frame
from pooled.steps.cox import COX, CoxSection

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.zph", "model switch",
        "The proportional-hazards test (scaled Schoenfeld residuals) of each endpoint's "
        "adjusted Cox model; runs with `models.cox` (`zph: false` leaves it out).",
        "models: {cox: {ties: efron}, zph: {alpha: 0.01}}", default=True,
        default_text="on when `models.cox` is on",
    ),
    ConfigKey(
        "models.zph.alpha", "number",
        "Level at which the report flags a hazard ratio: when the PH test of the exposure "
        "(or the global test) has p < alpha, the exposure's HR is flagged where it is shown, "
        "with its Schoenfeld plot and the period-specific HRs when they were fitted.",
        "models: {zph: {alpha: 0.01}}", default=0.05,
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ZphSection(ModelSection):
    """``models.zph``: the level of the report's PH flag."""

    alpha: float = 0.05


def parse_zph(section: SectionReader) -> ZphSection:
    alpha = section.get("alpha")
    if not 0.0 < alpha < 1.0:
        raise section.error(
            ("alpha",), f"'alpha' must lie strictly between 0 and 1; got {alpha!r}."
        )
    return ZphSection(enabled=section.enabled, alpha=alpha)


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


ZPH = Step(
    name="zph", label="PH test", run=run_zph, uses=COX.name, requires=COX.name,
    section="models.zph", keys=KEYS, parse=parse_zph,
    enabled=lambda section, ctx: bool(section) and bool(ctx.section("zph")),
)  # fmt: skip
