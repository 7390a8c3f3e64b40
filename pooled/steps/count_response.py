"""The CTC count beyond one cut-off: the hazard ratio as a function of the count.

Section ``models.count_response``, per endpoint: the CTC count per 7.5 ml (after volume
normalisation) as a natural cubic spline of log1p(count) in the adjusted stratified Cox model,
its hazard-ratio curve against a reference count with pointwise 95 % intervals (plotted over
the count's distribution), the likelihood-ratio test of non-linearity (spline against
linear), the count categories' hazard ratios and the AIC of the linear, spline and
categorical forms (:mod:`pooled.models.count_response`).

The section also defines the count exposures (``exposure.kind: count_categories`` or
``continuous``; :mod:`pooled.exposures`): their categories (``breaks``, ``labels``) and spline
(``df``, ``knots``, ``knots_at``), read by the cohort step and the Cox models whether or not
the curve itself is switched on.

References
----------
.. [1] Riley RD, Moons KGM, Snell KIE, et al. A guide to systematic review and meta-analysis
   of prognostic factor studies. BMJ 2019;364:k4597.
.. [2] Bidard FC, Michiels S, Riethdorf S, et al. Circulating tumor cells in breast cancer
   patients treated by neoadjuvant chemotherapy: a meta-analysis. J Natl Cancer Inst
   2018;110:560-7.
"""

from __future__ import annotations

from dataclasses import dataclass

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.errors import ConfigError
from pooled.exposures import COUNT_KINDS, COUNT_STEP, CountScale, count_spline, ctc_per_7_5ml
from pooled.model_flow import account_for_model
from pooled.models.count_response import DEFAULT_BREAKS, DEFAULT_GRID, count_category_labels
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, ModelSection, Step, endpoint_frame, per_centre

KNOT_RULES: tuple[str, ...] = ("nonzero", "all")
COUNT_COLUMN = "ctc_per_7_5ml"

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "models.count_response", "model switch",
        "The CTC count per 7.5 ml as a continuous marker, per endpoint: a natural cubic "
        "spline of log1p(count) in the adjusted stratified Cox model, its hazard-ratio curve "
        "against a reference count with pointwise 95 % intervals over the count's "
        "distribution, the likelihood-ratio test of non-linearity (spline vs linear), the "
        "hazard ratios of the count categories and the AIC of the linear, spline and "
        "categorical forms. Its options also define the count exposures "
        "(`exposure.kind: count_categories` or `continuous`), used even when the curve is "
        "off.",
        "models: {count_response: {breaks: [0, 1, 2, 4], df: 3}}", default=False,
    ),
    ConfigKey(
        "models.count_response.breaks", "list of numbers",
        "Upper ends of the count categories (CTC per 7.5 ml), right-closed as R's "
        "`cut(count, c(-Inf, breaks, Inf))`: 0, 1, 2, 4 give 0, 1, 2, 3-4, >= 5 (Bidard et "
        "al. 2018). A count between two whole numbers (1 cell in 15 ml = 0.5) belongs to the "
        "upper one. The first category is the reference.",
        "models: {count_response: {breaks: [0, 4]}}", default=DEFAULT_BREAKS,
    ),
    ConfigKey(
        "models.count_response.labels", "list of text",
        "Names of the count categories, one more than `breaks`.",
        "models: {count_response: {breaks: [0, 4], labels: [none, few, many]}}", default=(),
        default_text="from the breaks (0, 1, 2, 3-4, >=5)",
    ),
    ConfigKey(
        "models.count_response.df", "integer >= 1",
        "Degrees of freedom of the natural cubic spline of log1p(count) (its number of "
        "columns; df - 1 interior knots). The curve needs df >= 2; a `continuous` exposure "
        "with df 1 enters the Cox models as log1p(count) itself.",
        "models: {count_response: {df: 4}}", default=3,
    ),
    ConfigKey(
        "models.count_response.knots", "list of numbers",
        "Interior knots as CTC counts per 7.5 ml (instead of quantiles; sets df to their "
        "number + 1).",
        "models: {count_response: {knots: [1, 5, 20]}}", default=(),
        default_text="none: quantiles (see knots_at)",
    ),
    ConfigKey(
        "models.count_response.knots_at", "choice",
        "Where quantile knots go: `nonzero`, at quantiles of the non-zero counts (with many "
        "zero counts the quantiles of all counts would fall on 0); `all`, at quantiles of all "
        "counts (R's `ns(x, df)`). The boundary knots are the smallest and largest count.",
        "models: {count_response: {knots_at: all}}", default="nonzero", allowed=KNOT_RULES,
    ),
    ConfigKey(
        "models.count_response.reference", "number",
        "The reference count (CTC per 7.5 ml) of the hazard-ratio curve.",
        "models: {count_response: {reference: 0}}", default=0.0,
    ),
    ConfigKey(
        "models.count_response.grid", "list of numbers",
        "Counts (CTC per 7.5 ml) at which the curve is tabulated in the results.",
        "models: {count_response: {grid: [1, 5, 20, 100]}}", default=DEFAULT_GRID,
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CountResponseSection(ModelSection):
    """``models.count_response``: the count's categories and spline (``scale``), the curve's
    reference and grid."""

    scale: CountScale = CountScale()
    reference: float = 0.0
    grid: tuple[float, ...] = DEFAULT_GRID


def parse_count_response(section: SectionReader) -> CountResponseSection:
    breaks = tuple(float(b) for b in section.get("breaks"))
    labels = tuple(str(v) for v in section.get("labels"))
    try:
        default_labels = count_category_labels(breaks)
    except ConfigError:
        raise section.error(
            ("breaks",), f"breaks expected ascending distinct counts; got {list(breaks)}"
        ) from None
    if labels and len(labels) != len(default_labels):
        raise section.error(
            ("labels",),
            f"{len(breaks)} breaks make {len(default_labels)} categories; got {len(labels)} "
            f"labels {list(labels)}",
        )
    if labels and len(set(labels)) != len(labels):
        raise section.error(("labels",), f"labels expected distinct names; got {list(labels)}")
    knots = tuple(float(k) for k in section.get("knots"))
    if any(k <= 0 for k in knots) or len(set(knots)) != len(knots):
        raise section.error(("knots",), f"knots expected distinct counts > 0; got {list(knots)}")
    df = int(section.get("df"))
    reference = float(section.get("reference"))
    grid = tuple(float(g) for g in section.get("grid"))
    for key, values in (("reference", (reference,)), ("grid", grid)):
        if any(v < 0 for v in values):
            raise section.error((key,), f"{key} expected counts >= 0; got {list(values)}")
    scale = CountScale(
        breaks=breaks, labels=labels, df=df, knots=tuple(sorted(knots)),
        knots_at=section.get("knots_at"),
    )  # fmt: skip
    if section.enabled and scale.spline_df < 2:
        raise section.error(
            ("df",), "the count's hazard-ratio curve needs a spline with df >= 2; got df 1"
        )
    exposure = section.config.exposure
    if exposure.kind in COUNT_KINDS:
        paired = [pair for pair in section.config.interactions if exposure.name in pair]
        if paired:
            how = "a spline" if exposure.kind == "continuous" else "several categories"
            raise section.ctx.error(
                ("interactions",),
                f"the count exposure {exposure.name!r} enters the models as {how}; an "
                f"interaction {list(paired[0])} with it is not supported (the HR within each "
                "level needs a 0/1 exposure). Use a threshold exposure (e.g. CTC >= 5) for the "
                "interaction, or remove it.",
            )
    return CountResponseSection(
        enabled=section.enabled, scale=scale, reference=reference, grid=grid
    )


def run_count_response(
    cohort: AnalysisDataset, section: CountResponseSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The count-response curve of the endpoint (adjusted, stratified, the Cox model's ties)."""
    from pooled.models.count_response import CountResponseSpec, fit_count_response

    endpoint, exposure = ctx.endpoint, ctx.exposure
    data = endpoint_frame(cohort.patients, endpoint)
    data = data.assign(**{COUNT_COLUMN: ctc_per_7_5ml(data)})
    scale = section.scale
    basis = None
    if exposure.kind == "continuous":  # the knots of the cohort's exposure columns
        basis = count_spline(cohort.patients, scale)
    covariates = tuple(c.name for c in ctx.covariates if c.name != exposure.name)
    spec = CountResponseSpec(
        duration=f"{endpoint}_months",
        event=f"{endpoint}_event",
        count=COUNT_COLUMN,
        covariates=covariates,
        categorical=tuple(p for p in ctx.categorical if p[0] in covariates),
        strata=ctx.strata,
        ties=ctx.section("cox").primary_ties,
        df=scale.spline_df,
        knots=scale.knots or None,
        knots_at=scale.knots_at,
        basis=basis,
        breaks=scale.breaks,
        labels=scale.labels,
        reference=section.reference,
        grid=section.grid,
        name=exposure.name if exposure.kind in COUNT_KINDS else "ctc",
        analysis=ctx.name,
        endpoint=endpoint,
    )
    result = fit_count_response(data, spec)
    name = f"count_response_{endpoint}"
    lost = result.dropped.groupby("centre")["n_dropped"].sum() if len(result.dropped) else 0
    flow = account_for_model(
        cohort.patients.assign(**{COUNT_COLUMN: ctc_per_7_5ml(cohort.patients)}),
        model=name,
        endpoint=endpoint,
        analysed=per_centre(data).sub(lost, fill_value=0),
        reported_n=result.n,
        required=(spec.duration, spec.event),
        covariates=(COUNT_COLUMN, *covariates, *spec.strata),
    )
    knots = ", ".join(f"{k:.3g}" for k in result.knots_count)
    return [
        ModelOutput(
            name,
            "count_response",
            endpoint,
            result,
            f"CTC count as a continuous marker, {endpoint.upper()} (spline df {result.basis.df}, "
            f"knots at {knots} CTC per 7.5 ml)",
            flow=flow,
        )
    ]


COUNT_RESPONSE = Step(
    name=COUNT_STEP,
    label="count response",
    run=run_count_response,
    section=f"models.{COUNT_STEP}",
    keys=KEYS,
    parse=parse_count_response,
)
