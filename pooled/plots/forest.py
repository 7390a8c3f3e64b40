"""Forest plots: centre estimates with the pooled diamond, and subgroup effects.

The rows drawn are the rows of the result's tidy table (``to_frame()``), in its order: for a
meta-analysis the centres in the order they were given, then the pooled row. Plots compute
nothing statistical; the only arithmetic here is display (marker sizes, text formatting).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from pooled.models.cox import InteractionTestResult
    from pooled.models.meta import MetaResult
    from pooled.models.two_stage import TwoStageResult

__all__ = [
    "estimate_forest_plot",
    "forest_plot",
    "forest_rows",
    "format_p_value",
    "format_ratio_ci",
    "heterogeneity_text",
    "p_relation",
    "subgroup_forest_plot",
]

SQUARE_GID = "forest_square"
DIAMOND_GID = "pooled_diamond"
PREDICTION_GID = "prediction_interval"
HETEROGENEITY_GID = "heterogeneity"
INTERACTION_GID = "interaction_p"
REFERENCE_GID = "main_estimate"
MAX_SQUARE_AREA = 220.0
MIN_SQUARE_AREA = 12.0


def format_p_value(p: float) -> str:
    """``"<0.001"``, or three decimals; ``""`` for a missing p-value."""
    if p is None or not np.isfinite(p):
        return ""
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def p_relation(p: float) -> str:
    """``"= 0.012"``, ``"< 0.001"`` (``"= NA"`` for a missing p-value), to follow ``p``."""
    text = format_p_value(p)
    if not text:
        return "= NA"
    return "< " + text[1:] if text.startswith("<") else "= " + text


def format_ratio_ci(estimate: float, lower: float, upper: float, digits: int = 2) -> str:
    """``"1.23 (1.01-1.50)"``; ``""`` when the estimate is missing."""
    if estimate is None or not np.isfinite(estimate):
        return ""
    if not (np.isfinite(lower) and np.isfinite(upper)):
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} ({lower:.{digits}f}\u2013{upper:.{digits}f})"


def heterogeneity_text(meta: MetaResult) -> str:
    """``"tau^2 = 0.012, I^2 = 23.4%, Q = 9.12 (df = 7, p = 0.244)"`` for a meta-analysis."""
    tau2 = "NA" if not np.isfinite(meta.tau2) else f"{meta.tau2:.4f}"
    i2 = "NA" if not np.isfinite(meta.i2) else f"{meta.i2:.1f}%"
    return (
        f"tau^2 = {tau2}, I^2 = {i2}, Q = {meta.q:.2f} "
        f"(df = {meta.q_df}, p = {format_p_value(meta.q_p_value)})"
    )


def _meta_of(result: MetaResult | TwoStageResult) -> MetaResult:
    """The meta-analysis of a result (a two-stage result's ``meta``, or the result itself)."""
    return getattr(result, "meta", result)  # type: ignore[arg-type,return-value]


def forest_rows(
    result: MetaResult | TwoStageResult, *, pooled_label: str | None = None
) -> pd.DataFrame:
    """The rows a centre forest plot draws: ``result.to_frame()``'s rows, in its order.

    For a :class:`~pooled.models.two_stage.TwoStageResult` these are its centre rows (centres
    left out of the pooling included, without an estimate) then the pooled row; for a
    :class:`~pooled.models.meta.MetaResult` its study rows then the pooled row.

    Returns
    -------
    DataFrame
        ``label, term, row_type, hr, ci_lower, ci_upper, weight_percent, text`` with ``hr``
        and the limits on the ratio scale when the meta-analysis exponentiates (else on the
        estimate scale); ``row_type`` is ``"pooled"`` for the last row.
    """
    meta = _meta_of(result)
    frame = result.to_frame()
    ratio = bool(meta.spec.exponentiate)
    values = frame["hr"] if ratio else frame["estimate"]
    if pooled_label is None:
        method = meta.spec.label.replace("_knha", ", Hartung-Knapp")
        pooled_label = "Pooled (fixed effect)" if meta.spec.method == "FE" else f"Pooled ({method})"
    kinds = frame["row_type"].astype(str).tolist()
    if "centre" in frame.columns:  # two-stage: the term is the marker, the label the centre
        names = [str(c) for c in frame["centre"]]
    else:
        names = [str(t) for t in frame["term"]]
    labels = [
        pooled_label if kind == "pooled" else name for name, kind in zip(names, kinds, strict=True)
    ]
    reasons = (
        frame["reason"].fillna("").astype(str).tolist() if "reason" in frame else [""] * len(frame)
    )
    rows = pd.DataFrame(
        {
            "label": labels,
            "term": frame["term"].astype(str),
            "row_type": ["pooled" if kind == "pooled" else "study" for kind in kinds],
            "hr": values.to_numpy(dtype=float),
            "ci_lower": frame["ci_lower"].to_numpy(dtype=float),
            "ci_upper": frame["ci_upper"].to_numpy(dtype=float),
            "weight_percent": frame["weight_percent"].to_numpy(dtype=float),
        }
    )
    rows["text"] = [
        format_ratio_ci(h, lo, hi) or ("not pooled" + (f": {why}" if why else ""))
        for h, lo, hi, why in zip(
            rows["hr"], rows["ci_lower"], rows["ci_upper"], reasons, strict=True
        )
    ]
    return rows


def _new_axes(n_rows: int, width: float = 9.5) -> Axes:
    import matplotlib.pyplot as plt

    height = 1.6 + 0.36 * max(n_rows, 2)
    fig, ax = plt.subplots(figsize=(width, height))
    fig.subplots_adjust(left=0.22, right=0.58, top=1 - 0.55 / height, bottom=0.75 / height)
    return ax


_NICE_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0)
_NICE_TICKS_ALL = _NICE_TICKS + (20.0, 50.0, 100.0)


def _log_ticks(ax: Axes) -> None:
    """Readable ticks (0.5, 1, 2, ...) on a log x axis, plain numbers, no minor labels."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    left, right = ax.get_xlim()
    ticks = [t for t in _NICE_TICKS_ALL if left <= t <= right]
    while len(ticks) > 7:
        keep = list(ticks[::2])
        if 1.0 in ticks and 1.0 not in keep:
            keep = sorted(set(keep) | {1.0})
        if len(keep) == len(ticks):
            break
        ticks = keep
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _draw_rows(
    ax: Axes,
    rows: pd.DataFrame,
    *,
    log_scale: bool,
    xlabel: str,
    title: str,
    text_header: str,
    show_weights: bool,
    null_value: float,
) -> np.ndarray:
    """Draw intervals, squares (study rows) and diamonds (pooled rows); return the y values."""
    from matplotlib.patches import Polygon
    from matplotlib.transforms import blended_transform_factory

    kinds = rows["row_type"].to_numpy()
    # one blank half-row before the first pooled row, as in published forest plots
    y = np.zeros(len(rows))
    pos = 0.0
    for i, kind in enumerate(kinds):
        if kind == "pooled" and i > 0 and kinds[i - 1] != "pooled":
            pos += 0.5
        y[i] = pos
        pos += 1.0

    hr = rows["hr"].to_numpy(dtype=float)
    lo = rows["ci_lower"].to_numpy(dtype=float)
    hi = rows["ci_upper"].to_numpy(dtype=float)
    study = (kinds != "pooled") & np.isfinite(hr)  # centres without an estimate: text only
    colour = "#1f4e79"

    for yi, lower, upper in zip(y[study], lo[study], hi[study], strict=True):
        if np.isfinite(lower) and np.isfinite(upper):
            ax.plot([lower, upper], [yi, yi], color="black", linewidth=1.1, solid_capstyle="butt")
    if study.any():
        weights = rows["weight_percent"].to_numpy(dtype=float)[study]
        if show_weights and np.isfinite(weights).any() and np.nanmax(weights) > 0:
            sizes = MAX_SQUARE_AREA * weights / np.nanmax(weights)
            sizes = np.clip(np.nan_to_num(sizes, nan=MIN_SQUARE_AREA), MIN_SQUARE_AREA, None)
        else:
            sizes = np.full(int(study.sum()), 60.0)
        squares = ax.scatter(
            hr[study], y[study], s=sizes, marker="s", color=colour, zorder=3, linewidths=0
        )
        squares.set_gid(SQUARE_GID)

    half_height = 0.32
    for i in (int(j) for j in np.flatnonzero(~study)):
        if not (np.isfinite(lo[i]) and np.isfinite(hi[i])):
            continue
        diamond = Polygon(
            [
                (lo[i], y[i]),
                (hr[i], y[i] - half_height),
                (hi[i], y[i]),
                (hr[i], y[i] + half_height),
            ],
            closed=True,
            facecolor="#c0392b",
            edgecolor="#7b241c",
            zorder=3,
        )
        diamond.set_gid(DIAMOND_GID)
        ax.add_patch(diamond)

    ax.axvline(null_value, color="grey", linewidth=0.9, linestyle="-", zorder=1)
    if log_scale:
        ax.set_xscale("log")
    finite = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)], [null_value]])
    if log_scale:  # a limit of 0 (an infinite log HR) has no place on a log axis
        finite = finite[finite > 0]
    if finite.size:
        left, right = float(finite.min()), float(finite.max())
        if log_scale:
            left, right = left / 1.15, right * 1.15
        else:
            pad = 0.05 * (right - left or 1.0)
            left, right = left - pad, right + pad
        ax.set_xlim(left, right)
    if log_scale:
        _log_ticks(ax)

    ax.set_yticks(y)
    ax.set_yticklabels(rows["label"].tolist())
    for tick, kind in zip(ax.get_yticklabels(), kinds, strict=True):
        if kind == "pooled":
            tick.set_fontweight("bold")
    ax.set_ylim(y.max() + 0.8 if len(y) else 1.0, -1.0)
    ax.tick_params(axis="y", length=0)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")

    # text columns on the right: "HR (95% CI)" and the weight
    trans = blended_transform_factory(ax.transAxes, ax.transData)
    ax.text(1.04, -0.9, text_header, transform=trans, fontweight="bold", va="center", ha="left")
    for yi, text, kind in zip(y, rows["text"], kinds, strict=True):
        ax.text(
            1.04,
            yi,
            text,
            transform=trans,
            va="center",
            ha="left",
            fontweight="bold" if kind == "pooled" else "normal",
        )
    if show_weights:
        ax.text(1.66, -0.9, "Weight", transform=trans, fontweight="bold", va="center", ha="right")
        weights_all = rows["weight_percent"].to_numpy(dtype=float)
        for yi, weight, kind in zip(y, weights_all, kinds, strict=True):
            if kind != "pooled" and np.isfinite(weight):
                ax.text(1.66, yi, f"{weight:.1f}%", transform=trans, va="center", ha="right")
    return y


def forest_plot(
    result: MetaResult | TwoStageResult,
    *,
    ax: Axes | None = None,
    title: str = "",
    xlabel: str | None = None,
    pooled_label: str | None = None,
    show_prediction: bool = True,
    show_heterogeneity: bool = True,
) -> Axes:
    """Forest plot by centre: one square per centre, the pooled diamond last.

    Squares have an area proportional to the centre's weight; each centre's 95 % CI is a
    horizontal line; the pooled estimate and its CI are a diamond; the prediction interval
    (random-effects models) is a dotted line through the diamond; a line under the rows gives
    ``tau^2, I^2, Q (df, p)``. Text columns on the right give "HR (95% CI)" and the weight.
    For log-ratio estimates (``meta.spec.exponentiate``) the x axis is a log scale with a
    vertical line at 1; otherwise linear with a line at 0.

    Parameters
    ----------
    result : TwoStageResult or MetaResult
        A two-stage IPD meta-analysis (per-centre Cox, then pooled; centres left out of the
        pooling are listed without a square) or a meta-analysis of given estimates.
    ax : matplotlib Axes, optional
        Where to draw; a new figure sized to the number of rows when omitted.
    title, xlabel, pooled_label : str, optional
        Display text; the pooled row is labelled with the method by default.
    show_prediction, show_heterogeneity : bool
        Draw the prediction interval and the heterogeneity line.

    Returns
    -------
    matplotlib Axes
        The rows are the y tick labels, top to bottom, in the order of ``result.to_frame()``
        (see :func:`forest_rows`).

    References
    ----------
    .. [1] Lewis S, Clarke M. Forest plots: trying to see the wood and the trees. BMJ
       2001;322:1479-80.
    .. [2] IntHout J, Ioannidis JPA, Rovers MM, Goeman JJ. Plea for routinely presenting
       prediction intervals in meta-analysis. BMJ Open 2016;6:e010247.

    Examples
    --------
    >>> from pooled.models.meta import fit_meta
    >>> meta = fit_meta([0.3, 0.1, 0.5], [0.04, 0.02, 0.09], labels=["A", "B", "C"])
    >>> ax = forest_plot(meta)
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['A', 'B', 'C', 'Pooled (REML)']
    """
    meta = _meta_of(result)
    rows = forest_rows(result, pooled_label=pooled_label)
    ratio = bool(meta.spec.exponentiate)
    if ax is None:
        ax = _new_axes(len(rows) + (1 if show_heterogeneity else 0))
    y = _draw_rows(
        ax,
        rows,
        log_scale=ratio,
        xlabel=xlabel if xlabel is not None else ("Hazard ratio" if ratio else "Estimate"),
        title=title,
        text_header="HR (95% CI)" if ratio else "Estimate (95% CI)",
        show_weights=True,
        null_value=1.0 if ratio else 0.0,
    )
    pooled_y = float(y[-1])
    if show_prediction and np.isfinite(meta.pi_lower) and np.isfinite(meta.pi_upper):
        lower = float(np.exp(meta.pi_lower)) if ratio else float(meta.pi_lower)
        upper = float(np.exp(meta.pi_upper)) if ratio else float(meta.pi_upper)
        (line,) = ax.plot(
            [lower, upper],
            [pooled_y, pooled_y],
            color="#7b241c",
            linestyle=(0, (1.5, 1.5)),
            linewidth=1.4,
            zorder=2,
            label="95% prediction interval",
        )
        line.set_gid(PREDICTION_GID)
        for end in (lower, upper):
            ax.plot([end, end], [pooled_y - 0.15, pooled_y + 0.15], color="#7b241c", lw=1.0)
        left, right = ax.get_xlim()
        if ratio:
            ax.set_xlim(min(left, lower / 1.15), max(right, upper * 1.15))
            _log_ticks(ax)
        else:
            ax.set_xlim(min(left, lower), max(right, upper))
        from matplotlib.transforms import blended_transform_factory

        trans = blended_transform_factory(ax.transAxes, ax.transData)
        ax.text(
            1.04,
            pooled_y + 0.75,
            f"PI {lower:.2f}\u2013{upper:.2f}",
            transform=trans,
            va="center",
            ha="left",
            fontsize=8.5,
            color="#7b241c",
        )
    if show_heterogeneity:
        het = ax.text(
            0.0,
            pooled_y + 1.45,
            "Heterogeneity: "
            + heterogeneity_text(meta).replace("tau^2", r"$\tau^2$").replace("I^2", r"$I^2$"),
            transform=ax.get_yaxis_transform(),
            ha="left",
            va="center",
            fontsize=9,
        )
        het.set_gid(HETEROGENEITY_GID)
        ax.set_ylim(pooled_y + 2.0, ax.get_ylim()[1])
    return ax


def estimate_forest_plot(
    frame: pd.DataFrame,
    *,
    label_column: str = "term",
    pooled: Sequence[Any] = (),
    ax: Axes | None = None,
    title: str = "",
    xlabel: str = "Hazard ratio",
    text_header: str = "HR (95% CI)",
    log_scale: bool = True,
    reference: Mapping[str, Any] | None = None,
) -> Axes:
    """Forest plot of the rows of a tidy table (``hr, ci_lower, ci_upper``), in its order.

    Rows whose label is in ``pooled`` are drawn as diamonds (e.g. the pooled and predictive
    rows of a Bayesian model); the others as equal squares. A ``reference`` estimate (the
    main analysis a sensitivity table varies) is the first row, a diamond, and a dashed
    vertical line through its estimate that every other row is read against.

    Parameters
    ----------
    frame : DataFrame
        A tidy result table (or a selection of its rows).
    label_column : str
        Column with the row labels (y tick labels).
    pooled : sequence
        Labels drawn as diamonds.
    ax : matplotlib Axes, optional
    title, xlabel, text_header : str
    log_scale : bool
        Log x axis with a line at 1 (hazard ratios); linear with a line at 0 otherwise.
    reference : mapping, optional
        ``label, hr, ci_lower, ci_upper`` (``estimate`` instead of ``hr`` on a linear
        scale) of the main estimate, drawn first with a dashed line through it.

    Returns
    -------
    matplotlib Axes

    References
    ----------
    .. [1] Lewis S, Clarke M. Forest plots: trying to see the wood and the trees. BMJ
       2001;322:1479-80.

    Examples
    --------
    >>> frame = pd.DataFrame({"term": ["a", "b"], "hr": [1.2, 0.8],
    ...                       "ci_lower": [0.9, 0.6], "ci_upper": [1.6, 1.1]})
    >>> ax = estimate_forest_plot(frame)
    """
    values = frame["hr"] if log_scale else frame["estimate"]
    pooled_set = {str(p) for p in pooled}
    labels = frame[label_column].astype(str).tolist()
    rows = pd.DataFrame(
        {
            "label": labels,
            "term": frame["term"].astype(str).tolist() if "term" in frame else labels,
            "row_type": ["pooled" if lab in pooled_set else "study" for lab in labels],
            "hr": values.to_numpy(dtype=float),
            "ci_lower": frame["ci_lower"].to_numpy(dtype=float),
            "ci_upper": frame["ci_upper"].to_numpy(dtype=float),
            "weight_percent": np.nan,
        }
    )
    if reference is not None:
        value = reference["hr"] if log_scale else reference.get("estimate", reference["hr"])
        first = pd.DataFrame(
            {
                "label": [str(reference.get("label", "Main analysis"))],
                "term": [str(reference.get("term", ""))],
                "row_type": ["pooled"],
                "hr": [float(value)],
                "ci_lower": [float(reference["ci_lower"])],
                "ci_upper": [float(reference["ci_upper"])],
                "weight_percent": [np.nan],
            }
        )
        rows = pd.concat([first, rows], ignore_index=True)
    rows["text"] = [
        format_ratio_ci(h, lo, hi)
        for h, lo, hi in zip(rows["hr"], rows["ci_lower"], rows["ci_upper"], strict=True)
    ]
    if ax is None:
        ax = _new_axes(len(rows))
    _draw_rows(
        ax,
        rows,
        log_scale=log_scale,
        xlabel=xlabel,
        title=title,
        text_header=text_header,
        show_weights=False,
        null_value=1.0 if log_scale else 0.0,
    )
    if reference is not None and np.isfinite(rows["hr"].iloc[0]):
        line = ax.axvline(
            float(rows["hr"].iloc[0]), color="#c0392b", linestyle="--", linewidth=1.0, zorder=1
        )
        line.set_gid(REFERENCE_GID)
    return ax


def subgroup_forest_plot(
    effects: pd.DataFrame,
    *,
    interaction: InteractionTestResult | None = None,
    label_column: str = "level",
    ax: Axes | None = None,
    title: str = "",
    xlabel: str = "Hazard ratio",
) -> Axes:
    """Forest plot of the marker's HR within each subgroup, with the interaction p-value.

    Parameters
    ----------
    effects : DataFrame
        The tidy table of :func:`pooled.models.cox.effect_within_levels` (one row per level),
        drawn in its order.
    interaction : InteractionTestResult, optional
        The likelihood-ratio test of the interaction; its p-value is printed under the rows.
    label_column : str
        Column with the row labels (default the subgroup level).
    ax : matplotlib Axes, optional
    title, xlabel : str

    Returns
    -------
    matplotlib Axes

    References
    ----------
    .. [1] Altman DG, Bland JM. Interaction revisited: the difference between two estimates.
       BMJ 2003;326:219.
    .. [2] Wang R, Lagakos SW, Ware JH, Hunter DJ, Drazen JM. Statistics in medicine -
       reporting of subgroup analyses in clinical trials. N Engl J Med 2007;357:2189-94.

    Examples
    --------
    >>> # ax = subgroup_forest_plot(effect_within_levels(fit), interaction=lr_test)
    """
    column = label_column if label_column in effects.columns else "term"
    if ax is None:
        ax = _new_axes(len(effects) + (1 if interaction is not None else 0))
    estimate_forest_plot(
        effects, label_column=column, ax=ax, title=title, xlabel=xlabel, log_scale=True
    )
    if interaction is not None:
        bottom = ax.get_ylim()[0]
        text = ax.text(
            0.0,
            bottom + 0.2,
            f"Interaction: LR chi^2 = {interaction.chisq:.2f}, df = {interaction.df}, "
            f"p = {format_p_value(interaction.p_value)}".replace("chi^2", r"$\chi^2$"),
            transform=ax.get_yaxis_transform(),
            ha="left",
            va="center",
            fontsize=9,
        )
        text.set_gid(INTERACTION_GID)
        ax.set_ylim(bottom + 0.8, ax.get_ylim()[1])
    return ax
