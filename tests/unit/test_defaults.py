"""Every default has one source: sinks' option defaults come from their JSON Schema (nothing
else in an adapter), and the config sections' dataclass defaults are what config/schema.json
documents."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from connector import resources
from connector.publishers.ably import AblyPublisher
from connector.publishers.base import Publisher, with_defaults
from connector.publishers.redis import RedisPublisher
from connector.publishers.stdout import StdoutPublisher
from connector.vocabulary import (
    CaptureConfig,
    LoggingConfig,
    Message,
    PostgresConfig,
    RetryConfig,
    ServerConfig,
)

SCHEMA = json.loads(resources.schema_text())


def schema_defaults(props: dict[str, Any]) -> dict[str, Any]:
    return {k: p["default"] for k, p in props.items() if "default" in p}


@pytest.mark.parametrize(("section", "cls"), [
    (SCHEMA["properties"]["postgres"], PostgresConfig),
    (SCHEMA["properties"]["capture"], CaptureConfig),
    (SCHEMA["properties"]["logging"], LoggingConfig),
    (SCHEMA["properties"]["server"], ServerConfig),
    (SCHEMA["$defs"]["retry"], RetryConfig),
])
def test_section_defaults_are_the_documented_ones(section: dict[str, Any], cls: type) -> None:
    documented = schema_defaults(section["properties"])
    assert documented, "the schema documents defaults"
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    for key, value in documented.items():
        assert fields[key] == value, f"{cls.__name__}.{key}: {fields[key]!r} != {value!r}"


def test_builtin_sinks_take_their_defaults_from_the_schema() -> None:
    redis = RedisPublisher("r", {})
    props = SCHEMA["$defs"]["redis"]["properties"]
    assert (redis.url, redis.mode, redis.field, redis.timeout) == (
        props["url"]["default"], props["mode"]["default"], props["field"]["default"],
        props["timeout"]["default"])
    assert StdoutPublisher("s", {}).envelope is SCHEMA["$defs"]["stdout"]["properties"][
        "envelope"]["default"]
    ably = AblyPublisher("a", {"api_key": "app.key:secret", "packing": {"enabled": True}})
    packing = SCHEMA["$defs"]["ably"]["properties"]["packing"]["properties"]
    assert ably.packing and ably.pack_events == packing["max_events"]["default"]
    assert ably.linger == packing["linger"]["default"]
    assert ably.timeout == SCHEMA["$defs"]["ably"]["properties"]["timeout"]["default"]
    assert RedisPublisher("r", {"timeout": 1}).timeout == 1  # given beats default


class ThirdParty(Publisher):
    type_name = "third-party"
    options_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "properties": {"depth": {"type": "integer", "default": 3},
                       "nested": {"type": "object",
                                  "properties": {"on": {"type": "boolean", "default": False}}}}}

    async def publish(self, messages: Sequence[Message]) -> None:
        pass


def test_a_third_party_sink_gets_its_own_schema_defaults() -> None:
    assert ThirdParty("t", {}).options == {"depth": 3, "nested": {"on": False}}
    assert ThirdParty("t", {"nested": {"x": 1}}).options == {
        "depth": 3, "nested": {"x": 1, "on": False}}
    assert with_defaults({}, {"a": 1}) == {"a": 1}
