"""Running an analysis config: analysis dataset -> cohort -> the steps' models -> RunOutput.

:func:`run_analysis` is what ``pooled run CONFIG`` does after opening the store. It never
touches the file system itself (the CLI writes the outputs); it returns a
:class:`~pooled.run_output.RunOutput` that the report renders.

The runner does not fit anything itself: it walks the steps of the config's registry
(:data:`pooled.steps.registry.STEPS`, one module each under :mod:`pooled.steps`). First the
cohort step prepares the cohort (the cohort rules, the exposure, the derived covariates, each
exclusion a step of the flow); then every step runs in registry order, the per-endpoint steps
endpoint by endpoint. The runner orders the steps, shows progress, collects the outputs,
records a step the data cannot support as skipped (a warning and an entry of
``provenance["skipped_models"]``), checks that the run's model flow reconciles and assembles
the :class:`RunOutput`.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pooled.config import AnalysisConfig, check_against_data
from pooled.dataset import AnalysisDataset
from pooled.errors import ConvergenceError, DataError, PooledWarning
from pooled.model_flow import ModelFlow
from pooled.run_output import InteractionOutput, ModelOutput, RunOutput, SensitivityResult
from pooled.steps.base import AnalysisContext, Registry, Step
from pooled.steps.cohort import apply_cohort_rules, cohort_rule, select_cohort
from pooled.steps.descriptives import characteristics_tables

# Result types of runs saved before the steps had modules of their own (run.pkl unpickles
# them from here), and the cohort functions that lived here.
__all__ = [
    "InteractionOutput",
    "SensitivityResult",
    "apply_cohort_rules",
    "cohort_rule",
    "run_analysis",
    "select_cohort",
]


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in (
        "pooled-ipd",
        "numpy",
        "scipy",
        "pandas",
        "pymc",
        "arviz",
        "nutpie",
        "lifelines",
        "statsmodels",
        "duckdb",
        "openpyxl",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def run_analysis(cfg: AnalysisConfig, ds: AnalysisDataset, *, progress: bool = False) -> RunOutput:
    """Run every model the config asks for on the analysis dataset.

    Parameters
    ----------
    cfg : AnalysisConfig
        From :func:`pooled.config.load_analysis_config`; its ``registry`` gives the steps.
    ds : AnalysisDataset
        From :func:`pooled.dataset.build_analysis_dataset` (the store's latest or pinned
        versions); the cohort rules, exposure and derived covariates are applied here, each
        exclusion a step in the flow.
    progress : bool
        Show a progress bar over the steps.

    Returns
    -------
    RunOutput
        Deterministic for a given config, data and seed. ``model_flow`` accounts, per model
        and centre, for every cohort patient a model did not use.

    Raises
    ------
    DataError
        If a model's flow does not reconcile (cohort = analysed + excluded per centre, and
        the analysed total equals the model's ``n``).

    Examples
    --------
    >>> run = run_analysis(load_analysis_config("configs/analyses/paddy.yaml"), ds)  # doctest: +SKIP
    >>> run.results().query("term == 'dtc_positive'")  # doctest: +SKIP
    >>> run.model_flow.summary()  # doctest: +SKIP
    """
    registry = cfg.registry
    ctx = AnalysisContext(cfg, progress=progress)
    cohort = ds
    prepared: dict[str, list[ModelOutput]] = {}
    for step in registry:
        if step.prepare is not None:
            cohort, prepared[step.name] = step.prepare(cohort, _section(cfg, step), ctx)
    cohort.flow.check(cohort.patients)
    patients = cohort.patients
    check_against_data(cfg, patients)
    skipped: list[dict[str, str]] = []
    outputs = _walk(_plan(registry, ctx), cohort, ctx, prepared, skipped, progress)
    model_flow = ModelFlow.concat(o.flow for o in outputs)
    model_flow.check()
    return RunOutput(
        name=cfg.name,
        config_text=cfg.text,
        flow=cohort.flow,
        characteristics=characteristics_tables(patients, ctx),
        outputs=tuple(outputs),
        sample_flow=cohort.sample_flow,
        model_flow=model_flow,
        provenance={
            "config": cfg.path,
            "config_sha256": cfg.sha256,
            "schema": cfg.schema.path if cfg.schema is not None else "",
            "seed": cfg.seed,
            "store": ds.provenance.get("store", ""),
            "upload_versions": dict(ds.versions),
            "upload_sha256": dict(ds.provenance.get("upload_sha256", {})),
            "time_origin": ds.provenance.get("origin", "schema default"),
            "origin_not_converted": dict(ds.provenance.get("origin_not_converted", {})),
            "time_origins": dict(ds.provenance.get("time_origins", {})),
            "patients_analysed": int(len(patients)),
            "skipped_models": skipped,
            "packages": _package_versions(),
        },
    )


def _section(cfg: AnalysisConfig, step: Step) -> Any:
    """The parsed section a step receives (``None`` for a step without one)."""
    return cfg.section(step.section_of) if step.section_of else None


def _plan(registry: Registry, ctx: AnalysisContext) -> list[tuple[Step, str]]:
    """(step, endpoint) in the order they run and report: the registry's order, each run of
    consecutive per-endpoint steps endpoint by endpoint (a step that only declares a section
    does not interrupt it); steps that are off left out."""
    plan: list[tuple[Step, str]] = []
    block: list[Step] = []

    def flush() -> None:
        for endpoint in ctx.endpoints:
            here = ctx.at(endpoint=endpoint)
            plan.extend((s, endpoint) for s in block if s.enabled(_section(ctx.config, s), here))
        block.clear()

    for step in registry:
        if step.run is None and step.prepare is None:
            continue  # it only declares a section, which other steps read
        if step.scope == "endpoint":
            block.append(step)
            continue
        flush()
        if step.scope == "cohort" or step.enabled(_section(ctx.config, step), ctx):
            plan.append((step, ""))
    flush()
    return plan


def _walk(
    plan: list[tuple[Step, str]],
    cohort: AnalysisDataset,
    ctx: AnalysisContext,
    prepared: dict[str, list[ModelOutput]],
    skipped: list[dict[str, str]],
    progress: bool,
) -> list[ModelOutput]:
    """Run the plan; a step the data cannot support is skipped with its reason, not fatal.

    A cohort step contributes the outputs it made while preparing the cohort, at its place.
    A step whose ``requires`` was skipped (or not run) at the same endpoint is left out.
    """
    outputs: list[ModelOutput] = []
    done: set[tuple[str, str]] = set()
    runs = [(step, endpoint) for step, endpoint in plan if step.run is not None]
    with _progress_bar(len(runs), progress) as show:
        for step, endpoint in plan:
            outputs.extend(prepared.get(step.name, ()))
            if step.run is None:
                continue
            label = f"{step.label} {endpoint}" if endpoint else step.label
            show(label)
            if step.requires and (step.requires, endpoint) not in done:
                continue
            here = ctx.at(endpoint=endpoint, outputs=tuple(outputs))
            try:
                made = step.run(cohort, _section(ctx.config, step), here)
            except (DataError, ConvergenceError) as exc:
                warnings.warn(f"{label} skipped: {exc}", PooledWarning, stacklevel=3)
                skipped.append({"step": label, "reason": str(exc)})
                continue
            done.add((step.name, endpoint))
            outputs.extend(made)
    return outputs


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Any]:
    """``show(label)`` per step: a rich progress bar over ``total`` steps, or nothing."""
    if not enabled:
        yield lambda label: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    ) as bar:
        task = bar.add_task("models", total=total)
        started = False

        def show(label: str) -> None:
            nonlocal started
            if started:
                bar.advance(task)
            started = True
            bar.update(task, description=label)

        yield show
        if started:
            bar.advance(task)
