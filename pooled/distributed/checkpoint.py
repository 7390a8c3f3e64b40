"""Finished tasks on disk: one parquet file per task, so an interrupted run resumes.

A :class:`TaskCheckpoint` is a folder (``<output folder>/tasks/``) holding ``manifest.json``
(what the tasks compute: the settings a result depends on) and ``<task key>.parquet`` for
every task that finished. Only the process that runs the tasks writes here (workers return
their results to it), each file is written to a hidden temporary name and renamed into place,
so a file that exists is complete: a run killed at any moment leaves finished tasks and
nothing half-written. A folder whose manifest differs from the run's is refused, so results
of other settings are never mixed in.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pooled.errors import OutputExistsError

__all__ = ["MANIFEST", "TaskCheckpoint", "check_task_key"]

MANIFEST = "manifest.json"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,150}$")


def _setting(value: Any) -> str:
    """A study setting as a user wrote it: ``default`` for unset, lists without brackets."""
    if value is None:
        return "default"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def check_task_key(key: str) -> str:
    """A task key usable as a file name (letters, digits, ``_ . = -``), or ``ValueError``."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(
            f"task key expected letters, digits, '_', '.', '=' or '-' (a file name), starting "
            f"with a letter or digit; got {key!r}."
        )
    return key


def _normalised(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest as JSON reads it back (tuples become lists, keys strings)."""
    return dict(json.loads(json.dumps(dict(manifest), sort_keys=True, default=str)))


def frame_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as parquet bytes (no index)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def frame_from_bytes(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


def round_trip(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as it reads back from parquet (what a resumed run sees)."""
    return frame_from_bytes(frame_bytes(frame))


class TaskCheckpoint:
    """The finished tasks of one run in ``folder``: ``manifest.json`` and one parquet per task.

    Parameters
    ----------
    folder : path
        Created if needed. A folder holding a ``manifest.json`` that differs from
        ``manifest`` is refused (:class:`~pooled.errors.OutputExistsError`); files that are
        neither the manifest nor task results are refused too.
    manifest : mapping
        What the tasks' results depend on (settings, seed, versions); JSON-serialisable.

    Examples
    --------
    >>> store = TaskCheckpoint("study/tasks", {"scenario": "paddy", "seed": 1})  # doctest: +SKIP
    >>> store.save("replicate-000001", frame)  # doctest: +SKIP
    >>> store.done()  # doctest: +SKIP
    frozenset({'replicate-000001'})
    """

    def __init__(self, folder: str | Path, manifest: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.manifest = _normalised(manifest)
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputExistsError(
                f"{self.folder} is a file; the task checkpoint needs a folder (nothing was run)."
            )
        path = self.folder / MANIFEST
        if path.is_file():
            try:
                found = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                found = None
            if found != self.manifest:
                changed = _differences(found, self.manifest)
                raise OutputExistsError(
                    f"{self.folder} holds the finished tasks of another run ({changed}); "
                    "its results cannot be reused for this one. Choose another output folder, "
                    "or run again with the settings of that run to resume it (nothing was run)."
                )
        else:
            strays = [
                p.name
                for p in self.folder.glob("*")
                if self.folder.is_dir() and not p.name.startswith(".")
            ]
            if strays:
                raise OutputExistsError(
                    f"{self.folder} holds other files ({', '.join(sorted(strays)[:3])}) and no "
                    f"{MANIFEST}; choose an empty or new folder for the task checkpoint "
                    "(nothing was run)."
                )
            self.folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(
                path, (json.dumps(self.manifest, indent=2, sort_keys=True) + "\n").encode()
            )

    def path(self, key: str) -> Path:
        return self.folder / f"{check_task_key(key)}.parquet"

    def done(self) -> frozenset[str]:
        """Keys of the tasks whose results are stored."""
        return frozenset(
            p.stem for p in self.folder.glob("*.parquet") if not p.name.startswith(".")
        )

    def save(self, key: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Store a task's result and return it as it reads back (so a resumed run and an
        uninterrupted one see the same table)."""
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(
                f"task {key!r}: a checkpointed task must return a pandas DataFrame; got "
                f"{type(frame).__name__}."
            )
        data = frame_bytes(frame)
        _atomic_write(self.path(key), data)
        return frame_from_bytes(data)

    def load(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(self.path(key))


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _differences(found: Any, expected: dict[str, Any]) -> str:
    if not isinstance(found, dict):
        return "its manifest.json cannot be read"
    keys = sorted(set(found) | set(expected))
    changed = [k for k in keys if found.get(k) != expected.get(k)]
    shown = "; ".join(
        f"{k}: {_setting(found.get(k))} there, {_setting(expected.get(k))} here"
        for k in changed[:3]
    )
    return shown or "a different manifest"
