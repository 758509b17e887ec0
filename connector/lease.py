"""The lease: this instance is the only active consumer of an installation while its
session holds a session-level advisory lock (sql/try_consumer_lock.sql). Others wait as hot
standbys; a standby ends an active instance whose session went silent (a half-open network
cut) so that it can take over. The lock lives on the reader's session, so losing that
connection loses the lease and any open batch together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from connector.readers.session import ConsumerSession
from connector.store.base import Row
from connector.store.postgres import PostgresStore

log = structlog.get_logger("pgconnector.source")


class Lease:
    def __init__(self, session: ConsumerSession, store: PostgresStore) -> None:
        self.session = session
        self.store = store
        self._key: int | None = None

    @property
    def held(self) -> tuple[int, int]:
        """(server pid of the session holding the lock, the lock's key): a second connection
        checks them before it publishes (sql/parked_head.sql)."""
        assert self._key is not None, "acquire() first"
        return self.session.server_pid, self._key

    async def acquire(self, on_standby: Callable[[dict[str, Any] | None], None] | None = None
                      ) -> None:
        """Return once this instance holds the lease (waits as a standby meanwhile;
        ``on_standby`` is told once, with who is active) or the session was interrupted."""
        s = self.session
        key = self._key = await self.store.consumer_key(s)
        announced = False
        while not s.interrupted:
            if await self.store.try_lock(s, key):
                return
            holder = await self.store.active_consumer(s, key)
            if holder is not None and await self._unresponsive(holder):
                continue  # try again at once
            if not announced:
                if on_standby is not None:
                    on_standby(None if holder is None else {
                        k: holder[k] for k in ("pid", "application_name", "idle_seconds")})
                announced = True
            await s.sleep(s.capture.standby_retry)

    async def _unresponsive(self, holder: Row) -> bool:
        """The active instance pings its session at least every liveness_interval and gives
        up on it after liveness_timeout; a session idle far longer than both belongs to an
        instance that lost its connection without the server noticing (a half-open network
        cut). End it, so its lock is freed; it has stopped publishing already. True when it
        was ended."""
        idle = holder["idle_seconds"]
        if idle is None or idle < self.session.capture.takeover_after:
            return False
        ended = await self.store.terminate(self.session, holder["pid"])
        log.warning("took_over_unresponsive_consumer", pid=holder["pid"],
                    active=holder["application_name"], idle_seconds=round(idle, 1),
                    ended=ended)
        await asyncio.sleep(0.1)  # the backend exits asynchronously
        return ended
