"""The one registry of publisher types: the ``pgconnector.publishers`` entry-point group.

Built-in adapters are registered there too (pyproject.toml), exactly as a third-party
package registers its own, so there is one list and ``pgconnector`` needs no code change to
learn a new type.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

from connector.publishers.base import Publisher

GROUP = "pgconnector.publishers"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> list[str]:
    """Every registered type name, sorted."""
    return sorted(_entry_points())


def publisher_class(type_name: str) -> type[Publisher]:
    """The adapter class registered as ``type_name``; LookupError names what is available."""
    ep = _entry_points().get(type_name)
    if ep is None:
        raise LookupError(f"unknown publisher type {type_name!r} "
                          f"(available: {', '.join(available()) or 'none'})")
    module_name, _, attr = ep.value.partition(":")
    cls = getattr(importlib.import_module(module_name), attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Publisher)):
        raise LookupError(f"publisher type {type_name!r}: {ep.value} is not a Publisher")
    return cls
