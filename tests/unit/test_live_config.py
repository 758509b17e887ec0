"""``live:`` in the config: the token rules and row rules are checked before anything runs;
the replay buffer keeps what a reconnecting client missed, bounded by count and age."""

from __future__ import annotations

from typing import Any

import pytest

from connector.config import from_dict
from connector.live.replay import ReplayBuffer
from connector.vocabulary import ConfigError, TableName


def live(**extra: Any) -> dict[str, Any]:
    return {"live": {"tables": ["users", "public.orders"],
                     "auth": {"jwt": {"secret": "0123456789abcdef0123456789abcdef"}}, **extra}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    return err.value.problems


def test_a_live_section_reads_with_its_defaults() -> None:
    cfg = from_dict(live(rules=[{"table": "orders", "where_claims": {"customer_id": "sub"}}]))
    assert cfg.live is not None
    assert cfg.live.tables == (TableName("public", "users"), TableName("public", "orders"))
    assert (cfg.live.host, cfg.live.port, cfg.live.path) == ("127.0.0.1", 8765, "/live")
    assert cfg.live.auth.algorithms == ("HS256",) and not cfg.live.auth.anonymous
    assert "0123456789abcdef" not in repr(cfg.live)  # the secret stays out of reprs
    assert cfg.live.rules[0].where_claims == {"customer_id": "sub"}
    assert (cfg.live.replay_events, cfg.live.client_queue) == (10_000, 1_000)


@pytest.mark.parametrize(("extra", "expected"), [
    ({"auth": {}}, "live.auth: give jwt (secret or public_key), or anonymous: true"),
    ({"auth": {"jwt": {"secret": "0123456789abcdef0123456789abcdef", "public_key": "k"}}},
     "live.auth.jwt: give secret (HS*) or public_key, one of them"),
    ({"auth": {"jwt": {"secret": "0123456789abcdef0123456789abcdef", "algorithms": ["RS256"]}}},
     "live.auth.jwt.algorithms: a secret signs HS256/384/512 only"),
    ({"auth": {"jwt": {"public_key": "k", "algorithms": ["HS256"]}}},
     "live.auth.jwt.algorithms: a public_key verifies asymmetric algorithms only"),
    ({"rules": [{"table": "invoices", "where_claims": {"c": "sub"}}]},
     "live.rules[0].table: public.invoices is not in live.tables"),
    ({"auth": {"jwt": {"secret": "short"}}}, "live.auth.jwt.secret"),
    ({"path": "/live/"}, "live.path: a URL path such as /live"),
])
def test_live_mistakes_are_one_line_each(extra: dict[str, Any], expected: str) -> None:
    got = problems(live(**extra))
    assert len(got) == 1 and got[0].startswith(expected), got


def test_the_replay_buffer_is_bounded_by_count_and_age() -> None:
    now = [0.0]
    buf = ReplayBuffer(3, 10.0, clock=lambda: now[0])
    for i in range(5):
        buf.add(f"e{i}", "public", "t", "insert", {})
    assert len(buf) == 3
    assert buf.after("e1") is None  # evicted: resync
    assert [e.id for e in buf.after("e2") or []] == ["e3", "e4"]
    assert buf.after("e4") == []
    now[0] = 11.0
    assert buf.after("e4") is None  # too old now
