"""``pgconnector start`` as a real process: changes reach Redis, signals stop it cleanly, and
nothing is lost across stops, restarts and crashes."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import RedisSubscriber
from tests.e2e.support import (
    Daemon,
    StuckRedis,
    make_config,
    run,
    wait_until,
    with_password,
    write_config,
)

SECRET = f"s3cret-{uuid.uuid4().hex[:12]}"
MakeDaemon = Callable[..., Daemon]


@pytest.fixture
async def items(pg: asyncpg.Connection) -> None:
    await pg.execute("CREATE TABLE public.items (id int PRIMARY KEY, name text NOT NULL)")


DAEMON_APP = "pgconnector-e2e-daemon"
KILL_DAEMON_BACKEND = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND application_name = $1")


def config_for(tmp_path: Path, database: str, redis_url: str, channel: str,
               application_name: str | None = None, **capture: Any) -> Path:
    # The password is ignored by the test server (trust auth) but must never be printed.
    dsn = with_password(database, SECRET)
    data = make_config(dsn, redis_url=redis_url, capture=capture,
                       routes=[{"table": "public.items", "publisher": "cache",
                                "channel": channel}])
    if application_name is not None:
        data["postgres"]["application_name"] = application_name
    return write_config(tmp_path, data)


class Seen:
    """Incrementally indexes what a RedisSubscriber collected, by the row's id."""

    def __init__(self, subscriber: RedisSubscriber) -> None:
        self.subscriber = subscriber
        self.done = 0
        self.ids: set[int] = set()
        self.event_ids: dict[int, set[str]] = {}

    def update(self) -> int:
        for _channel, event in self.subscriber.messages[self.done:]:
            row = event["new"] or event["old"]
            self.ids.add(row["id"])
            self.event_ids.setdefault(row["id"], set()).add(event["id"])
        self.done = len(self.subscriber.messages)
        return self.done

    def has_all(self, total: int) -> bool:
        self.update()
        return len(self.ids) >= total


async def wait_messages(subscriber: RedisSubscriber, count: int, timeout: float = 15.0
                        ) -> list[tuple[str, dict[str, Any]]]:
    await wait_until(lambda: len(subscriber.messages) >= count, timeout,
                     f"{count} message(s) on Redis (got {len(subscriber.messages)})")
    return subscriber.messages


async def outbox_empty(pg: asyncpg.Connection) -> bool:
    return await pg.fetchval("SELECT count(*) FROM pgconnector.outbox") == 0


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
async def test_start_streams_every_operation_and_stops_cleanly(
        stop_signal: signal.Signals, database: str, redis_url: str, channel_prefix: str,
        subscriber: RedisSubscriber, pg: asyncpg.Connection, items: None,
        daemons: MakeDaemon, tmp_path: Path) -> None:
    config = config_for(tmp_path, database, redis_url, channel_prefix + ":{table}:{op}")
    async with subscriber:
        daemon = await daemons(config, tmp_path).start()
        await daemon.wait_active()

        await pg.execute("INSERT INTO public.items VALUES (1, 'Ada')")
        await pg.execute("UPDATE public.items SET name = 'Ada L.' WHERE id = 1")
        await pg.execute("DELETE FROM public.items WHERE id = 1")
        await pg.execute("INSERT INTO public.items VALUES (2, 'Bob')")
        await pg.execute("TRUNCATE public.items")
        messages = await wait_messages(subscriber, 5)

        status = await run("status", "-c", config)
        assert status.code == 0, status
        active = next(x for x in status.stdout.splitlines() if x.startswith("active consumer"))
        # The default application_name is pgconnector@<host>:<pid> (cut at 63 bytes).
        assert active.startswith("active consumer: pgconnector@"), status
        assert f":{daemon.pid} (pid " in active or len(active.split(" (pid")[0]) >= 80
        assert "active consumer: none" not in status.stdout
        assert SECRET not in status.stdout + status.stderr

        assert daemon.proc is not None
        started = asyncio.get_running_loop().time()
        daemon.proc.send_signal(stop_signal)
        code = await asyncio.wait_for(daemon.proc.wait(), 10)
        elapsed = asyncio.get_running_loop().time() - started

    assert code == 0, daemon.stderr()
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"

    assert [c for c, _ in messages] == [
        f"{channel_prefix}:items:insert", f"{channel_prefix}:items:update",
        f"{channel_prefix}:items:delete", f"{channel_prefix}:items:insert",
        f"{channel_prefix}:items:truncate"]
    ins, upd, dele, _ins2, trunc = (e for _, e in messages)
    assert ins["op"] == "insert" and ins["schema"] == "public" and ins["table"] == "items"
    assert ins["new"] == {"id": 1, "name": "Ada"} and ins["old"] is None
    assert upd["changes"] == {"name": {"old": "Ada", "new": "Ada L."}}
    assert upd["old"] == {"id": 1, "name": "Ada"} and upd["new"] == {"id": 1, "name": "Ada L."}
    assert dele["op"] == "delete" and dele["old"]["id"] == 1 and dele["new"] is None
    assert trunc["op"] == "truncate" and trunc["new"] is None and trunc["old"] is None
    assert len({e["id"] for _, e in messages}) == 5
    assert all(isinstance(e["txid"], int) and e["commit_time"].endswith("Z")
               for _, e in messages)

    # Logs: stderr is not a TTY, so every line is a JSON object; stdout stays empty.
    records = daemon.log_records()
    assert records, "no logs"
    assert all(isinstance(r, dict) and "event" in r and "level" in r and "timestamp" in r
               for r in records)
    events = [r["event"] for r in records]
    for expected in ("installed", "consumer_active", "signal_received", "stopping", "stopped"):
        assert expected in events, events
    assert records[-1]["event"] == "stopped"
    assert records[-1]["events"] == 5
    assert SECRET not in daemon.stderr()
    assert daemon.stdout() == ""
    assert await outbox_empty(pg)


async def test_changes_made_while_stopped_arrive_after_start(
        database: str, redis_url: str, channel_prefix: str, subscriber: RedisSubscriber,
        pg: asyncpg.Connection, items: None, daemons: MakeDaemon, tmp_path: Path) -> None:
    config = config_for(tmp_path, database, redis_url, channel_prefix + ":items")
    assert (await run("install", "-c", config)).code == 0
    # Never started yet: captured by the triggers, waiting in the outbox.
    await pg.execute("INSERT INTO public.items VALUES (1, 'a'), (2, 'b')")
    await pg.execute("UPDATE public.items SET name = 'bb' WHERE id = 2")

    async with subscriber:
        first = await daemons(config, tmp_path).start()
        messages = await wait_messages(subscriber, 3)
        assert [(e["op"], (e["new"] or {}).get("name")) for _, e in messages] == [
            ("insert", "a"), ("insert", "b"), ("update", "bb")]
        await wait_until(lambda: outbox_empty(pg), 10, "the outbox to drain")
        code, _ = await first.terminate()
        assert code == 0, first.stderr()

        # Stopped again: these wait in the outbox.
        await pg.execute("INSERT INTO public.items VALUES (3, 'c')")
        await pg.execute("DELETE FROM public.items WHERE id = 1")
        status = await run("status", "-c", config)
        assert "backlog: 2 change(s)" in status.stdout, status
        assert "active consumer: none" in status.stdout, status

        second = await daemons(config, tmp_path, args=["--no-install"]).start()
        messages = await wait_messages(subscriber, 5)
        await wait_until(lambda: outbox_empty(pg), 10, "the outbox to drain")
        code, _ = await second.terminate()
        assert code == 0, second.stderr()

    assert len(messages) == 5, "a change was delivered twice after a clean stop"
    assert [(e["op"], (e["new"] or e["old"])["id"]) for _, e in messages[3:]] == [
        ("insert", 3), ("delete", 1)]
    assert "installed" not in second.events()  # --no-install


async def test_standby_takes_over_when_the_active_daemon_dies(
        database: str, redis_url: str, channel_prefix: str, subscriber: RedisSubscriber,
        pg: asyncpg.Connection, items: None, daemons: MakeDaemon, tmp_path: Path) -> None:
    config = config_for(tmp_path, database, redis_url, channel_prefix + ":items")
    async with subscriber:
        active = await daemons(config, tmp_path).start()
        await active.wait_active()
        standby = await daemons(config, tmp_path).start()
        await standby.wait_for_log("consumer_standby")

        await pg.execute("INSERT INTO public.items SELECT g, 'x' FROM generate_series(1, 10) g")
        await wait_messages(subscriber, 10)
        await wait_until(lambda: outbox_empty(pg), 10, "the outbox to drain")

        await active.kill()
        await standby.wait_active(timeout=15)
        await pg.execute("INSERT INTO public.items SELECT g, 'y' FROM generate_series(11, 20) g")
        messages = await wait_messages(subscriber, 20)
        await wait_until(lambda: outbox_empty(pg), 10, "the outbox to drain")
        code, _ = await standby.terminate()
        assert code == 0, standby.stderr()

    assert sorted(e["new"]["id"] for _, e in messages) == list(range(1, 21))


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_nothing(
        database: str, redis_url: str, channel_prefix: str, subscriber: RedisSubscriber,
        pg: asyncpg.Connection, items: None, daemons: MakeDaemon, tmp_path: Path) -> None:
    total, per_tx, batch_size = 50_000, 100, 1000
    config = config_for(tmp_path, database, redis_url, channel_prefix + ":items",
                        batch_size=batch_size)
    writer_conn = await asyncpg.connect(database)

    async def write() -> None:
        for first in range(1, total + 1, per_tx):
            async with writer_conn.transaction():
                await writer_conn.execute(
                    "INSERT INTO public.items (id, name) "
                    "SELECT g, 'row ' || g FROM generate_series($1::int, $2::int) g",
                    first, first + per_tx - 1)

    try:
        async with asyncio.timeout(75), subscriber:
            seen = Seen(subscriber)
            daemon = await daemons(config, tmp_path).start()
            await daemon.wait_active()
            writer = asyncio.create_task(write())

            # Kill once a good part has arrived, while the writer is still going, preferably
            # while a batch is only partly received (so it is still in flight).
            def time_to_kill() -> bool:
                got = seen.update()
                return (got >= total // 10 and got % batch_size != 0) or got >= total // 4 \
                    or writer.done()

            await wait_until(time_to_kill, 30, "the first messages", interval=0.001)
            await daemon.kill()
            at_kill = seen.update()
            assert 0 < at_kill < total, f"{at_kill} of {total} had arrived at the kill"
            assert "stopped" not in daemon.events()

            await asyncio.wait_for(writer, 30)
            assert await pg.fetchval("SELECT count(*) FROM public.items") == total
            backlog = await pg.fetchval("SELECT count(*) FROM pgconnector.outbox")
            assert backlog > 0, "everything was delivered before the kill: nothing tested"

            restarted = await daemons(config, tmp_path).start()
            await wait_until(lambda: seen.has_all(total), 45,
                             "every row on Redis after the restart", interval=0.05)
            await wait_until(lambda: outbox_empty(pg), 10, "the outbox to drain")
            code, _ = await restarted.terminate()
            assert code == 0, restarted.stderr()
            seen.update()
    finally:
        await writer_conn.close()

    assert seen.ids == set(range(1, total + 1))
    duplicates = seen.done - total
    assert duplicates <= batch_size, (
        f"{duplicates} duplicates: more than the one in-flight batch ({batch_size})")
    # A redelivered change keeps its idempotency id.
    assert all(len(ids) == 1 for ids in seen.event_ids.values())
    stopped = next(r for r in restarted.log_records() if r["event"] == "stopped")
    assert stopped["events"] == backlog
    print(f"\n{at_kill} arrived before SIGKILL, {backlog} left in the outbox, "
          f"{duplicates} duplicate(s)")



async def test_unreachable_redis_keeps_changes_in_the_database(
        database: str, redis_url: str, channel_prefix: str, subscriber: RedisSubscriber,
        pg: asyncpg.Connection, items: None, daemons: MakeDaemon, tmp_path: Path) -> None:
    redis_secret = f"redis-{uuid.uuid4().hex[:12]}"
    route = {"table": "public.items", "publisher": "cache", "channel": channel_prefix + ":items"}
    down = write_config(tmp_path, make_config(
        with_password(database, SECRET), routes=[route],
        publishers={"cache": {"type": "redis", "timeout": 1,
                              "url": f"redis://:{redis_secret}@127.0.0.1:1/0"}}),
        name="redis-down.yaml")
    daemon = await daemons(down, tmp_path).start()
    await daemon.wait_active()
    await pg.execute("INSERT INTO public.items VALUES (1, 'waits')")
    await wait_until(lambda: any(r["event"] == "publisher_unavailable" and "detail" in r
                                 for r in daemon.log_records()), 15,
                     "the daemon to report the batch kept back")
    assert await pending(pg) == (0, 1)  # parked: out of the outbox, waiting for Redis
    code, elapsed = await daemon.terminate()
    assert code == 0, daemon.stderr()
    assert elapsed < 5, f"took {elapsed:.1f}s to stop while Redis was down"
    assert redis_secret not in daemon.stderr() and SECRET not in daemon.stderr()
    assert await pending(pg) == (0, 1)

    up = config_for(tmp_path, database, redis_url, channel_prefix + ":items")
    async with subscriber:
        again = await daemons(up, tmp_path).start()
        messages = await wait_messages(subscriber, 1)
        await wait_until(lambda: again.events().count("publisher_recovered") == 1, 20,
                         "the parked publisher to be back to direct delivery")
        code, _ = await again.terminate()
        assert code == 0, again.stderr()
    assert [e["new"] for _, e in messages] == [{"id": 1, "name": "waits"}]
    assert await pending(pg) == (0, 0)


async def pending(pg: asyncpg.Connection) -> tuple[int, int]:
    """(rows in the outbox, messages parked)."""
    row = await pg.fetchrow("SELECT (SELECT count(*) FROM pgconnector.outbox) AS outbox, "
                            "(SELECT count(*) FROM pgconnector.parked) AS parked")
    assert row is not None
    return row["outbox"], row["parked"]


async def test_reconnects_each_time_the_database_connection_is_killed(
        database: str, redis_url: str, channel_prefix: str, subscriber: RedisSubscriber,
        pg: asyncpg.Connection, items: None, daemons: MakeDaemon, tmp_path: Path) -> None:
    rounds = 12
    config = config_for(tmp_path, database, redis_url, channel_prefix + ":items",
                        application_name=DAEMON_APP)

    async with subscriber:
        seen = Seen(subscriber)
        daemon = await daemons(config, tmp_path).start()
        await daemon.wait_active()
        for i in range(1, rounds + 1):
            await pg.execute("INSERT INTO public.items VALUES ($1, 'r')", i)
            # Vary where in the daemon's claim/poll cycle the termination lands.
            await asyncio.sleep((i % 4) * 0.015)
            actives = daemon.events(strict=False).count("consumer_active")
            assert await pg.fetchval(KILL_DAEMON_BACKEND, DAEMON_APP) == 1
            await wait_until(lambda n=actives: not daemon.running or
                             daemon.events(strict=False).count("consumer_active") > n,
                             20, f"the daemon to reconnect (round {i})")
            if not daemon.running:
                break
        assert daemon.running, f"daemon died after its connection was killed:\n" \
                               f"{daemon.stderr()}"

        await pg.execute("INSERT INTO public.items VALUES ($1, 'last')", rounds + 1)
        await wait_until(lambda: seen.has_all(rounds + 1), 20, "every row on Redis")
        await wait_until(lambda: outbox_empty(pg), 10, "the outbox to drain")
        code, _ = await daemon.terminate()
        assert code == 0, daemon.stderr()
    assert seen.ids == set(range(1, rounds + 2))
    assert daemon.events().count("database_connection_lost") == rounds
    assert SECRET not in daemon.stderr()


@pytest.mark.slow
async def test_sigterm_while_the_database_is_down_exits_promptly(
        database: str, pg_admin_url: str, redis_url: str, channel_prefix: str,
        pg: asyncpg.Connection, items: None, daemons: MakeDaemon, tmp_path: Path) -> None:
    config = config_for(tmp_path, database, redis_url, channel_prefix + ":items",
                        application_name=DAEMON_APP)
    daemon = await daemons(config, tmp_path, args=["--shutdown-timeout", "10"]).start()
    await daemon.wait_active()
    dbname = await pg.fetchval("SELECT current_database()")
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        assert await pg.fetchval(KILL_DAEMON_BACKEND, DAEMON_APP) == 1
        # Let the reconnect backoff grow to a long sleep (4-8 s), then ask it to stop.
        await wait_until(lambda: any(r["event"] == "database_unavailable"
                                     and r.get("retry_in", 0) >= 8
                                     for r in daemon.log_records()), 30,
                         "the reconnect backoff to reach 8 s")
        code, elapsed = await daemon.terminate(timeout=20)
    finally:
        await admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        await admin.close()
    assert code == 0, daemon.stderr()
    # The backoff sleep (4-8 s here) must not delay the stop.
    assert elapsed < 3, f"SIGTERM took {elapsed:.1f}s during the reconnect backoff"
    assert SECRET not in daemon.stderr()
    events = daemon.events()
    after_stop = events[events.index("stopping"):]
    assert "database_unavailable" not in after_stop, "tried to reconnect after SIGTERM"


async def test_second_signal_exits_at_once_and_rolls_the_batch_back(
        database: str, pg: asyncpg.Connection, items: None, daemons: MakeDaemon,
        tmp_path: Path) -> None:
    async with StuckRedis() as stuck:
        route = {"table": "public.items", "publisher": "cache", "channel": "stuck:items"}
        config = write_config(tmp_path, make_config(
            with_password(database, SECRET), routes=[route],
            publishers={"cache": {"type": "redis", "url": stuck.url, "timeout": 60}}))
        daemon = await daemons(config, tmp_path, args=["--shutdown-timeout", "60"]).start()
        await daemon.wait_active()
        await pg.execute("INSERT INTO public.items VALUES (1, 'in flight')")
        await wait_until(lambda: stuck.publishes >= 1, 15, "the publish to be in flight")

        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        await daemon.wait_for_log("stopping")  # now waiting for the stuck publish
        assert daemon.running, "stopped although the in-flight publish never finished"
        started = asyncio.get_running_loop().time()
        daemon.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(daemon.proc.wait(), 10)
        elapsed = asyncio.get_running_loop().time() - started

    assert elapsed < 5, f"the second signal took {elapsed:.1f}s to stop the daemon"
    # The claim rolled back: the change waits in the outbox for the next start.
    assert await pg.fetchval("SELECT count(*) FROM pgconnector.outbox") == 1
    assert SECRET not in daemon.stderr()
    assert "Traceback" not in daemon.stderr(), daemon.stderr()
    assert code == 0, daemon.stderr()
    events = daemon.events()  # every line is a JSON object
    assert "second_signal" in events
    assert events[-1] == "stopped"

