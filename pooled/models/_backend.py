"""PyMC, PyTensor and ArviZ as the Bayesian models use them: configured once, quietly.

Import ``arviz`` and ``pymc`` from here (``from pooled.models._backend import az, pm, pt``),
never directly, so that before either is used:

* PyTensor's BLAS flags are set. Left unset, PyTensor searches for a C BLAS the first time
  it compiles C code and, on a pip install without one it recognises (it wants a separate
  ``cblas``), warns "PyTensor could not link to a BLAS installation". The models sample with
  nutpie through numba, which calls BLAS through SciPy, so PyTensor's C BLAS only serves the
  small C functions PyMC compiles around a model (initial point, shapes) and the PyMC
  fallback sampler. We link a Fortran BLAS of the system (OpenBLAS, else the reference
  BLAS) when one is there and a test program links against it, and otherwise set the flags
  empty, which tells PyTensor to use NumPy's BLAS through its Python implementations. A
  choice made by the user (``PYTENSOR_FLAGS=blas__ldflags=...`` or ``~/.pytensorrc``) is
  kept. The result of the search is cached in PyTensor's compile directory.
* ArviZ's once-a-day import-time FutureWarning about its coming 1.0 refactor is filtered,
  at that import only: it asks nothing of code that uses ArviZ 0.x and would otherwise be
  printed by every run of the pipeline.
"""

from __future__ import annotations

import ctypes.util
import warnings
from pathlib import Path

__all__ = ["az", "configure_pytensor", "pm", "pt"]

_BLAS_CACHE = "pooled_blas_ldflags.txt"


def _candidate_blas_flags() -> list[str]:
    return [f"-l{name}" for name in ("openblas", "blas") if ctypes.util.find_library(name)]


def _find_blas_ldflags(compiledir: Path) -> str:
    """Linker flags of a Fortran BLAS that links and runs, or "" (NumPy's BLAS via Python)."""
    cache = compiledir / _BLAS_CACHE
    try:
        return cache.read_text(encoding="utf-8").strip()
    except OSError:
        pass
    flags = ""
    import pytensor

    if pytensor.config.cxx:
        from pytensor.link.c.cmodule import try_blas_flag

        for candidate in _candidate_blas_flags():
            if try_blas_flag([candidate]):
                flags = candidate
                break
    try:
        compiledir.mkdir(parents=True, exist_ok=True)
        cache.write_text(flags + "\n", encoding="utf-8")
    except OSError:  # a read-only compile directory: search again next time
        pass
    return flags


def configure_pytensor() -> str:
    """Set PyTensor's BLAS flags unless the user set them; return the flags in use."""
    import pytensor

    param = type(pytensor.config).__dict__.get("blas__ldflags")
    if param is not None and not hasattr(param, "val"):  # neither set by the user nor used yet
        pytensor.config.blas__ldflags = _find_blas_ldflags(Path(pytensor.config.compiledir))
    return str(pytensor.config.blas__ldflags)


configure_pytensor()

with warnings.catch_warnings():
    # ArviZ >= 0.22 announces its 1.0 refactor at import, once a day (see the module docstring)
    warnings.filterwarnings(
        "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
    )
    import arviz as az
    import pymc as pm
    import pytensor.tensor as pt
