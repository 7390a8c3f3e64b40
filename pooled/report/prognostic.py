"""The report's section on prognostic value beyond one cut-off.

Three blocks, each reading one output of the run: the CTC count as a continuous marker
(:class:`~pooled.models.count_response.CountResponseResult`: the hazard-ratio curve over the
count's distribution, the test of non-linearity, the categories and the AIC of the forms), the
marker's added value over the clinical model
(:class:`~pooled.models.added_value.AddedValueResult`: LR test, Harrell's and Uno's C, their
difference with the jackknife and the bootstrap-by-centre intervals) and the model's validity
across centres (:class:`~pooled.models.validity.ValidityResult`: forest plot of the per-centre
C and calibration slope, their pooled estimates with prediction intervals). Only here are the
numbers rounded.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pooled.plots.forest import format_p_value, format_ratio_ci, p_relation
from pooled.report.html import Section, table_html
from pooled.report.labels import endpoint_name

if TYPE_CHECKING:  # pragma: no cover
    from pooled.run_output import ModelOutput

__all__ = ["SECTION", "added_value_block", "count_response_block", "validity_block"]

SECTION = ("prognostic", "Prognostic value beyond one cut-off")
_MEASURES = {
    "apparent_c": "C, model fitted in the centre",
    "iecv_c": "C, internal-external cross-validation",
    "calibration_slope": "Calibration slope, internal-external cross-validation",
}


def _title(out: ModelOutput) -> str:
    return f"<h3>{html.escape(out.label or out.name)}</h3>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _value_ci(estimate: float, lower: float, upper: float, digits: int = 3) -> str:
    if not np.isfinite(estimate):
        return ""
    if not (np.isfinite(lower) and np.isfinite(upper)):
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} ({lower:.{digits}f} to {upper:.{digits}f})"


def _terms(columns: tuple[str, ...]) -> list[str]:
    """Column names for a sentence, a spline's columns as one: ``ctc (spline, 3 df)``."""
    out: list[str] = []
    splines: dict[str, int] = {}
    for column in columns:
        stem, _, number = column.rpartition("_ns")
        if stem and number.isdigit():
            if stem not in splines:
                out.append(stem)
            splines[stem] = splines.get(stem, 0) + 1
        else:
            out.append(column)
    return [f"{c} (spline, {splines[c]} df)" if c in splines else c for c in out]


def _p(p: float) -> str:
    text = format_p_value(p)
    return text if text else ""


def count_response_block(r: Any, out: ModelOutput, section: Section) -> None:
    """The count's HR curve over its distribution, the test of non-linearity, the HRs at
    chosen counts and by category, and the AIC of the linear, spline and categorical forms."""
    from pooled.plots.count_response import count_response_plot

    result = out.result
    spec = result.spec
    section.add(_title(out))
    knots = ", ".join(f"{k:.3g}" for k in result.knots_count)
    caption = (
        f"{endpoint_name(out.endpoint)}: hazard ratio against {spec.reference:g} CTC per 7.5 ml "
        f"(natural cubic spline of log(1 + count), df {result.basis.df}, knots at {knots} CTC; "
        "shaded: pointwise 95% CI; dotted lines: the knots), the count categories' HRs "
        "(squares at the category's median count, 95% CI) and the linear form (dashed); "
        "below, the patients at each count. "
        f"Adjusted and stratified as the Cox model; {result.n:,} patients, {result.events:,} "
        "events."
    )
    section.add(
        r.figure(
            f"count_response_{out.name}",
            caption,
            lambda: count_response_plot(result, title=f"{endpoint_name(out.endpoint)}".strip()),
        )
    )
    test = result.nonlinearity
    section.add(
        f'<p class="nonlinearity">Test of non-linearity (spline against linear in log(1 + '
        f"count), likelihood ratio): chi-square {test['chisq']:.2f} on {test['df']:g} df, "
        f"p {html.escape(p_relation(test['p_value']))}.</p>"
    )
    grid = result.grid
    inside = grid.loc[~grid["beyond_data"].astype(bool) & (grid["count"] != spec.reference)]
    curve_table = pd.DataFrame(
        {
            "CTC per 7.5 ml": [f"{c:g}" for c in inside["count"]],
            f"HR vs {spec.reference:g} (95% CI), spline": [
                format_ratio_ci(h, lo, hi)
                for h, lo, hi in zip(
                    inside["hr"], inside["ci_lower"], inside["ci_upper"], strict=True
                )
            ],
            "HR, linear form": [f"{h:.2f}" for h in inside["linear_hr"]],
        }
    )
    beyond = int(grid["beyond_data"].astype(bool).sum())
    categories = result.categories
    category_table = pd.DataFrame(
        {
            "CTC per 7.5 ml": categories["level"].astype(str),
            "patients": [f"{n:,}" for n in categories["n"]],
            "events": [f"{n:,}" for n in categories["events"]],
            "HR (95% CI)": [
                "1 (reference)" if i == 0 else format_ratio_ci(h, lo, hi)
                for i, (h, lo, hi) in enumerate(
                    zip(
                        categories["hr"],
                        categories["ci_lower"],
                        categories["ci_upper"],
                        strict=True,
                    )
                )
            ],
            "p": [_p(p) for p in categories["p_value"]],
        }
    )
    aic = result.aic
    aic_table = pd.DataFrame(
        {
            "form of the count": aic["form"].map(
                {
                    "linear": "linear in log(1 + count)",
                    "spline": f"spline (df {result.basis.df})",
                    "categorical": f"{len(categories)} categories",
                }  # fmt: skip
            ),
            "parameters": aic["n_parameters"].astype(int).astype(str),
            "log partial likelihood": [f"{v:.2f}" for v in aic["loglik"]],
            "AIC": [f"{v:.1f}" for v in aic["aic"]],
            "difference from the best": [f"{v:.1f}" for v in aic["delta_aic"]],
        }
    )
    section.add(
        '<div class="beside">'
        + table_html(
            curve_table, attrs={"class": "count-curve", "data-output": out.name}, formatted=True
        )  # fmt: skip
        + table_html(
            category_table,
            attrs={"class": "count-categories", "data-output": out.name},
            formatted=True,
        )  # fmt: skip
        + table_html(
            aic_table, attrs={"class": "count-aic", "data-output": out.name}, formatted=True
        )  # fmt: skip
        + "</div>"
    )
    if beyond:
        section.add(
            _note(
                f"{beyond} of the tabulated counts lie above the largest count observed "
                f"({float(result.distribution['count'].max()):g} per 7.5 ml); the spline would "
                "only extrapolate there (linearly), so they are in results.csv, not shown."
            )
        )


def added_value_block(r: Any, out: ModelOutput, section: Section) -> None:
    """LR test of the marker over the clinical model; Harrell's and Uno's C of both models and
    their difference, with the jackknife CI and the bootstrap-by-centre percentile CI."""
    result = out.result
    spec = result.spec
    section.add(_title(out))
    test = result.lr_test
    section.add(
        f'<p class="lr-test">Adding {html.escape(spec.label)} to the clinical model '
        f"({html.escape(', '.join(spec.clinical))}): likelihood-ratio chi-square "
        f"{test.chisq:.2f} on {test.df} df, p {html.escape(p_relation(test.p_value))} "
        f"({result.n:,} patients, {result.events:,} events; stratified by "
        f"{html.escape(', '.join(spec.strata) or 'nothing')}).</p>"
    )
    rows = []
    labels = result.concordance["harrell"].labels
    for i, label in enumerate(labels):
        row = {"model": label}
        for name, title in (("harrell", "Harrell's C (95% CI)"), ("uno", "Uno's C (95% CI)")):
            comparison = result.concordance[name]
            c = float(comparison.concordance[i])
            se = float(np.sqrt(comparison.covariance[i, i]))
            row[title] = _value_ci(c, c - 1.959964 * se, c + 1.959964 * se)
        rows.append(row)
    difference = {"model": "difference (with - without the marker)"}
    bootstrap = {"model": f"difference, bootstrap by centre ({len(result.bootstrap)} replicates)"}
    for name, title in (("harrell", "Harrell's C (95% CI)"), ("uno", "Uno's C (95% CI)")):
        comparison = result.concordance[name]
        d, se = comparison.difference, comparison.se_difference
        difference[title] = (
            _value_ci(d, d - 1.959964 * se, d + 1.959964 * se)
            + f", p {p_relation(comparison.p_value)}"
        )
        boot_se, lower, upper = result.bootstrap_interval(name)
        bootstrap[title] = _value_ci(d, lower, upper) if np.isfinite(boot_se) else "not run"
    rows += [difference, bootstrap]
    table = pd.DataFrame(rows)
    section.add(
        table_html(
            table,
            attrs={"class": "added-value", "data-output": out.name},
            formatted=True,
            row_classes=["", "", "pooled", ""],
        )  # fmt: skip
    )
    failed = result.n_bootstrap_failed
    section.add(
        _note(
            "C within strata (pairs of patients of the same centre); the difference's standard "
            "error from the two C's infinitesimal-jackknife covariance (R's concordance(fit1, "
            "fit2)). The bootstrap draws whole centres with replacement and refits both models: "
            "its percentile interval allows for patients clustering in centres."
            + (f" {failed} replicates could not be fitted and were skipped." if failed else "")
        )
    )


def validity_block(r: Any, out: ModelOutput, section: Section) -> None:
    """Forest plot of the per-centre C and calibration slope; the per-centre and pooled table."""
    from pooled.plots.validity import validity_forest_plot

    result = out.result
    section.add(_title(out))
    iecv = "iecv_c" in result.meta
    k = len(result.per_centre)
    caption = (
        f"{endpoint_name(out.endpoint)}: "
        + (
            "each centre's C and calibration slope when the model is fitted on the other "
            "centres (internal-external cross-validation)"
            if iecv
            else "each centre's C of the model fitted in that centre"
        )
        + ", squares sized by weight, with 95% CIs; pooled by random effects (diamond) with the "
        "95% prediction interval for a new centre (dotted). Dashed: C = 0.5 (no "
        "discrimination), slope = 1 (calibrated)."
    )
    section.add(
        r.figure(
            f"validity_{out.name}",
            caption,
            lambda: validity_forest_plot(result, title=f"{endpoint_name(out.endpoint)}".strip()),
        )
    )
    per = result.per_centre
    table = pd.DataFrame(
        {
            "centre": per["centre"].astype(str),
            "patients": [f"{n:,}" for n in per["n"]],
            "events": [f"{n:,}" for n in per["events"]],
            "C, fitted in the centre": [
                _value_ci(c, c - 1.959964 * s, c + 1.959964 * s)
                for c, s in zip(per["apparent_c"], per["apparent_c_se"], strict=True)
            ],
        }
    )
    if iecv:
        table["C, IECV"] = [
            _value_ci(c, c - 1.959964 * s, c + 1.959964 * s)
            for c, s in zip(per["iecv_c"], per["iecv_c_se"], strict=True)
        ]
        table["calibration slope, IECV"] = [
            _value_ci(c, c - 1.959964 * s, c + 1.959964 * s, digits=2)
            for c, s in zip(per["calibration_slope"], per["calibration_slope_se"], strict=True)
        ]
    if per["note"].astype(str).str.len().gt(0).any():
        table["note"] = per["note"].astype(str)
    section.add(
        table_html(
            table,
            attrs={"class": "validity-centres", "data-output": out.name},
            formatted=True,
            wrap=["note"],
        )  # fmt: skip
    )
    pooled_rows = []
    for measure, meta in result.meta.items():
        digits = 2 if measure == "calibration_slope" else 3
        pooled_rows.append(
            {
                "measure": _MEASURES.get(measure, measure),
                "pooled (95% CI)": _value_ci(meta.estimate, meta.ci_lower, meta.ci_upper, digits),
                "95% prediction interval": f"{meta.pi_lower:.{digits}f} to {meta.pi_upper:.{digits}f}",
                "tau^2": "0" if meta.tau2 < 1e-12 else f"{meta.tau2:.2g}",
                "I^2 (%)": f"{meta.i2:.1f}",
                "centres": str(meta.k),
            }
        )
    section.add(
        table_html(
            pd.DataFrame(pooled_rows),
            attrs={"class": "validity-pooled", "data-output": out.name},
            formatted=True,
        )  # fmt: skip
    )
    spec = result.spec
    method = spec.method + (" with Knapp-Hartung (t on k - 1 df)" if spec.knha else "")
    few = f" With {k} centres tau^2 and the prediction interval are imprecise." if k < 10 else ""
    section.add(
        _note(
            f"Model: the adjusted Cox model ({', '.join(_terms(spec.covariates))}). Pooled by "
            f"{method}; "
            "the prediction interval is where a new centre's value is expected." + few
        )
    )
