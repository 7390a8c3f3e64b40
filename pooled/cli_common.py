"""What every ``pooled`` command shares: the consoles, the exit codes and the one-line
error handling (:func:`friendly`). Imported by :mod:`pooled.cli` and :mod:`pooled.cli_store`,
so neither imports the other.

Exit codes: 0 success (no errors found), 1 errors found in the data, 2 the input could not
be used at all (unreadable file, bad mapping or config, an output that would overwrite
something) -- always with a one-line reason, never a traceback; 3 an internal error (a bug in
pooled: one line, the traceback saved to a file to attach to the bug report).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from harmonization.errors import HarmonizationError
from pooled.errors import PooledError

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_FINDINGS, EXIT_UNUSABLE, EXIT_BUG = 0, 1, 2, 3


def friendly(func: F) -> F:
    """Turn expected failures (bad file, bad mapping/config) into one line and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (HarmonizationError, PooledError) as exc:
            err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
            raise typer.Exit(EXIT_UNUSABLE) from None
        except KeyboardInterrupt:  # pragma: no cover
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit, typer.BadParameter):
            raise
        except Exception as exc:  # a bug: one line here, the traceback in a file
            import tempfile
            import traceback

            with tempfile.NamedTemporaryFile(
                "w", prefix="pooled-error-", suffix=".txt", delete=False, encoding="utf-8"
            ) as handle:
                traceback.print_exc(file=handle)
            err_console.print(
                f"[bold red]internal error[/] ({type(exc).__name__}: {exc}); this is a bug in "
                f"pooled, not in your data. Please report it with {handle.name}.",
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_BUG) from None

    return wrapper  # type: ignore[return-value]


def or_list(names: Iterable[str]) -> str:
    """``a, b or c`` (for option help)."""
    items = list(names)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" or {items[-1]}"
