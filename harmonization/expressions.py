"""Safe, vectorised, missing-aware expressions for centre mappings and analysis configs.

Consortium statisticians write small expressions in YAML files: a schema field derived from a
centre's columns (``where(rec == 1, rec_days, death_days)``), a derived covariate
(``positive_nodes > 0``), a cohort rule (``age >= 18 and setting == "early"``), a score
formula. :func:`compile_expression` parses such text once into an :class:`Expression`;
:meth:`Expression.evaluate` computes it on whole columns at once. User text is parsed with
:func:`ast.parse` and only a whitelist of node types is accepted; nothing is ever passed to
Python's ``eval``, ``exec`` or ``compile``.

Language
--------
Values
    Numbers (``3``, ``2.5``), text in quotes (``"early"``, ``'Ulm'``), ``True``, ``False`` and
    ``None`` (missing). Names are column names: plain identifiers (``age``, ``größe``), or any
    text in backticks (```Tumor größe (cm)```). A backtick inside a quoted text is just a
    character; a name cannot contain a backtick. Newlines count as spaces and ``#`` starts a
    comment that runs to the end of its line.
Arithmetic
    ``-x``, ``+x``, ``a + b``, ``-``, ``*``, ``/``, ``//`` (floor division), ``%`` (remainder
    with the sign of the divisor), ``**``. All numbers are float64. ``date - date`` is the
    number of days between them; ``date + number`` and ``date - number`` shift a date by that
    many days (fractions allowed). True and False count as 1 and 0.
Comparisons
    ``== != < <= > >=``, chained (``0 < x <= 10`` means ``0 < x and x <= 10``), and
    ``x in (1, 2, 3)`` / ``x not in ["a", "b"]`` with a literal list of numbers or of texts.
    Numbers compare with numbers (true/false count as 1/0, so ``rec == 1`` works for a
    true/false column), dates with dates, text with text (exactly, case-sensitive, and only
    with ``==``, ``!=``, ``in`` and ``not in``).
Logic
    ``and``, ``or``, ``not`` follow Kleene's three-valued logic: ``True or NA`` is True,
    ``False and NA`` is False, anything else with NA is NA. They always give true/false
    (never one of their operands). In a logical context (``and``/``or``/``not``, the
    condition of ``where`` and of ``a if cond else b``) a number is true unless it is 0, like
    in SQL and Python, and a missing number is NA; text and dates cannot be conditions.
Conditionals and functions
    ``a if cond else b`` is ``where(cond, a, b)``. Only the functions in :data:`FUNCTIONS` can
    be called, with positional arguments. ``round`` rounds halves to the even neighbour
    (``round(0.5) == 0``, ``round(2.5) == 2``, as :func:`numpy.round`); its ``digits`` must
    be a whole-number literal.
Missing values
    Arithmetic, comparisons and functions with a missing operand give missing (except
    ``coalesce``, ``isna``, ``notna``, a missing bound of ``clip`` and the Kleene cases
    above). Results that are not finite (division by zero, ``log(0)``, ``sqrt(-1)``,
    overflow) are missing, silently; so are infinite input values. Comparing with the literal
    ``None`` is refused: write ``isna(x)``.

Inputs are normalised once per evaluation: numbers (int, float, nullable Int64/Float64) become
float64, booleans (bool, nullable boolean) true/false, text (object, string) stays text, and
datetime64 columns or Python datetimes become ``datetime64[ns]``. An object column mixing
numbers and text is text (numbers are not guessed from it; its numbers become text such as
``"1.0"``). A numeric or object column without a single value is *of unknown type*: it is
missing in every row and fits any operation (a centre's empty spreadsheet column is read as
float64), so ``setting == "early"`` on it is NA rather than a type error. Series are aligned
to the result index by label.

Result dtypes: float64 for numbers (NaN = missing), nullable ``"boolean"`` for logical results
(pd.NA = missing), object for text (None = missing), ``datetime64[ns]`` for dates (NaT =
missing). An expression that is missing by construction (``None``) gives float64 NaN.

Limits: the text has at most 2,000 characters and at most 500 syntax nodes. Every problem
raises :class:`~harmonization.errors.ExpressionError` whose message starts with the ``where``
prefix, quotes the expression, gives the (1-based) character position and says how to fix it.

References
----------
.. [1] Kleene SC. Introduction to Metamathematics. Amsterdam: North-Holland; 1952. §64
   (the strong three-valued logic used for ``and``, ``or``, ``not``).
.. [2] ISO/IEC 9075-2:2016. Information technology - Database languages - SQL - Part 2:
   Foundation. §6.39 (the same truth tables for NULL, and NULL-propagating arithmetic).

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"rec": [1, 0, None], "rec_days": [100.0, 200.0, 300.0],
...                       "death_days": [400.0, 500.0, None]})
>>> rfs = compile_expression("where(rec == 1, rec_days, death_days)")
>>> rfs.names
('rec', 'rec_days', 'death_days')
>>> rfs.evaluate(frame).tolist()
[100.0, 500.0, nan]
>>> compile_expression("rec == 1 or death_days > 450").evaluate(frame).tolist()
[True, True, <NA>]
>>> compile_expression("`Rezidiv Tage` / 30.4375").evaluate({"Rezidiv Tage": frame["rec_days"]}).round(2).tolist()
[3.29, 6.57, 9.86]
"""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from harmonization.errors import ExpressionError
from harmonization.schema import did_you_mean

__all__ = ["FUNCTIONS", "MAX_LENGTH", "MAX_NODES", "Expression", "compile_expression"]

MAX_LENGTH = 2000
"""Longest expression text accepted, in characters."""
MAX_NODES = 500
"""Most syntax nodes (names, literals, operations, calls) an expression may have."""

FUNCTIONS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "where": (
            "where(cond, a, b)",
            "a where cond is true, b where it is false; missing where cond is missing.",
        ),
        "coalesce": ("coalesce(a, b, ...)", "The first argument that is not missing, row by row."),
        "isna": ("isna(x)", "True where x is missing, else False (never missing)."),
        "notna": ("notna(x)", "True where x is not missing, else False (never missing)."),
        "min": (
            "min(a, b, ...)",
            "Smallest argument, row by row (numbers or dates); missing if any is missing.",
        ),
        "max": (
            "max(a, b, ...)",
            "Largest argument, row by row (numbers or dates); missing if any is missing.",
        ),
        "abs": ("abs(x)", "Absolute value."),
        "round": (
            "round(x, digits=0)",
            "x rounded to digits decimals (a whole-number literal); halves go to the even side.",
        ),
        "floor": ("floor(x)", "Largest whole number not above x."),
        "ceil": ("ceil(x)", "Smallest whole number not below x."),
        "sqrt": ("sqrt(x)", "Square root; missing for x < 0."),
        "log": ("log(x)", "Natural logarithm; missing for x <= 0."),
        "log1p": ("log1p(x)", "log(1 + x), accurate for small x; missing for x <= -1."),
        "exp": ("exp(x)", "e to the power x; missing on overflow."),
        "log2": ("log2(x)", "Base-2 logarithm; missing for x <= 0."),
        "log10": ("log10(x)", "Base-10 logarithm; missing for x <= 0."),
        "clip": (
            "clip(x, lo, hi)",
            "x limited to the range lo..hi; a missing bound does not limit.",
        ),
        "year": ("year(date)", "Calendar year of a date, as a number."),
        "days": ("days(date_a, date_b)", "date_a - date_b in days, as a number."),
    }
)
"""The callable functions: name -> (signature, one-line description), for the documentation."""

# name -> (fewest, most) arguments; None = no upper limit.
_ARITY: dict[str, tuple[int, int | None]] = {
    "where": (3, 3),
    "coalesce": (2, None),
    "isna": (1, 1),
    "notna": (1, 1),
    "min": (2, None),
    "max": (2, None),
    "abs": (1, 1),
    "round": (1, 2),
    "floor": (1, 1),
    "ceil": (1, 1),
    "sqrt": (1, 1),
    "log": (1, 1),
    "log1p": (1, 1),
    "exp": (1, 1),
    "log2": (1, 1),
    "log10": (1, 1),
    "clip": (3, 3),
    "year": (1, 1),
    "days": (2, 2),
}

_UNARY_MATH: dict[str, Callable[[NDArray[Any]], NDArray[Any]]] = {
    "abs": np.abs,
    "floor": np.floor,
    "ceil": np.ceil,
    "sqrt": np.sqrt,
    "log": np.log,
    "log1p": np.log1p,
    "exp": np.exp,
    "log2": np.log2,
    "log10": np.log10,
}

_BINARY: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}
_BINARY_UFUNC: dict[str, Callable[[NDArray[Any], NDArray[Any]], NDArray[Any]]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "//": np.floor_divide,
    "%": np.mod,
    "**": np.power,
}
_BIT_OPERATORS: dict[type[ast.AST], str] = {
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.Invert: "~",
}
_COMPARE: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_COMPARE_UFUNC: dict[str, Callable[[NDArray[Any], NDArray[Any]], NDArray[Any]]] = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}

# Constructs refused at compile time: node type -> (what it is, how to do without it).
_FORBIDDEN: dict[type[ast.AST], tuple[str, str]] = {
    ast.Attribute: (
        "attribute access ('.')",
        "refer to columns by name; write a column name that contains a dot in backticks, "
        "e.g. `tumour.size`",
    ),
    ast.Subscript: (
        "a subscript ('x[...]')",
        "refer to whole columns by name; write a column name with brackets in backticks, "
        "e.g. `size[cm]`",
    ),
    ast.Lambda: ("a lambda function", "write the computation directly, or use where(cond, a, b)"),
    ast.ListComp: ("a comprehension", "expressions work on whole columns; no loops are needed"),
    ast.SetComp: ("a comprehension", "expressions work on whole columns; no loops are needed"),
    ast.DictComp: ("a comprehension", "expressions work on whole columns; no loops are needed"),
    ast.GeneratorExp: (
        "a generator expression",
        "expressions work on whole columns; no loops are needed",
    ),
    ast.JoinedStr: ("an f-string", "write plain text in quotes without the f prefix"),
    ast.FormattedValue: ("an f-string", "write plain text in quotes without the f prefix"),
    ast.NamedExpr: ("an assignment (':=')", "compare with '==' instead"),
    ast.Set: ("a set ('{...}')", "use a list after 'in', e.g. x in (1, 2, 3)"),
    ast.Dict: ("a dict ('{...: ...}')", "use where(cond, a, b) or a list after 'in'"),
    ast.Starred: ("'*' unpacking", "pass each argument separately"),
    ast.Await: ("'await'", "write a plain expression"),
    ast.Yield: ("'yield'", "write a plain expression"),
    ast.YieldFrom: ("'yield from'", "write a plain expression"),
    ast.Slice: ("a slice ('a:b')", "refer to whole columns by name"),
    ast.List: (
        "a list outside 'in'",
        "lists are only allowed after 'in' / 'not in', e.g. x in (1, 2, 3)",
    ),
    ast.Tuple: (
        "a tuple outside 'in'",
        "lists are only allowed after 'in' / 'not in', e.g. x in (1, 2, 3); "
        "did you write a stray comma?",
    ),
}

_NEAR_LITERALS = {
    "true": "True",
    "false": "False",
    "none": "None",
    "null": "None",
    "na": "None",
    "nan": "None",
}

_KIND_LABEL = {
    "number": "number",
    "bool": "true/false",
    "text": "text",
    "date": "date",
    "null": "missing (no type)",
}
_NS_PER_DAY = 86_400 * 10**9
_NS_MIN = float(pd.Timestamp.min.value)
_NS_MAX = float(pd.Timestamp.max.value)


# ---------------------------------------------------------------------------------------------
# Compiled form


@dataclass(frozen=True, slots=True)
class _Step:
    """One instruction of the compiled program (postfix order: operands come first)."""

    op: str  # name, const, unary, binary, compare, and, or, where, call
    arity: int  # how many values it takes from the stack
    arg: Any  # op-specific, hashable
    start: int  # character span in the original text, for messages
    end: int
    operands: tuple[str, ...] = ()  # source text of each operand, for messages


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression; make one with :func:`compile_expression`.

    Attributes
    ----------
    text : str
        The expression as written.
    names : tuple of str
        Referenced column names, in order of first appearance (backtick names unquoted).
    where : str
        Location prefix of error messages (file and key), possibly empty.

    Examples
    --------
    >>> import pandas as pd
    >>> expr = compile_expression("positive_nodes > 0")
    >>> expr.evaluate(pd.DataFrame({"positive_nodes": [0, 3, None]})).tolist()
    [False, True, <NA>]
    """

    text: str
    names: tuple[str, ...]
    where: str = ""
    _program: tuple[_Step, ...] = field(default=(), repr=False)
    _positions: tuple[int, ...] = field(default=(), repr=False)  # first position of each name

    def __str__(self) -> str:
        return self.text

    def evaluate(
        self,
        values: Mapping[str, Any] | pd.DataFrame,
        *,
        index: pd.Index | None = None,
    ) -> pd.Series:
        """Compute the expression on whole columns.

        Parameters
        ----------
        values : DataFrame or mapping of name -> Series
            The columns the expression refers to (others are ignored). A mapping may also hold
            a 1-d array of the right length or a scalar (broadcast).
        index : pandas.Index, optional
            Index of the result; Series are aligned to it by label. Default: the index of the
            DataFrame, or of the first Series in the mapping. A constant expression is
            broadcast to its length.

        Returns
        -------
        pandas.Series
            float64 (numbers, NaN missing), ``"boolean"`` (logical, pd.NA missing), object
            (text, None missing) or ``datetime64[ns]`` (dates, NaT missing).

        Raises
        ------
        ExpressionError
            A name is not among ``values``, a column has an unusable type, or an operation
            gets the wrong types (text + number, a date compared with a number, ...).

        Examples
        --------
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"age": [45, 17, None], "setting": ["early", "early", "early"]})
        >>> compile_expression('age >= 18 and setting == "early"').evaluate(frame).tolist()
        [True, False, <NA>]
        """
        return _Evaluation(self, values, index).run()

    # messages ------------------------------------------------------------------------------

    def _error(self, problem: str, fix: str, position: int | None = None) -> ExpressionError:
        return ExpressionError(_message(self.where, self.text, problem, fix, position))


def _message(where: str, text: str, problem: str, fix: str, position: int | None) -> str:
    quoted = repr(text if len(text) <= 200 else text[:197] + "...")
    at = f" at character {position + 1}" if position is not None else ""
    prefix = f"{where}: " if where else ""
    return f"{prefix}expression {quoted}{at}: {problem}; {fix}."


def _short(segment: str, limit: int = 60) -> str:
    segment = " ".join(segment.split())
    return segment if len(segment) <= limit else segment[: limit - 3] + "..."


def _names_listing(known: Sequence[str], limit: int = 20) -> str:
    names = sorted(str(k) for k in known)
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _unknown_name(name: str, known: Collection[str]) -> tuple[str, str]:
    hint = did_you_mean(name, known)
    literal = _NEAR_LITERALS.get(name.lower())
    if literal is not None and not hint:
        hint = f"; did you mean the literal {literal}?"
    problem = f"unknown name {name!r}{hint} (known names: {_names_listing(list(known))})"
    fix = (
        "check the spelling; write a column name with spaces or other characters in "
        "backticks, e.g. `Tumor größe (cm)`"
    )
    return problem, fix


# ---------------------------------------------------------------------------------------------
# Compiling


def compile_expression(
    text: str,
    *,
    allowed_names: Collection[str] | None = None,
    where: str = "",
) -> Expression:
    """Parse and check an expression once, for evaluation on many tables.

    Parameters
    ----------
    text : str
        The expression (see the module documentation for the language).
    allowed_names : collection of str, optional
        Column names the expression may use. When given, any other name is an error now,
        with a "did you mean" suggestion; when None, names are checked by
        :meth:`Expression.evaluate` against its ``values``.
    where : str, default ""
        Location prefix for error messages, e.g.
        ``"configs/centres/ulm.yaml sources[0].columns.dfs_months"``.

    Returns
    -------
    Expression

    Raises
    ------
    ExpressionError
        The text is too long, is not valid syntax, uses a construct that is not allowed
        (attribute access, subscripts, other functions, keyword arguments, lambda, f-strings,
        ``is``, bit operators, ...), calls a function with the wrong number of arguments, or
        names a column not in ``allowed_names``.

    Examples
    --------
    >>> expr = compile_expression("where(`Rezidiv ja/nein` == 1, rec_days, fu_days)")
    >>> expr.names
    ('Rezidiv ja/nein', 'rec_days', 'fu_days')
    >>> compile_expression("x.__class__", where="ulm.yaml columns.age")
    Traceback (most recent call last):
    ...
    harmonization.errors.ExpressionError: ulm.yaml columns.age: expression 'x.__class__' at character 1: attribute access ('.') is not allowed ('x.__class__'); refer to columns by name; write a column name that contains a dot in backticks, e.g. `tumour.size`.
    """
    if not isinstance(text, str):
        prefix = f"{where}: " if where else ""
        raise ExpressionError(
            f"{prefix}expected an expression as text, got {type(text).__name__} {text!r}; "
            "write the expression as a string, e.g. 'age >= 18'."
        )
    if isinstance(allowed_names, str):
        raise TypeError(
            f"allowed_names must be a collection of names, not the string {allowed_names!r}; "
            f"pass e.g. [{allowed_names!r}]."
        )
    allowed = None if allowed_names is None else frozenset(allowed_names)
    return _Compiler(text, where, allowed).compile()


class _Compiler:
    def __init__(self, text: str, where: str, allowed_names: Collection[str] | None) -> None:
        self.text = text
        self.where = where
        self.allowed_names = allowed_names
        self.rewritten = ""
        self.starts: list[int] = []  # rewritten index -> original start
        self.ends: list[int] = []  # rewritten index -> original end (exclusive)
        self.line_starts: list[int] = [0]
        self.placeholders: dict[str, str] = {}  # placeholder identifier -> backtick name
        self.names: dict[str, int] = {}  # name -> first position
        self.program: list[_Step] = []

    def fail(self, problem: str, fix: str, position: int | None = None) -> NoReturn:
        raise ExpressionError(_message(self.where, self.text, problem, fix, position))

    # driver --------------------------------------------------------------------------------

    def compile(self) -> Expression:
        if len(self.text) > MAX_LENGTH:
            self.fail(
                f"the text has {len(self.text)} characters, more than the {MAX_LENGTH} allowed",
                "shorten it, e.g. by deriving intermediate fields in separate expressions",
            )
        if not self.text.strip():
            self.fail("the expression is empty", "write an expression, e.g. age >= 18")
        if "\x00" in self.text:
            self.fail(
                "the text contains a null character",
                "remove it (it often comes from copying out of a binary file)",
                self.text.index("\x00"),
            )
        self._rewrite()
        tree = self._parse()
        self._check_size(tree)
        self._emit(tree.body)
        ordered = sorted(self.names.items(), key=lambda item: item[1])
        names = tuple(name for name, _ in ordered)
        positions = tuple(position for _, position in ordered)
        if self.allowed_names is not None:
            allowed = self.allowed_names
            for name, position in ordered:
                if name not in allowed:
                    self.fail(*_unknown_name(name, allowed), position)
        return Expression(self.text, names, self.where, tuple(self.program), positions)

    # backtick pre-pass ---------------------------------------------------------------------

    def _rewrite(self) -> None:
        """Replace backtick names by placeholder identifiers, comments and newlines by spaces.

        Quoted text is copied as it is. Every character of the rewritten text remembers the
        span of the original text it came from, so positions in messages are the user's.
        """
        text = self.text
        prefix = "_bt"
        while prefix in text:  # no identifier in the text can then equal a placeholder
            prefix += "_"
        out: list[str] = []
        starts, ends = self.starts, self.ends
        by_name: dict[str, str] = {}

        def emit(chunk: str, start: int, end: int) -> None:
            out.append(chunk)
            starts.extend([start] * len(chunk))
            ends.extend([end] * len(chunk))

        i, n = 0, len(text)
        while i < n:
            char = text[i]
            if char in "'\"":
                j = self._string_end(i)
                for k in range(i, j):
                    emit(text[k], k, k + 1)
                i = j
            elif char == "#":
                j = i
                while j < n and text[j] not in "\r\n":
                    j += 1
                for k in range(i, j):
                    emit(" ", k, k + 1)
                i = j
            elif char in "\r\n":
                emit(" ", i, i + 1)
                i += 1
            elif char == "`":
                close = text.find("`", i + 1)
                if close < 0:
                    self.fail(
                        "this backtick is never closed",
                        "end the column name with a second backtick, e.g. `Tumor größe (cm)`",
                        i,
                    )
                name = text[i + 1 : close]
                if not name:
                    self.fail(
                        "empty column name between backticks",
                        "write the column name between the backticks, e.g. `Rezidiv Tage`",
                        i,
                    )
                ident = by_name.get(name)
                if ident is None:
                    ident = by_name[name] = f"{prefix}{len(by_name)}"
                    self.placeholders[ident] = name
                emit(f" {ident} ", i, close + 1)
                i = close + 1
            else:
                emit(char, i, i + 1)
                i += 1
        rewritten = "".join(out)
        indent = len(rewritten) - len(rewritten.lstrip(" \t\f"))  # eval mode refuses an indent
        self.rewritten = rewritten[indent:]
        del starts[:indent], ends[:indent]
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", self.rewritten)]

    def _string_end(self, i: int) -> int:
        """Index just after the quoted text starting at ``i`` (a quote character)."""
        text, n = self.text, len(self.text)
        quote = text[i]
        delimiter = quote * 3 if text.startswith(quote * 3, i) else quote
        j = i + len(delimiter)
        while j < n:
            char = text[j]
            if char == "\\":
                j += 2
                continue
            if text.startswith(delimiter, j):
                return j + len(delimiter)
            if len(delimiter) == 1 and char in "\r\n":
                break
            j += 1
        self.fail(
            "this quoted text is never closed",
            f"end the text with the same quote ({delimiter}) on the same line",
            i,
        )

    # positions -----------------------------------------------------------------------------

    def _original(self, index: int) -> int:
        """Original start position of rewritten character ``index``."""
        if index >= len(self.starts):
            return len(self.text)
        return self.starts[max(index, 0)]

    def _index(self, lineno: int, col_byte: int) -> int:
        """Rewritten character index of an AST (line, UTF-8 byte column) position."""
        line_number = min(max(lineno, 1), len(self.line_starts))
        line_start = self.line_starts[line_number - 1]
        line_end = (
            self.line_starts[line_number]
            if line_number < len(self.line_starts)
            else len(self.rewritten)
        )
        line = self.rewritten[line_start:line_end]
        head = line.encode("utf-8", "surrogatepass")[: max(col_byte, 0)]
        return line_start + len(head.decode("utf-8", "ignore"))

    def _span(self, node: ast.AST) -> tuple[int, int]:
        start = self._index(getattr(node, "lineno", 1), getattr(node, "col_offset", 0))
        end_line = getattr(node, "end_lineno", None)
        end_col = getattr(node, "end_col_offset", None)
        if end_line is None or end_col is None:
            return self._original(start), self._original(start) + 1
        end = self._index(end_line, end_col)
        original_start = self._original(start)
        original_end = self.ends[end - 1] if 0 < end <= len(self.ends) else len(self.text)
        return original_start, max(original_end, original_start)

    def _segment(self, node: ast.AST) -> str:
        start, end = self._span(node)
        return self.text[start:end]

    # parsing -------------------------------------------------------------------------------

    def _parse(self) -> ast.Expression:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return ast.parse(self.rewritten, mode="eval")
        except SyntaxError as error:
            message = error.msg or "invalid syntax"
            for ident, name in self.placeholders.items():
                message = message.replace(ident, f"`{name}`")
            position = len(self.text)  # Python gives no offset when the text ends too early
            if error.lineno is not None and error.offset:
                line_start = self.line_starts[min(max(error.lineno, 1), len(self.line_starts)) - 1]
                position = self._original(line_start + error.offset - 1)
            where = "at the end" if position >= len(self.text) else ""
            problem = "invalid syntax" + (f" ({message})" if message != "invalid syntax" else "")
            self.fail(
                problem + (f" {where}" if where else ""),
                "check brackets, quotes, commas and operators (== to compare, and/or/not for "
                "logic)",
                position,
            )
        except (ValueError, MemoryError, RecursionError, OverflowError) as error:
            self.fail(
                f"the text cannot be parsed ({type(error).__name__}: {_short(str(error))})",
                "write a shorter, less deeply nested expression of plain characters",
            )

    def _check_size(self, tree: ast.AST) -> None:
        skip = (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)
        count = sum(1 for node in ast.walk(tree) if not isinstance(node, skip)) - 1
        if count > MAX_NODES:
            self.fail(
                f"the expression has {count} parts, more than the {MAX_NODES} allowed",
                "simplify it, or derive intermediate fields in separate expressions",
            )

    # checking and emitting -----------------------------------------------------------------

    def _emit(self, root: ast.expr) -> None:
        """Check every node and emit the program in postfix order (no recursion)."""
        pending: list[tuple[ast.expr, _Step | None]] = [(root, None)]
        while pending:
            node, step = pending.pop()
            if step is not None:
                self.program.append(step)
                continue
            children, step = self._visit(node)
            pending.append((node, step))
            pending.extend((child, None) for child in reversed(children))

    def _step(self, op: str, node: ast.AST, children: Sequence[ast.AST], arg: Any = None) -> _Step:
        start, end = self._span(node)
        operands = tuple(_short(self._segment(child)) for child in children)
        return _Step(op, len(children), arg, start, end, operands)

    def _forbid(self, node: ast.AST, what: str, fix: str) -> NoReturn:
        start, _ = self._span(node)
        self.fail(f"{what} is not allowed ({_short(self._segment(node))!r})", fix, start)

    def _visit(self, node: ast.expr) -> tuple[list[ast.expr], _Step]:
        if isinstance(node, ast.Constant):
            return [], self._step("const", node, [], self._constant(node))
        if isinstance(node, ast.Name):
            return [], self._step("name", node, [], self._name(node))
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Invert):
                self._forbid(node, "the bit operator '~'", "use 'not' for logical negation")
            symbol = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not"}[type(node.op)]
            return [node.operand], self._step("unary", node, [node.operand], symbol)
        if isinstance(node, ast.BinOp):
            op_type = type(node.op)
            if op_type in _BIT_OPERATORS:
                self._forbid(
                    node,
                    f"the bit operator '{_BIT_OPERATORS[op_type]}'",
                    "use 'and', 'or', 'not' for logic (e.g. a > 1 and b < 2)",
                )
            if op_type not in _BINARY:
                self._forbid(node, "the operator '@'", "use * to multiply")
            children = [node.left, node.right]
            return children, self._step("binary", node, children, _BINARY[op_type])
        if isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            return list(node.values), self._step(op, node, node.values)
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.IfExp):
            children = [node.test, node.body, node.orelse]
            return children, self._step("where", node, children)
        if isinstance(node, ast.Call):
            return self._call(node)
        what, fix = _FORBIDDEN.get(type(node), (f"'{type(node).__name__}'", "see FUNCTIONS"))
        self._forbid(node, what, fix)

    def _constant(self, node: ast.Constant) -> tuple[str, Any]:
        value = node.value
        if value is None:
            return ("null", None)
        if isinstance(value, bool):
            return ("bool", 1.0 if value else 0.0)
        if isinstance(value, int):
            try:
                return ("number", float(value))
            except OverflowError:
                self._forbid(node, "a number this large", "write a number below 1e308")
        if isinstance(value, float):
            if not math.isfinite(value):
                self._forbid(node, "a number this large", "write a number below 1e308")
            return ("number", value)
        if isinstance(value, str):
            return ("text", value)
        if isinstance(value, bytes):
            self._forbid(node, "a bytes literal (b'...')", "write plain text in quotes")
        if isinstance(value, complex):
            self._forbid(node, "a complex number", "write a real number")
        self._forbid(node, f"the literal {value!r}", "write a number, text, True, False or None")

    def _name(self, node: ast.Name) -> str:
        name = self.placeholders.get(node.id)
        if name is None:
            segment = self._segment(node)  # keeps the user's spelling (identifiers are NFKC'd)
            name = segment if segment.isidentifier() else node.id
        start, _ = self._span(node)
        self.names[name] = min(start, self.names.get(name, start))  # not visited in text order
        return name

    def _compare(self, node: ast.Compare) -> tuple[list[ast.expr], _Step]:
        children: list[ast.expr] = [node.left]
        parts: list[tuple[str, tuple[str, tuple[Any, ...]] | None]] = []
        for k, (op, right) in enumerate(zip(node.ops, node.comparators, strict=True)):
            if isinstance(op, ast.Is | ast.IsNot):
                self._forbid(
                    node,
                    "'is not'" if isinstance(op, ast.IsNot) else "'is'",
                    "use isna(x) or notna(x) to test for missing values, == or != to compare",
                )
            symbol = _COMPARE[type(op)]
            left = node.left if k == 0 else node.comparators[k - 1]
            if symbol in ("in", "not in"):
                if k < len(node.ops) - 1:
                    self._forbid(
                        node,
                        f"a comparison after '{symbol} [...]'",
                        "combine comparisons with 'and', e.g. x in (1, 2) and y > 0",
                    )
                parts.append((symbol, self._literal_list(right, symbol)))
                continue
            for side in (left, right):
                if isinstance(side, ast.Constant) and side.value is None:
                    self._forbid(
                        node,
                        f"comparing with None using '{symbol}'",
                        "comparisons with a missing value are always missing; use isna(x) or "
                        "notna(x)",
                    )
            parts.append((symbol, None))
            children.append(right)
        return children, self._step("compare", node, children, tuple(parts))

    def _literal_list(self, node: ast.expr, symbol: str) -> tuple[str, tuple[Any, ...]]:
        fix = f"write a literal list of numbers or of texts, e.g. x {symbol} (1, 2, 3)"
        if not isinstance(node, ast.List | ast.Tuple):
            self._forbid(node, f"'{symbol}' with something other than a literal list", fix)
        numbers: list[float] = []
        texts: list[str] = []
        for element in node.elts:
            sign = 1.0
            item: ast.expr = element
            if isinstance(item, ast.UnaryOp) and isinstance(item.op, ast.USub | ast.UAdd):
                sign = -1.0 if isinstance(item.op, ast.USub) else 1.0
                item = item.operand
                if not (
                    isinstance(item, ast.Constant)
                    and isinstance(item.value, int | float)
                    and not isinstance(item.value, bool)
                ):
                    self._forbid(element, f"the list item {self._segment(element)!r}", fix)
            if not isinstance(item, ast.Constant):
                self._forbid(element, f"the list item {self._segment(element)!r}", fix)
            value = item.value
            if value is None:
                self._forbid(
                    element,
                    "None in a list after 'in'",
                    "test for missing values with isna(x), e.g. x in (1, 2) or isna(x)",
                )
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, bool | int | float) and not isinstance(value, complex):
                kind, number = self._constant(item)
                numbers.append(sign * number)
            else:
                self._forbid(element, f"the list item {self._segment(element)!r}", fix)
        if numbers and texts:
            self._forbid(node, "a list mixing numbers and texts", fix)
        if texts:
            return ("text", tuple(texts))
        if numbers:
            return ("number", tuple(numbers))
        return ("empty", ())

    def _call(self, node: ast.Call) -> tuple[list[ast.expr], _Step]:
        allowed = ", ".join(FUNCTIONS)
        if not isinstance(node.func, ast.Name) or node.func.id in self.placeholders:
            if isinstance(node.func, ast.Attribute):
                what, fix = _FORBIDDEN[ast.Attribute]
                self._forbid(node.func, what, fix)
            self._forbid(
                node,
                f"calling {_short(self._segment(node.func))!r}",
                f"only these functions can be called: {allowed}",
            )
        name = node.func.id
        if name not in FUNCTIONS:
            start, _ = self._span(node)
            hint = did_you_mean(name, FUNCTIONS)
            self.fail(
                f"function {name!r} is not allowed{hint}",
                f"allowed functions: {allowed}",
                start,
            )
        for keyword in node.keywords:
            if keyword.arg is None:
                self._forbid(keyword, "'**' unpacking", "pass each argument by position")
            self._forbid(
                keyword,
                f"the keyword argument '{keyword.arg}='",
                f"pass arguments by position: {FUNCTIONS[name][0]}",
            )
        for argument in node.args:
            if isinstance(argument, ast.Starred):
                self._forbid(argument, "'*' unpacking", "pass each argument separately")
        fewest, most = _ARITY[name]
        count = len(node.args)
        if count < fewest or (most is not None and count > most):
            expected = (
                f"{fewest}" if fewest == most else
                f"{fewest} or {most}" if most is not None else f"at least {fewest}"
            )  # fmt: skip
            note = " (it works across arguments, row by row, not down a column)" if (
                name in ("min", "max", "coalesce") and count == 1
            ) else ""  # fmt: skip
            start, _ = self._span(node)
            self.fail(
                f"{name}() takes {expected} argument{'s' if expected != '1' else ''}, "
                f"got {count}{note}",
                f"call it as {FUNCTIONS[name][0]}",
                start,
            )
        children = list(node.args)
        arg: Any = name
        if name == "round":
            digits = 0
            if len(children) == 2:
                digits = self._digits(children.pop())
            arg = ("round", digits)
        return children, self._step("call", node, children, arg)

    def _digits(self, node: ast.expr) -> int:
        value = node
        sign = 1
        if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub | ast.UAdd):
            sign = -1 if isinstance(value.op, ast.USub) else 1
            value = value.operand
        if (
            isinstance(value, ast.Constant)
            and isinstance(value.value, int)
            and not isinstance(value.value, bool)
            and abs(value.value) <= 15
        ):
            return sign * value.value
        self._forbid(
            node,
            f"digits {_short(self._segment(node))!r} in round()",
            "give the number of decimals as a whole number from -15 to 15, e.g. round(x, 2)",
        )


# ---------------------------------------------------------------------------------------------
# Evaluating


@dataclass(slots=True)
class _Value:
    """An intermediate result: a kind and a length-n array (None for kind "null").

    number and bool are float64 (bool as 0/1; NaN = missing), text is object (None = missing),
    date is datetime64[ns] (NaT = missing).
    """

    kind: str
    data: NDArray[Any] | None


def _finite(data: NDArray[Any]) -> NDArray[Any]:
    """Set non-finite values of a freshly computed float array to NaN (in place)."""
    data[~np.isfinite(data)] = np.nan
    return data


def _missing_array(kind: str, n: int) -> NDArray[Any]:
    if kind == "text":
        return np.full(n, None, dtype=object)
    if kind == "date":
        return np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    return np.full(n, np.nan)


class _Evaluation:
    def __init__(
        self,
        expression: Expression,
        values: Mapping[str, Any] | pd.DataFrame,
        index: pd.Index | None,
    ) -> None:
        self.expression = expression
        self.values = values
        self.index = self._result_index(index)
        self.n = len(self.index)

    def fail(self, problem: str, fix: str, position: int | None = None) -> NoReturn:
        raise self.expression._error(problem, fix, position)

    # inputs --------------------------------------------------------------------------------

    def _result_index(self, index: pd.Index | None) -> pd.Index:
        values = self.values
        if not isinstance(values, pd.DataFrame | Mapping):
            self.fail(
                f"values must be a DataFrame or a mapping of names to Series, got "
                f"{type(values).__name__}",
                "pass the centre's table, e.g. expr.evaluate(frame)",
            )
        if index is not None:
            if isinstance(index, pd.Index):
                return index
            try:
                return pd.Index(index)
            except (TypeError, ValueError) as error:
                self.fail(f"index= is not an index ({error})", "pass a pandas Index")
        if isinstance(values, pd.DataFrame):
            return values.index
        for value in values.values():
            if isinstance(value, pd.Series):
                return value.index
        for value in values.values():
            if _ndim(value) == 1:
                return pd.RangeIndex(len(value))
        self.fail(
            "cannot tell how many rows the result has (no DataFrame, Series or array given)",
            "pass index=, e.g. expr.evaluate({}, index=frame.index)",
        )

    def _column(self, name: str, position: int) -> _Value:
        values = self.values
        if isinstance(values, pd.DataFrame):
            known = [str(c) for c in values.columns]
            present = name in values.columns
        else:
            known = [str(k) for k in values]
            present = name in values
        if not present:
            self.fail(*_unknown_name(name, known), position)
        raw = values[name]
        where = f"column {name!r}"
        if isinstance(raw, pd.DataFrame):
            self.fail(
                f"{where} appears {raw.shape[1]} times in the table",
                "give each column a unique name",
                position,
            )
        if isinstance(raw, pd.Series):
            series = raw
            if not series.index.equals(self.index):
                if series.index.has_duplicates:
                    self.fail(
                        f"{where} has a different index with duplicate labels, so it cannot "
                        "be aligned to the result index",
                        "pass Series that share the table's index",
                        position,
                    )
                series = series.reindex(self.index)
        elif _ndim(raw) == 0:
            series = pd.Series(np.full(self.n, raw, dtype=object), index=self.index)
        else:
            try:
                length = len(raw)
            except TypeError:
                length = -1
            if _ndim(raw) != 1 or length != self.n:
                self.fail(
                    f"{where} is not a column of {self.n} values (got {type(raw).__name__} "
                    f"of length {length})",
                    "pass a Series or a 1-d array with one value per row",
                    position,
                )
            series = pd.Series(raw, index=self.index)
        try:
            return _normalise(series)
        except (ValueError, TypeError, OverflowError) as error:
            self.fail(
                f"{where} cannot be used ({_short(str(error), 160)})",
                "deliver numbers, text, true/false or dates in the column",
                position,
            )

    # running -------------------------------------------------------------------------------

    def run(self) -> pd.Series:
        expression = self.expression
        if not expression._program:
            self.fail(
                "the expression was not compiled",
                "create expressions with compile_expression(text), not Expression(...)",
            )
        columns = {
            name: self._column(name, position)
            for name, position in zip(expression.names, expression._positions, strict=True)
        }
        stack: list[_Value] = []
        with np.errstate(all="ignore"):
            for step in expression._program:
                if step.arity:
                    args = stack[-step.arity :]
                    del stack[-step.arity :]
                else:
                    args = []
                if step.op == "name":
                    stack.append(columns[step.arg])
                else:
                    stack.append(self._apply(step, args))
        return self._result(stack[-1])

    def _result(self, value: _Value) -> pd.Series:
        index = self.index
        if value.kind == "null" or value.data is None:
            return pd.Series(np.full(self.n, np.nan), index=index, dtype="float64")
        data = np.array(value.data, copy=True)
        if value.kind == "bool":
            array = pd.arrays.BooleanArray(data == 1.0, np.isnan(data))
            return pd.Series(array, index=index, dtype="boolean")
        if value.kind == "text":
            return pd.Series(data, index=index, dtype=object)
        if value.kind == "date":
            return pd.Series(data, index=index, dtype="datetime64[ns]")
        return pd.Series(data, index=index, dtype="float64")

    def _apply(self, step: _Step, args: list[_Value]) -> _Value:
        op = step.op
        if op == "const":
            kind, constant = step.arg
            if kind == "null":
                return _Value("null", None)
            if kind == "text":
                return _Value("text", np.full(self.n, constant, dtype=object))
            return _Value(kind, np.full(self.n, constant, dtype=float))
        if op == "unary":
            return self._unary(step, args[0])
        if op == "binary":
            return self._binary(step, args[0], args[1])
        if op == "compare":
            return self._compare(step, args)
        if op in ("and", "or"):
            return self._logic(step, args)
        if op == "where":
            return self._where(step, *args)
        return self._call(step, args)

    # helpers -------------------------------------------------------------------------------

    def _describe(self, step: _Step, args: Sequence[_Value]) -> str:
        """``number ('age') and text ('setting')``: the kinds of all operands of ``step``."""
        return " and ".join(
            _label(value, text) for value, text in zip(args, step.operands, strict=False)
        )

    def _missing(self, value: _Value) -> NDArray[np.bool_]:
        if value.kind == "null" or value.data is None:
            return np.ones(self.n, dtype=bool)
        if value.kind == "date":
            return np.isnat(value.data)
        if value.kind == "text":
            return np.asarray(pd.isna(value.data), dtype=bool)
        return np.isnan(value.data)

    def _materialise(self, value: _Value, kind: str) -> NDArray[Any]:
        """The data of ``value`` as ``kind`` (null becomes all missing; bool is a number)."""
        if value.kind == "null" or value.data is None:
            return _missing_array(kind, self.n)
        return value.data

    def _number(self, step: _Step, value: _Value, text: str, what: str, fix: str) -> NDArray[Any]:
        if value.kind in ("number", "bool", "null"):
            return self._materialise(value, "number")
        self.fail(f"{what} needs a number, got {_label(value, text)}", fix, step.start)

    def _truth(self, step: _Step, value: _Value, text: str = "") -> NDArray[Any]:
        """Kleene truth value as float: 1 true, 0 false, NaN missing."""
        if value.kind == "bool" and value.data is not None:
            return value.data
        if value.kind == "null" or value.data is None:
            return np.full(self.n, np.nan)
        if value.kind == "number":
            data = value.data
            truth = (data != 0).astype(float)
            truth[np.isnan(data)] = np.nan
            return truth
        self.fail(
            f"{_label(value, text)} cannot be used as a condition (true/false)",
            'compare it to get true/false, e.g. setting == "early" or isna(date)',
            step.start,
        )

    def _join(self, step: _Step, args: Sequence[_Value], texts: Sequence[str], what: str) -> str:
        kinds = {v.kind for v in args} - {"null"}
        if kinds == {"number", "bool"}:
            return "number"
        if len(kinds) > 1:
            described = " and ".join(
                _label(value, text) for value, text in zip(args, texts, strict=True)
            )
            self.fail(
                f"{what} mixes {described}",
                "give every alternative the same type (numbers, text, true/false or dates)",
                step.start,
            )
        return kinds.pop() if kinds else "null"

    # operations ----------------------------------------------------------------------------

    def _unary(self, step: _Step, value: _Value) -> _Value:
        if step.arg == "not":
            return _Value("bool", 1.0 - self._truth(step, value, step.operands[0]))
        data = self._number(
            step,
            value,
            step.operands[0],
            f"'{step.arg}'",
            "apply the sign to a number; dates cannot be negated",
        )
        return _Value("number", -data if step.arg == "-" else data)

    def _binary(self, step: _Step, left: _Value, right: _Value) -> _Value:
        symbol = step.arg
        kinds = (left.kind, right.kind)
        if "text" in kinds:
            self.fail(
                f"cannot apply '{symbol}' to {self._describe(step, [left, right])}",
                "arithmetic needs numbers; compare text with == or != instead",
                step.start,
            )
        if "date" in kinds:
            return self._date_arithmetic(step, left, right)
        if "null" in kinds:
            return _Value("number", np.full(self.n, np.nan))
        a = self._materialise(left, "number")
        b = self._materialise(right, "number")
        out = _finite(_BINARY_UFUNC[symbol](a, b))
        if symbol == "**":  # IEEE gives 1 ** NaN == NaN ** 0 == 1; missing stays missing here
            out[np.isnan(a) | np.isnan(b)] = np.nan
        return _Value("number", out)

    def _date_arithmetic(self, step: _Step, left: _Value, right: _Value) -> _Value:
        """``date - date`` in days; ``date +/- number`` and ``number + date`` shift by days.

        An operand of no type (an empty column, None) counts as a missing number of days,
        except in ``missing - date``, where it counts as a missing date (giving days).
        """
        symbol = step.arg
        lk, rk = left.kind, right.kind
        days_kinds = ("number", "bool", "null")
        if symbol == "-" and lk == "date" and rk == "date":
            return _Value("number", self._days(left, right))
        if symbol == "-" and lk == "null" and rk == "date":
            return _Value("number", np.full(self.n, np.nan))
        if symbol == "-" and lk == "date" and rk in days_kinds:
            return _Value("date", self._shift(left, -self._materialise(right, "number")))
        if symbol == "+" and lk == "date" and rk in days_kinds:
            return _Value("date", self._shift(left, self._materialise(right, "number")))
        if symbol == "+" and lk in days_kinds and rk == "date":
            return _Value("date", self._shift(right, self._materialise(left, "number")))
        self.fail(
            f"cannot apply '{symbol}' to {self._describe(step, [left, right])}",
            "dates can only be subtracted from each other (giving days) or shifted by "
            "adding or subtracting a number of days",
            step.start,
        )

    def _days(self, left: _Value, right: _Value) -> NDArray[Any]:
        a = self._materialise(left, "date")
        b = self._materialise(right, "date")
        days = (a.view("i8").astype(float) - b.view("i8").astype(float)) / _NS_PER_DAY
        days[np.isnat(a) | np.isnat(b)] = np.nan
        return _finite(days)

    def _shift(self, date: _Value, days: NDArray[Any]) -> NDArray[Any]:
        base = self._materialise(date, "date")
        shift = np.round(days * _NS_PER_DAY)
        target = base.view("i8").astype(float) + shift
        bad = np.isnat(base) | ~np.isfinite(target) | (target < _NS_MIN) | (target > _NS_MAX)
        safe_shift = np.where(bad, 0.0, shift).astype("i8")
        out = (np.where(bad, 0, base.view("i8")) + safe_shift).view("datetime64[ns]")
        out[bad] = np.datetime64("NaT")
        return out

    def _compare(self, step: _Step, args: list[_Value]) -> _Value:
        left = args[0]
        remaining = iter(zip(args[1:], step.operands[1:], strict=True))
        left_text = step.operands[0]
        result: NDArray[Any] | None = None
        for symbol, literal in step.arg:
            if literal is not None:
                part = self._isin(step, left, left_text, symbol, literal)
            else:
                right, right_text = next(remaining)
                part = self._compare_pair(step, symbol, left, left_text, right, right_text)
                left, left_text = right, right_text
            result = part if result is None else _kleene_and(result, part)
        assert result is not None
        return _Value("bool", result)

    def _compare_pair(
        self, step: _Step, symbol: str, a: _Value, a_text: str, b: _Value, b_text: str
    ) -> NDArray[Any]:
        kinds = {a.kind, b.kind}
        if "null" in kinds:
            return np.full(self.n, np.nan)
        describe = f"{_label(a, a_text)} with {_label(b, b_text)}"
        if kinds <= {"number", "bool"} or kinds == {"date"}:
            pass
        elif kinds == {"text"}:
            if symbol not in ("==", "!="):
                self.fail(
                    f"text cannot be ordered with '{symbol}' (comparing {describe})",
                    "compare text with == or != (or 'in'); compare numbers or dates to order",
                    step.start,
                )
        else:
            fix = "compare numbers with numbers, text with text, dates with dates"
            if "date" in kinds:
                fix += ", e.g. year(diagnosis_date) >= 2005 or days(a, b) > 0"
            if "text" in kinds:
                fix += '; write codes as they are stored, e.g. grade == 3 or setting == "early"'
            self.fail(f"cannot compare {describe} using '{symbol}'", fix, step.start)
        assert a.data is not None and b.data is not None
        outcome = np.asarray(_COMPARE_UFUNC[symbol](a.data, b.data), dtype=float)
        outcome[self._missing(a) | self._missing(b)] = np.nan
        return outcome

    def _isin(
        self,
        step: _Step,
        value: _Value,
        text: str,
        symbol: str,
        literal: tuple[str, tuple[Any, ...]],
    ) -> NDArray[Any]:
        list_kind, items = literal
        if value.kind == "null" or value.data is None:
            return np.full(self.n, np.nan)
        family = "number" if value.kind in ("number", "bool") else value.kind
        if list_kind == "empty":
            found = np.zeros(self.n, dtype=bool)
        elif family == list_kind == "number":
            found = np.isin(value.data, np.asarray(items, dtype=float))
        elif family == list_kind == "text":
            found = pd.Series(value.data, copy=False).isin(items).to_numpy(dtype=bool)
        else:
            self.fail(
                f"cannot test {_label(value, text)} '{symbol}' a list of {list_kind}s",
                "make the list items the same type as the values, e.g. grade in (2, 3) or "
                'setting in ("early", "metastatic")',
                step.start,
            )
        outcome = (~found if symbol == "not in" else found).astype(float)
        outcome[self._missing(value)] = np.nan
        return outcome

    def _logic(self, step: _Step, args: list[_Value]) -> _Value:
        combine = _kleene_and if step.op == "and" else _kleene_or
        result = self._truth(step, args[0], step.operands[0])
        for value, text in zip(args[1:], step.operands[1:], strict=True):
            result = combine(result, self._truth(step, value, text))
        return _Value("bool", result)

    def _where(self, step: _Step, cond: _Value, a: _Value, b: _Value) -> _Value:
        truth = self._truth(step, cond, step.operands[0])
        what = "'a if cond else b'" if step.op == "where" else "where(cond, a, b)"
        kind = self._join(step, [a, b], step.operands[1:], what)
        if kind == "null":
            return _Value("null", None)
        out = np.where(truth == 1.0, self._materialise(a, kind), self._materialise(b, kind))
        out[np.isnan(truth)] = _missing_array(kind, 1)[0]
        return _Value(kind, out)

    def _call(self, step: _Step, args: list[_Value]) -> _Value:
        name = step.arg[0] if isinstance(step.arg, tuple) else step.arg
        if name == "where":
            return self._where(step, *args)
        if name == "coalesce":
            kind = self._join(step, args, step.operands, "coalesce()")
            if kind == "null":
                return _Value("null", None)
            out = np.array(self._materialise(args[0], kind), copy=True)
            for value in args[1:]:
                gap = self._missing(_Value(kind, out))
                if not gap.any():
                    break
                out[gap] = self._materialise(value, kind)[gap]
            return _Value(kind, out)
        if name in ("isna", "notna"):
            missing = self._missing(args[0])
            return _Value("bool", (missing if name == "isna" else ~missing).astype(float))
        if name in ("min", "max"):
            return self._extreme(step, name, args)
        if name == "year":
            date = self._date_argument(step, name, args[0], step.operands[0])
            years = date.astype("datetime64[Y]").astype("i8").astype(float) + 1970.0
            years[np.isnat(date)] = np.nan
            return _Value("number", years)
        if name == "days":
            for value, text in zip(args, step.operands, strict=True):
                self._date_argument(step, name, value, text)
            return _Value("number", self._days(args[0], args[1]))
        fix = f"call it as {FUNCTIONS[name][0]} with numbers"
        numbers = [
            self._number(step, value, text, f"{name}()", fix)
            for value, text in zip(args, step.operands, strict=True)
        ]
        if name == "round":
            return _Value("number", _finite(np.round(numbers[0], step.arg[1])))
        if name == "clip":
            x, low, high = numbers
            low = np.where(np.isnan(low), -np.inf, low)
            high = np.where(np.isnan(high), np.inf, high)
            return _Value("number", _finite(np.minimum(np.maximum(x, low), high)))
        return _Value("number", _finite(np.array(_UNARY_MATH[name](numbers[0]), dtype=float)))

    def _date_argument(self, step: _Step, name: str, value: _Value, text: str) -> NDArray[Any]:
        if value.kind in ("date", "null"):
            return self._materialise(value, "date")
        self.fail(
            f"{name}() needs dates, got {_label(value, text)}",
            f"call it as {FUNCTIONS[name][0]} on date columns",
            step.start,
        )

    def _extreme(self, step: _Step, name: str, args: list[_Value]) -> _Value:
        kind = self._join(step, args, step.operands, f"{name}()")
        if kind == "text":
            self.fail(
                f"{name}() needs numbers or dates, got {self._describe(step, args)}",
                f"call it as {FUNCTIONS[name][0]} with numbers or dates",
                step.start,
            )
        if kind == "null":
            return _Value("null", None)
        if kind == "bool":
            kind = "number"
        reduce = np.minimum if name == "min" else np.maximum
        out = self._materialise(args[0], kind)
        for value in args[1:]:
            out = reduce(out, self._materialise(value, kind))
        return _Value(kind, np.array(out, copy=True))


def _label(value: _Value, text: str) -> str:
    return f"{_KIND_LABEL[value.kind]} ({text!r})" if text else _KIND_LABEL[value.kind]


def _kleene_and(a: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    out = np.where(np.isnan(a) | np.isnan(b), np.nan, 1.0)
    out[(a == 0.0) | (b == 0.0)] = 0.0
    return out


def _kleene_or(a: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    out = np.where(np.isnan(a) | np.isnan(b), np.nan, 0.0)
    out[(a == 1.0) | (b == 1.0)] = 1.0
    return out


# ---------------------------------------------------------------------------------------------
# Input normalisation

_NUMBER_INFERRED = {"integer", "floating", "mixed-integer-float", "decimal"}
_DATE_INFERRED = {"datetime", "datetime64", "date"}
_TEXT_INFERRED = {"string", "mixed", "mixed-integer"}


def _ndim(value: Any) -> int:
    try:
        return int(np.ndim(value))
    except ValueError:  # ragged nested lists
        return -1


def _normalise(series: pd.Series) -> _Value:
    """One input column as a :class:`_Value` (see the module documentation for the rules)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(object)
        dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        data = series.astype("boolean").to_numpy(dtype=float, na_value=np.nan)
        return _Value("bool", data)
    if pd.api.types.is_datetime64_any_dtype(dtype):
        if getattr(dtype, "tz", None) is not None:
            series = series.dt.tz_localize(None)
        return _Value("date", _as_nanoseconds(series))
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        data = series.to_numpy(dtype=float, na_value=np.nan, copy=True)
        _finite(data)
        return _Value("null", None) if np.isnan(data).all() else _Value("number", data)
    if not (isinstance(dtype, pd.StringDtype) or pd.api.types.is_object_dtype(dtype)):
        raise ValueError(f"its type {dtype} is not supported")
    missing = np.asarray(series.isna(), dtype=bool)
    if isinstance(dtype, pd.StringDtype):
        text = series.to_numpy(dtype=object, copy=True)
        text[missing] = None
        return _Value("text", text)
    if missing.all():
        return _Value("null", None)
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    values = series.to_numpy(dtype=object, copy=True)
    if inferred in _NUMBER_INFERRED:
        values[missing] = np.nan
        return _Value("number", _finite(values.astype(float)))
    if inferred == "boolean":
        values[missing] = False
        data = values.astype(bool).astype(float)
        data[missing] = np.nan
        return _Value("bool", data)
    if inferred in _DATE_INFERRED:
        values[missing] = None
        converted = pd.to_datetime(pd.Series(values, index=series.index))
        if getattr(converted.dtype, "tz", None) is not None:
            converted = converted.dt.tz_localize(None)
        return _Value("date", _as_nanoseconds(converted))
    if inferred in _TEXT_INFERRED:
        if inferred != "string":
            values = series.astype(str).to_numpy(dtype=object)
        values[missing] = None
        return _Value("text", values)
    raise ValueError(f"it holds {inferred} values, which expressions cannot use")


def _as_nanoseconds(series: pd.Series) -> NDArray[Any]:
    try:
        return series.astype("datetime64[ns]").to_numpy(dtype="datetime64[ns]", copy=True)
    except (pd.errors.OutOfBoundsDatetime, OverflowError) as error:
        raise ValueError(f"a date is outside 1677-2262: {error}") from None
