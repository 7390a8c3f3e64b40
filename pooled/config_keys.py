"""The language analysis configs are written in: keys, value types, where a value is.

Every key a config may hold is a :class:`ConfigKey` (path, type, default, allowed values, an
example and its meaning). The keys are declared where they are used: the top-level keys in
:mod:`pooled.config`, each analysis step's section in its module under :mod:`pooled.steps`;
:mod:`pooled.config` assembles them into one registry, parses a config with it and generates
``docs/config_reference.md`` from it. This module holds what both sides share and imports
neither: the key type, the value types and their checks (:data:`VALUE_TYPES`), the parse
context with the file and line of every value (:class:`ParseContext`, :class:`Located`), the
reader a step's section parser gets (:class:`SectionReader`), did-you-mean suggestions and the
check of an expression's names against the schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from harmonization.errors import ExpressionError
from harmonization.schema import Schema, did_you_mean
from pooled.errors import ConfigError

# Columns the analysis dataset has beyond the schema's patient fields (harmonization.derive),
# with their type; usable as markers, covariates, strata, subgroups and in expressions.
DERIVED_COLUMNS: Mapping[str, str] = {"ctc_per_7_5ml": "number"}
NUMERIC_TYPES = ("integer", "number")

# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

SchemaSet = Literal["", "settings", "endpoints", "numeric_fields"]


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One key of the analysis-config language.

    Attributes
    ----------
    path : dotted path; ``[]`` marks the items of a list (``covariates[].expr``).
    type : a name of :data:`VALUE_TYPES` (checked by the parser, shown in the reference).
    meaning : one paragraph for the reference.
    example : a YAML fragment of a config using the key (parsed by the tests).
    default : the value when the key is absent (:data:`REQUIRED` when it must be given;
        ``None`` when the default depends on other keys, described by ``default_text``).
    allowed : allowed values of a choice.
    allowed_from : allowed values taken from the schema (``settings``, ``endpoints``,
        ``numeric_fields``).
    default_text : the default in words, when it depends on other keys.
    """

    path: str
    type: str
    meaning: str
    example: str
    default: Any = None
    allowed: tuple[str, ...] = ()
    allowed_from: SchemaSet = ""
    default_text: str = ""

    @property
    def section(self) -> str:
        return self.path.rpartition(".")[0]

    @property
    def leaf(self) -> str:
        return self.path.rpartition(".")[2]

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


# ---------------------------------------------------------------------------------------------
# Locations and checks
# ---------------------------------------------------------------------------------------------

Keys = tuple[Any, ...]


class Located:
    """Line numbers of the YAML nodes by key path, for error messages."""

    def __init__(self, path: str, lines: dict[tuple[Any, ...], int]) -> None:
        self.path = path
        self.lines = lines

    def where(self, *keys: Any) -> str:
        for depth in range(len(keys), -1, -1):
            line = self.lines.get(tuple(keys[:depth]))
            if line is not None:
                return f"{self.path} line {line}"
        return self.path

    def error(self, keys: Keys, message: str) -> ConfigError:
        return ConfigError(f"{self.where(*keys)}: {message}")


def compose_lines(
    node: yaml.Node, prefix: tuple[Any, ...], out: dict[tuple[Any, ...], int]
) -> None:
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[prefix + (key,)] = key_node.start_mark.line + 1
            compose_lines(value_node, prefix + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            compose_lines(item, prefix + (index,), out)


def shown_path(path: str | Path) -> str:
    """A path as messages show it: relative to the working directory when below it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(p)


class ParseContext:
    """What the parser needs while reading one config: lines, schema, the registry of keys,
    the keys seen.

    ``keys`` is the registry the config is read with (path -> key, in registry order); a
    key outside it is unknown.
    """

    def __init__(
        self, loc: Located, schema: Schema, keys: Mapping[str, ConfigKey] | None = None
    ) -> None:
        self.loc = loc
        self.schema = schema
        self.keys: Mapping[str, ConfigKey] = keys if keys is not None else {}
        self.given: set[str] = set()

    def section_keys(self, section: str) -> tuple[str, ...]:
        """The keys allowed directly in ``section`` (``""`` = top level), in registry order."""
        return section_keys(self.keys.values(), section)

    @property
    def schema_name(self) -> str:
        return shown_path(self.schema.path) if self.schema.path else "the schema"

    def error(self, keys: Keys, message: str) -> ConfigError:
        return self.loc.error(keys, sentence(message))

    def allowed(self, key: ConfigKey) -> tuple[str, ...]:
        if key.allowed_from:
            return schema_values(self.schema, key.allowed_from)
        return key.allowed

    def section(self, raw: Any, section: str, keys: Keys) -> dict[str, Any]:
        """``raw`` as a mapping whose keys are all registered under ``section``."""
        if raw is None:
            return {}
        label = section.rpartition(".")[2] or "the config"
        if not isinstance(raw, dict):
            raise self.error(keys, f"'{label}' must be a mapping of options; got {raw!r}.")
        allowed = self.section_keys(section)
        for key in raw:
            if key not in allowed:
                raise self.error(
                    keys + (key,),
                    f"unknown key '{key}'{did_you_mean(str(key), allowed)}; allowed keys here: "
                    f"{', '.join(allowed)}.",
                )
        return raw

    def value(self, raw: Mapping[str, Any], path: str, keys: Keys) -> Any:
        """The value of registered key ``path`` in the mapping ``raw`` (at ``keys``), checked
        and converted by the key's type; its default when absent."""
        key = self.keys[path]  # a KeyError here is a bug: the parser reads an unregistered key
        if key.leaf not in raw:
            if key.required:
                raise self.error(
                    keys,
                    f"missing the required key '{key.leaf}'"
                    + (f" in '{key.section}'" if key.section else "")
                    + f"; for example: {key.example}",
                )
            return key.default
        self.given.add(path)
        return VALUE_TYPES[key.type].check(raw[key.leaf], key, self, keys + (key.leaf,))


def patient_columns(schema: Schema) -> frozenset[str]:
    """Columns an expression may use: the patients table's fields and the derived columns."""
    return frozenset(schema.table("patients").fields) | frozenset(DERIVED_COLUMNS)


def section_keys(keys: Collection[ConfigKey], section: str) -> tuple[str, ...]:
    """The leaves of ``keys`` directly in ``section``, in order."""
    return tuple(k.leaf for k in keys if k.section == section)


def schema_values(schema: Schema, which: str) -> tuple[str, ...]:
    """Allowed values a key takes from the schema."""
    patients = schema.table("patients")
    if which == "settings":
        return patients.field("setting").codes if "setting" in patients.fields else ()
    if which == "endpoints":
        return schema.endpoint_names
    if which == "numeric_fields":
        numeric = [n for n, f in patients.fields.items() if f.type in NUMERIC_TYPES]
        return tuple(numeric) + tuple(n for n, t in DERIVED_COLUMNS.items() if t in NUMERIC_TYPES)
    raise ValueError(which)


# ---------------------------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------------------------

Check = Callable[[Any, ConfigKey, ParseContext, Keys], Any]


@dataclass(frozen=True, slots=True)
class ValueType:
    """A type of config value: what the reference calls it and how the parser checks it."""

    description: str
    check: Check


def _label(keys: Keys) -> str:
    last = [k for k in keys if isinstance(k, str)]
    return last[-1] if last else "value"


def _text(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ctx.error(keys, f"'{_label(keys)}' must be a text; got {value!r}.")
    return str(value)


def _nonempty_text(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(keys, f"'{_label(keys)}' must be a non-empty text; got {value!r}.")
    return value.strip()


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _identifier(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ctx.error(
            keys,
            f"'{_label(keys)}' must be a column name (letters, digits and underscores, not "
            f"starting with a digit); got {value!r}.",
        )
    return value


def _expression_text(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(
            keys,
            f"'{_label(keys)}' must be an expression in quotes, e.g. 'age >= 18'; got {value!r}.",
        )
    return value.strip()


def _boolean(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(keys, f"'{_label(keys)}' must be true or false; got {value!r}.")
    return value


def _number(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ctx.error(keys, f"'{_label(keys)}' must be a number; got {value!r}.")
    return float(value)


def _whole(minimum: int) -> Check:
    def check(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ctx.error(
                keys, f"'{_label(keys)}' must be a whole number >= {minimum}; got {value!r}."
            )
        return value

    return check


def _choice(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> str:
    source = (
        f" (the {key.allowed_from.replace('_', ' ')} of {ctx.schema_name})"
        if key.allowed_from
        else ""
    )
    return one_of(value, ctx.allowed(key), ctx, keys, source)


def one_of(value: Any, allowed: Collection[str], ctx: ParseContext, keys: Keys, source: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ctx.error(
            keys,
            f"'{_label(keys)}' must be one of {', '.join(allowed)}{source}; got {value!r}"
            f"{_suggest(str(value), allowed)}",
        )
    return value


def _suggest(value: str, allowed: Collection[str]) -> str:
    """A did-you-mean that also catches a value written in the wrong case (``reml``)."""
    same = [a for a in allowed if a.lower() == value.lower()]
    return f"; did you mean '{same[0]}'?" if same else did_you_mean(value, allowed)


def _items(value: Any, ctx: ParseContext, keys: Keys, what: str) -> list[Any]:
    """A list value; a single scalar counts as a list of one."""
    if value is None:
        return []
    if isinstance(value, str | int | float):
        return [value]
    if not isinstance(value, list):
        raise ctx.error(keys, f"'{_label(keys)}' must be a list of {what}; got {value!r}.")
    return value


def _list_of(item: Check, what: str) -> Check:
    def check(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> tuple[Any, ...]:
        values = _items(value, ctx, keys, what)
        out = tuple(item(v, key, ctx, keys + (i,)) for i, v in enumerate(values))
        return out

    return check


def _choices(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> tuple[str, ...]:
    values = _items(value, ctx, keys, "choices")
    if not values:
        raise ctx.error(keys, f"'{_label(keys)}' needs at least one of {', '.join(key.allowed)}.")
    out = tuple(_choice(v, key, ctx, keys + (i,)) for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise ctx.error(keys, f"'{_label(keys)}' names a value twice: {list(out)}.")
    return out


def _versions(
    value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys
) -> tuple[tuple[str, int], ...]:
    if value == "latest" or value is None:
        return ()
    if isinstance(value, dict):
        return tuple((str(c), _whole(1)(v, key, ctx, keys + (c,))) for c, v in value.items())
    raise ctx.error(
        keys, f"'versions' must be 'latest' or a mapping centre: version; got {value!r}."
    )


def _centres(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> tuple[str, ...]:
    if value in ("all", None):
        return ()
    return tuple(str(c) for c in _items(value, ctx, keys, "centre codes"))


def _window(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise ctx.error(keys, f"expected [first_day, last_day]; got {value!r}.")
    first, last = (_number(v, key, ctx, keys) for v in value)
    if first > last:
        raise ctx.error(keys, f"expected first_day <= last_day; got [{first:g}, {last:g}].")
    return first, last


def _pairs(
    value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys
) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ctx.error(keys, f"'interactions' must be a list of pairs [a, b]; got {value!r}.")
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            raise ctx.error(keys + (i,), f"an interaction is a pair [a, b]; got {pair!r}.")
        out.append((str(pair[0]), str(pair[1])))
    return tuple(out)


def _covariate_items(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> tuple[Any, ...]:
    items = _items(value, ctx, keys, "covariates")
    for i, item in enumerate(items):
        if not isinstance(item, str | dict):
            raise ctx.error(
                keys + (i,),
                "a covariate is a column name or a mapping such as {name: grade3, expr: "
                f"'grade == 3'}}; got {item!r}.",
            )
    return tuple(items)


def _endpoints(
    value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """A list of endpoints, or a mapping endpoint -> its options (``{bcss: {competing:
    other_death}}``): (endpoint, options) pairs, options ``{}`` where none are given."""
    if isinstance(value, dict):
        out = []
        for name, options in value.items():
            endpoint = _choice(name, key, ctx, keys + (name,))
            out.append((endpoint, ctx.section(options, f"{key.path}{{}}", keys + (name,))))
        return tuple(out)
    return tuple((name, {}) for name in _choices(value, key, ctx, keys))


def _section(value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys) -> dict[str, Any]:
    return ctx.section(value, key.path, keys)


def _switch(
    value: Any, key: ConfigKey, ctx: ParseContext, keys: Keys
) -> tuple[bool, dict[str, Any]]:
    if value is False:
        return False, {}
    if value is None or value is True:
        return True, {}
    return True, ctx.section(value, key.path, keys)


VALUE_TYPES: Mapping[str, ValueType] = {
    "text": ValueType("text", _text),
    "non-empty text": ValueType("non-empty text", _nonempty_text),
    "path": ValueType("path (text), relative to the config file", _text),
    "identifier": ValueType(
        "column name (letters, digits, underscores; not starting with a digit)", _identifier
    ),
    "boolean": ValueType("true or false", _boolean),
    "number": ValueType("number", _number),
    "integer >= 0": ValueType("whole number >= 0", _whole(0)),
    "integer >= 1": ValueType("whole number >= 1", _whole(1)),
    "choice": ValueType("one of the allowed values", _choice),
    "choice or list of choices": ValueType(
        "one allowed value, or a list of them (the first is the primary analysis)", _choices
    ),
    "list of choices": ValueType("list of allowed values", _list_of(_choice, "choices")),
    "endpoints": ValueType(
        "list of endpoints, or a mapping endpoint: options (`{bcss: {competing: other_death}}`)",
        _endpoints,
    ),
    "list of numbers": ValueType("list of numbers", _list_of(_number, "numbers")),
    "list of integers >= 1": ValueType(
        "list of whole numbers >= 1", _list_of(_whole(1), "whole numbers")
    ),
    "list of text": ValueType("list of texts", _list_of(_text, "texts")),
    "list of columns": ValueType(
        "list of column names (schema fields, derived columns, derived covariates)",
        _list_of(_text, "column names"),
    ),
    "expression": ValueType("expression (text; see Expressions)", _expression_text),
    "list of expressions": ValueType(
        "list of expressions (see Expressions)", _list_of(_expression_text, "expressions")
    ),
    "numeric field": ValueType(
        "name of an integer or number field of the patients table, or a derived numeric column",
        _identifier,
    ),
    "section": ValueType("mapping of the keys below", _section),
    "model switch": ValueType("true, false, or a mapping of the model's options", _switch),
    "versions": ValueType("`latest`, or a mapping centre: version (whole number >= 1)", _versions),
    "centres": ValueType("`all`, or a list of centre codes", _centres),
    "day window": ValueType("[first_day, last_day] (numbers)", _window),
    "list of pairs": ValueType("list of pairs [a, b] of column names", _pairs),
    "list of covariates": ValueType(
        "list; each a column name or a mapping with the keys below", _covariate_items
    ),
}


# ---------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------


def compile_config_expression(
    text: str,
    allowed: Collection[str],
    ctx: ParseContext,
    keys: Keys,
    *,
    what: str,
) -> Any:
    """Compile an expression of the config, checking its names against ``allowed``.

    Raises :class:`ConfigError` naming the file and line (and the schema, for an unknown
    name).
    """
    from harmonization.expressions import FUNCTIONS, compile_expression

    where = ctx.loc.where(*keys)
    try:
        expression = compile_expression(text, allowed_names=None, where=where)
    except ExpressionError as exc:
        raise ConfigError(_at(where, str(exc))) from None
    unknown = sorted(set(expression.names) - set(allowed) - set(FUNCTIONS))
    if unknown:
        name = unknown[0]
        raise ConfigError(
            f"{where}: {what} ({text!r}) uses {name!r}, which is not a field of table "
            f"'patients' in {ctx.schema_name}, a derived column or an earlier derived covariate"
            + sentence(did_you_mean(name, allowed) or ".")
        )
    return expression


def _at(where: str, message: str) -> str:
    message = message.rstrip()
    if not message.endswith((".", "?", "!")):
        message += "."
    return message if message.startswith(where) else f"{where}: {message}"


def sentence(message: str) -> str:
    return message if message.endswith((".", "?", "!")) else message + "."


def yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple | list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if value is None or value == "":
        return '""'
    return str(value)


# ---------------------------------------------------------------------------------------------
# A step's section
# ---------------------------------------------------------------------------------------------


class SectionReader:
    """What a step's section parser reads: its keys and the config parsed so far.

    A parser (``parse`` of a :class:`pooled.steps.base.Step`) takes one reader and returns the
    step's frozen section. :meth:`get` gives a key of the section, checked and converted by
    its registered type (the default when absent), and :meth:`error` a message naming the
    config file and line; the keys allowed in the section were checked before the parser
    runs.

    Attributes
    ----------
    section : the section's path, e.g. ``models.cox``.
    raw : the section's mapping as written (``{}`` when absent or switched off).
    at : where the section is in the file (``("models", "cox")``), for messages.
    enabled : for a model: whether its switch is on (``cox: {...}`` or ``cox: true``); the
        options of a model that is off are their defaults. True for other sections.
    config : the :class:`pooled.config.AnalysisConfig` parsed so far: every top-level key
        (endpoints, exposure, covariates, ...) and, via ``config.section(name)``, the sections
        of the steps before this one in the registry.
    """

    def __init__(
        self,
        ctx: ParseContext,
        section: str,
        raw: Mapping[str, Any],
        at: Keys,
        *,
        enabled: bool,
        config: Any,
    ) -> None:
        self.ctx = ctx
        self.section = section
        self.raw = raw
        self.at = at
        self.enabled = enabled
        self.config = config

    @property
    def schema(self) -> Schema:
        return self.ctx.schema

    @property
    def columns(self) -> frozenset[str]:
        """What expressions in the section may name (:func:`patient_columns`)."""
        return patient_columns(self.ctx.schema)

    def get(self, leaf: str) -> Any:
        """The value of the section's key ``leaf`` (e.g. ``"ties"`` in ``models.cox``)."""
        return self.ctx.value(self.raw, f"{self.section}.{leaf}", self.at)

    def error(self, keys: Keys, message: str) -> ConfigError:
        """A :class:`ConfigError` at ``keys`` below the section (``("endpoints", 0)``)."""
        return self.ctx.error(self.at + tuple(keys), message)

    def compile(self, text: str, keys: Keys, *, what: str) -> Any:
        """Compile an expression of the section against :attr:`columns`
        (:func:`compile_config_expression`)."""
        return compile_config_expression(
            text, self.columns, self.ctx, self.at + tuple(keys), what=what
        )
