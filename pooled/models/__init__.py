"""Statistical models. Each takes a DataFrame and a frozen ``*Spec`` and returns a frozen
``*Result`` with ``to_frame()`` giving the tidy table of :data:`pooled.results.TIDY_COLUMNS`."""
