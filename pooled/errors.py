"""Exceptions and warnings of the :mod:`pooled` package.

One base exception, few subclasses. Messages say what was expected, what was found, where,
and how to fix it.
"""


class PooledError(Exception):
    """Base class of every error raised by :mod:`pooled`."""


class ConfigError(PooledError):
    """An analysis config is malformed: misspelt key, unknown covariate, empty subgroup."""


class DataError(PooledError):
    """The data handed to a model cannot be used as asked (missing column, no events)."""


class OutputExistsError(PooledError):
    """A command would overwrite or delete files it did not create (a store, an upload, a
    mapping, another program's files); nothing was written."""


class ConvergenceError(PooledError):
    """An iterative fit failed to converge."""


class PooledWarning(UserWarning):
    """Base class of warnings from :mod:`pooled`."""


class ConvergenceWarning(PooledWarning):
    """A fit converged poorly, or a sampler's diagnostics are out of bounds."""


class SamplingWarning(ConvergenceWarning):
    """Bayesian diagnostics out of bounds: R-hat > 1.01, ESS < 400, or divergences."""


class FewClustersWarning(PooledWarning):
    """A cluster-robust covariance rests on too few clusters for the number of coefficients:
    it is singular (rank at most clusters - 1), so its tests use a generalised inverse on
    fewer degrees of freedom."""
