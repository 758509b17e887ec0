"""Fixtures of the fault-injection suite: a PostgreSQL cluster and a Redis server of its own (so
they can be restarted and stopped), a proxy that cuts the network, the daemon as a process,
and a per-scenario report printed at the end of the run."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.cluster import PostgresCluster
from tests.e2e.support import Daemon, daemon_factory
from tests.faults.checker import REPORTS, ScenarioReport
from tests.faults.proxy import TcpProxy
from tests.faults.scenario import Harness
from tests.faults.servers import RedisServer
from tests.faults.writer import TABLE_DDL

_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """initdb once per run; removed at the end. wal_level=logical so the wal source runs
    here too (the trigger source does not care)."""
    cluster = PostgresCluster("wal_level=logical")
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The suite's Redis, running (a scenario that stopped it and failed may have left it
    down)."""
    if not redis_server.running:
        redis_server.start()
    return redis_server


@pytest.fixture
async def faults_db(pg_cluster: PostgresCluster) -> AsyncIterator[str]:
    """A new database in the suite's cluster with an empty ``public.items``; its URL."""
    if not pg_cluster.running:
        pg_cluster.start()
    name = f"faults_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_cluster.admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = pg_cluster.url(name)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(TABLE_DDL)
    finally:
        await conn.close()
    yield url
    if not pg_cluster.running:
        pg_cluster.start()
    admin = await asyncpg.connect(pg_cluster.admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def proxy(pg_cluster: PostgresCluster) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the suite's PostgreSQL, forwarding."""
    p = TcpProxy("127.0.0.1", pg_cluster.port).start()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
async def daemons(faults_db: str) -> AsyncIterator[Callable[..., Daemon]]:
    """Make ``Daemon``s; any still running at the end is killed (before the database goes)."""
    async with daemon_factory() as make:
        yield make


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[ScenarioReport]:
    """The scenario's line in the terminal summary."""
    r = ScenarioReport(request.node.name)
    REPORTS.append(r)
    yield r
    call = request.node.stash.get(_CALL_REPORT, None)
    r.outcome = "not run" if call is None else call.outcome


@pytest.fixture
async def harness(faults_db: str, redis: RedisServer, tmp_path: Path,
                  daemons: Callable[..., Daemon], report: ScenarioReport
                  ) -> AsyncIterator[Harness]:
    """A scenario's writer, stream reader and daemon configs; the writer and reader are
    stopped at the end even when the scenario failed half-way."""
    h = Harness(url=faults_db, redis=redis, workdir=tmp_path, daemons=daemons, report=report,
                key=f"faults:{uuid.uuid4().hex[:8]}:items")
    yield h
    await h.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    rep: pytest.TestReport = yield
    if "report" not in getattr(item, "fixturenames", ()):
        return rep
    if rep.when == "call":
        item.stash[_CALL_REPORT] = rep
    elif rep.when == "setup" and rep.skipped:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        reason = reason.removeprefix("Skipped: ")
        REPORTS.append(ScenarioReport(item.name, outcome=f"skipped ({reason})"))
    return rep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORTS:
        return
    terminalreporter.write_sep("-", "fault scenarios")
    for r in REPORTS:
        terminalreporter.write_line(r.line())
