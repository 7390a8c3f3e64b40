"""Render a run (:class:`~pooled.run_output.RunOutput`) into its report folder.

``render_report(run, out_dir)`` writes ``figures/`` (PNG and SVG of every figure),
``tables.xlsx`` (publication tables) and ``report.html`` (one self-contained page, images
embedded, opening offline). It reads only the run: no data, no refitting.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pooled.errors import PooledError
from pooled.plots.forest import forest_rows, format_p_value, format_ratio_ci, heterogeneity_text
from pooled.report import prognostic
from pooled.report.checks import (
    MIN_CENTRES_PREDICTION,
    MIN_CENTRES_RANDOM_EFFECTS,
    PHCheck,
    centre_model_differences,
    config_document,
    exposure_name,
    one_vs_two_stage,
    ph_checks,
    time_split_rows,
    two_stage_caveat,
    why_they_differ,
)
from pooled.report.guidelines import cohort_profile, prisma_checklist, remark_profile
from pooled.report.html import (
    HtmlFigure,
    Section,
    definition_table,
    figure_html,
    page_html,
    table_html,
)
from pooled.report.labels import endpoint_name, group_display, survival_label
from pooled.report.tables import (
    bayes_table,
    fit_statistics_table,
    format_frame,
    hazard_ratio_table,
    write_tables_xlsx,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from pooled.run_output import ModelOutput, RunOutput

__all__ = ["ReportFiles", "render_report"]

FIGURE_FORMATS = ("png", "svg")
PNG_DPI = 150
CSS_DPI = 96


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """What :func:`render_report` wrote.

    Attributes
    ----------
    folder : the report folder.
    html : ``report.html``.
    xlsx : ``tables.xlsx``.
    figures : every figure file (PNG and SVG), in report order.
    forest_rows : per forest figure name, the rows it drew (label, term, row_type, hr,
        ci_lower, ci_upper, weight_percent, text), raw numbers.
    at_risk_labels : per Kaplan-Meier figure name, the drawn boxes ``(x0, y0, x1, y1)``
        (pixels) of the labels of its numbers-at-risk table (numbers and group names), as
        measured by matplotlib when the figure was drawn.
    """

    folder: Path
    html: Path
    xlsx: Path
    figures: tuple[Path, ...]
    forest_rows: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    at_risk_labels: Mapping[str, list[tuple[float, float, float, float]]] = field(
        default_factory=dict
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "figure"


class _Renderer:
    """Collects figures (saved to disk, embedded as PNG) and HTML sections."""

    def __init__(self, run: RunOutput, folder: Path, formats: tuple[str, ...], dpi: int) -> None:
        self.run = run
        self.folder = folder
        self.figure_dir = folder / "figures"
        self.figure_dir.mkdir(parents=True, exist_ok=True)
        self.formats = formats
        self.dpi = dpi
        self.files: list[Path] = []
        self.forest: dict[str, pd.DataFrame] = {}
        self.at_risk: dict[str, list[tuple[float, float, float, float]]] = {}
        self.names: set[str] = set()
        self.reserved: set[str] = set()
        self.checks: dict[str, PHCheck] = ph_checks(run)
        self.exposure = exposure_name(run)
        self.shown: set[str] = set()  # outputs already shown (a time split beside its HR)

    def reserve(self, name: str) -> str:
        """A unique file-safe figure name (``forest_two_stage_os``, not ``forest_forest_...``)."""
        name = _slug(name)
        for prefix in ("km_", "forest_", "subgroups_", "schoenfeld_", "funnel_", "sensitivity_"):
            doubled = prefix + prefix.rstrip("_") + "_"
            if name.startswith(doubled):
                name = name[len(prefix) :]
        base, i = name, 2
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        self.reserved.add(name)
        return name

    def figure(
        self,
        name: str,
        caption: str,
        draw: Callable[[], Axes | list[Axes]],
        rows: pd.DataFrame | None = None,
    ) -> str:
        """Draw, save in every format, close; return the ``<figure>`` HTML (a warning paragraph
        when the figure cannot be drawn). ``rows`` records what a forest plot drew."""
        import matplotlib.pyplot as plt

        if name in self.reserved:
            self.reserved.discard(name)
        else:
            name = self.reserve(name)
            self.reserved.discard(name)
        if rows is not None:
            self.forest[name] = rows
        try:
            drawn = draw()
        except Exception as exc:  # a figure that cannot be drawn must not sink the report
            plt.close("all")
            return (
                f'<p class="warn">Figure {html.escape(name)} could not be drawn: '
                f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>"
            )
        ax = drawn if hasattr(drawn, "figure") else np.ravel(np.asarray(drawn, dtype=object))[0]
        fig: Figure = ax.figure  # type: ignore[assignment]
        try:
            png = io.BytesIO()
            fig.savefig(png, format="png", dpi=self.dpi, bbox_inches="tight", facecolor="white")
            for fmt in self.formats:
                path = self.figure_dir / f"{name}.{fmt}"
                if fmt == "png":
                    path.write_bytes(png.getvalue())
                else:
                    fig.savefig(path, format=fmt, bbox_inches="tight", facecolor="white")
                self.files.append(path)
        finally:
            plt.close(fig)
        width = _png_width(png.getvalue())
        css_width = int(round(width * CSS_DPI / self.dpi)) if width else 0
        return figure_html(HtmlFigure(name, caption, png.getvalue(), css_width))


def _png_width(data: bytes) -> int:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return 0
    return int.from_bytes(data[16:20], "big")


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _warn(text: str, cls: str = "warn") -> str:
    return f'<p class="{cls}">{html.escape(text)}</p>'


def _title(out: ModelOutput) -> str:
    return f"<h3>{html.escape(out.label or out.name)}</h3>"


def _frame_of(result: Any) -> pd.DataFrame | None:
    """A display table for results without a dedicated section."""
    for attr in ("table",):
        value = getattr(result, attr, None)
        if isinstance(value, pd.DataFrame):
            return value
    if isinstance(result, pd.DataFrame):
        return result
    to_frame = getattr(result, "to_frame", None)
    return to_frame() if callable(to_frame) else None


_TIDY_SHOWN = ["term", "hr", "ci_lower", "ci_upper", "p_value", "n", "events"]


# ---------------------------------------------------------------------------------------------
# definitions, profile, flow, characteristics


def _definitions_section(r: _Renderer, section: Section) -> None:
    """Cohort, exposure, endpoints (with how each centre delivered them), time origin,
    covariates, models and the config's description, before any result."""
    run = r.run
    found_table = run.characteristics.get("definitions")
    definitions = found_table if isinstance(found_table, pd.DataFrame) else pd.DataFrame()
    doc = config_document(run)
    has_table = len(definitions) > 0
    description = str(doc.get("description") or "")
    if has_table:
        found = definitions.loc[definitions["item"] == "description", "definition"]
        description = str(found.iloc[0]) if len(found) else description
    if description:
        section.add(f'<p class="description">{html.escape(description)}</p>')
    if has_table:
        section.add(
            _note(
                "What this run analysed. Endpoint definitions are the consortium schema's; "
                "the options are the config's as run (in full in the reproducibility section)."
            )
        )
        section.add(
            table_html(
                definitions.loc[definitions["item"] != "description"].rename(
                    columns={"section": ""}
                ),
                attrs={"class": "definitions-list"},
                formatted=True,
                wrap=["definition"],
            )
        )
    else:
        items = [
            (key, doc[key])
            for key in ("exposure", "endpoints", "covariates", "strata", "origin", "models")
            if key in doc
        ]
        if items:
            section.add(
                _note("This run predates the definitions table; the config's own keys follow.")
            )
            section.add(definition_table(items))
    prov = run.provenance
    origin = prov.get("time_origin")
    not_converted = dict(prov.get("origin_not_converted") or {})
    if origin:
        section.add(
            _p(
                f"Time origin of the analysis: {origin}"
                + (
                    " (the schema's origin per setting: diagnosis in early, sample in "
                    "metastatic disease)."
                    if str(origin) == "schema default"
                    else "."
                )
            )
        )
    if not_converted:
        section.add(
            _warn(
                "Delivered durations could not be converted to the analysis's time origin "
                "(an origin date is missing) and count from the centre's own origin: "
                + ", ".join(f"{c}: {n:,} patients" for c, n in sorted(not_converted.items()))
                + "."
            )
        )
    delivery = run.characteristics.get("endpoint_delivery")
    if isinstance(delivery, pd.DataFrame) and len(delivery):
        section.add("<h3>How each centre delivered the endpoints</h3>")
        section.add(
            _note(
                "Per centre, the analysed patients whose endpoints were computed from dates or "
                "taken from durations the centre delivered, what their times count from, and "
                "per endpoint the patients with it (events)."
            )
        )
        empty = [c for c in ("source not recorded",) if c in delivery and not delivery[c].any()]
        section.add(table_html(delivery.drop(columns=empty), attrs={"class": "delivery"}))
        mixed = delivery.loc[delivery["time origin"].astype(str).str.contains(";")]
        origins = set(delivery["time origin"].astype(str).str.replace(r" \(\d+\)", "", regex=True))
        if len(mixed) or len(origins) > 1:
            section.add(
                _warn(
                    "Centres' times count from different origins ("
                    + ", ".join(sorted(origins))
                    + "): hazard ratios stratified by centre are unaffected by a shift of the "
                    "origin within a centre only if no one is left-truncated; survival curves "
                    "pooled over centres mix time scales."
                )
            )


def _profile_section(r: _Renderer, section: Section) -> None:
    """The REMARK-style profile: received to cohort, then patients and events per analysis."""
    section.add(
        _note(
            "REMARK profile: the patients from received to the analysis cohort, then for each "
            "analysis the cohort patients it did not use, with every reason (counted at the "
            "first reason: left out by the analysis, endpoint missing, first missing covariate "
            "in model order, centre not estimable), and the patients and events it analysed. "
            "Per centre in model_flow.csv."
        )
    )
    section.add(table_html(cohort_profile(r.run), attrs={"class": "cohort-profile"}))
    profile = remark_profile(r.run)
    if len(profile):
        section.add("<h3>Patients used by each model</h3>")
        section.add(
            table_html(
                profile,
                attrs={"class": "remark-profile"},
                wrap=["reasons", "analysis"],
            )
        )


def _flow_section(r: _Renderer, section: Section) -> None:
    from pooled.plots.flow import flow_diagram

    flow = r.run.flow
    section.add(
        _note(
            "Patients per centre: received, excluded at each step (with the reason) and "
            "analysed. The last row is the total."
        )
    )
    section.add(table_html(flow.to_frame(), attrs={"class": "flow"}))
    section.add(
        r.figure("exclusion_flow", "Exclusion flow, all centres", lambda: flow_diagram(flow))
    )
    sample_flow = getattr(r.run, "sample_flow", None)
    if sample_flow is not None:
        section.add("<h3>Serial samples</h3>")
        section.add(
            _note(
                "Serial CTC samples per centre: received, excluded (their own blocking errors, "
                "or their patient excluded) and analysed."
            )
        )
        section.add(table_html(sample_flow.to_frame(), attrs={"class": "flow"}))


_NOT_CHARACTERISTICS = ("definitions", "endpoint_delivery", "missing_by_centre")


def _characteristics_section(r: _Renderer, section: Section) -> None:
    tables = r.run.characteristics
    if "missing_by_centre" in tables:
        section.add(
            _note(
                "Medians (IQR) of known values; percentages of categories among patients with a "
                "known value. 'missing': patients without a value at centres that collect the "
                "variable; 'not collected': patients of centres whose data has no value of it "
                "at all. [covariate], [derived: ...] mark the models' covariates."
            )
        )
    for name, table in tables.items():
        if name in _NOT_CHARACTERISTICS:
            continue
        section.add(f"<h3>{html.escape(name.replace('_', ' ').capitalize())}</h3>")
        section.add(table_html(table, attrs={"class": f"characteristics {name}"}, formatted=True))
    missing = tables.get("missing_by_centre")
    if isinstance(missing, pd.DataFrame) and len(missing):
        section.add("<h3>Missing values by centre</h3>")
        section.add(
            _note(
                "Patients without a value, n (%), per variable and centre; 'not collected' where "
                "the centre's data has no value of the variable at all."
            )
        )
        section.add(table_html(missing, attrs={"class": "missing"}, formatted=True))


# ---------------------------------------------------------------------------------------------
# survival


def _followup_block(out: ModelOutput, section: Section) -> None:
    result = out.result
    section.add(_title(out))
    extra = out.extra or {}
    q1, q3 = extra.get("q1"), extra.get("q3")
    iqr = ""
    if q1 is not None and q3 is not None and np.isfinite(q1):
        upper = f"{q3:.1f}" if np.isfinite(q3) else "not reached"
        iqr = f", IQR {q1:.1f}-{upper}"
    name = endpoint_name(out.endpoint) or "the primary endpoint"
    section.add(
        _p(
            f"Median follow-up: {result.median:.1f} months{iqr} "
            f"(95% CI {result.ci_lower:.1f}-{result.ci_upper:.1f}), by the reverse Kaplan-Meier "
            f"method on {name.lower()} (censoring counted as the event; the definition of the "
            f"validation reports); {result.n:,} patients, {result.n_censored:,} censored."
        )
    )


def _km_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.km import km_plot

    result = out.result
    logrank = out.extra.get("logrank") if out.extra else None
    names = dict(out.extra.get("group_names") or {}) if out.extra else {}
    n_centres = sum(1 for n in r.run.flow.received.values() if int(n) > 0)
    pooled = (
        f"The curves pool the patients of all {n_centres} centres (Kaplan-Meier, not stratified "
        "by centre)"
    )
    if logrank is not None and logrank.strata:
        pooled += (
            f"; the log-rank test is stratified by {', '.join(logrank.strata)} "
            f"({logrank.n_strata} strata), so it compares groups within centres."
        )
    else:
        pooled += "; the log-rank test is unstratified."
    section.add(_title(out))
    name = r.reserve(f"km_{out.name}")

    def draw() -> Axes:
        from pooled.plots.km import risk_table_boxes

        ax = km_plot(
            result,
            logrank=logrank,
            group_names=names,
            xlabel="Months",
            ylabel=survival_label(out.endpoint),
            title=endpoint_name(out.endpoint),
        )
        r.at_risk[name] = risk_table_boxes(ax)
        return ax

    section.add(
        r.figure(
            name,
            f"{endpoint_name(out.endpoint)} by {getattr(result.spec, 'group', '') or 'group'}. "
            + pooled
            + " Numbers at risk at the x ticks.",
            draw,
        )
    )
    summary = result.summary.drop(columns=["group"], errors="ignore")
    summary = summary.assign(label=[group_display(lab, names) for lab in summary["label"]])
    summary = summary.rename(
        columns={
            "label": "group",
            "median": "median (months)",
            "median_lower": "median 95% CI lower",
            "median_upper": "median 95% CI upper",
        }
    )
    shown_summary = format_frame(summary)
    for column in ("median (months)", "median 95% CI lower", "median 95% CI upper"):
        if column in summary:  # a curve (or its band) that never reaches 0.5
            missing = summary[column].isna().to_numpy()
            shown_summary.loc[missing, column] = "not reached"
    section.add(table_html(shown_summary, formatted=True))
    if len(result.at_times):
        at = result.at_times
        shown = pd.DataFrame(
            {
                "group": [group_display(lab, names) for lab in at["label"]],
                "time": at["time"],
                "n at risk": at["n_risk"],
                "survival (95% CI)": [
                    format_ratio_ci(s, lo, hi, digits=3)
                    for s, lo, hi in zip(
                        at["survival"], at["ci_lower"], at["ci_upper"], strict=True
                    )
                ],
            }
        )
        section.add(
            _note(
                f"{endpoint_name(out.endpoint)} at the configured times (95% CI, "
                f"{result.spec.conf_type}), pooled over centres."
            )
        )
        section.add(table_html(shown))


# ---------------------------------------------------------------------------------------------
# Cox models and their checks


def _ph_flag_html(check: PHCheck) -> str:
    return _warn(check.sentence(), "warn ph-flag")


def _cox_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.diagnostics import schoenfeld_plot

    result = out.result
    frame = out.to_frame()
    check = r.checks.get(out.endpoint)
    section.add(_title(out))
    # patients and events are the same on every row: they are in the note under the table
    shown_columns = [c for c in _TIDY_SHOWN if c not in ("n", "events")] + ["lr_p_value"]
    cols = [c for c in shown_columns if c in frame.columns]
    table = frame[cols].copy()
    classes: list[str] = []
    if check is not None:
        tested = check.model == (out.label or out.name)
        ph_p = (
            dict(
                zip(
                    check.zph.result.table["term"].astype(str),
                    check.zph.result.table["p_value"],
                    strict=True,
                )
            )
            if tested
            else {}
        )
        if tested:
            table["PH test p"] = [ph_p.get(str(t), np.nan) for t in table["term"]]
        flags = [check.flag(tested=tested) if str(t) in check.terms else "" for t in table["term"]]
        if any(flags):
            table["PH check"] = flags
        classes = ["flagged" if f else "" for f in flags]
    html_table = table_html(
        table,
        attrs={"class": "cox", "data-output": out.name},
        row_classes=classes or None,
        wrap=["PH check"],
    )
    flagged = check is not None and any(classes)
    tested = check is not None and check.model == (out.label or out.name)
    if flagged and check is not None and tested:
        section.add(_ph_flag_html(check))
        residuals = check.zph.result.residuals.columns
        shown = [t for t in check.terms if t in residuals]
        shown += [t for t in check.rejecting_terms if t in residuals and t not in shown]
        figures = []
        for term in shown[:3]:
            names = list(result.term_names)
            coefficient = float(result.coefficients[names.index(term)]) if term in names else None

            def draw(term: str = term, coefficient: float | None = coefficient) -> Axes:
                import matplotlib.pyplot as plt

                _fig, ax = plt.subplots(figsize=(4.0, 3.0))
                return schoenfeld_plot(check.zph.result, term, ax=ax, coefficient=coefficient)

            figures.append(
                r.figure(
                    f"schoenfeld_{out.name}_{term}",
                    f"Scaled Schoenfeld residuals of {term} against time "
                    f"({out.endpoint.upper()}); a sloping smooth means the HR changes over "
                    "follow-up.",
                    draw,
                )
            )
        section.add(f'<div class="beside">{html_table}{"".join(figures)}</div>')
        if check.time_split is not None:
            _time_split_block(r, check.time_split, section, beside=True)
    elif flagged and check is not None:
        section.add(
            _warn(
                f"{check.flag(tested=False)} in {check.model}: this HR of the same exposure "
                "averages a time-varying effect too (Schoenfeld plot with the adjusted model).",
                "warn ph-flag",
            )
        )
        section.add(html_table)
    else:
        section.add(html_table)
    n = getattr(result, "n", None)
    events = getattr(result, "events", None)
    dropped = getattr(result, "dropped", None)
    if n is not None:
        text = f"{n:,} patients, {events:,} events."
        if isinstance(dropped, pd.DataFrame) and len(dropped):
            count = dropped.select_dtypes("number").to_numpy().sum()
            text += f" Complete-case analysis: {int(count):,} patients dropped (see the profile)."
        strata = getattr(getattr(result, "spec", None), "strata", ())
        if strata:
            text += f" Stratified by {', '.join(strata)}."
        section.add(_note(text))
    fits = fit_statistics_table([out])
    if len(fits):
        statistics = fits.drop(columns=["Analysis", "Endpoint"])
        section.add(_note("Fit statistics (Harrell's C within strata, where the result has it)."))
        section.add(
            table_html(statistics, attrs={"class": "fit-statistics", "data-output": out.name})
        )


def _time_split_block(
    r: _Renderer, out: ModelOutput, section: Section, *, beside: bool = False
) -> None:
    if out.name in r.shown:
        return
    r.shown.add(out.name)
    rows = time_split_rows(out, r.exposure)
    heading = "Period-specific hazard ratios" if beside else (out.label or out.name)
    section.add(f"<h3>{html.escape(heading)}</h3>")
    if not len(rows):
        section.add(_note("No period-specific estimates."))
        return
    section.add(
        _note(
            f"The HR of {r.exposure or 'the exposure'} within each period of follow-up "
            f"({out.label or out.name}): where proportional hazards fail, these are the "
            "estimates to read."
        )
    )
    section.add(table_html(rows, attrs={"class": "time-split", "data-output": out.name}))


# ---------------------------------------------------------------------------------------------
# a status measured over time (time-dependent, landmark) and competing risks

IMMORTAL_TIME_SENTENCE = (
    "An exposure that uses samples taken after time zero (CTC clearance at a follow-up "
    "sample, \u201cever negative\u201d, a trajectory) but is analysed from time zero credits "
    "the exposed group with the follow-up during which its patients had to survive to be "
    "sampled: immortal-time bias, which makes a favourable change look better than it is. "
    "The time-dependent model (each patient's status carried forward from each sample) and "
    "the landmark analyses (the status last measured by the landmark, patients still at risk "
    "there, follow-up restarted at the landmark) are free of it; the baseline model uses the "
    "status at time zero only, which understates the effect of the current status when the "
    "status changes."
)


def _ratio_table(frame: pd.DataFrame, label: str = "term") -> pd.DataFrame:
    """term, HR (95% CI), p of a tidy table's coefficient rows."""
    return pd.DataFrame(
        {
            label: frame["term"].astype(str).to_numpy(),
            "HR (95% CI)": [
                format_ratio_ci(h, lo, hi)
                for h, lo, hi in zip(frame["hr"], frame["ci_lower"], frame["ci_upper"], strict=True)
            ],
            "p": [format_p_value(p) for p in frame["p_value"]],
        }
    )


def _time_dependent_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    result = out.result
    fit = result.fit
    section.add(_title(out))
    section.add(table_html(_ratio_table(fit.to_frame()),  # the PH test has its own table
                           attrs={"class": "time-dependent", "data-output": out.name}))  # fmt: skip
    total = result.exposed_time + result.unexposed_time
    share = result.exposed_time / total if total > 0 else float("nan")
    section.add(
        _note(
            f"{result.n_patients:,} patients ({result.n_rows:,} counting-process intervals), "
            f"{fit.events:,} events; the status changes during follow-up in "
            f"{result.n_changing:,} patients; {share:.1%} of the follow-up is spent with status "
            "1. Patients enter at their first sample."
            + (f" Stratified by {', '.join(fit.spec.strata)}." if fit.spec.strata else "")
        )
    )
    if result.ph_test is not None:
        table = result.ph_test.table.copy()
        section.add(_note("Proportional hazards of the time-dependent model (scaled Schoenfeld "
                          "residuals, as for the baseline model):"))  # fmt: skip
        section.add(table_html(format_frame(table), formatted=True,
                               attrs={"class": "zph-time-dependent"}))  # fmt: skip


def _landmark_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    result = out.result
    section.add(_title(out))
    for (t, fit), cohort in zip(result.fits, result.cohorts.to_dict("records"), strict=False):
        section.add(table_html(_ratio_table(fit.to_frame()),
                               attrs={"class": "landmark", "data-output": out.name}))  # fmt: skip
        section.add(
            _note(
                f"Landmark at {t:g} months: {int(cohort['at_risk']):,} patients alive and under "
                f"follow-up, {int(cohort['without_sample']):,} without a sample by then (left "
                f"out); {fit.n:,} analysed, {fit.events:,} events, {int(cohort['exposed']):,} "
                "with status 1. Follow-up from the landmark."
            )
        )


def _exposure_timing_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.competing import exposure_timing_plot

    result = out.result
    table = result.table
    section.add(_title(out))
    shown = pd.DataFrame(
        {
            "analysis": table["label"],
            "HR (95% CI)": [
                format_ratio_ci(h, lo, hi)
                for h, lo, hi in zip(table["hr"], table["ci_lower"], table["ci_upper"], strict=True)
            ],
            "p": [format_p_value(p) for p in table["p_value"]],
            "patients": table["n"],
            "events": table["events"],
            "follow-up from": table["time_origin"],
        }
    )
    figure = r.figure(
        f"exposure_timing_{out.name}",
        f"Hazard ratio of {result.exposure} by how its timing is handled "
        f"({endpoint_name(out.endpoint)}).",
        lambda: exposure_timing_plot(result),
    )
    table_markup = table_html(shown, attrs={"class": "exposure-timing", "data-output": out.name})
    section.add(f'<div class="beside">{table_markup}{figure}</div>')
    hrs = "; ".join(f"{lab}: {format_ratio_ci(h, lo, hi)}" for lab, h, lo, hi in
                    zip(table["label"], table["hr"], table["ci_lower"], table["ci_upper"],
                        strict=True))  # fmt: skip
    section.add(_p(IMMORTAL_TIME_SENTENCE + f" Here: {hrs}."))


def _competing_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.competing import cumulative_incidence_plot

    result = out.result
    incidence = result.incidence
    spec = result.spec
    event, other = spec.event_label, spec.competing_label.replace("_", " ")
    names = {
        str(label): f"{spec.group}: {'yes' if str(label).startswith('1') else 'no'}"
        for label in dict.fromkeys(incidence.curves["label"])
        if spec.group and str(label) in ("0", "1", "0.0", "1.0")
    }
    section.add(_title(out))
    name = r.reserve(f"cif_{out.name}")
    section.add(
        r.figure(
            name,
            f"Cumulative incidence of {endpoint_name(event).lower() or event} (solid, 95% band) "
            f"and of {other} (dashed) by {spec.group or 'group'} (Aalen-Johansen, pooled over "
            "centres); Gray's test"
            + (f" stratified by {', '.join(spec.strata)}" if spec.strata else "")
            + ". Numbers at risk at the x ticks.",
            lambda: cumulative_incidence_plot(
                incidence, group_names=names, title=endpoint_name(out.endpoint),
                risk_times=None,
            ),
        )
    )  # fmt: skip
    at = incidence.at_times
    if len(at):
        section.add(table_html(pd.DataFrame({
            "group": [group_display(lab, names) for lab in at["label"]],
            "time": at["time"],
            "n at risk": at["n_risk"],
            f"{event} (95% CI)": [format_ratio_ci(f, lo, hi, digits=3) for f, lo, hi in
                                  zip(at["cif_event"], at["ci_lower_event"], at["ci_upper_event"],
                                      strict=True)],
            f"{other} (95% CI)": [format_ratio_ci(f, lo, hi, digits=3) for f, lo, hi in
                                  zip(at["cif_competing"], at["ci_lower_competing"],
                                      at["ci_upper_competing"], strict=True)],
        }), attrs={"class": "cumulative-incidence", "data-output": out.name}))  # fmt: skip
    rows = []
    for cause, fit in result.cause_specific:
        frame = fit.to_frame()
        for rec in _ratio_table(frame).to_dict("records"):
            rows.append({"model": f"cause-specific Cox: {spec.label(cause).replace('_', ' ')}",
                         **rec})  # fmt: skip
    if result.fine_gray is not None:
        for rec in _ratio_table(result.fine_gray.to_frame()).to_dict("records"):
            rows.append({"model": f"Fine-Gray (subdistribution HR): {event}", **rec})
    if rows:
        section.add(table_html(pd.DataFrame(rows), attrs={"class": "competing-models"}))
    fg = result.fine_gray
    section.add(
        _note(
            f"{incidence.n:,} patients, {incidence.events:,} {event} events, "
            f"{incidence.competing_events:,} {other} events. The cause-specific HR compares "
            f"the rate of each event among patients still free of both; the Fine-Gray "
            f"subdistribution HR compares the cumulative incidence of {event} (patients with "
            f"{other} stay in its risk set, inverse-probability-of-censoring weighted"
            + (f", censoring and baseline per {', '.join(spec.strata)}" if spec.strata else "")
            + (f"; robust SEs by patient, {fg.n_rows:,} weighted rows" if fg is not None else "")
            + ")."
        )
    )


# ---------------------------------------------------------------------------------------------
# two-stage


def _two_stage_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.forest import forest_plot

    result = out.result
    meta = getattr(result, "meta", result)
    k = int(getattr(meta, "k", 0))
    prediction = k >= MIN_CENTRES_PREDICTION
    section.add(_title(out))
    caveat = two_stage_caveat(meta)
    if caveat:
        section.add(_warn(caveat, "caveat"))
    check = r.checks.get(out.endpoint)
    if check is not None and check.rejects:
        section.add(
            _warn(
                check.note("the centres' HRs and their pooled HR"),
                "warn ph-flag",
            )
        )
    name = r.reserve(f"forest_{out.name}")
    rows = forest_rows(result)
    caption = f"{out.label or out.name}: squares sized by weight, pooled diamond"
    caption += (
        ", dotted line the 95% prediction interval."
        if prediction and np.isfinite(getattr(meta, "pi_lower", np.nan))
        else f" (no prediction interval with {k} centre{'s' if k != 1 else ''})."
    )
    if check is not None and check.rejects:
        caption += " " + check.note("these HRs")
    section.add(
        r.figure(
            name,
            caption,
            lambda: forest_plot(
                result,
                title=f"{endpoint_name(out.endpoint)} by centre".strip(),
                show_prediction=prediction,
            ),
            rows=rows,
        )
    )
    section.add(f'<p class="heterogeneity">{html.escape(heterogeneity_text(meta))}</p>')
    shown = rows[["label", "text", "weight_percent"]].rename(
        columns={"label": "Centre", "text": "HR (95% CI)", "weight_percent": "Weight (%)"}
    )
    attrs = [
        {
            "data-label": lab,
            "data-term": term,
            "data-hr": repr(float(h)),
            "data-ci-lower": repr(float(lo)),
            "data-ci-upper": repr(float(hi)),
        }
        for lab, term, h, lo, hi in zip(
            rows["label"],
            rows["term"],
            rows["hr"],
            rows["ci_lower"],
            rows["ci_upper"],
            strict=True,
        )
    ]
    classes = ["pooled" if k == "pooled" else "" for k in rows["row_type"]]
    section.add(
        table_html(
            shown,
            attrs={"class": "forest-rows", "data-figure": name, "data-output": out.name},
            row_attrs=attrs,
            row_classes=classes,
        )
    )
    differences = centre_model_differences(result)
    if len(differences):
        section.add(
            _note(
                "Centres whose stage-one model differs from the one-stage model (terms left "
                "out because they are constant in the centre; centres not pooled, with why):"
            )
        )
        section.add(
            table_html(differences, attrs={"class": "centre-differences"}, wrap=["difference"])
        )


def _comparison_display(rows: pd.DataFrame) -> pd.DataFrame:
    """The comparison as a manuscript prints it: HR (95% CI) text, SEs to 3 decimals."""
    out = []
    for rec in rows.to_dict("records"):
        one = (
            format_ratio_ci(
                rec.get("one_stage_hr", np.nan),
                rec.get("one_stage_ci_lower", np.nan),
                rec.get("one_stage_ci_upper", np.nan),
            )
            if "one_stage_hr" in rec
            else ""
        )
        two = format_ratio_ci(
            rec["two_stage_hr"], rec["two_stage_ci_lower"], rec["two_stage_ci_upper"]
        )
        diff = rec.get("difference_log_hr", np.nan)
        out.append(
            {
                "endpoint": str(rec["endpoint"]).upper(),
                "one-stage HR (95% CI)": one,
                "two-stage HR (95% CI)": two,
                "SE of log HR (one / two)": (
                    f"{_fmt(rec.get('one_stage_se'), 3)} / {_fmt(rec.get('two_stage_se'), 3)}"
                ),
                "patients (events), one / two": (
                    f"{_counts(rec.get('one_stage_n'), rec.get('one_stage_events'))} / "
                    f"{_counts(rec.get('two_stage_n'), rec.get('two_stage_events'))}"
                ),
                "centres": str(rec.get("two_stage_centres", "")),
                "difference (log HR)": _fmt(diff, 3),
                "beyond the larger SE": (
                    "yes" if rec.get("disagree") else ("no" if np.isfinite(_num(diff)) else "")
                ),
                "per-centre model differences": rec.get("centre_differences") or "none",
            }
        )
    return pd.DataFrame(out)


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(x: Any, digits: int) -> str:
    value = _num(x)
    return f"{value:.{digits}f}" if np.isfinite(value) else ""


def _counts(n: Any, events: Any) -> str:
    a, b = _num(n), _num(events)
    return f"{int(a):,} ({int(b):,})" if np.isfinite(a) and np.isfinite(b) else ""


def _comparison_section(r: _Renderer, section: Section) -> None:
    """One-stage vs two-stage estimates of the exposure side by side, with why they differ."""
    rows = one_vs_two_stage(r.run)
    if not len(rows):
        return
    section.add(
        _note(
            "The exposure's HR from the one-stage model (adjusted Cox, stratified by centre) and "
            "the two-stage model (per-centre Cox, pooled), with standard errors of the log HR. "
            "They disagree here when their log HRs differ by more than the larger standard "
            "error (a descriptive yardstick: both come from the same patients)."
        )
    )
    section.add(
        table_html(
            _comparison_display(rows),
            attrs={"class": "one-vs-two-stage"},
            formatted=True,
            wrap=["per-centre model differences"],
        )
    )
    for rec in rows.to_dict("records"):
        if "one_stage_hr" not in rec:
            continue
        one, two = rec["one_stage_hr"], rec["two_stage_hr"]
        strata = "centre"
        lead = f"{str(rec['endpoint']).upper()}: one-stage HR {one:.2f}, two-stage HR {two:.2f}; "
        if rec.get("disagree"):
            lead += (
                f"they differ by {abs(rec['difference_log_hr']):.3f} on the log scale, more than "
                f"the larger standard error ({rec['larger_se']:.3f})."
            )
            css = "warn disagree"
        else:
            lead += (
                f"they differ by {abs(rec['difference_log_hr']):.3f} on the log scale, within "
                f"the larger standard error ({rec['larger_se']:.3f})."
            )
            css = "note agree"
        reasons = why_they_differ({str(k): v for k, v in rec.items()}, strata)
        section.add(
            f'<p class="{css}">{html.escape(lead)} Why they can differ: '
            + html.escape("; ".join(reasons))
            + ".</p>"
        )


def _interaction_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.forest import subgroup_forest_plot

    result = out.result
    within = getattr(result, "within", None)
    if within is None and isinstance(out.extra.get("within"), pd.DataFrame):
        within = out.extra["within"]
    test = getattr(result, "test", None)
    section.add(_title(out))
    if within is None:
        frame = _frame_of(result)
        if frame is not None:
            section.add(table_html(frame))
        return
    check = r.checks.get(out.endpoint)
    if check is not None and check.rejects:
        section.add(
            _warn(
                check.note("the HRs within each level"),
                "warn ph-flag",
            )
        )
    name = r.reserve(f"subgroups_{out.name}")
    label_column = "level" if "level" in within.columns else "term"
    drawn = within.assign(label=within[label_column].astype(str))
    by = getattr(result, "by", "")
    marker = getattr(result, "marker", "")
    section.add(
        r.figure(
            name,
            f"HR of {marker} within each level of {by}" if by else (out.label or out.name),
            lambda: subgroup_forest_plot(
                within, interaction=test, title=f"{marker} by {by}".strip() if by else ""
            ),
            rows=drawn,
        )
    )
    cols = [c for c in ["level", "hr", "ci_lower", "ci_upper", "p_value"] if c in within]
    section.add(table_html(within[cols]))
    if test is not None:
        section.add(
            _p(
                f"Interaction likelihood-ratio test: chi^2 = {test.chisq:.2f}, df = {test.df}, "
                f"p = {format_p_value(test.p_value)}."
            )
        )


def _coefficients_for(run: RunOutput, spec: Any) -> dict[str, float]:
    for other in run.outputs:
        if other.kind == "cox" and getattr(other.result, "spec", None) == spec:
            res = other.result
            return {t: float(c) for t, c in zip(res.term_names, res.coefficients, strict=True)}
    return {}


def _zph_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.diagnostics import ph_terms, schoenfeld_plots

    result = out.result
    section.add(_title(out))
    check = r.checks.get(out.endpoint)
    table = result.table.copy()
    classes = None
    if check is not None:
        table["rejects"] = table["p_value"] < check.alpha
        classes = [
            "flagged" if (str(t) in check.terms or t == "GLOBAL") and rej else ""
            for t, rej in zip(table["term"], table["rejects"], strict=True)
        ]
        section.add(
            _warn(check.sentence(), "warn ph-flag") if check.rejects else _note(check.sentence())
        )
    section.add(table_html(table, attrs={"class": "zph"}, row_classes=classes))
    coefficients = _coefficients_for(r.run, result.spec)
    terms = ph_terms(result)
    if terms:
        section.add(
            r.figure(
                f"schoenfeld_{out.name}",
                "Scaled Schoenfeld residuals against time with a LOWESS smooth; dashed: the "
                "Cox coefficient (a flat smooth supports proportional hazards).",
                lambda: schoenfeld_plots(result, terms, coefficients=coefficients),
            )
        )


def _funnel_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.diagnostics import funnel_plot

    meta = getattr(out.result, "meta", None)
    if meta is None or meta.k < 3:
        return
    section.add(f"<h3>Funnel plot: {html.escape(out.label or out.name)}</h3>")
    section.add(
        r.figure(
            f"funnel_{out.name}",
            "Per-centre estimates against their standard error",
            lambda: funnel_plot(meta),
        )
    )


def _bayes_plot_functions() -> list[tuple[str, Callable[..., Any]]]:
    """Posterior and trace plots from :mod:`pooled.plots.bayes`, when it is installed."""
    try:
        from pooled.plots import bayes as bayes_plots
    except ImportError:
        return []
    found = []
    for name in ("posterior_plot", "trace_plot"):
        function = getattr(bayes_plots, name, None)
        if callable(function):
            found.append((name, function))
    return found


def _bayes_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.forest import estimate_forest_plot

    result = out.result
    section.add(_title(out))
    problems = tuple(getattr(result, "problems", ()) or ())
    if problems:
        section.add(
            '<p class="warn">Sampling diagnostics out of bounds: '
            + html.escape("; ".join(problems))
            + ". Do not trust these numbers before re-running with more tuning or draws.</p>"
        )
    else:
        section.add(_note("R-hat <= 1.01, bulk and tail ESS >= 400 and no divergences."))
    section.add(
        _note(
            "Summaries are posterior medians with equal-tailed 95% credible intervals, in the "
            "table and in every figure (hr = exp(median log HR))."
        )
    )
    check = r.checks.get(out.endpoint)
    if check is not None and check.rejects:
        section.add(
            _warn(
                check.note("this model's HRs (one per centre for the whole follow-up)"),
                "warn ph-flag",
            )
        )
    table = bayes_table(out)
    frame = out.to_frame()
    k = int((frame["quantity"] == "centre").sum()) if "quantity" in frame else 0
    if 0 < k < MIN_CENTRES_RANDOM_EFFECTS:
        section.add(
            _warn(
                f"Only {k} centre{'s' if k != 1 else ''}: the between-centre SD (tau) is "
                "informed mostly by its prior, and so are the shrunken centre HRs and the "
                "predictive HR for a new centre"
                + (" (not drawn: fewer than 3 centres)." if k < MIN_CENTRES_PREDICTION else "."),
                "caveat",
            )
        )
    section.add(table_html(table, attrs={"class": "bayes"}))
    if "quantity" in frame.columns:
        wanted = ["centre", "pooled"] + (["predictive"] if k >= MIN_CENTRES_PREDICTION else [])
        rows = frame[frame["quantity"].isin(wanted)].copy()
        order = {"centre": 0, "pooled": 1, "predictive": 2}
        rows["_order"] = rows["quantity"].map(order)
        rows = rows.sort_values("_order", kind="stable").drop(columns="_order")
        rows["label"] = [
            str(lev) if q == "centre" else ("Pooled" if q == "pooled" else "New centre")
            for q, lev in zip(rows["quantity"], rows["level"], strict=True)
        ]
        if len(rows) > 1:
            section.add(
                r.figure(
                    f"bayes_forest_{out.name}",
                    "Posterior median and 95% equal-tailed credible interval: shrunken centre "
                    "HRs, the pooled HR and the predictive HR for a new centre.",
                    lambda: estimate_forest_plot(
                        rows,
                        label_column="label",
                        pooled=("Pooled", "New centre"),
                        title=f"{endpoint_name(out.endpoint)} by centre (Bayesian)".strip(),
                        text_header="HR (95% CrI)",
                    ),
                    rows=rows,
                )
            )
    captions = {
        "posterior_plot": "Posterior of the pooled hazard ratio (mu) with its posterior median "
        "and 95% equal-tailed interval (as in the table) and P(HR > 1)",
        "trace_plot": "Trace and per-chain posterior densities of mu and tau",
    }
    for name, function in _bayes_plot_functions():

        def draw(f: Callable[..., Any] = function) -> Any:
            drawn = f(result)
            first = (
                drawn if hasattr(drawn, "figure") else np.ravel(np.asarray(drawn, dtype=object))[0]
            )
            if first.figure.get_layout_engine() is None:
                first.figure.tight_layout()
            return drawn

        section.add(r.figure(f"{name}_{out.name}", captions.get(name, name), draw))


def _trajectory_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.trajectories import trajectory_plot

    result = out.result
    section.add(_title(out))
    table = getattr(result, "table", None)
    if isinstance(table, pd.DataFrame):
        section.add(table_html(table))
    fit = getattr(result, "best", result)
    if hasattr(fit, "predict_counts"):
        section.add(table_html(fit.groups.drop(columns=["intercept"], errors="ignore")))
        observed = out.extra.get("observed") if out.extra else None
        section.add(
            r.figure(
                f"trajectories_{out.name}",
                "Fitted mean CTC count of each trajectory group"
                + (" with observed group means" if observed is not None else ""),
                lambda: trajectory_plot(result, observed=observed),
            )
        )
    elif table is None:
        frame = _frame_of(result)
        if frame is not None:
            section.add(table_html(frame.head(50)))


_BOILERPLATE = ("output", "analysis", "endpoint")


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop empty columns and the columns every row shares (analysis, endpoint)."""
    keep = []
    for column in frame.columns:
        values = frame[column]
        if values.isna().all() or (values.astype(str) == "").all():
            continue
        if column in _BOILERPLATE:
            continue
        keep.append(column)
    return frame[keep]


def _mixed_cox_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    """The one-stage random-effects Cox model: the pooled exposure HR, the variance
    components with their LR test, the prediction interval for a new centre, and the forest
    of the shrunken centre HRs beside the two-stage per-centre estimates of the endpoint."""
    from pooled.plots.mixed_cox import centre_effects_plot

    result = out.result
    section.add(_title(out))
    k = len(getattr(result, "centres", ()))
    if k < MIN_CENTRES_RANDOM_EFFECTS:
        section.add(
            _warn(
                f"Only {k} centre{'s' if k != 1 else ''}: with fewer than "
                f"{MIN_CENTRES_RANDOM_EFFECTS} centres the variance of the random effects is "
                "poorly estimated.",
                "caveat",
            )
        )
    if getattr(result, "boundary", False):
        section.add(_note("A variance is at its boundary (0, or a correlation of +-1); the "
                          "model's notes say which."))  # fmt: skip
    frame = out.to_frame()
    fixed = frame.loc[frame.get("row_type", pd.Series("", index=frame.index)) == "fixed"]
    variance = frame.loc[frame.get("row_type", pd.Series("", index=frame.index)) == "variance"]
    columns = [c for c in ("term", "hr", "ci_lower", "ci_upper", "p_value", "pi_lower",
                           "pi_upper", "n", "events") if c in fixed]  # fmt: skip
    section.add(table_html(fixed[columns], attrs={"class": "mixed-fixed", "data-output": out.name}))
    if len(variance):
        keep = [c for c in ("term", "estimate", "lr_statistic", "p_value", "lr_null")
                if c in variance]  # fmt: skip
        section.add(
            table_html(variance[keep], attrs={"class": "mixed-variance", "data-output": out.name})
        )
    two_stage = next(
        (o for o in r.run.outputs if o.kind == "two_stage" and o.endpoint == out.endpoint), None
    )
    per_centre = None
    if two_stage is not None:
        table = getattr(two_stage.result, "per_centre", None)
        if isinstance(table, pd.DataFrame) and {"centre", "hr"} <= set(table.columns):
            per_centre = table.loc[table["included"].astype(bool)] if "included" in table else table
    caption = (
        f"{out.label or out.name}: each centre's HR shrunken towards the mean (filled), "
        + ("beside its own two-stage estimate (open), " if per_centre is not None else "")
        + "the mean effect and the 95% prediction interval for a new centre."
    )
    name = r.reserve(f"centre_effects_{out.name}")
    section.add(
        r.figure(
            name,
            caption,
            lambda: centre_effects_plot(
                result, per_centre, title=f"{endpoint_name(out.endpoint)} by centre".strip()
            ),
        )
    )
    for note in getattr(result, "notes", ()) or ():
        section.add(_note(str(note)))


def _generic_block(out: ModelOutput, section: Section) -> None:
    if out.kind == "followup" and hasattr(out.result, "median"):
        _followup_block(out, section)
        return
    section.add(_title(out))
    frame = _frame_of(out.result)
    if frame is None or frame.empty:
        section.add(_note("No table."))
        return
    shown = _display(frame)
    section.add(table_html(shown.head(200)))
    if len(frame) > 200:
        section.add(_note(f"First 200 of {len(frame):,} rows; all rows in tables.xlsx."))


def _logrank_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    """The log-rank table with the groups named as in the Kaplan-Meier plot."""
    km = next((o for o in r.run.outputs if o.kind == "km" and o.endpoint == out.endpoint), None)
    names = dict((km.extra or {}).get("group_names") or {}) if km is not None else {}
    section.add(_title(out))
    frame = _display(out.to_frame())
    if "term" in frame:
        frame = frame.assign(term=[group_display(t, names) for t in frame["term"]])
        frame = frame.rename(columns={"term": "group"})
    section.add(table_html(frame))


def _main_estimate(r: _Renderer, out: ModelOutput) -> dict[str, Any] | None:
    """The estimate a sensitivity table varies: the two-stage pooled HR for the two-stage
    sensitivity analyses, else the exposure's HR in the adjusted one-stage model."""
    if out.name.startswith("sensitivity_two_stage"):
        for other in r.run.of_kind("two_stage"):
            if other.endpoint == out.endpoint:
                frame = other.to_frame()
                pooled = frame.loc[frame["row_type"] == "pooled"]
                if len(pooled):
                    rec = pooled.iloc[0]
                    return _reference_row(f"Main: {other.label or other.name}", rec)
        return None
    main = next(
        (o for o in r.run.outputs if o.kind == "cox" and o.name == f"cox_{out.endpoint}_adjusted"),
        None,
    )
    if main is None:
        return None
    frame = main.to_frame()
    term = r.exposure or (str(frame["term"].iloc[0]) if len(frame) else "")
    found = frame.loc[frame["term"].astype(str) == term]
    if not len(found):
        return None
    rec = found.iloc[0]
    return _reference_row(f"Main: {main.label or main.name}", rec)


def _reference_row(label: str, rec: pd.Series) -> dict[str, Any]:
    row = {"label": label}
    for column in ("hr", "ci_lower", "ci_upper", "p_value", "n", "events"):
        row[column] = rec.get(column, np.nan)
    return row


def _sensitivity_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.forest import estimate_forest_plot

    frame = out.to_frame()
    section.add(_title(out))
    if {"hr", "ci_lower", "ci_upper", "model"} <= set(frame.columns) and len(frame):
        rows = frame.assign(label=frame["model"].astype(str).str.replace("sensitivity: ", ""))
        main = _main_estimate(r, out)
        check = r.checks.get(out.endpoint)
        caption = out.label or out.name
        if main is not None:
            caption += ": the main estimate first (diamond, dashed line), each analysis below it"
        if check is not None and check.rejects:
            caption += ". " + check.note("the HRs here").rstrip(".")
        section.add(
            r.figure(
                f"sensitivity_{out.name}",
                caption + ".",
                lambda: estimate_forest_plot(rows, label_column="label", reference=main),
                rows=rows,
            )
        )
        table = rows[["label"] + [c for c in [*_TIDY_SHOWN[1:], "note"] if c in rows]]
        if main is not None:
            first = pd.DataFrame([main])[[c for c in table.columns if c in main]]
            table = pd.concat([first, table], ignore_index=True)
        section.add(
            table_html(
                table, attrs={"class": "sensitivity", "data-output": out.name}, wrap=["note"]
            )
        )
    else:
        _generic_block(out, section)


#: Below this many centres a bootstrap by centre draws from too few clusters for its
#: percentile intervals to keep their level (Field and Welsh 2007; Cameron, Gelbach and Miller
#: 2008 find cluster-bootstrap percentile intervals under-cover with fewer than 10-20 clusters).
FEW_BOOTSTRAP_CENTRES = 10


def _few_clusters_caveat(n_centres: int) -> str:
    if not 0 < n_centres < FEW_BOOTSTRAP_CENTRES:
        return ""
    return (
        f" With {n_centres} centres the replicates draw from only {n_centres} clusters: "
        "percentile intervals from fewer than about 10 clusters tend to be too narrow; read "
        "them as a check on the model-based interval, not as a replacement."
    )


def _bootstrap_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    """The bootstrap by centre: each estimate's bootstrap SE and percentile interval beside
    the model's own SE and interval (from the output it re-estimates), and a plot of both."""
    from pooled.plots.bootstrap import bootstrap_interval_plot, bootstrap_rows

    result = out.result
    frame = out.to_frame()
    section.add(_title(out))
    spec = getattr(result, "spec", None)
    if spec is not None:
        section.add(
            _note(
                f"{spec.replicates} replicates, each drawing the centres with replacement (a "
                "centre drawn twice enters as two centres, each with its own baseline stratum) "
                "and refitting every estimate; percentile intervals at "
                f"{spec.level:.0%}. Ran in {getattr(result, 'execution', '') or 'this process'}."
                + _few_clusters_caveat(getattr(result, "n_centres", 0))
            )
        )
    results = r.run.results()
    model_rows = []
    for _, rec in frame.iterrows():
        source = results.loc[
            (results["output"] == rec["bootstrap_of"])
            & (results["term"].astype(str) == str(rec["term"]))
        ]
        if "row_type" in source:
            source = source.loc[
                source["row_type"].isin(["pooled", "fixed"]) | source["row_type"].isna()
            ]
        if len(source):
            first = source.iloc[0]
            model_rows.append({"bootstrap_of": rec["bootstrap_of"], "term": rec["term"],
                               "ci_lower": first["ci_lower"], "ci_upper": first["ci_upper"],
                               "std_error": first["std_error"]})  # fmt: skip
    model = pd.DataFrame(
        model_rows, columns=["bootstrap_of", "term", "ci_lower", "ci_upper", "std_error"]
    )
    rows = bootstrap_rows(result, model)
    if np.isfinite(rows["hr"].to_numpy(dtype=float)).any():
        section.add(
            r.figure(
                f"bootstrap_{out.name}",
                "Hazard ratio on the original data (point), the model-based interval (grey) and "
                "the bootstrap-by-centre percentile interval (blue).",
                lambda: bootstrap_interval_plot(rows),
            )
        )
    merged = frame.merge(
        model.rename(columns={"ci_lower": "model_ci_lower", "ci_upper": "model_ci_upper",
                              "std_error": "model_std_error"}),
        on=["bootstrap_of", "term"], how="left",
    )  # fmt: skip
    table = pd.DataFrame(
        {
            "estimate": merged["bootstrap_of"].astype(str) + ": " + merged["term"].astype(str),
            "hr": merged["hr"],
            "model CI": [format_ratio_ci(h, lo, hi) for h, lo, hi in
                         zip(merged["hr"], merged["model_ci_lower"], merged["model_ci_upper"], strict=True)],
            "bootstrap CI": [format_ratio_ci(h, lo, hi) for h, lo, hi in
                             zip(merged["hr"], merged["ci_lower"], merged["ci_upper"], strict=True)],
            "model std_error": merged["model_std_error"],
            "bootstrap std_error": merged["std_error"],
            "replicates": merged["replicates"],
            "failed": merged["replicates_failed"],
            "note": merged["note"].fillna(""),
        }
    )  # fmt: skip
    section.add(
        table_html(table, attrs={"class": "bootstrap", "data-output": out.name}, wrap=["note"])
    )


def _prisma_section(r: _Renderer, section: Section) -> None:
    section.add(
        _note(
            "PRISMA-IPD items this report answers (yes), answers in part, or leaves to other "
            "documents (no), and where."
        )
    )
    section.add(
        table_html(
            prisma_checklist(r.run),
            attrs={"class": "prisma"},
            formatted=True,
            wrap=["what the run shows"],
        )
    )


_PROVENANCE_TITLES = {
    "time_origins": "What the delivered durations count from (patients per centre)",
    "origin_not_converted": "Durations left at their delivered origin (patients per centre)",
}


def _provenance_value(value: Any) -> Any:
    """A nested mapping as ``key (value), ...`` (``diagnosis (325)``), not its Python repr."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k} ({v})" for k, v in value.items())
    return value


def _footer(run: RunOutput) -> str:
    prov = dict(run.provenance)
    parts = ["<h2>Reproducibility</h2>"]
    skipped = prov.pop("skipped_models", None) or []
    scalar = [(k, v) for k, v in prov.items() if not isinstance(v, Mapping)]
    parts.append(definition_table([("analysis", run.name), *scalar]))
    if skipped:
        parts.append("<h3>Models skipped (the data could not support them)</h3>")
        parts.append(table_html(pd.DataFrame(skipped), formatted=True, wrap=["reason"]))
    versions = prov.get("upload_versions") or {}
    hashes = prov.get("upload_sha256") or {}
    if versions or hashes:
        centres = sorted(set(versions) | set(hashes))
        uploads = pd.DataFrame(
            {
                "centre": centres,
                "upload version": [str(versions.get(c, "")) for c in centres],
                "upload sha256": [str(hashes.get(c, "")) for c in centres],
            }
        )
        parts.append("<h3>Uploads per centre</h3>")
        parts.append(table_html(uploads, formatted=True))
    packages = prov.get("packages") or {}
    if packages:
        parts.append("<h3>Package versions</h3>")
        parts.append(definition_table(sorted(packages.items())))
    others = [
        (k, v)
        for k, v in prov.items()
        if isinstance(v, Mapping) and k not in ("upload_versions", "upload_sha256", "packages")
    ]
    for key, value in others:
        if not value:  # e.g. no centre's durations left unconverted
            continue
        parts.append(f"<h3>{html.escape(_PROVENANCE_TITLES.get(str(key), str(key)))}</h3>")
        parts.append(
            definition_table(sorted((str(a), _provenance_value(b)) for a, b in value.items()))
        )
    parts.append(
        "<details><summary>Configuration as run</summary><pre>"
        + html.escape(run.config_text)
        + "</pre></details>"
    )
    return "".join(parts)


def _dispatch(r: _Renderer, out: ModelOutput, sections: Mapping[str, Section]) -> None:
    """Render one output into its section."""
    if out.kind == "km":
        _km_block(r, out, sections["survival"])
    elif out.kind == "followup":
        _generic_block(out, sections["survival"])
    elif out.kind == "logrank":
        _logrank_block(r, out, sections["survival"])
    elif out.kind == "cox":
        _cox_block(r, out, sections["cox"])
    elif out.kind == "time_split":
        _time_split_block(r, out, sections["cox"])
    elif out.kind == "time_dependent":
        _time_dependent_block(r, out, sections["timing"])
    elif out.kind == "landmark":
        _landmark_block(r, out, sections["timing"])
    elif out.kind == "exposure_timing":
        _exposure_timing_block(r, out, sections["timing"])
    elif out.kind == "competing":
        _competing_block(r, out, sections["competing"])
    elif out.kind == "two_stage":
        _two_stage_block(r, out, sections["centres"])
        _funnel_block(r, out, sections["diagnostics"])
    elif out.kind == "interaction":
        _interaction_block(r, out, sections["subgroups"])
    elif out.kind == "zph":
        _zph_block(r, out, sections["diagnostics"])
    elif out.kind == "mixed_cox":
        _mixed_cox_block(r, out, sections["random_effects"])
    elif out.kind in ("bayes", "bayes_meta"):
        _bayes_block(r, out, sections["bayes"])
    elif out.kind == "trajectory":
        _trajectory_block(r, out, sections["serial"])
    elif out.kind in ("comparison", "clearance"):
        _generic_block(out, sections["serial"])
    elif out.kind == "sensitivity":
        _sensitivity_block(r, out, sections["sensitivity"])
    elif out.kind == "count_response":
        prognostic.count_response_block(r, out, sections[prognostic.SECTION[0]])
    elif out.kind == "added_value":
        prognostic.added_value_block(r, out, sections[prognostic.SECTION[0]])
    elif out.kind == "validity":
        prognostic.validity_block(r, out, sections[prognostic.SECTION[0]])
    elif out.kind == "bootstrap":
        _bootstrap_block(r, out, sections["bootstrap"])
    else:
        _generic_block(out, sections["other"])


#: The report's sections, in order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("definitions", "Definitions"),
    ("profile", "Reporting profile (REMARK)"),
    ("flow", "Exclusion flow"),
    ("characteristics", "Patient characteristics"),
    ("survival", "Follow-up and Kaplan-Meier curves"),
    ("cox", "Hazard ratios (stratified Cox)"),
    ("timing", "Status measured over time: time-dependent and landmark analyses"),
    ("competing", "Competing risks"),
    ("centres", "Forest plots by centre"),
    ("comparison", "One-stage and two-stage estimates"),
    ("random_effects", "Random-effects Cox models (one stage)"),
    prognostic.SECTION,
    ("subgroups", "Subgroups"),
    ("diagnostics", "Model diagnostics"),
    ("bayes", "Bayesian hierarchical models"),
    ("serial", "Serial CTC counts"),
    ("sensitivity", "Sensitivity analyses"),
    ("bootstrap", "Bootstrap by centre"),
    ("prisma", "PRISMA-IPD checklist"),
    ("other", "Other results"),
    ("all", "All results"),
)


def render_report(
    run: RunOutput,
    out_dir: str | Path,
    *,
    formats: tuple[str, ...] = FIGURE_FORMATS,
    dpi: int = PNG_DPI,
) -> ReportFiles:
    """Render a run into ``out_dir``: ``figures/``, ``tables.xlsx`` and ``report.html``.

    The page starts with the definitions (description, cohort, exposure, each endpoint's
    definition and how each centre delivered it, time origin, covariates, models) and a
    REMARK-style profile (patients and events of each analysis, every exclusion with its
    reason), then the exclusion flow per centre, patient characteristics with their missing
    data, the median follow-up, Kaplan-Meier curves with numbers at risk, Cox hazard ratios
    with their fit statistics and proportional-hazards flags (the Schoenfeld plot and the
    period-specific HRs beside a flagged HR), forest plots by centre (squares sized by
    weight, pooled diamond, prediction interval from 3 centres, a caveat below 5), the
    one-stage and two-stage estimates side by side, subgroups, diagnostics, Bayesian
    posteriors (medians and equal-tailed intervals), trajectory groups, sensitivity analyses
    against the main estimate, a PRISMA-IPD checklist and a reproducibility footer. Only here
    are numbers rounded; ``tables.xlsx`` keeps them as numbers with display formats. Images
    are embedded as base64 PNG so the page opens offline.

    Parameters
    ----------
    run : RunOutput
        What the runner produced (or :func:`pooled.run_output.load_run` read back).
    out_dir : path
        The report folder (created if needed).
    formats : tuple of str
        File formats written to ``figures/`` for every figure (``png`` always embedded).
    dpi : int
        Resolution of the PNG figures.

    Returns
    -------
    ReportFiles

    References
    ----------
    .. [1] Stewart LA, Clarke M, Rovers M, et al. Preferred reporting items for a systematic
       review and meta-analysis of individual participant data: the PRISMA-IPD statement.
       JAMA 2015;313:1657-65.
    .. [2] Altman DG, McShane LM, Sauerbrei W, Taube SE. Reporting recommendations for tumor
       marker prognostic studies (REMARK): explanation and elaboration. PLoS Med
       2012;9:e1001216.

    Examples
    --------
    >>> # files = render_report(load_run("reports/paddy"), "reports/paddy")
    >>> # files.html.name
    """
    import matplotlib

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (folder / "figures").glob("*"):  # figures of an earlier render of this folder
        if stale.is_file() and stale.suffix.lower() in (".png", ".svg", ".pdf"):
            stale.unlink()
    with matplotlib.rc_context({"font.size": 10, "svg.fonttype": "none"}):
        r = _Renderer(run, folder, tuple(formats), dpi)
        sections = {key: Section(key, title) for key, title in SECTIONS}
        _definitions_section(r, sections["definitions"])
        _profile_section(r, sections["profile"])
        _flow_section(r, sections["flow"])
        _characteristics_section(r, sections["characteristics"])
        for out in run.outputs:
            try:
                _dispatch(r, out, sections)
            except Exception as exc:
                raise PooledError(
                    f"report: output {out.name!r} (kind {out.kind!r}, result "
                    f"{type(out.result).__name__}) could not be rendered: "
                    f"{type(exc).__name__}: {exc}. Expected the result type the runner "
                    "produces for this kind; re-run `pooled run` if run.pkl is from an older "
                    "version."
                ) from exc
        _comparison_section(r, sections["comparison"])
        _prisma_section(r, sections["prisma"])
        hr = hazard_ratio_table(run.outputs, r.checks)
        if len(hr):
            sections["all"].add(
                "<details><summary>Hazard ratio table (as in tables.xlsx)</summary>"
                + table_html(hr.dropna(axis=1, how="all"), attrs={"class": "hazard-ratios"})
                + "</details>"
            )
        fits = fit_statistics_table(run.outputs)
        if len(fits):
            sections["all"].add(
                "<details><summary>Fit statistics of every Cox model (as in tables.xlsx)"
                "</summary>"
                + table_html(fits, attrs={"class": "fit-statistics-all"})
                + "</details>"
            )
        results = run.results()
        if len(results):
            sections["all"].add(
                f"<details><summary>Tidy results table ({len(results):,} rows, as results.csv)"
                "</summary>"
                + table_html(results[["output", *[c for c in results.columns[1:13]]]])
                + "</details>"
            )
        xlsx = write_tables_xlsx(run, folder / "tables.xlsx")
        n_centres = len(run.flow.received)
        analysed = int(np.asarray(run.flow.analysed()).sum())
        subtitle = f"{analysed:,} patients analysed from {n_centres} centres"
        page = page_html(
            f"Pooled analysis: {run.name}", subtitle, list(sections.values()), _footer(run)
        )
        html_path = folder / "report.html"
        html_path.write_text(page, encoding="utf-8")
    return ReportFiles(
        folder=folder,
        html=html_path,
        xlsx=xlsx,
        figures=tuple(r.files),
        forest_rows=dict(r.forest),
        at_risk_labels=dict(r.at_risk),
    )
