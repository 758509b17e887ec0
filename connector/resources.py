"""Files shipped with the package: SQL and the config JSON Schema.

In a wheel they live under ``connector/_data`` (see pyproject's force-include); in a source
checkout (editable install, tests) they are read from the top-level ``sql/`` and ``config/``.
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _data_dir() -> Traversable | None:
    packaged = resources.files("connector") / "_data"
    return packaged if packaged.is_dir() else None


def _sql_dir(folder: str = "") -> Traversable:
    """``sql/`` or a folder in it (``/``-separated), packaged or in the source tree."""
    packaged = _data_dir()
    node: Traversable = packaged / "sql" if packaged is not None else _SOURCE_ROOT / "sql"
    for part in filter(None, folder.split("/")):
        node = node / part
    return node


@functools.cache
def sql_text(name: str) -> str:
    """The text of ``sql/<name>`` (``name`` may name a file in a folder: ``migrations/…``)."""
    folder, _, file = name.rpartition("/")
    return (_sql_dir(folder) / file).read_text(encoding="utf-8")


@functools.cache
def sql_names(folder: str) -> tuple[str, ...]:
    """The names of the ``.sql`` files in ``sql/<folder>``, sorted."""
    return tuple(sorted(f.name for f in _sql_dir(folder).iterdir()
                        if f.is_file() and f.name.endswith(".sql")))


@functools.cache
def schema_text() -> str:
    """The text of the config JSON Schema."""
    packaged = _data_dir()
    if packaged is not None:
        return (packaged / "schema.json").read_text(encoding="utf-8")
    return (_SOURCE_ROOT / "config" / "schema.json").read_text(encoding="utf-8")


def data_location() -> str:
    """Where SQL and schema are read from (shown by ``--version``, checked by the wheel test)."""
    packaged = _data_dir()
    return str(packaged) if packaged is not None else str(_SOURCE_ROOT)
