"""Reading, mapping and validating centre uploads, and the versioned store.

Data flows one way: ``read_upload -> apply_mapping -> validate -> store``.
This package never imports :mod:`pooled`.
"""

__all__: list[str] = []
