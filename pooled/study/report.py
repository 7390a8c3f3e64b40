"""A study's files: the tidy table, the workbook and a self-contained report page.

:func:`write_study` writes, into the study's folder:

* ``performance.csv``: the tidy performance table (``endpoint, method, measure, estimate,
  mcse, target, target_se, n_replicates, n_failed``);
* ``estimates.parquet``: every replicate's estimates (log-HR scale);
* ``study.xlsx``: sheets ``performance`` (one row per endpoint and method, measures beside
  their Monte Carlo SEs), ``measures`` (tidy), ``estimates``, ``targets``, ``settings``;
* ``study.json``: settings, targets and how the study ran;
* ``report.html`` with ``figures/`` (PNG and SVG): the design, the targets, the performance
  table per endpoint, the estimates by method and the coverage with Monte Carlo intervals.

Only here are numbers rounded.
"""

from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pooled.report.html import (
    HtmlFigure,
    Section,
    definition_table,
    figure_html,
    page_html,
    table_html,
)
from pooled.study.design import StudySpec
from pooled.study.performance import MEASURES
from pooled.study.run import StudyResult

__all__ = ["StudyFiles", "write_study"]

STUDY_FILES = ("performance.csv", "estimates.parquet", "study.xlsx", "study.json", "report.html")

METHOD_TEXT: dict[str, str] = {
    "cox_stratified": "one-stage Cox model stratified by centre (Efron ties), adjusted; Wald "
    "interval",
    "two_stage_reml": "the same adjusted Cox model within each centre, log HRs pooled by "
    "random effects (REML); Wald interval",
    "two_stage_reml_knha": "the same pooled estimate with the Hartung-Knapp interval (t with "
    "k - 1 df)",
    "mixed_cox": "mixed-effects Cox model: random marker slope by centre, baselines "
    "stratified by centre (coxme's strata(centre) + (marker | centre)); Wald interval of "
    "the mean slope",
    "bayes": "Bayesian piecewise-exponential model, centre marker effects ~ N(mu, tau); "
    "posterior median of mu, equal-tailed credible interval",
}
_DIGITS: dict[str, int] = {
    "bias": 4,
    "empirical_se": 4,
    "mse": 5,
    "model_se": 4,
    "relative_error_model_se": 1,
    "coverage": 3,
    "bias_eliminated_coverage": 3,
    "power": 3,
}
_LABELS: dict[str, str] = {
    "bias": "bias",
    "empirical_se": "empirical SE",
    "mse": "MSE",
    "model_se": "model SE",
    "relative_error_model_se": "rel. error model SE (%)",
    "coverage": "coverage",
    "bias_eliminated_coverage": "bias-eliminated coverage",
    "power": "power",
}


@dataclass(frozen=True, slots=True)
class StudyFiles:
    """The files :func:`write_study` wrote."""

    folder: Path
    performance: Path
    estimates: Path
    xlsx: Path
    json: Path
    html: Path
    figures: tuple[Path, ...]


def _cell(value: float, mcse: float, digits: int) -> str:
    if not math.isfinite(value):
        return "-"
    text = f"{value:.{digits}f}"
    return f"{text} ({mcse:.{digits}f})" if math.isfinite(mcse) else text


def performance_display(result: StudyResult, endpoint: str) -> pd.DataFrame:
    """The report's performance table of one endpoint: ``value (MCSE)`` per measure."""
    wide = result.wide()
    part = wide.loc[wide["endpoint"] == endpoint]
    rows = []
    for _, rec in part.iterrows():
        row: dict[str, Any] = {"method": rec["method"]}
        for measure in MEASURES:
            row[_LABELS[measure]] = _cell(rec[measure], rec[f"{measure}_mcse"], _DIGITS[measure])
        row["replicates"] = f"{int(rec['n_replicates'])}"
        row["failed"] = f"{int(rec['n_failed'])}"
        row["bias / its MC error"] = (
            f"{rec['bias_z']:+.2f}" if math.isfinite(rec["bias_z"]) else "-"
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _figure(name: str, caption: str, draw: Any, folder: Path, files: list[Path]) -> str:
    import matplotlib.pyplot as plt

    try:
        ax = draw()
    except Exception as exc:  # a figure that cannot be drawn must not sink the report
        plt.close("all")
        return f'<p class="warn">Figure {html.escape(name)} could not be drawn: {html.escape(str(exc))}</p>'
    fig = ax.figure
    try:
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=150, bbox_inches="tight", facecolor="white")
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        path = folder / "figures" / f"{name}.png"
        path.write_bytes(png.getvalue())
        files.append(path)
        svg = folder / "figures" / f"{name}.svg"
        fig.savefig(svg, format="svg", bbox_inches="tight", facecolor="white")
        files.append(svg)
    finally:
        plt.close(fig)
    return figure_html(HtmlFigure(name, caption, png.getvalue(), 0))


def _settings(spec: StudySpec) -> list[tuple[str, Any]]:
    scenario = spec.scenario_spec
    return [
        ("scenario", f"{spec.scenario} ({scenario.setting} disease, {scenario.marker.upper()} "
                     f">= {scenario.marker_threshold:g})"),
        ("replicates", spec.replicates),
        ("patients per consortium", f"{spec.patients:,}"),
        ("centres", len(scenario.centres)),
        ("endpoints", ", ".join(spec.endpoints_used)),
        ("methods", ", ".join(spec.methods)),
        ("interval level", spec.level),
        ("covariates missing at random", "yes (complete-case analyses)" if spec.missingness else "no"),
        ("seed", f"{spec.seed} (replicate i draws from child i of SeedSequence({spec.seed}))"),
        ("settings digest", spec.digest()),
    ]  # fmt: skip


def _page(result: StudyResult, folder: Path, files: list[Path]) -> str:
    from pooled.plots.study import study_coverage_plot, study_estimates_plot

    spec = result.spec
    design = Section("design", "Design")
    design.add(
        "<p>Each replicate is a whole consortium of the scenario drawn in memory from its "
        "generative model (<code>pooled.simulate.cohort</code>; no files, no planted errors), "
        "analysed by every method at every endpoint. The performance measures are those of "
        "Morris, White and Crowther (Stat Med 2019;38:2074-102), each with its Monte Carlo "
        "SE in brackets, on the log hazard ratio scale.</p>"
    )
    design.add(definition_table(_settings(spec)))
    methods = pd.DataFrame(
        [{"method": m, "what it is": METHOD_TEXT.get(m, m)} for m in spec.methods]
    )
    design.add(table_html(methods, formatted=True, wrap=["what it is"]))
    targets = Section("targets", "Targets")
    targets.add(
        "<p>Every method is compared with the same target per endpoint: the log hazard ratio "
        "of the marker that the adjusted Cox model stratified by centre converges to "
        "(<code>truth.json</code> <code>estimands</code>, computed once from a draw of "
        "1,000,000 patients; its own Monte Carlo SE is <code>target SE</code>, added to the "
        "bias's when judging it). The two-stage and random-effects models estimate an "
        "average of the centres' log HRs weighted otherwise, so a small difference from this "
        "target is expected of them; <code>docs/studies/paddy.md</code> explains the "
        "differences.</p>"
    )
    targets.add(
        table_html(
            result.targets_frame()[
                ["endpoint", "target_hr", "target_log_hr", "target_se", "source"]
            ],
            wrap=["source"],
        )
    )
    performance = Section("performance", "Performance")
    figures = Section("estimates", "Estimates by method")
    for endpoint in spec.endpoints_used:
        target = result.targets[endpoint]
        performance.add(
            f"<h3>{html.escape(endpoint.upper())}: target HR {target.hr:.4f} "
            f"(log HR {target.log_hr:.4f})</h3>"
        )
        performance.add(
            table_html(performance_display(result, endpoint), formatted=True,
                       attrs={"class": "performance", "data-endpoint": endpoint})
        )  # fmt: skip
        figures.add(
            _figure(
                f"estimates_{endpoint}",
                f"{endpoint.upper()}: each replicate's estimate by method (points; boxes: "
                "quartiles), the mean with its 95 % Monte Carlo interval (diamond) and the "
                "target (dashed).",
                lambda e=endpoint: study_estimates_plot(result, e),
                folder,
                files,
            )
        )
    coverage = Section("coverage", "Coverage")
    coverage.add(
        _figure(
            "coverage",
            f"Coverage of the {spec.level:.0%} intervals with 95 % Monte Carlo intervals; grey: "
            f"where a method with exactly {spec.level:.0%} coverage lies 95 % of the time with "
            "this many replicates.",
            lambda: study_coverage_plot(result),
            folder,
            files,
        )
    )
    notes = Section("notes", "Failed fits and warnings")
    flagged = result.estimates.loc[result.estimates["note"].astype(str) != ""]
    if len(flagged):
        counts = (
            flagged.groupby(["endpoint", "method", "note"], sort=False)
            .size()
            .reset_index(name="replicates")
        )
        notes.add(table_html(counts, wrap=["note"]))
    else:
        notes.add("<p>Every fit of every replicate gave an estimate without a warning.</p>")
    prov = dict(result.provenance)
    footer = ["<h2>Reproducibility</h2>"]
    scalar = [(k, v) for k, v in prov.items() if not isinstance(v, dict)]
    footer.append(definition_table(scalar))
    footer.append("<h3>Package versions</h3>")
    footer.append(definition_table(sorted(dict(prov.get("packages") or {}).items())))
    subtitle = spec.describe()
    return page_html(
        f"Simulation study: {spec.scenario}",
        subtitle,
        [design, targets, performance, figures, coverage, notes],
        "".join(footer),
    )


def write_study(result: StudyResult, folder: str | Path) -> StudyFiles:
    """Write a study's tables, workbook and report page into ``folder`` (created).

    Examples
    --------
    >>> files = write_study(run_study(StudySpec(scenario="epac", replicates=4)), "study")  # doctest: +SKIP
    >>> files.html.name  # doctest: +SKIP
    'report.html'
    """
    import matplotlib

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    performance = out / "performance.csv"
    result.performance.to_csv(performance, index=False)
    estimates = out / "estimates.parquet"
    result.estimates.to_parquet(estimates, index=False)
    xlsx = out / "study.xlsx"
    settings = pd.DataFrame(
        [{"setting": k, "value": str(v)} for k, v in _settings(result.spec)]
        + [{"setting": k, "value": str(v)} for k, v in result.provenance.items() if k != "packages"]
    )
    with pd.ExcelWriter(xlsx, engine="openpyxl") as writer:
        result.wide().to_excel(writer, sheet_name="performance", index=False)
        result.performance.to_excel(writer, sheet_name="measures", index=False)
        result.estimates.to_excel(writer, sheet_name="estimates", index=False)
        result.targets_frame().to_excel(writer, sheet_name="targets", index=False)
        settings.to_excel(writer, sheet_name="settings", index=False)
    record = {
        "settings": result.spec.manifest(),
        "replicates": result.spec.replicates,
        "targets": {e: {"log_hr": t.log_hr, "hr": t.hr, "se": t.se, "source": t.source}
                    for e, t in result.targets.items()},
        "provenance": dict(result.provenance),
    }  # fmt: skip
    json_path = out / "study.json"
    json_path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    files: list[Path] = []
    with matplotlib.rc_context({"font.size": 10, "svg.fonttype": "none"}):
        page = _page(result, out, files)
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return StudyFiles(
        folder=out,
        performance=performance,
        estimates=estimates,
        xlsx=xlsx,
        json=json_path,
        html=html_path,
        figures=tuple(files),
    )
