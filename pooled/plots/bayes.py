"""Posterior and trace plots of the Bayesian models, drawn by ArviZ.

Plots take a result and an optional Axes, compute nothing beyond what ArviZ draws from the
stored ``InferenceData``, and return the Axes; matplotlib is imported inside the functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from pooled.models.bayes import BayesMetaResult, BayesResult


@contextmanager
def _arviz_on_matplotlib_311() -> Iterator[None]:
    """ArviZ 0.23 de-aliases plot keywords by passing a dict to matplotlib's
    ``normalize_kwargs``, which matplotlib 3.11 deprecates (MatplotlibDeprecationWarning,
    once per drawn element); the call is ArviZ's, so that one warning is filtered here."""
    from matplotlib import MatplotlibDeprecationWarning

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Passing a dict or None as alias_mapping to normalize_kwargs",
            category=MatplotlibDeprecationWarning,
        )
        yield


def posterior_plot(
    result: BayesResult | BayesMetaResult,
    ax: Axes | None = None,
    *,
    var_name: str = "mu",
    hazard_ratio: bool = True,
    ref_val: float | None = 1.0,
) -> Axes:
    """Posterior density of one scalar quantity (default: the pooled marker HR).

    ``hazard_ratio`` draws ``exp`` of a log HR; ``ref_val`` marks the share of the posterior
    on either side of it (``P(HR > 1)``).

    Examples
    --------
    >>> ax = posterior_plot(res)  # doctest: +SKIP
    """
    import arviz as az
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    with _arviz_on_matplotlib_311():
        az.plot_posterior(
            result.idata,
            var_names=[var_name],
            transform=np.exp if hazard_ratio else None,
            hdi_prob=result.spec.ci_level,
            ref_val=ref_val if hazard_ratio else None,
            ax=ax,
        )
    # ArviZ writes the share of the posterior on either side of ref_val in "semibold", a
    # weight matplotlib's DejaVu Sans does not have (matplotlib then logs "findfont: Failed
    # to find font weight semibold"): ask for the bold it would have used anyway
    for text in ax.texts:
        if text.get_fontweight() in ("semibold", "demibold", "demi", 600):
            text.set_fontweight("bold")
    label = "hazard ratio" if hazard_ratio else var_name
    ax.set_title(f"{var_name}: {label}")
    return ax


def trace_plot(
    result: BayesResult | BayesMetaResult,
    axes: Any | None = None,
    *,
    var_names: Sequence[str] = ("mu", "tau"),
) -> Any:
    """Trace and density per chain for ``var_names`` (an ``len(var_names) x 2`` Axes array).

    Examples
    --------
    >>> axes = trace_plot(res, var_names=("mu", "tau", "interaction_log_hr"))  # doctest: +SKIP
    """
    import arviz as az
    import matplotlib.pyplot as plt

    names = [v for v in var_names if v in result.idata["posterior"]]
    if axes is None:
        _, axes = plt.subplots(len(names), 2, figsize=(9, 2.2 * len(names)), squeeze=False)
    with _arviz_on_matplotlib_311():
        return az.plot_trace(result.idata, var_names=names, axes=axes, compact=True)
