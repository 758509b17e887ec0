"""The config as the engine sees it: frozen dataclasses, one per section, and ConfigError.

connector/config.py builds them from a file (read, expand, validate, cross-check); everything
else only reads them. Defaults live here and nowhere else.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.vocabulary.filter import Filter
from connector.vocabulary.names import ChannelTemplate, TableName


class ConfigError(Exception):
    """The config is invalid; ``problems`` holds one ``path: message`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Route:
    index: int
    table: TableName
    operations: frozenset[str]
    publisher: str
    channel: ChannelTemplate
    where: Filter | None = None  # values not yet typed: connector/binding.py types them
    transitions: bool = True
    columns: tuple[str, ...] | None = None
    ignore_columns: tuple[str, ...] = ()
    split_key_change: bool = False
    include_types: bool = False
    path: str = ""  # where it was defined, for errors (default routes[index])

    @property
    def at(self) -> str:
        """Its key path in errors: ``routes[2]``, ``handlers[0]``, ``subscribe(public.users)``."""
        return self.path or f"routes[{self.index}]"

    @property
    def plain(self) -> bool:
        """Every change of the table's operations, whole: the router's fast path."""
        return (self.where is None and self.columns is None and not self.ignore_columns
                and not self.split_key_change and not self.include_types)


@dataclass(frozen=True)
class RetryConfig:
    """How long a message that cannot be delivered for now is retried (publishers.X.retry)."""

    max_attempts: int | None = None  # None: no limit
    max_age: float | None = None  # seconds since the first failed attempt; None: no limit
    initial_backoff: float = 0.5
    max_backoff: float = 10.0  # bounds how late delivery resumes after an outage

    def gives_up(self, attempts: int, age: float = 0.0) -> bool:
        """Whether a message that failed ``attempts`` times, the first ``age`` seconds ago,
        goes to the dead letters rather than being tried again."""
        return ((self.max_attempts is not None and attempts >= self.max_attempts)
                or (self.max_age is not None and age >= self.max_age))

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        return backoff(attempt, self.initial_backoff, self.max_backoff)


@dataclass(frozen=True)
class PublisherConfig:
    name: str
    type: str
    options: Mapping[str, Any]  # the adapter's own options (without type and retry)
    retry: RetryConfig = field(default_factory=RetryConfig)


@dataclass(frozen=True)
class HandlerConfig:
    """A Python callable called per change of a table (``handlers:`` in the config, or
    ``Connector.on`` / ``subscribe`` in code): what it receives and how it is called."""

    table: TableName
    function: Any  # the callable (resolved from ``call`` for config handlers)
    operations: frozenset[str] = frozenset({"insert", "update", "delete", "truncate"})
    where: Filter | None = None
    columns: tuple[str, ...] | None = None
    ignore_columns: tuple[str, ...] = ()
    transitions: bool = True
    split_key_change: bool = False
    key: tuple[str, ...] | None = None  # None: the primary key (the whole table without one)
    concurrency: int = 1
    retry: RetryConfig = field(default_factory=RetryConfig)
    timeout: float | None = None
    batch: str | None = None  # "transaction": a list of one transaction's events per call
    path: str = ""  # where it was defined, for errors
    call: str | None = None  # "package.module:function", for config handlers


# An operator's default retry limits: a change whose SQL keeps failing is dead-lettered
# after about a minute rather than holding up the operator's later changes for ever.
OPERATOR_RETRY = RetryConfig(max_attempts=10)


@dataclass(frozen=True)
class OperatorConfig:
    """A derived table kept up to date by SQL (or a Python function) per changed key
    (``operators:`` in the config, or ``Connector.operator`` in code): README "Operators"."""

    name: str
    tables: Mapping[TableName, str]  # table -> the column holding the target's key
    sql: str | None = None
    function: Any = None  # a Python operator: async f(tx, key, events)
    operations: frozenset[str] = frozenset({"insert", "update", "delete"})
    on_truncate: str = "rebuild"  # or "ignore"
    delete_with: frozenset[TableName] = frozenset()
    target: TableName | None = None
    target_key: str | None = None
    rebuild_sql: str | None = None
    coalesce: bool = True  # each key once per batch, after its last change there
    retry: RetryConfig = field(default_factory=lambda: OPERATOR_RETRY)
    path: str = ""  # where it was defined, for errors
    call: str | None = None  # "package.module:function", for config Python operators

    @property
    def sink(self) -> str:
        """The sink's name: dead letters and parked changes are filed under it."""
        return f"operator:{self.name}"



@dataclass(frozen=True)
class PostgresConfig:
    dsn: str | None = field(default=None, repr=False)  # may hold the password
    schema: str = "pgconnector"
    connect_timeout: float = 10.0
    application_name: str | None = None
    # libpq-style parts; each overrides the DSN's (and the PG* variables')
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None


@dataclass(frozen=True)
class CaptureConfig:
    source: str = "trigger"  # or "wal" (connector/readers/wal.py)
    slot: str | None = None  # wal: the replication slot (default: from postgres.schema)
    publication: str | None = None  # wal: the publication (default: postgres.schema)
    replica_identity: str = "full"  # wal: set REPLICA IDENTITY FULL on captured tables, or keep
    batch_size: int = 1000
    max_batch_bytes: int = 8 * 1024 * 1024
    poll_interval: float = 0.5
    standby_retry: float = 2.0
    linger: float = 0.0
    liveness_interval: float = 1.0
    liveness_timeout: float = 4.0
    takeover_after: float = 8.0


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class ServerConfig:
    """The health and metrics HTTP server (connector/server.py)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9187  # 0: any free port (tests)


@dataclass(frozen=True)
class LiveAuth:
    """How live clients prove who they are: a JWT (HS* with ``secret``, RS*/ES* with
    ``public_key``), or nothing at all when ``anonymous`` is set explicitly."""

    secret: str | None = field(default=None, repr=False)
    public_key: str | None = field(default=None, repr=False)
    algorithms: tuple[str, ...] = ("HS256",)
    audience: str | None = None
    issuer: str | None = None
    anonymous: bool = False


@dataclass(frozen=True)
class LiveRule:
    """Row-level authorization for one table: a client only receives rows whose column
    equals the value of its token's claim, for each (column, claim) pair."""

    table: TableName
    where_claims: Mapping[str, str]


@dataclass(frozen=True)
class LiveConfig:
    """Live subscriptions (WebSocket and SSE) served by the daemon (connector/live/)."""

    tables: tuple[TableName, ...]
    auth: LiveAuth
    host: str = "127.0.0.1"
    port: int = 8765
    path: str = "/live"
    rules: tuple[LiveRule, ...] = ()
    allowed_origins: tuple[str, ...] | None = None  # None: any Origin (or none)
    replay_events: int = 10_000
    replay_seconds: float = 300.0
    client_queue: int = 1_000
    max_subscriptions: int = 20  # per client
    max_message_bytes: int = 16_384  # a client's own messages


@dataclass(frozen=True)
class Config:
    publishers: Mapping[str, PublisherConfig] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    handlers: tuple[HandlerConfig, ...] = ()
    operators: tuple[OperatorConfig, ...] = ()
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    server: ServerConfig | None = None  # None: no `server:` section, no server
    live: LiveConfig | None = None  # None: no `live:` section
    source: str = "<dict>"

    @property
    def tables(self) -> dict[TableName, frozenset[str]]:
        """Every captured table with the union of its routes' operations."""
        out: dict[TableName, frozenset[str]] = {}
        for route in self.routes:
            out[route.table] = out.get(route.table, frozenset()) | route.operations
        return out


def backoff(attempt: int, initial: float, ceiling: float) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): doubling from ``initial``
    up to ``ceiling``, with "equal" jitter (half fixed, half random), so waits grow attempt
    after attempt while the retries of many instances still spread out."""
    top = min(ceiling, initial * 2.0 ** min(attempt - 1, 40))  # 2.0 ** 1024 overflows
    return top / 2 + random.uniform(0, top / 2)


def join_path(path: str, key: str) -> str:
    """``path.key``, or ``path["key"]`` when the key is no plain name."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def format_path(parts: Any) -> str:
    """A key path (names and list indexes) as the config's error lines write it."""
    path = ""
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else join_path(path, str(part))
    return path or "<root>"
