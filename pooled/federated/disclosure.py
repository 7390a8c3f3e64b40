"""Disclosure control at a centre: the one check every federated answer passes before it leaves.

The rules (each configurable, all on by default; the names appear in every refusal):

``min_patients``
    No aggregate computed from fewer than ``min_patients`` patients of a centre (default 10).
``min_events``
    No survival aggregate (Cox sums, log-rank, Kaplan-Meier, per-centre hazard ratio) from
    fewer than ``min_events`` events of a centre (default 10).
``min_cell``
    No cell of a released table (a count of patients in a category, a group, a time bin; a
    count of validation findings) between 1 and ``min_cell - 1`` (default 5). Descriptive
    tables and validation summaries *suppress* such cells (released as ``None``, with
    secondary suppression so that a suppressed cell cannot be recovered from a released
    total); Kaplan-Meier bins and log-rank groups, whose counts are summed across centres,
    *refuse* the request instead, and the message says which bin or group and how to widen it.
``no_event_times`` / ``no_row_values``
    No event time, no per-patient residual and no other per-patient value: a release is a
    mapping of names to numbers, short lists (bounded by the number of model terms, groups,
    levels or bins, never by the number of patients) and text labels; :func:`check_release`
    refuses anything else, so a coding error that would return a patient-level vector fails
    at the centre instead of leaving it.

The centre's policy is its own: the node's administrator sets it with environment variables
(``POOLED_MIN_PATIENTS``, ``POOLED_MIN_EVENTS``, ``POOLED_MIN_CELL``; ``POOLED_DISCLOSURE=off``
switches the checks off); a request may ask for *stricter* thresholds, never looser ones
(:meth:`DisclosurePolicy.tightened`).

Every release is logged (:class:`ReleaseLog`): the request id, the method, the centre, the
number of bytes and the message itself, to the ``pooled.federated.release`` logger (on a
vantage6 node, the run's log) and, when ``POOLED_RELEASE_LOG`` names a file, as one JSON line
there.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pooled.errors import PooledError

__all__ = [
    "DisclosurePolicy",
    "DisclosureRefused",
    "ReleaseLog",
    "RELEASE_LOG",
    "check_release",
    "message_bytes",
    "require_counts",
    "suppress_cells",
]

RULES = ("min_patients", "min_events", "min_cell", "no_event_times", "no_row_values")
#: the longest list a release may hold: design terms squared, bins x groups, levels
MAX_LIST_LENGTH = 4096
_log = logging.getLogger("pooled.federated.release")


class DisclosureRefused(PooledError):
    """A centre refused a request because its answer would break a disclosure rule.

    ``rule`` names the rule (one of :data:`RULES`), ``centre`` the centre.
    """

    def __init__(self, rule: str, message: str, centre: str = "") -> None:
        self.rule = rule
        self.centre = centre
        where = f"centre {centre}: " if centre else ""
        super().__init__(f"{where}refused by disclosure rule '{rule}': {message}")


@dataclass(frozen=True, slots=True)
class DisclosurePolicy:
    """The thresholds of a centre's disclosure control.

    Parameters
    ----------
    min_patients : int
        Fewest patients an aggregate may come from (per centre).
    min_events : int
        Fewest events a survival aggregate may come from (per centre).
    min_cell : int
        Smallest non-zero cell of a released table.
    enabled : bool
        ``False`` switches every check off (a node administrator's decision, never a request's).

    Examples
    --------
    >>> DisclosurePolicy().tightened({"min_cell": 3, "min_events": 20})
    DisclosurePolicy(min_patients=10, min_events=20, min_cell=5, enabled=True)
    """

    min_patients: int = 10
    min_events: int = 10
    min_cell: int = 5
    enabled: bool = True

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> DisclosurePolicy:
        """The centre's policy from ``POOLED_MIN_PATIENTS``, ``POOLED_MIN_EVENTS``,
        ``POOLED_MIN_CELL`` and ``POOLED_DISCLOSURE`` (``off`` to switch it off)."""
        env = os.environ if environ is None else environ

        def number(name: str, default: int) -> int:
            text = env.get(name)
            if text is None or text == "":
                return default
            try:
                value = int(text)
            except ValueError:
                raise PooledError(
                    f"environment variable {name} expected a whole number; got {text!r}."
                ) from None
            if value < 0:
                raise PooledError(f"environment variable {name} must be >= 0; got {value}.")
            return value

        return cls(
            min_patients=number("POOLED_MIN_PATIENTS", 10),
            min_events=number("POOLED_MIN_EVENTS", 10),
            min_cell=number("POOLED_MIN_CELL", 5),
            enabled=env.get("POOLED_DISCLOSURE", "on").strip().lower() not in ("off", "0", "no"),
        )

    def tightened(self, requested: Mapping[str, Any] | None) -> DisclosurePolicy:
        """This policy with a request's thresholds where they are stricter (never looser)."""
        if not requested:
            return self
        values = {}
        for name in ("min_patients", "min_events", "min_cell"):
            asked = requested.get(name)
            current = getattr(self, name)
            values[name] = max(current, int(asked)) if asked is not None else current
        return DisclosurePolicy(**values, enabled=self.enabled)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_counts(
    policy: DisclosurePolicy, *, centre: str, patients: int, events: int | None = None
) -> None:
    """Refuse (``min_patients`` / ``min_events``) an aggregate of too few patients or events."""
    if not policy.enabled:
        return
    if patients < policy.min_patients:
        raise DisclosureRefused(
            "min_patients",
            f"the answer would rest on {'no' if patients == 0 else 'fewer than'} "
            f"{policy.min_patients} patients (the centre's minimum). Leave this centre out, "
            "or widen the cohort.",
            centre,
        )
    if events is not None and events < policy.min_events:
        raise DisclosureRefused(
            "min_events",
            f"the answer would rest on fewer than {policy.min_events} events (the centre's "
            "minimum). Leave this centre out, or use an endpoint with more events.",
            centre,
        )


def small(count: float, policy: DisclosurePolicy) -> bool:
    """Whether a count is a small cell (1 .. min_cell - 1) under ``policy``."""
    return policy.enabled and 0 < count < policy.min_cell


def suppress_cells(counts: Sequence[int], policy: DisclosurePolicy) -> list[int | None]:
    """Small-cell suppression of one table column whose total is released.

    Cells from 1 to ``min_cell - 1`` become ``None`` (primary suppression). Because the
    column's total is known, suppressed cells must not be recoverable from it: while exactly
    one cell is suppressed, or the suppressed cells add up to less than ``min_cell``, the
    smallest released non-zero cell is suppressed too (secondary suppression).

    Examples
    --------
    >>> suppress_cells([120, 3, 0, 40], DisclosurePolicy())
    [120, None, 0, None]
    >>> suppress_cells([120, 7, 0, 40], DisclosurePolicy())
    [120, 7, 0, 40]
    """
    values = [int(c) for c in counts]
    if not policy.enabled:
        return list(values)
    hidden = [small(c, policy) for c in values]
    while any(hidden):
        total_hidden = sum(c for c, h in zip(values, hidden, strict=True) if h)
        if sum(hidden) >= 2 and total_hidden >= policy.min_cell:
            break
        candidates = [i for i, c in enumerate(values) if not hidden[i] and c > 0]
        if not candidates:
            break
        hidden[min(candidates, key=lambda i: values[i])] = True
    return [None if h else c for c, h in zip(values, hidden, strict=True)]


# --------------------------------------------------------------------------------------------
# The release check
# --------------------------------------------------------------------------------------------


def _check_value(value: Any, path: str, centre: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isinf(value):
            return
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DisclosureRefused(
                    "no_row_values", f"{path}: keys must be text; got {key!r}.", centre
                )
            _check_value(item, f"{path}.{key}", centre)
        return
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST_LENGTH:
            raise DisclosureRefused(
                "no_row_values",
                f"{path} holds {len(value)} values: a release holds aggregates (at most "
                f"{MAX_LIST_LENGTH} values per list), never one value per patient.",
                centre,
            )
        for i, item in enumerate(value):
            _check_value(item, f"{path}[{i}]", centre)
        return
    raise DisclosureRefused(
        "no_row_values",
        f"{path} is a {type(value).__name__}; a release holds numbers, text and short lists "
        "only (no arrays or frames that could carry patient rows).",
        centre,
    )


def check_release(
    message: Mapping[str, Any],
    *,
    centre: str,
    request_id: str,
    method: str,
    forbidden: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, Any]:
    """The one check every answer of a centre passes before it leaves, and its log entry.

    ``message`` must be a mapping of text keys to numbers, text, ``None``, and lists or
    mappings of those, with no list longer than :data:`MAX_LIST_LENGTH` (``no_row_values``).
    ``forbidden`` maps a rule name to values that must not appear among the message's numbers
    (the centre's event times for ``no_event_times``); the structural check applies whatever
    the policy, because it guards against code errors, not against small numbers.

    Returns the message (a plain ``dict``), after logging it with :data:`RELEASE_LOG`.

    Raises
    ------
    DisclosureRefused
        The message holds something other than aggregates.
    """
    _check_value(message, "answer", centre)
    if forbidden:
        numbers = set(_numbers(message))
        for rule, values in forbidden.items():
            hit = numbers.intersection(float(v) for v in values)
            if hit:
                raise DisclosureRefused(
                    rule,
                    f"the answer holds {len(hit)} value(s) equal to a patient's "
                    f"{'event time' if rule == 'no_event_times' else 'value'}; nothing sent.",
                    centre,
                )
    out = dict(message)
    RELEASE_LOG.record(out, centre=centre, request_id=request_id, method=method)
    return out


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, Mapping):
        return [x for item in value.values() for x in _numbers(item)]
    if isinstance(value, list | tuple):
        return [x for item in value for x in _numbers(item)]
    return []


def message_bytes(message: Any) -> int:
    """Size of a message as vantage6 sends it (JSON, UTF-8), in bytes."""
    return len(json.dumps(message).encode("utf-8"))


class ReleaseLog:
    """Where releases are recorded: the ``pooled.federated.release`` logger, the JSON-lines
    file named by ``POOLED_RELEASE_LOG`` (when set) and any sink added with :meth:`listen`.

    Each entry: ``time, request_id, method, centre, bytes, sha256, message``.
    """

    def __init__(self) -> None:
        self._sinks: list[Callable[[dict[str, Any]], None]] = []
        self._lock = threading.Lock()

    def listen(self, sink: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Add a sink (called with every entry); returns a function that removes it."""
        with self._lock:
            self._sinks.append(sink)

        def remove() -> None:
            with self._lock:
                if sink in self._sinks:
                    self._sinks.remove(sink)

        return remove

    def record(
        self, message: Mapping[str, Any], *, centre: str, request_id: str, method: str
    ) -> None:
        text = json.dumps(message, sort_keys=True)
        entry = {
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "request_id": request_id,
            "method": method,
            "centre": centre,
            "bytes": message_bytes(message),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "message": json.loads(text),
        }
        _log.info(
            "release %s %s to request %s: %d bytes", centre, method, request_id, entry["bytes"]
        )
        path = os.environ.get("POOLED_RELEASE_LOG")
        if path:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            sink(entry)


RELEASE_LOG = ReleaseLog()
