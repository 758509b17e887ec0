"""The sink contract (the config calls sinks ``publishers``): what the engine calls when.

A sink is small: ``open`` once before the first batch, ``publish(messages)`` per batch (in
order; at most ``max_in_flight`` calls at once), ``close`` once at the end (idempotent, never
raises). It signals failure only with the errors of connector/vocabulary/outcome.py, which
say whether trying again can help and, for a partial failure, which messages of the batch
failed. Everything else - retries, backoff, parking, dead letters - is the delivery engine's
job (connector/delivery/), so each adapter stays a thin translation to its system's client
library. Types are registered in the ``pgconnector.publishers`` entry-point group
(connector/publishers/registry.py); connector/conformance.py checks an adapter against the
contract on its real system.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import jsonschema
from aiohttp import web

from connector import resources
from connector.vocabulary import (
    Executor,
    Message,
    PartialFailure,
    PermanentError,
    PublishError,
    RetryableError,
    format_path,
)

# What an adapter needs, from one place.
__all__ = ["Message", "PartialFailure", "PermanentError", "PublishError", "Publisher",
           "RetryableError"]


class Publisher(ABC):
    """Base class of every adapter. Subclasses set ``type_name`` and, if they are not built
    in, ``options_schema`` (a JSON Schema for their options, without the ``type`` key)."""

    type_name: ClassVar[str]
    options_schema: ClassVar[dict[str, Any] | None] = None

    # What the engine reads (class defaults; an instance may set its own from its options):
    #: how many ``publish`` calls may run at once on this instance (connector/delivery/
    #: engine.py never exceeds it, live batches and drains together)
    max_in_flight: int = 1
    #: what order delivery keeps when calls overlap: "channel" (each channel in order),
    #: "key" (each row), or "none"
    ordering: Literal["channel", "key", "none"] = "channel"
    #: delivered by writing on the batch's writer (``publish_in``): SQL operators
    transactional: ClassVar[bool] = False
    #: seconds the reader should wait for a batch to fill before claiming it (packing)
    linger: float = 0.0
    #: mounts routes on the connector's HTTP host (``mount``): live subscriptions
    serving: ClassVar[bool] = False

    def lane_key(self, message: Message) -> str | None:
        """A sink may name each message's ordering key itself (handlers: their ``key``
        columns). Then every distinct key is a lane of its own - in order, one call at a
        time - and the engine runs up to ``max_in_flight`` of them at once, whichever are
        ready. None (the default): lanes follow ``ordering``."""
        return None

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        # Every option an adapter reads has its default here, from one place: the option's
        # "default" in its JSON Schema (config/schema.json for built-ins, options_schema for
        # the others). Adapters read self.options, never a literal fallback of their own.
        self.options = with_defaults(self.schema(), options)

    @classmethod
    def schema(cls) -> Mapping[str, Any]:
        """The JSON Schema of this type's options."""
        if cls.options_schema is not None:
            return cls.options_schema
        builtin: Mapping[str, Any] = _builtin_schemas().get(cls.type_name, {})
        return builtin

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with ``options`` as ``.key: message`` lines (built-in types are already
        checked by the config schema)."""
        if cls.options_schema is None:
            return []
        validator = jsonschema.Draft202012Validator(cls.options_schema)
        return [f".{format_path(e.absolute_path)}: {e.message}"
                for e in validator.iter_errors(dict(options))]

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; raise RetryableError when the system cannot be reached yet."""

    @abstractmethod
    async def publish(self, messages: Sequence[Message]) -> None:
        """Deliver ``messages`` in order, or raise a PublishError."""

    async def publish_in(self, tx: Executor, messages: Sequence[Message]) -> None:
        """A ``transactional`` sink delivers a live batch by writing on ``tx``, the batch's
        writer (the trigger reader's claim transaction), so its effect commits with the
        batch's acknowledgement and rolls back with it. Outside a batch (a drain of parked
        messages) the engine calls ``publish``, and the sink opens its own transaction."""
        raise NotImplementedError(f"{type(self).__name__} is not transactional")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; must not raise, and may be called twice."""

    def mount(self, app: web.Application) -> None:
        """A ``serving`` sink adds its routes to the HTTP host's app, before it starts."""
        raise NotImplementedError(f"{type(self).__name__} serves nothing")


@functools.cache
def _builtin_schemas() -> dict[str, Any]:
    defs: dict[str, Any] = json.loads(resources.schema_text())["$defs"]
    return defs


def with_defaults(schema: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with each absent property's schema "default" filled in, also inside
    object properties (``packing: {enabled: true}`` gets packing's other defaults)."""
    out = dict(options)
    for key, prop in schema.get("properties", {}).items():
        if not isinstance(prop, Mapping):
            continue
        if "default" in prop and key not in out:
            out[key] = prop["default"]
        elif prop.get("type") == "object" and "properties" in prop:
            given = out.get(key)
            if given is None or isinstance(given, Mapping):
                inner = with_defaults(prop, given or {})
                if inner or given is not None:
                    out[key] = inner
    return out
