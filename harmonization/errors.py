"""Exceptions and warnings of the :mod:`harmonization` package.

Bad *data* becomes a finding in a ``ValidationReport``; these exceptions are for input that
cannot be read at all (an unreadable upload) and for bad configuration (schema, mapping).
Every message says what was expected, what was found, where, and how to fix it.
"""


class HarmonizationError(Exception):
    """Base class of every error raised by :mod:`harmonization`."""


class UploadError(HarmonizationError):
    """An upload cannot be read at all (missing, empty, binary, wrong sheet, no header)."""


class MappingError(HarmonizationError):
    """A centre mapping YAML is malformed or names something that does not exist."""


class SchemaError(HarmonizationError):
    """The consortium schema YAML is malformed."""


class ExpressionError(HarmonizationError):
    """An expression in a mapping or an analysis config cannot be compiled or evaluated.

    Raised for text that is not a valid expression, a forbidden construct, an unknown name or
    function, and for operations on the wrong types (text + number) found when evaluating.
    """


class StoreError(HarmonizationError):
    """The embedded database cannot be opened or does not hold what was asked for."""


class HarmonizationWarning(UserWarning):
    """Something worth a look that does not stop the pipeline."""
