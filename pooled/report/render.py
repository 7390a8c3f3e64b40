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
from pooled.report.html import (
    HtmlFigure,
    Section,
    definition_table,
    figure_html,
    page_html,
    table_html,
)
from pooled.report.tables import (
    bayes_table,
    hazard_ratio_table,
    model_flow_table,
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
    """

    folder: Path
    html: Path
    xlsx: Path
    figures: tuple[Path, ...]
    forest_rows: Mapping[str, pd.DataFrame] = field(default_factory=dict)


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
        self.names: set[str] = set()
        self.reserved: set[str] = set()

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
# sections


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
    used = model_flow_table(r.run)
    if len(used):
        section.add("<h3>Patients used by each model</h3>")
        section.add(
            _note(
                "Cohort patients each model did not use, by reason (counted at the first "
                "reason: left out by the analysis, endpoint missing, first missing covariate "
                "in model order, centre not estimable) and the patients analysed; per centre "
                "in model_flow.csv."
            )
        )
        section.add(table_html(used, attrs={"class": "flow"}))
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


def _characteristics_section(r: _Renderer, section: Section) -> None:
    for name, table in r.run.characteristics.items():
        section.add(f"<h3>{html.escape(name.replace('_', ' ').capitalize())}</h3>")
        section.add(table_html(table))


def _km_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.km import km_plot

    result = out.result
    logrank = out.extra.get("logrank") if out.extra else None
    section.add(_title(out))
    section.add(
        r.figure(
            f"km_{out.name}",
            out.label or out.name,
            lambda: km_plot(
                result,
                logrank=logrank,
                group_names=out.extra.get("group_names") if out.extra else None,
                xlabel="Months",
                title=f"{out.endpoint.upper()}" if out.endpoint else "",
            ),
        )
    )
    summary = result.summary.rename(
        columns={"median_lower": "median 95% CI lower", "median_upper": "median 95% CI upper"}
    )
    section.add(table_html(summary.drop(columns=["group"], errors="ignore")))
    if len(result.at_times):
        at = result.at_times
        shown = pd.DataFrame(
            {
                "group": at["label"].astype(str),
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
        section.add(_note(f"Survival at fixed times (95% CI, {result.spec.conf_type})."))
        section.add(table_html(shown))


def _cox_block(out: ModelOutput, section: Section) -> None:
    result = out.result
    frame = out.to_frame()
    section.add(_title(out))
    cols = [c for c in _TIDY_SHOWN + ["lr_p_value"] if c in frame.columns]
    section.add(table_html(frame[cols]))
    dropped = getattr(result, "dropped", None)
    n = getattr(result, "n", None)
    events = getattr(result, "events", None)
    if n is not None:
        text = f"{n:,} patients, {events:,} events."
        if isinstance(dropped, pd.DataFrame) and len(dropped):
            count = dropped.select_dtypes("number").to_numpy().sum()
            text += f" Complete-case analysis: {int(count):,} patients dropped (see tables.xlsx)."
        section.add(_note(text))


def _two_stage_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.forest import forest_plot

    result = out.result
    meta = getattr(result, "meta", result)
    section.add(_title(out))
    name = r.reserve(f"forest_{out.name}")
    rows = forest_rows(result)
    section.add(
        r.figure(
            name,
            f"{out.label or out.name}: squares sized by weight, pooled diamond, dotted line the "
            "95% prediction interval.",
            lambda: forest_plot(result, title=f"{out.endpoint.upper()} by centre".strip()),
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
    excluded = getattr(result, "excluded", None)
    if isinstance(excluded, pd.DataFrame) and len(excluded):
        section.add(
            _note(
                "Centres not pooled: "
                + "; ".join(
                    f"{c} ({why})"
                    for c, why in zip(excluded["centre"], excluded["reason"], strict=True)
                )
            )
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
    section.add(table_html(result.table))
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
    table = bayes_table(out)
    section.add(table_html(table))
    frame = out.to_frame()
    if "quantity" in frame.columns:
        rows = frame[frame["quantity"].isin(["centre", "pooled", "predictive"])].copy()
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
                    "Posterior median and 95% credible interval: shrunken centre HRs, the pooled "
                    "HR and the predictive HR for a new centre.",
                    lambda: estimate_forest_plot(
                        rows,
                        label_column="label",
                        pooled=("Pooled", "New centre"),
                        title=f"{out.endpoint.upper()} by centre (Bayesian)".strip(),
                        text_header="HR (95% CrI)",
                    ),
                    rows=rows,
                )
            )
    captions = {
        "posterior_plot": "Posterior of the pooled hazard ratio (mu) with its 95% HDI and P(HR > 1)",
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


def _generic_block(out: ModelOutput, section: Section) -> None:
    section.add(_title(out))
    result = out.result
    if out.kind == "followup" and hasattr(result, "median"):
        section.add(
            _p(
                f"Median follow-up (reverse Kaplan-Meier): {result.median:.1f} months "
                f"(95% CI {result.ci_lower:.1f}-{result.ci_upper:.1f}); {result.n:,} patients, "
                f"{result.n_censored:,} censored."
            )
        )
        return
    frame = _frame_of(result)
    if frame is None or frame.empty:
        section.add(_note("No table."))
        return
    shown = _display(frame)
    section.add(table_html(shown.head(200)))
    if len(frame) > 200:
        section.add(_note(f"First 200 of {len(frame):,} rows; all rows in tables.xlsx."))


def _sensitivity_block(r: _Renderer, out: ModelOutput, section: Section) -> None:
    from pooled.plots.forest import estimate_forest_plot

    frame = out.to_frame()
    section.add(_title(out))
    if {"hr", "ci_lower", "ci_upper", "model"} <= set(frame.columns) and len(frame):
        rows = frame.assign(label=frame["model"].astype(str).str.replace("sensitivity: ", ""))
        section.add(
            r.figure(
                f"sensitivity_{out.name}",
                out.label or out.name,
                lambda: estimate_forest_plot(rows, label_column="label"),
            )
        )
        section.add(table_html(rows[["label"] + [c for c in _TIDY_SHOWN[1:] if c in rows]]))
    else:
        _generic_block(out, section)


def _footer(run: RunOutput) -> str:
    prov = dict(run.provenance)
    parts = ["<h2>Reproducibility</h2>"]
    skipped = prov.pop("skipped_models", None) or []
    scalar = [(k, v) for k, v in prov.items() if not isinstance(v, Mapping)]
    parts.append(definition_table([("analysis", run.name), *scalar]))
    if skipped:
        parts.append("<h3>Models skipped (the data could not support them)</h3>")
        parts.append(table_html(pd.DataFrame(skipped), formatted=True))
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
        parts.append(f"<h3>{html.escape(str(key))}</h3>")
        parts.append(definition_table(sorted((str(a), b) for a, b in value.items())))
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
    elif out.kind in ("logrank", "followup"):
        _generic_block(out, sections["survival"])
    elif out.kind == "cox":
        _cox_block(out, sections["cox"])
    elif out.kind == "two_stage":
        _two_stage_block(r, out, sections["centres"])
        _funnel_block(r, out, sections["diagnostics"])
    elif out.kind == "interaction":
        _interaction_block(r, out, sections["subgroups"])
    elif out.kind == "zph":
        _zph_block(r, out, sections["diagnostics"])
    elif out.kind in ("bayes", "bayes_meta"):
        _bayes_block(r, out, sections["bayes"])
    elif out.kind == "trajectory":
        _trajectory_block(r, out, sections["serial"])
    elif out.kind in ("comparison", "clearance"):
        _generic_block(out, sections["serial"])
    elif out.kind == "sensitivity":
        _sensitivity_block(r, out, sections["sensitivity"])
    else:
        _generic_block(out, sections["other"])


def render_report(
    run: RunOutput,
    out_dir: str | Path,
    *,
    formats: tuple[str, ...] = FIGURE_FORMATS,
    dpi: int = PNG_DPI,
) -> ReportFiles:
    """Render a run into ``out_dir``: ``figures/``, ``tables.xlsx`` and ``report.html``.

    The page shows the exclusion flow per centre, patient characteristics, Kaplan-Meier
    curves with numbers at risk, Cox hazard ratios, forest plots by centre (squares sized by
    weight, pooled diamond, prediction interval, the tau^2 / I^2 / Q line) and by subgroup
    (with the interaction p), proportional-hazards diagnostics, Bayesian posteriors with
    their convergence diagnostics, trajectory groups, sensitivity analyses and a
    reproducibility footer (config and data hashes, upload versions per centre, package
    versions, seed). Only here are numbers rounded; ``tables.xlsx`` keeps them as numbers
    with display formats. Images are embedded as base64 PNG so the page opens offline.

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
        sections = {
            key: Section(key, title)
            for key, title in [
                ("flow", "Exclusion flow"),
                ("characteristics", "Patient characteristics"),
                ("survival", "Kaplan-Meier curves"),
                ("cox", "Hazard ratios (stratified Cox)"),
                ("centres", "Forest plots by centre"),
                ("subgroups", "Subgroups"),
                ("diagnostics", "Model diagnostics"),
                ("bayes", "Bayesian hierarchical models"),
                ("serial", "Serial CTC counts"),
                ("sensitivity", "Sensitivity analyses"),
                ("other", "Other results"),
                ("all", "All results"),
            ]
        }
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
        hr = hazard_ratio_table(run.outputs)
        if len(hr):
            sections["all"].add(
                "<details><summary>Hazard ratio table (as in tables.xlsx)</summary>"
                + table_html(hr)
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
    )
