"""Plots of fitted results. Each takes a result (and options) and an optional Axes, computes
nothing statistical, imports matplotlib inside the function and returns the Axes.

Posterior and trace plots of the Bayesian models live in :mod:`pooled.plots.bayes`.
"""

from pooled.plots.diagnostics import funnel_plot, schoenfeld_plot, schoenfeld_plots
from pooled.plots.flow import flow_diagram
from pooled.plots.forest import estimate_forest_plot, forest_plot, subgroup_forest_plot
from pooled.plots.km import km_plot, risk_table_axes
from pooled.plots.trajectories import trajectory_plot

__all__ = [
    "estimate_forest_plot",
    "flow_diagram",
    "forest_plot",
    "funnel_plot",
    "km_plot",
    "risk_table_axes",
    "schoenfeld_plot",
    "schoenfeld_plots",
    "subgroup_forest_plot",
    "trajectory_plot",
]
