"""The analysis steps the runner walks, one module each; :data:`pooled.steps.registry.STEPS`.

See :mod:`pooled.steps.base` for what a step is and ``pooled/steps/README.md`` for adding one.
"""
