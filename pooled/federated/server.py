"""Running the central functions on a real vantage6 server with the vantage6 user client.

The researcher's machine creates one task per analysis: the central function at the
coordinating organisation's node, which creates the subtasks at every centre's node (the
partial functions) and returns the combined result. Needs ``vantage6-client`` (the
``federated`` extra).
"""

from __future__ import annotations

import json
from typing import Any

from pooled.errors import ConfigError, PooledError

__all__ = ["connect", "results_of", "run_on_server"]


def connect(
    host: str, port: int, api_path: str, username: str, password: str, private_key: str | None
) -> Any:
    """An authenticated vantage6 ``Client`` (with encryption set up when a key is given)."""
    try:
        from vantage6.client import Client
    except ImportError as exc:  # pragma: no cover - installed with the extra
        raise ConfigError(
            "talking to a vantage6 server needs the vantage6 client: "
            "`pip install -e '.[federated]'`."
        ) from exc
    client = Client(host, port, api_path, log_level="warn")
    client.authenticate(username, password)
    client.setup_encryption(private_key)
    return client


def results_of(response: Any) -> list[Any]:
    """The results of a task from the client's answer (a page ``{"data": [...]}`` or a list)."""
    items = response.get("data", []) if isinstance(response, dict) else list(response or [])
    out = []
    for item in items:
        value = item.get("result", item) if isinstance(item, dict) else item
        out.append(json.loads(value) if isinstance(value, str) else value)
    return out


def run_on_server(
    client: Any,
    *,
    collaboration: int,
    central_organization: int,
    organizations: list[int],
    image: str,
    method: str,
    parameters: dict[str, Any],
    database: str = "patients",
) -> dict[str, Any]:
    """Create the task of central function ``method`` and wait for its result."""
    task = client.task.create(
        collaboration=collaboration,
        organizations=[central_organization],
        name=f"pooled {method}",
        image=image,
        description=f"pooled federate: {method}",
        input_={
            "method": method,
            "kwargs": {"parameters": parameters, "organizations": organizations},
        },
        databases=[{"label": database}],
    )
    if not isinstance(task, dict) or "id" not in task:
        raise PooledError(f"the vantage6 server did not create the task: {task}")
    results = results_of(client.wait_for_results(task["id"]))
    if not results or not isinstance(results[0], dict):
        raise PooledError(
            f"task {task['id']} ({method}) returned no result; see its log on the server."
        )
    return dict(results[0])
