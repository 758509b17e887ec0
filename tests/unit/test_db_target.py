"""``db.describe_target``: what errors call the server, from the DSN and the libpq-style
fields, never with the password."""

from __future__ import annotations

import pytest

from connector.db import describe_target
from connector.vocabulary import PostgresConfig


@pytest.fixture(autouse=True)
def no_pg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("cfg", "target"), [
    (PostgresConfig(host="db", port=6543, user="app", password="pw!", database="shop"),
     "app@db:6543/shop"),
    (PostgresConfig(dsn="postgresql://u:pw!@h:7000/d", host="other", password="pw!"),
     "u@other:7000/d"),
    (PostgresConfig(dsn="postgresql://u:pw!@h:7000/d", port=5433, user="v", database="e"),
     "v@h:5433/e"),
    (PostgresConfig(password="pw!"), "localhost:5432/?"),
])
def test_target_from_dsn_and_fields_without_the_password(cfg: PostgresConfig,
                                                         target: str) -> None:
    assert describe_target(cfg) == target
    assert "pw!" not in repr(cfg)
