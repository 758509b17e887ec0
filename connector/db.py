"""Opening PostgreSQL connections, with errors a user can act on and no secrets in them."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from connector.vocabulary import ConfigError, PostgresConfig

# Let the server, too, notice within seconds when our side of a connection is gone (a crashed
# host, a cut network): it then ends the session, which frees the consumer lock for a standby.
# Over a Unix socket PostgreSQL ignores these.
SERVER_TCP = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2",
              "tcp_keepalives_count": "3", "tcp_user_timeout": "10000"}


class DatabaseError(Exception):
    """PostgreSQL could not be reached or refused us; the message is safe to print."""


class ChangesLost(DatabaseError):
    """The source can no longer give every change (the wal source's slot was invalidated or
    dropped): retrying would silently skip what was lost, so the daemon stops instead."""


# What happened to a lost slot, for slot_lost.
SLOT_DROPPED = "no longer exists (it was dropped)"
SLOT_INVALIDATED = ("was invalidated by PostgreSQL (it fell more than max_slot_wal_keep_size "
                    "behind)")


def slot_lost(slot: str, why: str) -> ChangesLost:
    """The one line that says what happened to the slot (``why``: SLOT_DROPPED or
    SLOT_INVALIDATED) and how to recover."""
    return ChangesLost(
        f"capture.slot: replication slot {slot!r} {why}, so changes written since it fell "
        "behind were lost and will never be delivered; resynchronise what consumes them, then "
        "run `pgconnector install --recreate-slot` to capture again from now (README: "
        "Limits, the wal source)")


def describe_target(cfg: PostgresConfig) -> str:
    """``user@host:port/dbname`` from the DSN or PG* variables, never the password."""
    host = os.environ.get("PGHOST", "localhost")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "")
    db = os.environ.get("PGDATABASE", "")
    if cfg.dsn:
        try:
            parts = urlsplit(cfg.dsn)
            host = unquote(parts.hostname or host)
            port = str(parts.port or port)
            user = unquote(parts.username or user)
            db = unquote(parts.path.lstrip("/")) or db
        except ValueError:
            return "the configured DSN (unparseable)"
    host, port = cfg.host or host, str(cfg.port or port)
    user, db = cfg.user or user, cfg.database or db
    return f"{user + '@' if user else ''}{host}:{port}/{db or user or '?'}"


def application_name(cfg: PostgresConfig) -> str:
    return cfg.application_name or f"pgconnector@{socket.gethostname()}:{os.getpid()}"[:63]


async def connect(cfg: PostgresConfig, settings: Mapping[str, str] | None = None,
                  **kwargs: Any) -> asyncpg.Connection:
    """A connection, or :class:`DatabaseError` with a one-line, secret-free reason."""
    target = describe_target(cfg)
    parts = {k: v for k in ("host", "port", "user", "password", "database")
             if (v := getattr(cfg, k)) is not None}
    if cfg.host is not None and cfg.port is None and (port := _dsn_port(cfg.dsn)):
        parts["port"] = port  # asyncpg drops the DSN's port with its host; libpq keeps it
    try:
        return await asyncpg.connect(
            dsn=cfg.dsn,
            **parts,
            timeout=cfg.connect_timeout,
            server_settings={"application_name": application_name(cfg), **SERVER_TCP,
                             **(settings or {})},
            **kwargs,
        )
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise DatabaseError(f"PostgreSQL at {target} rejected the credentials: {exc}") from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise DatabaseError(f"PostgreSQL at {target}: {exc}") from None
    except asyncpg.PostgresError as exc:
        raise DatabaseError(f"PostgreSQL at {target} refused the connection: {exc}") from None
    except (TimeoutError, OSError) as exc:
        reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else (
            exc.strerror or str(exc) or type(exc).__name__)
        raise DatabaseError(f"cannot connect to PostgreSQL at {target}: {reason}") from None
    except ValueError as exc:  # malformed DSN; asyncpg's message does not echo the password
        # A config problem (exit 2), found only when the DSN is parsed at connect time.
        raise ConfigError([f"postgres.dsn: invalid connection string ({_strip(exc)})"]) from None


def _dsn_port(dsn: str | None) -> int | None:
    try:
        return urlsplit(dsn).port if dsn else None
    except ValueError:  # several hosts, or not a number: asyncpg reports it
        return None


def _strip(exc: Exception) -> str:
    text = str(exc)
    return text if "@" not in text and "password" not in text.lower() else "malformed"
