"""The vantage6 algorithm: partial functions (run at a centre) and central functions (run by
the coordinator's node), written to the vantage6 4.x algorithm conventions.

The image's ``PKG_NAME`` is ``pooled.federated.algorithm``: vantage6's wrapper imports this
module and calls the function a task names in its input (``{"method": "central_cox",
"kwargs": {"parameters": {...}}}``).

* ``partial_*`` functions carry ``@data(1)``: the node hands them the centre's data (the
  ``patients`` database for the analyses, the ``findings`` database for
  ``partial_validation``). They call the pure centre functions of
  :mod:`pooled.federated.centre`, whose every answer has passed the disclosure check; a
  refusal comes back as ``{"refused": {"rule", "message", "centre"}}`` (itself logged), and
  an error as ``{"error": {"kind", "message"}}`` whose message is the full text only for
  errors in the request (``ConfigError``); other errors, whose text could quote a cell
  value, are reported by kind, their full text written only to the centre's own log file.
* ``central_*`` functions carry ``@algorithm_client``: they create the subtasks at the
  organisations (all in the collaboration unless ``organizations`` is given), combine the
  answers with :mod:`pooled.federated.coordinator`, and return a JSON result: the tidy rows,
  the per-centre table, the exchange counts (rounds, bytes) and any error.

The same functions run in the in-process ``MockAlgorithmClient`` (``pooled federate run``,
the tests) and in the image on a real node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from vantage6.algorithm.tools.decorators import algorithm_client, data

from harmonization.errors import HarmonizationError
from pooled.errors import ConfigError, PooledError
from pooled.federated import centre as _centre
from pooled.federated.coordinator import (
    Exchange,
    federated_cox,
    federated_describe,
    federated_km,
    federated_logrank,
    federated_two_stage,
    federated_validation,
    jsonable,
)
from pooled.federated.disclosure import DisclosureRefused, check_release
from pooled.federated.request import FederatedRequest

__all__ = [
    "central_cox",
    "central_describe",
    "central_km",
    "central_logrank",
    "central_two_stage",
    "central_validation",
    "partial_cox",
    "partial_describe",
    "partial_km",
    "partial_logrank",
    "partial_summary",
    "partial_two_stage",
    "partial_validation",
]


# --------------------------------------------------------------------------------------------
# Partial functions (at a centre)
# --------------------------------------------------------------------------------------------


def _request_id(parameters: Mapping[str, Any]) -> str:
    request = parameters.get("request")
    if isinstance(request, Mapping):
        return str(request.get("request_id", ""))
    return str(parameters.get("request_id", ""))


def _answer(
    method: str,
    compute: Callable[[pd.DataFrame, Mapping[str, Any]], dict[str, Any]],
    frame: pd.DataFrame,
    parameters: Mapping[str, Any],
) -> dict[str, Any]:
    centre = _centre.centre_name(frame)
    request_id = _request_id(parameters)
    try:
        return compute(frame, parameters)
    except DisclosureRefused as refusal:
        message = {
            "centre": centre,
            "request_id": request_id,
            "refused": {"rule": refusal.rule, "message": str(refusal), "centre": centre},
        }
    except ConfigError as error:
        message = {
            "centre": centre,
            "request_id": request_id,
            "error": {"kind": "ConfigError", "message": str(error)},
        }
    except (PooledError, HarmonizationError, KeyError, ValueError) as error:
        _local_error_log(centre, method, request_id, error)
        message = {
            "centre": centre,
            "request_id": request_id,
            "error": {
                "kind": type(error).__name__,
                "message": f"the centre could not compute its answer ({type(error).__name__}); "
                "its data manager finds the reason in the centre's log.",
            },
        }
    return check_release(message, centre=centre, request_id=request_id, method=method)


def _local_error_log(centre: str, method: str, request_id: str, error: Exception) -> None:
    path = os.environ.get("POOLED_ERROR_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(
                json.dumps(
                    {
                        "centre": centre,
                        "method": method,
                        "request_id": request_id,
                        "error": str(error),
                    }
                )
                + "\n"
            )


@data(1)
def partial_summary(frame: pd.DataFrame, parameters: dict[str, Any]) -> dict[str, Any]:
    """Patients, events and categorical levels of the centre's cohort (complete cases)."""
    return _answer("summary", _centre.centre_summary, frame, parameters)


@data(1)
def partial_cox(frame: pd.DataFrame, parameters: dict[str, Any]) -> dict[str, Any]:
    """Log partial likelihood, score and information at the coefficients asked."""
    return _answer("cox", _centre.centre_cox, frame, parameters)


@data(1)
def partial_logrank(frame: pd.DataFrame, parameters: dict[str, Any]) -> dict[str, Any]:
    """Observed, expected and variance of the log-rank test by exposure group."""
    return _answer("logrank", _centre.centre_logrank, frame, parameters)


@data(1)
def partial_km(frame: pd.DataFrame, parameters: dict[str, Any]) -> dict[str, Any]:
    """Kaplan-Meier counts in time bins by exposure group."""
    return _answer("km", _centre.centre_km, frame, parameters)


@data(1)
def partial_two_stage(frame: pd.DataFrame, parameters: dict[str, Any]) -> dict[str, Any]:
    """The centre's own Cox estimate of the exposure's log hazard ratio and SE."""
    return _answer("two_stage", _centre.centre_two_stage, frame, parameters)


@data(1)
def partial_describe(frame: pd.DataFrame, parameters: dict[str, Any]) -> dict[str, Any]:
    """The centre's characteristics table by exposure group, small cells suppressed."""
    return _answer("describe", _centre.centre_describe, frame, parameters)


@data(1)
def partial_validation(findings: pd.DataFrame, parameters: dict[str, Any]) -> dict[str, Any]:
    """The centre's validation findings counted by rule and severity (from ``findings``)."""
    return _answer("validation", _centre.centre_validation, findings, parameters)


# --------------------------------------------------------------------------------------------
# Central functions (the coordinator)
# --------------------------------------------------------------------------------------------


def _ask(client: Any, organizations: list[int] | None) -> Exchange:
    """``ask(method, parameters)`` on vantage6: one subtask at every organisation."""
    if organizations:
        targets = [int(o) for o in organizations]
    else:
        targets = [int(o["id"]) for o in client.organization.list()]

    def ask(method: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        task = client.task.create(
            input_={"method": method, "kwargs": {"parameters": parameters}},
            organizations=targets,
            name=f"pooled {method}",
            description=f"pooled federated {method} ({_request_id(parameters)})",
        )
        results = client.wait_for_results(task_id=task.get("id"))
        answers = []
        for item in results:
            if isinstance(item, str):
                item = json.loads(item)
            if not isinstance(item, dict):
                raise PooledError(
                    f"a centre's {method} run returned no answer (it failed); see the run's "
                    "log at that node."
                )
            answers.append(item)
        return answers

    return Exchange(ask)


def _guarded(
    analysis: str, run: Callable[[], dict[str, Any]], exchange: Exchange
) -> dict[str, Any]:
    try:
        out = run()
    except (PooledError, HarmonizationError) as error:
        kind = "DisclosureRefused" if isinstance(error, DisclosureRefused) else type(error).__name__
        out = {"error": {"kind": kind, "message": str(error)}}
    out.setdefault("analysis", analysis)
    out["exchange"] = exchange.as_dict()
    return jsonable(out)


@algorithm_client
def central_cox(
    client: Any,
    parameters: dict[str, Any],
    organizations: list[int] | None = None,
) -> dict[str, Any]:
    """The one-stage stratified Cox model by distributed Newton steps.

    ``parameters``: ``request`` (a :class:`FederatedRequest` as a dict) and optionally
    ``robust`` (default true: SEs clustered by centre), ``term_lr_tests`` (default true),
    ``tol``, ``max_iter``.
    """
    exchange = _ask(client, organizations)

    def run() -> dict[str, Any]:
        result = federated_cox(
            exchange,
            FederatedRequest.from_dict(parameters["request"]),
            robust=bool(parameters.get("robust", True)),
            term_lr_tests=bool(parameters.get("term_lr_tests", True)),
            tol=float(parameters.get("tol", 1e-10)),
            max_iter=int(parameters.get("max_iter", 30)),
        )
        return {
            "rows": result.to_frame(),
            "fit_statistics": result.cox.fit_statistics(),
            "centres": result.centres,
            "coefficients": result.cox.coefficients,
            "covariance": result.cox.covariance,
            "robust_covariance": result.cox.robust_covariance,
            "iterations": result.cox.iterations,
        }

    return _guarded("cox", run, exchange)


@algorithm_client
def central_logrank(
    client: Any, parameters: dict[str, Any], organizations: list[int] | None = None
) -> dict[str, Any]:
    """The log-rank test of the exposure groups stratified by centre."""
    exchange = _ask(client, organizations)

    def run() -> dict[str, Any]:
        result, _ = federated_logrank(exchange, FederatedRequest.from_dict(parameters["request"]))
        return {
            "rows": result.to_frame(),
            "chisq": result.chisq,
            "df": result.df,
            "p_value": result.p_value,
            "variance": result.variance,
        }

    return _guarded("logrank", run, exchange)


@algorithm_client
def central_km(
    client: Any, parameters: dict[str, Any], organizations: list[int] | None = None
) -> dict[str, Any]:
    """Kaplan-Meier (life table) by exposure group from counts in time bins.

    ``parameters``: ``request``, ``width`` (default 12), ``max_time`` (default 120),
    ``exclude_refusing`` (default false).
    """
    exchange = _ask(client, organizations)

    def run() -> dict[str, Any]:
        result = federated_km(
            exchange,
            FederatedRequest.from_dict(parameters["request"]),
            width=float(parameters.get("width", 12.0)),
            max_time=float(parameters.get("max_time", 120.0)),
            exclude_refusing=bool(parameters.get("exclude_refusing", False)),
        )
        return {
            "rows": result.to_frame(),
            "table": result.table,
            "centres": list(result.centres),
            "excluded": [list(x) for x in result.excluded],
        }

    return _guarded("km", run, exchange)


@algorithm_client
def central_two_stage(
    client: Any, parameters: dict[str, Any], organizations: list[int] | None = None
) -> dict[str, Any]:
    """Two-stage analysis: per-centre Cox estimates pooled by ``rma`` (``method``, ``knha``)."""
    exchange = _ask(client, organizations)

    def run() -> dict[str, Any]:
        result, _ = federated_two_stage(
            exchange,
            FederatedRequest.from_dict(parameters["request"]),
            method=str(parameters.get("method", "REML")),
            knha=bool(parameters.get("knha", False)),
        )
        return {"rows": result.to_frame(), "centres": result.per_centre}

    return _guarded("two_stage", run, exchange)


@algorithm_client
def central_describe(
    client: Any, parameters: dict[str, Any], organizations: list[int] | None = None
) -> dict[str, Any]:
    """The characteristics table by exposure group, small cells suppressed at each centre."""
    exchange = _ask(client, organizations)

    def run() -> dict[str, Any]:
        table, _ = federated_describe(
            exchange,
            FederatedRequest.from_dict(parameters["request"]),
            variables=parameters.get("variables"),
        )
        return {"table": table}

    return _guarded("describe", run, exchange)


@algorithm_client
def central_validation(
    client: Any, parameters: dict[str, Any], organizations: list[int] | None = None
) -> dict[str, Any]:
    """Each centre's validation findings by rule (run with the ``findings`` database)."""
    exchange = _ask(client, organizations)

    def run() -> dict[str, Any]:
        table, _ = federated_validation(
            exchange,
            request_id=str(parameters.get("request_id", "")),
            policy=parameters.get("policy"),
        )
        return {"table": table}

    return _guarded("validation", run, exchange)
