"""Display names the report gives endpoints and groups (the same in every table and figure)."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ENDPOINT_NAMES", "endpoint_name", "group_display", "survival_label"]

#: Spelled-out endpoint names (the schema's codes otherwise shown upper-case).
ENDPOINT_NAMES: Mapping[str, str] = {
    "os": "Overall survival",
    "dfs": "Disease-free survival",
    "ddfs": "Distant disease-free survival",
    "bcss": "Breast cancer-specific survival",
    "pfs": "Progression-free survival",
    "rfs": "Recurrence-free survival",
    "ttf": "Time to treatment failure",
}


def endpoint_name(endpoint: str) -> str:
    """``"Disease-free survival"`` for ``"dfs"``; an unknown code upper-case (``"XFS"``).

    Examples
    --------
    >>> endpoint_name("dfs"), endpoint_name("rfs2")
    ('Disease-free survival', 'RFS2')
    """
    return ENDPOINT_NAMES.get(endpoint.lower(), endpoint.upper()) if endpoint else ""


def survival_label(endpoint: str) -> str:
    """The y label of a Kaplan-Meier plot of ``endpoint``: its name, or the probability of
    being free of the event for time-to-event names (``"Free of treatment failure"``)."""
    name = endpoint_name(endpoint)
    if not name:
        return "Survival probability"
    if name.lower().startswith("time to "):
        return "Free of " + name[len("time to ") :]
    return name


def group_display(label: str, names: Mapping[str, str] | None) -> str:
    """A Kaplan-Meier group's display name (``dtc_positive: yes``) from the step's names."""
    return (names or {}).get(str(label), str(label))
