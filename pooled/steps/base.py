"""What every analysis step is made of: :class:`Step`, :class:`Registry`, :class:`AnalysisContext`.

A step is one module under :mod:`pooled.steps`. It declares the keys of its config section
(its slice of the key registry), parses its section into a frozen object, and either
prepares the cohort (``prepare``, the cohort step) or fits models on the cohort (``run``):

``run(cohort: AnalysisDataset, section, ctx: AnalysisContext) -> list[ModelOutput]``

``cohort`` is the analysis cohort (after the cohort rules, the exposure and the derived
covariates), ``section`` the step's parsed config section, ``ctx`` what the steps share: the
endpoints, exposure, covariates, strata, interactions and seed, the endpoint a per-endpoint
step is run for, the outputs of the earlier steps. A step reads no file, writes nothing and
changes nothing in place; a step the data cannot support raises
:class:`~pooled.errors.DataError` (or :class:`~pooled.errors.ConvergenceError`) and the runner
records it as skipped.

The :class:`Registry` is the ordered tuple of steps the config is parsed with and the runner
walks (:data:`pooled.steps.registry.STEPS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pandas as pd

from pooled.config_keys import ConfigKey, SectionReader
from pooled.dataset import AnalysisDataset
from pooled.exposures import CovariateSpec, ExposureSpec
from pooled.run_output import ModelOutput

if TYPE_CHECKING:  # pragma: no cover
    from pooled.config import AnalysisConfig

__all__ = [
    "AnalysisContext",
    "ModelSection",
    "Registry",
    "Step",
    "endpoint_frame",
    "per_centre",
]

Scope = Literal["cohort", "run", "endpoint"]


@dataclass(frozen=True, slots=True)
class ModelSection:
    """The section of a model under ``models``: its switch and, in subclasses, its options.

    True when the model runs. ``aliases`` maps flat names of ``cfg.models`` (as they were
    before the sections: ``cfg.models.ties``) to attributes of the section; a field ``f`` of
    the section of step ``s`` is also ``cfg.models.s_f`` (``cfg.models.bayes_draws``).
    """

    enabled: bool = False
    aliases: ClassVar[Mapping[str, str]] = {}

    def __bool__(self) -> bool:
        return self.enabled


@dataclass(frozen=True, slots=True)
class AnalysisContext:
    """What the steps of one run share.

    Attributes
    ----------
    config : the validated config; steps read the shared keys through the properties below
        and another step's section through :meth:`section`.
    endpoint : the endpoint a per-endpoint step is run for (``""`` for the other steps).
    outputs : the outputs of the steps run before this one, in report order.
    progress : whether a step may show its own progress bar.
    """

    config: AnalysisConfig
    endpoint: str = ""
    outputs: tuple[ModelOutput, ...] = ()
    progress: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.config.endpoints

    @property
    def primary_endpoint(self) -> str:
        """The first endpoint: patients without it are not in the cohort."""
        return self.config.endpoints[0]

    @property
    def exposure(self) -> ExposureSpec:
        return self.config.exposure

    @property
    def covariates(self) -> tuple[CovariateSpec, ...]:
        return self.config.covariates

    @property
    def categorical(self) -> tuple[tuple[str, str], ...]:
        """(column, reference) pairs of the categorical covariates."""
        return self.config.categorical

    @property
    def strata(self) -> tuple[str, ...]:
        return self.config.strata

    @property
    def interactions(self) -> tuple[tuple[str, str], ...]:
        return self.config.interactions

    @property
    def seed(self) -> int:
        return self.config.seed

    def section(self, step: str) -> Any:
        """The parsed config section of ``step`` (``"cox"``)."""
        return self.config.section(step)

    def output(self, name: str) -> ModelOutput | None:
        """The output named ``name`` of an earlier step, if it produced one."""
        return next((o for o in self.outputs if o.name == name), None)

    def where(self, *keys: Any) -> str:
        """``config.yaml line 12`` of the value at ``keys``, for messages."""
        return self.config.where(*keys)

    def at(self, *, endpoint: str = "", outputs: tuple[ModelOutput, ...] = ()) -> AnalysisContext:
        """The context of one step: its endpoint and the outputs before it."""
        return replace(self, endpoint=endpoint, outputs=outputs)


RunStep = Callable[[AnalysisDataset, Any, AnalysisContext], list[ModelOutput]]
PrepareStep = Callable[
    [AnalysisDataset, Any, AnalysisContext], tuple[AnalysisDataset, list[ModelOutput]]
]
SectionParser = Callable[[SectionReader], Any]
Enabled = Callable[[Any, AnalysisContext], bool]


def _when_on(section: Any, ctx: AnalysisContext) -> bool:
    return section is None or bool(section)


@dataclass(frozen=True, slots=True)
class Step:
    """One analysis step: its config section and what it does.

    Attributes
    ----------
    name : unique; the config's ``cfg.section(name)`` holds its parsed section.
    label : shown in the progress bar and in the warning and ``skipped_models`` entry when
        the step is skipped (``"Cox"`` -> ``"Cox os"``).
    scope : ``"endpoint"``: run once per endpoint (consecutive endpoint steps are run
        endpoint by endpoint); ``"run"``: once; ``"cohort"``: prepares the cohort (``prepare``)
        before every other step, whatever its place. A step with neither ``run`` nor
        ``prepare`` only declares a section that other steps read (``models.trajectory``).
    run : ``run(cohort, section, ctx) -> list[ModelOutput]`` (see :mod:`pooled.steps.base`).
    prepare : ``prepare(dataset, section, ctx) -> (cohort, outputs)``, for ``scope="cohort"``.
    section : the config path of the section the step owns (``"models.cox"``, ``"cohort"``),
        or ``""``. A section under ``models`` is a model switch: ``cox: false`` turns it off.
    keys : the section's keys (its slice of the registry), the section's own key first.
    parse : ``parse(reader: SectionReader) -> section object`` (frozen); a model's object
        derives from :class:`ModelSection`.
    uses : the step whose section ``run`` receives when the step has none of its own
        (``"cox"`` for the PH test).
    enabled : ``enabled(section, ctx) -> bool``, whether to run (for an endpoint step, at
        ``ctx.endpoint``); by default when the section is on. It sees the config only: what
        depends on an earlier step's result is ``requires``.
    requires : a step that must have run without being skipped (at the same endpoint) for
        this one to run; when it was skipped this step is left out silently (the skipped
        step carries the reason).
    default_on : a model that runs when the config has no ``models`` key at all.
    title : the heading of a top-level section in the config reference.
    """

    name: str
    label: str = ""
    scope: Scope = "endpoint"
    run: RunStep | None = None
    prepare: PrepareStep | None = None
    section: str = ""
    keys: tuple[ConfigKey, ...] = ()
    parse: SectionParser | None = None
    uses: str = ""
    enabled: Enabled = _when_on
    requires: str = ""
    default_on: bool = False
    title: str = ""

    @property
    def is_model(self) -> bool:
        """A model switch under ``models`` (``models.cox``)."""
        return self.section.startswith("models.")

    @property
    def section_of(self) -> str:
        """The step whose parsed section ``run`` receives (``""``: none)."""
        return self.uses or (self.name if self.section else "")


@dataclass(frozen=True, slots=True)
class Registry:
    """The analysis steps in order: the order of the report, and the order the runner walks.

    Checked when built: unique names; each step's section is a top-level key or
    ``models.<name>``, its keys lie in it and the step parses it; ``uses`` and ``requires``
    name an earlier step. :meth:`with_step` returns a new registry
    with one more step (the default :data:`pooled.steps.registry.STEPS` is never changed).
    """

    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        seen: list[str] = []
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"step {step.name!r} is registered twice")
            for other, what in ((step.uses, "uses"), (step.requires, "requires")):
                if other and other not in seen:
                    raise ValueError(
                        f"step {step.name!r} {what} {other!r}, which is not an earlier step"
                    )
            if step.section and step.parse is None:
                raise ValueError(f"step {step.name!r} owns section {step.section!r} but no parse")
            if step.section.count(".") > (1 if step.is_model else 0):
                raise ValueError(
                    f"step {step.name!r}: a section is a top-level key or 'models.<name>'; got "
                    f"{step.section!r}"
                )
            if step.keys and step.keys[0].path != step.section:
                raise ValueError(
                    f"step {step.name!r}: its first key must be its section {step.section!r}"
                )
            for key in step.keys:
                if not (key.path == step.section or key.path.startswith(step.section + ".")):
                    raise ValueError(
                        f"step {step.name!r} declares {key.path!r}, outside its section "
                        f"{step.section!r}"
                    )
            if (step.scope == "cohort") != (step.prepare is not None):
                raise ValueError(f"step {step.name!r}: 'prepare' is for scope 'cohort' only")
            if step.default_on and not step.is_model:
                raise ValueError(f"step {step.name!r}: 'default_on' is for models only")
            seen.append(step.name)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    @property
    def keys(self) -> tuple[ConfigKey, ...]:
        """Every step's keys, in registry order."""
        return tuple(k for s in self.steps for k in s.keys)

    def get(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"no step {name!r}; steps: {', '.join(self.names)}")

    def with_step(self, step: Step, *, after: str) -> Registry:
        """A new registry with ``step`` placed after the step named ``after``."""
        position = self.names.index(after) + 1
        return Registry(self.steps[:position] + (step,) + self.steps[position:])


def endpoint_frame(patients: pd.DataFrame, endpoint: str) -> pd.DataFrame:
    """The cohort's patients with ``endpoint`` known (time and event), the event as a float."""
    data = patients.loc[
        patients[f"{endpoint}_months"].notna() & patients[f"{endpoint}_event"].notna()
    ].copy()
    data[f"{endpoint}_event"] = data[f"{endpoint}_event"].astype(float)
    return data


def per_centre(frame: pd.DataFrame) -> pd.Series:
    """Rows per centre (what a model analysed there)."""
    return frame["centre"].astype(str).value_counts()
