"""The ``pgconnector`` command: a thin shell over Connector, install and config."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import asyncpg
import typer

from connector import __version__, logs
from connector.config import load as load_config
from connector.db import DatabaseError
from connector.handlers import with_handlers
from connector.vocabulary import Config, ConfigError

app = typer.Typer(
    name="pgconnector",
    help="Stream PostgreSQL row changes (insert, update, delete, truncate) to pub/sub systems.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_ERROR = 1
EXIT_CONFIG = 2

T = TypeVar("T")

ConfigOpt = Annotated[Path, typer.Option(
    "--config", "-c", show_default=False, dir_okay=True,
    help="Config file: YAML or JSON, or an Ably Postgres connector default.json or .env.")]

_log_opts: dict[str, str | None] = {"format": None, "level": None}


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load(path: Path) -> Config:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    logs.configure(_log_opts["format"] or config.logging.format,
                   _log_opts["level"] or config.logging.level)
    return config


def capturing(config: Config) -> Config:
    """The daemon needs something to do: routes, handlers, operators or live."""
    if not (config.routes or config.handlers or config.operators or config.live):
        fail(f"{config.source}: nothing to capture: give routes (with publishers), handlers, "
             "operators or live (any of them)", EXIT_CONFIG)
    return config


def effective(config: Config) -> Config:
    """The config with the routes its handlers and operators add: what install captures."""
    from connector.operators import with_operators

    return with_operators(with_handlers(config))


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine, turning expected failures into one line and an exit code."""
    try:
        return asyncio.run(_call(coro_fn))
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    except DatabaseError as exc:
        fail(str(exc))
    except asyncpg.InsufficientPrivilegeError as exc:
        fail(f"PostgreSQL refused: {exc} (README: Database privileges)")
    except asyncpg.PostgresError as exc:
        # PostgreSQL's messages never carry the connection's password.
        fail(f"PostgreSQL: {type(exc).__name__}: {exc}")


async def _call(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return await coro_fn()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pgconnector {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    log_format: Annotated[str | None, typer.Option(
        help="Log format: auto (console on a terminal, JSON otherwise), console or json.")] = None,
    log_level: Annotated[str | None, typer.Option(
        help="Log level: debug, info, warning or error.")] = None,
) -> None:
    if log_format not in (None, "auto", "console", "json"):
        fail(f"--log-format: expected auto, console or json, got {log_format!r}", EXIT_CONFIG)
    if log_level not in (None, "debug", "info", "warning", "error"):
        fail(f"--log-level: expected debug, info, warning or error, got {log_level!r}",
             EXIT_CONFIG)
    _log_opts.update(format=log_format, level=log_level)
    logs.configure(log_format or "auto", log_level or "info")


@app.command()
def validate(
    config: ConfigOpt,
    offline: Annotated[bool, typer.Option(
        "--offline", help="Do not connect to check the operators' SQL against the database.")
    ] = False,
) -> None:
    """Check a config file. Nothing is written; operators' SQL is prepared against the
    database (unless --offline), which is the only thing that connects."""
    cfg = capturing(load(config))
    handlers = f", {len(cfg.handlers)} handler(s)" if cfg.handlers else ""
    operators = f", {len(cfg.operators)} operator(s)" if cfg.operators else ""
    if cfg.operators and not offline:
        from connector.store import operators as operator_checks

        _with_conn(cfg, lambda c: operator_checks.check(c, cfg))
        operators += " checked against the database"
    typer.echo(f"OK: {config} ({len(cfg.publishers)} publisher(s), {len(cfg.routes)} route(s), "
               f"{len(effective(cfg).tables)} table(s){handlers}{operators})")


@app.command()
def convert(
    file: Annotated[Path, typer.Argument(help="An Ably Postgres connector default.json or .env.",
                                         show_default=False)],
    inline_secrets: Annotated[bool, typer.Option(
        "--inline-secrets", help="Write the API key and password into the output.")] = False,
) -> None:
    """Print the pgconnector YAML equivalent of an Ably Postgres connector config."""
    import os

    from connector.compat import ably as ably_compat
    from connector.config import check_legacy, read_config_data, read_file

    try:
        if not ably_compat.is_env_path(file) and not ably_compat.is_legacy(read_file(file)):
            fail(f"{file}: not an Ably Postgres connector config (expected a JSON file with "
                 "dbConfig, connector and ably, or a .env file)", EXIT_CONFIG)
        data = read_config_data(file)
        problems = check_legacy(data, key_written=inline_secrets)
    except ConfigError as exc:
        problems = exc.problems
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(EXIT_CONFIG)
    text, needed = ably_compat.to_yaml(data, inline_secrets=inline_secrets)
    typer.echo(text, nl=False)
    unset = [v for v in needed if v not in os.environ]
    if needed:
        typer.echo("note: the config reads " + " and ".join(needed) + " from the environment"
                   + (f"; set {', '.join(unset)} before using it" if unset else ""), err=True)


@app.command("install")
def install_cmd(
    config: ConfigOpt,
    recreate_slot: Annotated[bool, typer.Option(
        help="The wal source's slot was invalidated or dropped (its changes are lost): "
             "create it anew and capture from now.")] = False,
) -> None:
    """Install the connector's objects and reconcile triggers with the config."""
    from connector import db
    from connector.store import install

    cfg = capturing(load(config))

    async def go() -> install.InstallReport:
        conn = await db.connect(cfg.postgres)
        try:
            return await install.install(conn, effective(cfg), recreate_slot=recreate_slot)
        finally:
            await conn.close()

    report = run(go)
    for label, tables in (("added", report.added), ("changed", report.changed),
                          ("removed", report.removed), ("unchanged", report.unchanged)):
        for t in tables:
            typer.echo(f"{label}: {t}")
    typer.echo(f"installed in schema {cfg.postgres.schema!r}"
               + ("" if report.touched else " (nothing to change)"))


@app.command()
def uninstall(
    config: ConfigOpt,
    force: Annotated[bool, typer.Option(
        help="Uninstall even though captured changes are still undelivered (they are lost).")
    ] = False,
) -> None:
    """Remove every trigger and object the connector installed (user tables are untouched)."""
    from connector import db
    from connector.store import install

    cfg = load(config)

    async def go() -> list[str]:
        conn = await db.connect(cfg.postgres)
        try:
            return await install.uninstall(conn, cfg.postgres.schema, force=force)
        finally:
            await conn.close()

    try:
        released = run(go)
    except install.BacklogNotEmpty as exc:
        fail(str(exc))
    for t in released:
        typer.echo(f"removed triggers: {t}")
    typer.echo(f"uninstalled schema {cfg.postgres.schema!r}")


@app.command()
def status(
    config: ConfigOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Installed tables, outbox backlog, dead letters and the active consumer."""
    from connector import db
    from connector.store import install
    from connector.store.operators import SINCE_VERSION
    from connector.store.operators import status as operator_status

    cfg = load(config)

    async def go() -> dict[str, Any]:
        conn = await db.connect(cfg.postgres)
        try:
            info = await install.status(conn, cfg.postgres.schema)
            # (only with operators configured: a role streaming without any needs no
            # privilege on their table)
            if cfg.operators and info["installed"] and str(info["schema_version"]).isdigit() \
                    and int(info["schema_version"]) >= SINCE_VERSION:
                info["operators"] = await operator_status(
                    conn, cfg.postgres.schema, [o.sink for o in cfg.operators])
            return info
        finally:
            await conn.close()

    info = run(go)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    if not info["installed"]:
        typer.echo(f"schema {info['schema']!r}: not installed")
        raise typer.Exit(EXIT_ERROR)
    typer.echo(f"schema {info['schema']!r} (version {info['schema_version']})")
    for t in info["tables"]:
        flag = "" if t["triggers_present"] else "  [TRIGGERS MISSING: run install]"
        typer.echo(f"  {t['table']}: {', '.join(t['operations'])}{flag}")
    b = info["backlog"]
    age = "" if b["oldest_age_seconds"] is None else f", oldest {b['oldest_age_seconds']:.1f}s"
    typer.echo(f"backlog: {b['pending']} change(s){age}")
    for name, p in info["parked"].items():
        typer.echo(f"parked for {name} (unavailable): {p['messages']} message(s), "
                   f"oldest {p['oldest_age_seconds']:.1f}s")
    typer.echo(f"dead letters: {info['dead_letters']}")
    for o in info.get("operators", []):
        applied = "nothing applied yet" if o["position"] is None else (
            f"applied {o['changes']} change(s), last {o['last_event_id']} at "
            f"{o['position']}, {o['applied_at']}")
        typer.echo(f"operator {o['name']}: {applied}; {o['dead_letters']} dead letter(s), "
                   f"{o['parked']} waiting to retry")
    if (slot := info.get("slot")) is not None:
        typer.echo(_slot_line(slot))
    a = info["active_consumer"]
    typer.echo("active consumer: " + ("none" if a is None else
               f"{a['application_name']} (pid {a['pid']}, {a['client_addr'] or 'local'})"))


def _slot_line(slot: dict[str, Any]) -> str:
    if not slot["exists"]:
        return f"slot {slot['name']}: MISSING (changes lost: README, Limits)"
    mb = 1024 * 1024
    text = (f"slot {slot['name']}: {slot['wal_status']}, retains "
            f"{slot['retained_bytes'] / mb:.1f} MB of WAL, confirmed "
            f"{slot['lag_bytes'] / mb:.1f} MB behind")
    if slot["lag_seconds"] is not None:
        text += f", lag {slot['lag_seconds']:.3f}s (heartbeat at {slot['lag_measured_at']})"
    if slot["safe_wal_bytes"] is not None:
        text += f", {slot['safe_wal_bytes'] / mb:.0f} MB before max_slot_wal_keep_size"
    if slot["wal_status"] == "lost":
        text += "  [LOST: changes were lost; README, Limits]"
    elif slot["near_limit"]:
        text += "  [NEAR max_slot_wal_keep_size: changes will be lost if it stays behind]"
    return text


@app.command()
def start(
    config: ConfigOpt,
    no_install: Annotated[bool, typer.Option(
        "--no-install", help="Do not install or reconcile; stream with what is installed.")
    ] = False,
    shutdown_timeout: Annotated[float, typer.Option(
        help="Seconds to finish the in-flight batch after SIGTERM.")] = 10.0,
) -> None:
    """Install (unless --no-install) and stream changes until SIGINT/SIGTERM."""
    from connector.connector import Connector
    from connector.server import HealthServerError

    cfg = capturing(load(config))
    connector = Connector(cfg, install=not no_install, shutdown_timeout=shutdown_timeout)
    try:
        run(connector.run_async)
    except HealthServerError as exc:
        fail(str(exc))


dead_letters_app = typer.Typer(
    help="List, re-queue or purge changes that could not be delivered.",
    no_args_is_help=True)
app.add_typer(dead_letters_app, name="dead-letters")

PublisherOpt = Annotated[str | None, typer.Option(help="Only this publisher's.")]
TableOpt = Annotated[str | None, typer.Option(help="Only this table's (schema.table or table).")]
OlderOpt = Annotated[str | None, typer.Option(
    help="Only those that failed longer ago than this (90, 30s, 15m, 2h, 7d).")]
NewerOpt = Annotated[str | None, typer.Option(
    help="Only those that failed more recently than this.")]
IdOpt = Annotated[list[int] | None, typer.Option("--id", help="Only these (repeatable).")]


def _selection(publisher: str | None, table: str | None, older_than: str | None,
               newer_than: str | None, ids: list[int] | None,
               limit: int | None = None) -> Any:
    from connector.store.dead_letters import Selection, parse_duration
    from connector.vocabulary import parse_table

    def duration(option: str, text: str | None) -> float | None:
        try:
            return None if text is None else parse_duration(text)
        except ValueError as exc:
            fail(f"{option}: {exc}", EXIT_CONFIG)

    if table is not None:
        try:
            parse_table(table)
        except ValueError as exc:
            fail(f"--table: {table!r}: {exc}", EXIT_CONFIG)
    return Selection(publisher, table, duration("--older-than", older_than),
                     duration("--newer-than", newer_than), None if not ids else tuple(ids),
                     limit)


def _with_conn(cfg: Config, fn: Callable[[Any], Awaitable[T]]) -> T:
    from connector import db

    async def go() -> T:
        conn = await db.connect(cfg.postgres)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return run(go)


@dead_letters_app.command("list")
def dead_letters_list(
    config: ConfigOpt, publisher: PublisherOpt = None, table: TableOpt = None,
    older_than: OlderOpt = None, newer_than: NewerOpt = None, ids: IdOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 100,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per line, with the payload.")] = False,
) -> None:
    """Show dead letters, oldest first."""
    from connector.store import dead_letters

    cfg = load(config)
    sel = _selection(publisher, table, older_than, newer_than, ids, limit)

    async def fetch(c: Any) -> list[Any]:
        picked = await dead_letters.select(c, cfg.postgres.schema, sel)
        return await dead_letters.show(c, cfg.postgres.schema, list(picked))

    rows = _with_conn(cfg, fetch)
    for r in rows:
        if as_json:
            item = {k: r[k] for k in ("id", "event_id", "table_schema", "table_name", "op",
                                      "publisher", "channel", "attempts", "error")}
            item["failed_at"] = r["failed_at"].isoformat()
            item["payload"] = json.loads(r["payload"])
            typer.echo(json.dumps(item))
        else:
            error = r["error"] if len(r["error"]) <= 80 else r["error"][:77] + "..."
            typer.echo(f"{r['id']}  {r['failed_at']:%Y-%m-%d %H:%M:%S}  {r['publisher']}  "
                       f"{r['table_schema']}.{r['table_name']}  {r['op']}  {r['channel']}  "
                       f"attempts={r['attempts']}  {error}")
    if not as_json:
        typer.echo(f"{len(rows)} dead letter(s)" + (" shown" if len(rows) == limit else ""),
                   err=True)


@dead_letters_app.command("retry")
def dead_letters_retry(
    config: ConfigOpt, publisher: PublisherOpt = None, table: TableOpt = None,
    older_than: OlderOpt = None, newer_than: NewerOpt = None, ids: IdOpt = None,
) -> None:
    """Re-queue dead letters (all, or those selected) for delivery, in their order: the
    running daemon delivers them at once, with fresh attempts."""
    from connector.store import dead_letters

    cfg = load(config)
    sel = _selection(publisher, table, older_than, newer_than, ids)
    picked = _with_conn(cfg, lambda c: dead_letters.select(c, cfg.postgres.schema, sel))
    known = set(cfg.publishers) | {r.publisher for r in effective(cfg).routes}
    unknown = sorted(set(picked.values()) - known)
    if unknown:
        fail(f"publisher(s) {', '.join(map(repr, unknown))} not in {config}: select others "
             "with --publisher, or purge them")
    moved = _with_conn(cfg, lambda c: dead_letters.retry(c, cfg.postgres.schema, list(picked)))
    typer.echo(f"re-queued {moved} dead letter(s)")


@dead_letters_app.command("purge")
def dead_letters_purge(
    config: ConfigOpt, publisher: PublisherOpt = None, table: TableOpt = None,
    older_than: OlderOpt = None, newer_than: NewerOpt = None, ids: IdOpt = None,
    purge_all: Annotated[bool, typer.Option("--all", help="Purge every dead letter.")] = False,
) -> None:
    """Delete dead letters for good (those selected, or --all)."""
    from connector.store import dead_letters

    cfg = load(config)
    sel = _selection(publisher, table, older_than, newer_than, ids)
    if sel.empty and not purge_all:
        fail("say which dead letters to purge (--publisher, --table, --older-than, "
             "--newer-than, --id) or --all", EXIT_CONFIG)

    async def go(c: Any) -> int:
        picked = await dead_letters.select(c, cfg.postgres.schema, sel)
        return await dead_letters.purge(c, cfg.postgres.schema, list(picked))

    purged = _with_conn(cfg, go)
    typer.echo(f"purged {purged} dead letter(s)")


operators_app = typer.Typer(help="Operators: derived tables kept up to date by SQL.",
                            no_args_is_help=True)
app.add_typer(operators_app, name="operators")


@operators_app.command("rebuild")
def operators_rebuild(
    name: Annotated[str, typer.Argument(help="The operator's name.", show_default=False)],
    config: ConfigOpt,
    chunk: Annotated[int, typer.Option(min=1, max=100_000,
                                       help="Keys per transaction.")] = 500,
) -> None:
    """Recompute an operator's whole target (its rebuild_sql, or its sql for every key of its
    tables, in chunks) while the daemon streams: no change made meanwhile is lost."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from connector.store import operators as operator_store

    cfg = capturing(load(config))
    shown = sys.stderr.isatty()
    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
                   disable=not shown)
    task = bar.add_task(f"rebuilding {name}", total=None)

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        keys = _with_conn(cfg, lambda c: operator_store.rebuild(
            c, cfg, name, chunk=chunk, progress=progress))
    typer.echo(f"rebuilt {name}: " + ("rebuild_sql ran" if keys is None else f"{keys} key(s)"))


@app.command()
def tail(
    config: ConfigOpt,
    queries: Annotated[list[str] | None, typer.Argument(
        help="Subscriptions as <operations>:<table>[:<column>.<operator>.<value>,...] "
             "(default: every live table).")] = None,
    token: Annotated[str | None, typer.Option(
        help="A token for the endpoint (needed when live.auth has a public_key, no secret).")
    ] = None,
    claim: Annotated[list[str] | None, typer.Option(
        help="name=value claims for the minted token (e.g. for where_claims rules).")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
) -> None:
    """Follow the running daemon's live endpoint and print events as they happen: readable
    on a terminal, one JSON event per line otherwise."""
    from connector.live.tail import TailError
    from connector.live.tail import tail as follow

    cfg = load(config)
    if cfg.live is None:
        fail(f"{config}: no live: section (tail reads the daemon's live endpoint)", EXIT_CONFIG)
    claims = {}
    for item in claim or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            fail(f"--claim: expected name=value, got {item!r}", EXIT_CONFIG)
        claims[name] = value
    try:
        asyncio.run(follow(cfg.live, queries or [], token, claims, limit=limit))
    except TailError as exc:
        fail(str(exc))


@app.command()
def demo(
    changes: Annotated[int, typer.Option(help="How many demo changes to make.")] = 5,
    redis_url: Annotated[str | None, typer.Option(
        help="Also publish to this Redis (default: $REDIS_URL, or the local one if it answers).")
    ] = None,
    live: Annotated[bool, typer.Option(
        "--live", help="Serve the demo table on the live endpoint, keep changing it, and "
                       "print the demo page's URL; until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(help="--live: the endpoint's port (0: any free one).")
                    ] = 8765,
    seconds: Annotated[float | None, typer.Option(
        help="--live: stop after this many seconds instead of at Ctrl-C.")] = None,
) -> None:
    """Run the whole pipeline on a demo table and show the changes arriving, then clean up.

    Uses the PostgreSQL given by DATABASE_URL / PG* variables or the local one; if none
    answers, starts a throwaway PostgreSQL from the installed binaries."""
    from connector.demo import run_demo, run_live_demo

    try:
        if live:
            code = asyncio.run(run_live_demo(port=port, seconds=seconds))
        else:
            code = asyncio.run(run_demo(changes=changes, redis_url=redis_url))
    except DatabaseError as exc:
        fail(str(exc))
    raise typer.Exit(code)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
