"""Where a run's repeated fits go, and the bootstrap by centre of chosen estimates.

Section ``execution``: ``workers`` (a local Dask cluster of that many worker processes) or
``scheduler`` (an existing cluster) for the refits of the sensitivity analyses, the
imputations of multiple imputation and the bootstrap; without the section everything runs in
this process, one fit after another. The same seed gives the same results wherever they run.

``execution.bootstrap``: resample the centres with replacement (a centre drawn twice enters
as two centres, each its own stratum), refit each chosen estimate of ``results.csv`` on each
replicate, and report the bootstrap SE and the percentile interval beside the model-based
one (:mod:`pooled.models.bootstrap`). Estimates are named by their output (the ``output``
column of ``results.csv``) and, optionally, term: ``cox_os_adjusted`` (the exposure),
``cox_os_adjusted:age``, ``two_stage_os`` (the pooled HR), ``mixed_cox_os``,
``interaction_os_subtype`` (the exposure's HR in every level; one level with
``interaction_os_subtype:dtc_positive | subtype=luminal_b``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import pandas as pd

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.errors import PooledWarning
from pooled.run_output import ModelOutput
from pooled.steps.base import AnalysisContext, Step, endpoint_frame

__all__ = [
    "EXECUTION",
    "BootstrapSection",
    "ExecutionSection",
    "execution_of",
    "parse_execution",
    "run_bootstrap",
]

_EXAMPLE = "execution: {workers: 2, bootstrap: {replicates: 200, estimates: [cox_os_adjusted]}}"

KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "execution", "section",
        "Where the run's repeated fits go (the sensitivity analyses' refits, the imputations "
        "of multiple imputation, the bootstrap replicates): a local Dask cluster (`workers`) "
        "or an existing one (`scheduler`). Without it they run in this process, one after "
        "another. Each task draws from its own seed (a child of `seed`) and runs with one "
        "BLAS thread, so the results are the same wherever they run; a task lost with its "
        "worker runs again elsewhere.",
        _EXAMPLE, default={},
    ),
    ConfigKey(
        "execution.workers", "integer >= 0",
        "Worker processes of a local Dask cluster (one thread each), started for the run; "
        "0 runs everything in this process.",
        "execution: {workers: 2}", default=0,
    ),
    ConfigKey(
        "execution.scheduler", "text",
        "Address of an existing Dask scheduler (`tcp://HOST:PORT`, as `dask scheduler` "
        "prints it) whose workers can import pooled; instead of `workers`.",
        "execution: {scheduler: 'tcp://10.0.0.5:8786'}", default="",
    ),
    ConfigKey(
        "execution.bootstrap", "section",
        "Bootstrap by centre of chosen estimates: the centres resampled with replacement (a "
        "centre drawn twice enters as two centres, each with its own baseline stratum), the "
        "models refitted on every replicate; reported as the bootstrap SE and the "
        "percentile interval beside the model's own interval (results.csv rows with "
        "`model = centre_bootstrap`, a table and plot in the report).",
        _EXAMPLE, default={},
    ),
    ConfigKey(
        "execution.bootstrap.replicates", "integer >= 1",
        "Bootstrap replicates (at least 2; 200 for an SE, 1,000 or more for a percentile "
        "interval's tails).",
        "execution: {bootstrap: {replicates: 1000, estimates: [two_stage_os]}}", default=200,
    ),
    ConfigKey(
        "execution.bootstrap.estimates", "list of text",
        "The estimates to bootstrap, each `<output>` or `<output>:<term>` as results.csv names "
        "them: outputs `cox_<endpoint>_adjusted` and `cox_<endpoint>_univariable` (term: the "
        "exposure by default, or any term of the model), `two_stage_<endpoint>` (the pooled "
        "HR), `mixed_cox_<endpoint>` (the exposure's mean HR, or a term), "
        "`interaction_<endpoint>_<covariate>` (the exposure's HR in each level, or one term "
        "such as `dtc_positive | subtype=luminal_b`).",
        "execution: {bootstrap: {estimates: [cox_os_adjusted, 'cox_os_adjusted:age', "
        "two_stage_os]}}",
        default=(),
    ),
    ConfigKey(
        "execution.bootstrap.level", "number",
        "Level of the percentile intervals.",
        "execution: {bootstrap: {level: 0.9, estimates: [cox_os_adjusted]}}", default=0.95,
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BootstrapSection:
    """``execution.bootstrap``: ``estimates`` as (output, term) pairs, term ``""`` = default."""

    replicates: int = 200
    estimates: tuple[tuple[str, str], ...] = ()
    level: float = 0.95


@dataclass(frozen=True, slots=True)
class ExecutionSection:
    """The ``execution`` section."""

    workers: int = 0
    scheduler: str = ""
    bootstrap: BootstrapSection | None = None

    def spec(self) -> Any:
        """The :class:`~pooled.distributed.engine.ExecutionSpec` of the section."""
        from pooled.distributed.engine import ExecutionSpec

        return ExecutionSpec(workers=self.workers, scheduler=self.scheduler)


def _output_endpoint(output: str, endpoints: tuple[str, ...]) -> str | None:
    """The endpoint an output name refers to, if it has one of the bootstrappable forms."""
    for endpoint in endpoints:
        exact = (f"cox_{endpoint}_adjusted", f"cox_{endpoint}_univariable",
                 f"two_stage_{endpoint}", f"mixed_cox_{endpoint}")  # fmt: skip
        prefix = f"interaction_{endpoint}_"
        if output in exact or (output.startswith(prefix) and len(output) > len(prefix)):
            return endpoint
    return None


def parse_execution(section: SectionReader) -> ExecutionSection:
    workers = section.get("workers")
    scheduler = str(section.get("scheduler") or "")
    if workers and scheduler:
        raise section.error(
            ("scheduler",),
            f"give 'workers' (a local cluster) or 'scheduler' (an existing one), not both; got "
            f"workers: {workers} and scheduler: {scheduler!r}.",
        )
    if scheduler and "://" not in scheduler:
        raise section.error(
            ("scheduler",),
            f"'scheduler' expected an address such as tcp://HOST:8786; got {scheduler!r}.",
        )
    raw = section.raw.get("bootstrap") if isinstance(section.raw, dict) else None
    bootstrap = None
    if raw is not None:
        inner = SectionReader(
            section.ctx,
            "execution.bootstrap",
            section.ctx.value(section.raw, "execution.bootstrap", section.at),
            section.at + ("bootstrap",),
            enabled=True,
            config=section.config,
        )
        replicates = inner.get("replicates")
        level = inner.get("level")
        if replicates < 2:
            raise inner.error(
                ("replicates",), f"'replicates' must be at least 2; got {replicates}."
            )
        if not 0 < level < 1:
            raise inner.error(("level",), f"'level' must lie between 0 and 1; got {level:g}.")
        items = inner.get("estimates")
        if not items:
            raise inner.error(
                (), "name at least one estimate to bootstrap; for example: estimates: "
                "[cox_os_adjusted]"
            )  # fmt: skip
        endpoints = tuple(section.config.endpoints)
        pairs = []
        for i, item in enumerate(items):
            output, _, term = str(item).partition(":")
            output, term = output.strip(), term.strip()
            if _output_endpoint(output, endpoints) is None:
                raise inner.error(
                    ("estimates", i),
                    f"'{output}' is not an output the bootstrap can refit; expected "
                    f"cox_<endpoint>_adjusted, cox_<endpoint>_univariable, two_stage_<endpoint>, "
                    f"mixed_cox_<endpoint> or interaction_<endpoint>_<covariate>, with an "
                    f"endpoint of this config ({', '.join(endpoints)})",
                )
            if (output, term) in pairs:
                raise inner.error(("estimates", i), f"'{item}' is named twice.")
            pairs.append((output, term))
        bootstrap = BootstrapSection(replicates=replicates, estimates=tuple(pairs), level=level)
    return ExecutionSection(workers=workers, scheduler=scheduler, bootstrap=bootstrap)


def execution_of(ctx: AnalysisContext) -> Any:
    """The run's :class:`~pooled.distributed.engine.ExecutionSpec`: from the ``execution``
    section, or in this process when the config (or its registry) has none."""
    from pooled.distributed.engine import ExecutionSpec

    try:
        section = ctx.section(EXECUTION.name)
    except KeyError:
        return ExecutionSpec()
    return section.spec() if section is not None else ExecutionSpec()


# -- refits (module level: they are sent to the workers) --------------------------------------


def refit_cox(data: pd.DataFrame, *, endpoint: str, spec: Any, term: str) -> float:
    """The coefficient ``term`` of the Cox model ``spec`` refitted on ``data``."""
    from pooled.models.cox import fit_cox

    fit = fit_cox(
        endpoint_frame(data, endpoint), replace(spec, term_lr_tests=False, concordance=False)
    )
    return fit.coefficient(term)


def refit_two_stage(data: pd.DataFrame, *, endpoint: str, spec: Any) -> float:
    """The pooled log HR of the two-stage analysis ``spec`` refitted on ``data``."""
    from pooled.models.two_stage import fit_two_stage

    return float(fit_two_stage(endpoint_frame(data, endpoint), spec).meta.estimate)


def refit_mixed_cox(data: pd.DataFrame, *, endpoint: str, spec: Any, term: str) -> float:
    """The fixed effect ``term`` of the mixed-effects Cox model ``spec`` refitted on ``data``."""
    from pooled.models.mixed_cox import fit_mixed_cox

    fit = fit_mixed_cox(endpoint_frame(data, endpoint), spec)
    return float(fit.coefficients[fit.term_names.index(term)])


def refit_within_level(
    data: pd.DataFrame, *, endpoint: str, spec: Any, marker: str, by: str, term: str
) -> float:
    """The marker's log HR in one level (``term``) of the interaction model ``spec``."""
    from pooled.models.cox import effect_within_levels, fit_cox

    fit = fit_cox(
        endpoint_frame(data, endpoint), replace(spec, term_lr_tests=False, concordance=False)
    )
    within = effect_within_levels(fit, marker=marker, by=by)
    return float(within.loc[within["term"] == term, "estimate"].iloc[0])


def _rows(output: ModelOutput) -> pd.DataFrame:
    frame = output.to_frame()
    if "row_type" in frame and output.kind in ("two_stage", "mixed_cox"):
        keep = "pooled" if output.kind == "two_stage" else "fixed"
        frame = frame.loc[frame["row_type"] == keep]
    if output.kind == "interaction":
        frame = frame.loc[frame["term"].astype(str).str.contains(" | ", regex=False)]
    return frame


def _targets(output: ModelOutput, term: str, ctx: AnalysisContext) -> list[tuple[Any, pd.Series]]:
    """(estimate function, results row) for each term of ``output`` to bootstrap."""
    from pooled.models.bootstrap import BootstrapTarget

    rows = _rows(output)
    result = output.result
    if output.kind == "cox":
        functions = {t: partial(refit_cox, endpoint=output.endpoint, spec=result.spec, term=t)
                     for t in result.term_names}  # fmt: skip
        default = [ctx.exposure.name]
    elif output.kind == "two_stage":
        marker = result.spec.marker
        functions = {marker: partial(refit_two_stage, endpoint=output.endpoint, spec=result.spec)}
        default = [marker]
    elif output.kind == "mixed_cox":
        functions = {t: partial(refit_mixed_cox, endpoint=output.endpoint, spec=result.spec, term=t)
                     for t in result.term_names}  # fmt: skip
        default = [result.spec.marker]
    elif output.kind == "interaction":
        functions = {
            t: partial(refit_within_level, endpoint=output.endpoint, spec=result.fit.spec,
                       marker=result.marker, by=result.by, term=t)
            for t in rows["term"].astype(str)
        }  # fmt: skip
        default = list(functions)
    else:  # pragma: no cover - the parser admits only the forms above
        raise ValueError(output.kind)
    terms = [term] if term else default
    out = []
    for t in terms:
        if t not in functions:
            raise KeyError(
                f"term '{t}' is not an estimate of {output.name} (terms: {', '.join(functions)})"
            )
        found = rows.loc[rows["term"].astype(str) == t]
        row = found.iloc[0] if len(found) else pd.Series(dtype=object)
        name = f"{output.name}:{t}"
        out.append(
            (
                BootstrapTarget(
                    name=name, estimate=functions[t], term=t, endpoint=output.endpoint,
                    analysis=str(row.get("analysis", ctx.name)), source=output.name,
                    n=float(row.get("n", float("nan"))), events=float(row.get("events", float("nan"))),
                ),
                row,
            )
        )  # fmt: skip
    return out


def run_bootstrap(
    cohort: AnalysisDataset, section: ExecutionSection, ctx: AnalysisContext
) -> list[ModelOutput]:
    """The bootstrap by centre of the chosen estimates (one replicate = one task)."""
    from pooled.models.bootstrap import BootstrapTarget, CentreBootstrapSpec, fit_centre_bootstrap

    assert section.bootstrap is not None
    boot = section.bootstrap
    targets: list[BootstrapTarget] = []
    original: dict[str, float] = {}
    missing: list[BootstrapTarget] = []
    reasons: dict[str, str] = {}
    for output_name, term in boot.estimates:
        output = ctx.output(output_name)
        label = f"{output_name}:{term}" if term else output_name
        if output is None:
            warnings.warn(
                f"bootstrap: no output {output_name} in this run (switched off or skipped), so "
                f"'{label}' is not bootstrapped.",
                PooledWarning,
                stacklevel=3,
            )
            missing.append(
                BootstrapTarget(name=label, estimate=_none, term=term, source=output_name)
            )
            reasons[label] = f"not bootstrapped: no output {output_name} in this run"
            continue
        try:
            found = _targets(output, term, ctx)
        except KeyError as exc:
            warnings.warn(f"bootstrap: {exc.args[0]}; '{label}' is not bootstrapped.",
                          PooledWarning, stacklevel=3)  # fmt: skip
            missing.append(BootstrapTarget(name=label, estimate=_none, term=term,
                                           endpoint=output.endpoint, source=output_name))  # fmt: skip
            reasons[label] = f"not bootstrapped: {exc.args[0]}"
            continue
        for target, row in found:
            if target.name not in original:
                targets.append(target)
                original[target.name] = float(row.get("estimate", float("nan")))
    spec = CentreBootstrapSpec(replicates=boot.replicates, level=boot.level, seed=ctx.seed)
    result = fit_centre_bootstrap(
        cohort.patients, targets, spec, execution=execution_of(ctx), original=original
    )
    if missing:
        notes = dict(result.notes)
        for target in missing:
            notes[target.name] = reasons[target.name]
            original[target.name] = float("nan")
        result = replace(result, targets=result.targets + tuple(missing), notes=notes,
                         original=dict(original))  # fmt: skip
    return [
        ModelOutput(
            "bootstrap",
            "bootstrap",
            "",
            result,
            f"Bootstrap by centre ({boot.replicates} replicates, {boot.level:.0%} percentile "
            "intervals)",
        )
    ]


def _none(data: pd.DataFrame) -> float:  # pragma: no cover - never refitted
    return float("nan")


EXECUTION = Step(
    name="execution",
    label="bootstrap by centre",
    scope="run",
    run=run_bootstrap,
    section="execution",
    keys=KEYS,
    parse=parse_execution,
    enabled=lambda section, ctx: section is not None and section.bootstrap is not None,
    title="Execution and the bootstrap by centre (`execution`)",
)
