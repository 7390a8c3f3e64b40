"""Runnable benchmarks: ``python -m bench.<name>``; each writes ``bench/results/<name>.md``."""
