"""The ``pooled`` command. The only module that touches both packages and the file system."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="pooled",
    help="IPD pooled meta-analysis of CTC/DTC in breast cancer: validate, ingest, analyse, report.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """IPD pooled meta-analysis of CTC/DTC in breast cancer."""


if __name__ == "__main__":  # pragma: no cover
    app()
