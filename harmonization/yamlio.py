"""Reading the project's YAML files (schema, centre mappings, analysis configs) strictly.

PyYAML's ``safe_load`` resolves a key written twice silently (the last one wins), so a
mapping author's copy-and-paste slip changes an analysis without a word. :func:`load_yaml`
refuses duplicate keys, reports the line of both occurrences, and reads files as UTF-8 with
one clear message when they are not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["YamlProblem", "load_yaml", "read_yaml_text"]


class YamlProblem(ValueError):
    """The text is not valid YAML for us: syntax error, duplicate key or wrong encoding.

    ``str(exc)`` is one sentence without the file name; ``line`` is 1-based when known.
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key written twice in the same mapping."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _value_node in node.value:
        key = loader.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
        try:
            hashable = key in seen
        except TypeError:
            raise YamlProblem(
                f"a mapping key must be a plain value; got {key!r}", key_node.start_mark.line + 1
            ) from None
        line = key_node.start_mark.line + 1
        if hashable:
            raise YamlProblem(
                f"key '{key}' appears twice in the same block (lines {seen[key]} and {line}); "
                "delete one of them",
                line,
            )
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def load_yaml(text: str) -> Any:
    """Parse YAML text, refusing duplicate keys.

    Raises
    ------
    YamlProblem
        With the 1-based line of the problem where known.

    Examples
    --------
    >>> load_yaml("a: 1\\nb: [x, y]\\n")
    {'a': 1, 'b': ['x', 'y']}
    >>> load_yaml("a: 1\\na: 2\\n")
    Traceback (most recent call last):
    ...
    harmonization.yamlio.YamlProblem: key 'a' appears twice in the same block (lines 1 and 2); delete one of them
    """
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlProblem:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlProblem(
            f"not valid YAML ({problem})", None if mark is None else mark.line + 1
        ) from None
    except RecursionError:
        raise YamlProblem("not valid YAML (nested too deeply)") from None


def read_yaml_text(path: str | Path) -> str:
    """The text of a YAML file read as UTF-8 (a BOM is dropped).

    Raises
    ------
    OSError
        The file cannot be read (missing, a folder, no permission).
    YamlProblem
        The bytes are not UTF-8: names the line and suggests saving as UTF-8.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlProblem(
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as "
            "UTF-8 (in most editors: 'Save with encoding' -> UTF-8)",
            line,
        ) from None
