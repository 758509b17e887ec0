from __future__ import annotations

from typing import Any


def make_config(dsn: str, redis_url: str, routes: list[dict[str, Any]], *,
                schema: str = "pgconnector", mode: str = "pubsub",
                **capture: Any) -> dict[str, Any]:
    return {
        "postgres": {"dsn": dsn, "schema": schema},
        "capture": {"poll_interval": 0.2, **capture},
        "publishers": {"cache": {"type": "redis", "url": redis_url, "mode": mode}},
        "routes": routes,
    }
