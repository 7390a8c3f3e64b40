"""The exclusion flow diagram: patients received, excluded at each step (with the reason), analysed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

    from pooled.dataset import ExclusionFlow

__all__ = ["flow_diagram"]

BOX_GID = "flow_box"


def flow_diagram(flow: ExclusionFlow, *, ax: Axes | None = None, title: str = "") -> Axes:
    """CONSORT-style diagram of an :class:`~pooled.dataset.ExclusionFlow` (all centres summed).

    A main column of boxes (received, remaining after each step, analysed) with a side box per
    step giving the reason and the number excluded. The per-centre counts are in the report's
    flow table (``flow.to_frame()``).

    Parameters
    ----------
    flow : ExclusionFlow
    ax : matplotlib Axes, optional
    title : str

    Returns
    -------
    matplotlib Axes
        Each box is a text artist with ``gid == "flow_box"``.

    References
    ----------
    .. [1] Stewart LA, Clarke M, Rovers M, et al. Preferred reporting items for a systematic
       review and meta-analysis of individual participant data: the PRISMA-IPD statement.
       JAMA 2015;313:1657-65.

    Examples
    --------
    >>> # ax = flow_diagram(dataset.flow)
    """
    import matplotlib.pyplot as plt

    steps = flow.steps
    if len(steps):
        grouped = steps.groupby(["step", "reason", "detail"], sort=True)["n"].sum().reset_index()
    else:
        grouped = steps
    n_steps = len(grouped)
    if ax is None:
        _fig, ax = plt.subplots(figsize=(8.0, 1.2 + 1.1 * (n_steps + 1)))
    ax.set_axis_off()
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(-(n_steps + 0.6), 0.6)
    received = int(sum(flow.received.values()))
    box = {"boxstyle": "round,pad=0.45", "facecolor": "#eef3f8", "edgecolor": "#1f4e79"}
    side = {"boxstyle": "round,pad=0.4", "facecolor": "#fbeeee", "edgecolor": "#c0392b"}
    arrow = {"arrowstyle": "-|>", "color": "0.3", "lw": 1.0}

    def main_box(y: float, text: str) -> None:
        artist = ax.text(0.3, y, text, ha="center", va="center", bbox=box, fontsize=9.5)
        artist.set_gid(BOX_GID)

    main_box(0.0, f"Received\nn = {received:,} ({len(flow.received)} centres)")
    remaining = received
    for i, rec in enumerate(grouped.to_dict("records")):
        y = -(i + 1.0)
        n = int(rec["n"])
        remaining -= n
        detail = str(rec["detail"]) if rec["detail"] else ""
        reason = str(rec["reason"]) + (f" ({detail})" if detail else "")
        ax.annotate("", xy=(0.3, y + 0.28), xytext=(0.3, y + 0.72), arrowprops=arrow)
        ax.annotate("", xy=(0.62, y + 0.5), xytext=(0.3, y + 0.5), arrowprops=arrow)
        excluded = ax.text(
            0.64,
            y + 0.5,
            f"Excluded: {reason}\nn = {n:,}",
            ha="left",
            va="center",
            bbox=side,
            fontsize=8.5,
            wrap=True,
        )
        excluded.set_gid(BOX_GID)
        last = i == n_steps - 1
        main_box(y, ("Analysed" if last else "Remaining") + f"\nn = {remaining:,}")
    if n_steps == 0:
        ax.annotate("", xy=(0.3, -0.72), xytext=(0.3, -0.28), arrowprops=arrow)
        main_box(-1.0, f"Analysed\nn = {remaining:,}")
        ax.set_ylim(-1.6, 0.6)
    if title:
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    return ax
