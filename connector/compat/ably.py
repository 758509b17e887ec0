"""Drop-in for the Ably Postgres connector: its ``default.json`` and ``.env`` configs, unchanged.

That project (ably-labs/ably-postgres-connector) reads either a JSON file with ``dbConfig``,
``connector`` (a list of ``{tablename, ablychannelname, operation}``) and ``ably: {apiKey}``,
or the variables ``DB_HOST`` … ``ABLY_API_KEY`` and ``ABLY_CONNECTOR`` (the list as JSON) from a
``.env`` file or the environment. Both become an ordinary pgconnector config here: one ``ably``
publisher and one route per mapping, then the usual validation runs on the result, and its
problems are reported under the legacy names (``connector[1].tablename``, ``ABLY_API_KEY``).

Pure functions only; reading files and validating the result stay in connector/config.py.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

LEGACY_KEYS = frozenset({"dbConfig", "connector", "ably"})
OUR_KEYS = frozenset({"postgres", "publishers", "routes", "capture", "logging",
                      "server"})
ENV_KEYS = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME", "ABLY_API_KEY",
            "ABLY_CONNECTOR", "ABLY_ENDPOINT", "ABLY_PORT")
OPERATIONS = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
MAPPING_KEYS = ("tablename", "ablychannelname", "operation")
PUBLISHER = "ably"

# dbConfig is handed to node-postgres' Client as is. These keys mean the same here; the
# ignored ones only tune the Node client's socket or its own queries.
DB_FIELDS = {"host": "host", "port": "port", "user": "user", "password": "password",
             "database": "database", "application_name": "application_name"}
DB_IGNORED = frozenset({"keepAlive", "keepAliveInitialDelayMillis", "statement_timeout",
                        "query_timeout", "idle_in_transaction_session_timeout", "lock_timeout"})
ENV_FIELDS = {"host": "DB_HOST", "port": "DB_PORT", "user": "DB_USER",
              "password": "DB_PASSWORD", "database": "DB_NAME"}


class LegacyConfigError(ValueError):
    """Problems with a legacy config, one ``key.path: message`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class LegacyConfig(dict[str, Any]):
    """Our config converted from a legacy one; ``paths`` maps our key paths (``routes[0]``,
    ``publishers.ably.api_key``) to the legacy ones (``connector[0]``, ``ably.apiKey``)."""

    def __init__(self, data: Mapping[str, Any], paths: Mapping[str, str]) -> None:
        super().__init__(data)
        self.paths = dict(paths)


def is_env_path(path: str | os.PathLike[str]) -> bool:
    """The Node connector treats a path ending in ``.env`` as a dotenv file."""
    return Path(path).name.endswith(".env")


def is_legacy(data: Any) -> bool:
    """A JSON config of the Node connector: one of its top-level keys and none of ours."""
    return isinstance(data, dict) and bool(set(data) & LEGACY_KEYS) and not set(data) & OUR_KEYS


def read_env_file(text: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The ``.env`` variables, the real environment winning (as Node's ``dotenv`` does: it
    never overwrites a variable that is already set, even to an empty value). No ``${VAR}``
    interpolation, as there."""
    import io

    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(stream=io.StringIO(text), interpolate=False).items()
              if v is not None}
    return {**values, **env_only(environ)}


def env_only(environ: Mapping[str, str]) -> dict[str, str]:
    """The Node connector's variables in ``environ`` (its form without a ``.env`` file)."""
    return {k: environ[k] for k in ENV_KEYS if k in environ}


def remap_problems(data: Any, problems: list[str]) -> list[str]:
    """``problems`` about a converted config, named by the legacy keys they came from."""
    paths = data.paths if isinstance(data, LegacyConfig) else {}
    out = []
    for problem in problems:
        path, sep, message = problem.partition(": ")
        best = max((p for p in paths if path == p or path.startswith((p + ".", p + "["))),
                   key=len, default=None)
        if sep and best is not None:
            problem = f"{paths[best]}{path[len(best):]}: {message}"
        out.append(problem)
    return out


# --------------------------------------------------------------------------- conversion


def from_json(data: Mapping[str, Any],
              environ: Mapping[str, str] | None = None) -> LegacyConfig:
    """Our config dict for the Node connector's JSON config."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    paths: dict[str, str] = {}
    unknown = sorted(set(data) - LEGACY_KEYS)
    if unknown:
        problems.append(f"<root>: unknown key{'s' if len(unknown) > 1 else ''} "
                        + ", ".join(map(repr, unknown)))
    db = data.get("dbConfig", {})
    if not isinstance(db, dict):
        problems.append("dbConfig: expected an object")
        db = {}
    postgres = _postgres({f: db.get(k) for k, f in DB_FIELDS.items()},
                         {f: f"dbConfig.{k}" for k, f in DB_FIELDS.items()}, problems, paths)
    postgres.update(_db_extras(db, problems, paths))
    ably = data.get("ably")
    key = ably.get("apiKey") if isinstance(ably, dict) else None
    if not isinstance(key, str) or not key:
        problems.append("ably.apiKey: required (a string)")
    paths[f"publishers.{PUBLISHER}.api_key"] = "ably.apiKey"
    paths[f"publishers.{PUBLISHER}"] = "ably"
    routes = _routes(data.get("connector"), "connector", problems, paths)
    ably_options = _endpoint(environ, problems, paths)
    if problems:
        raise LegacyConfigError(problems)
    return LegacyConfig(_config(postgres, str(key), routes, ably_options), paths)


def from_env(env: Mapping[str, str]) -> LegacyConfig:
    """Our config dict for the Node connector's environment variables."""
    problems: list[str] = []
    paths: dict[str, str] = {}
    key = env.get("ABLY_API_KEY")
    if not key:
        problems.append("ABLY_API_KEY: not set")
    paths[f"publishers.{PUBLISHER}.api_key"] = "ABLY_API_KEY"
    paths[f"publishers.{PUBLISHER}"] = "ABLY_API_KEY"
    postgres = _postgres({f: env.get(v) for f, v in ENV_FIELDS.items()}, ENV_FIELDS, problems,
                         paths)
    raw = env.get("ABLY_CONNECTOR")
    mappings: Any = None
    if not raw:
        problems.append("ABLY_CONNECTOR: not set (the table → channel list, as JSON)")
    else:
        try:
            mappings = json.loads(raw)
        except ValueError as exc:
            problems.append(f"ABLY_CONNECTOR: not valid JSON: {exc}")
    routes = (_routes(mappings, "ABLY_CONNECTOR", problems, paths)
              if mappings is not None else [])
    ably_options = _endpoint(env, problems, paths)
    if problems:
        raise LegacyConfigError(problems)
    return LegacyConfig(_config(postgres, str(key), routes, ably_options), paths)


def _postgres(values: Mapping[str, Any], names: Mapping[str, str], problems: list[str],
              paths: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in values.items():
        paths[f"postgres.{field}"] = names[field]
        if value is None or value == "":
            continue  # as node-postgres: PG* variables, then its defaults
        if field == "port":
            port = _port(value)
            if port is None:
                problems.append(f"{names[field]}: expected a port number, got {value!r}")
            else:
                out["port"] = port
        elif not isinstance(value, str):  # never echo the value: it may be the password
            problems.append(f"{names[field]}: expected a string")
        else:
            out[field] = value
    return out


def _port(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 < value < 65536 else None


def _db_extras(db: Mapping[str, Any], problems: list[str],
               paths: dict[str, str]) -> dict[str, Any]:
    """``connectionString``, ``ssl`` and ``connectionTimeoutMillis`` of node-postgres."""
    out: dict[str, Any] = {}
    dsn = db.get("connectionString")
    if dsn is not None and (not isinstance(dsn, str) or not dsn):
        problems.append("dbConfig.connectionString: expected a non-empty string")
        dsn = None
    paths["postgres.dsn"] = "dbConfig.connectionString" if dsn else "dbConfig.ssl"
    sslmode = _sslmode(db["ssl"], problems) if "ssl" in db else None
    if sslmode is not None:
        base, _, query = (dsn or "postgresql://").partition("?")
        params = [p for p in query.split("&") if p]
        if not any(p.split("=", 1)[0] == "sslmode" for p in params):  # else the string's wins
            dsn = base + "?" + "&".join([*params, f"sslmode={sslmode}"])
    if dsn:
        out["dsn"] = dsn
    timeout = db.get("connectionTimeoutMillis")
    paths["postgres.connect_timeout"] = "dbConfig.connectionTimeoutMillis"
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            problems.append("dbConfig.connectionTimeoutMillis: expected a number of "
                            f"milliseconds, got {timeout!r}")
        elif timeout > 0:  # 0 is node-postgres' "no timeout": keep ours
            out["connect_timeout"] = timeout / 1000
    unknown = sorted(set(db) - set(DB_FIELDS) - DB_IGNORED
                     - {"connectionString", "ssl", "connectionTimeoutMillis"})
    for name in unknown:
        problems.append(f"dbConfig.{name}: not supported (pgconnector reads host, port, user, "
                        "password, database, connectionString, ssl, application_name and "
                        "connectionTimeoutMillis)")
    return out


def _sslmode(ssl: Any, problems: list[str]) -> str | None:
    """node-postgres' ``ssl`` as a libpq ``sslmode``. ``true`` verifies the server's
    certificate and name: here against ``~/.postgresql/root.crt`` or ``$PGSSLROOTCERT``
    (libpq's rule), where Node used its own CA list."""
    if ssl is False:
        return "disable"
    if ssl is True:
        return "verify-full"
    if isinstance(ssl, dict):
        other = sorted(set(ssl) - {"rejectUnauthorized"})
        for name in other:  # ca, cert, key: PEM text; we take files (sslrootcert=… in a DSN)
            problems.append(f"dbConfig.ssl.{name}: not supported (put sslrootcert, sslcert "
                            "and sslkey files in dbConfig.connectionString)")
        reject = ssl.get("rejectUnauthorized", True)
        if not isinstance(reject, bool):
            problems.append("dbConfig.ssl.rejectUnauthorized: expected true or false")
            return None
        return "verify-full" if reject else "require"
    problems.append(f"dbConfig.ssl: expected true, false or an object, got {ssl!r}")
    return None


def _routes(mappings: Any, where: str, problems: list[str],
            paths: dict[str, str]) -> list[dict[str, Any]]:
    paths["routes"] = where
    if not isinstance(mappings, list) or not mappings:
        problems.append(f"{where}: expected a non-empty list of "
                        "{tablename, ablychannelname, operation}")
        return []
    routes: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for i, m in enumerate(mappings):
        at = f"{where}[{i}]"
        if not isinstance(m, dict):
            problems.append(f"{at}: expected an object")
            continue
        table, channel, op = (m.get(k) for k in MAPPING_KEYS)
        for name, value in zip(MAPPING_KEYS, (table, channel, op), strict=True):
            if not isinstance(value, str) or not value:
                problems.append(f"{at}.{name}: required (a string)")
        if isinstance(op, str) and op and op.upper() not in OPERATIONS:
            problems.append(f"{at}.operation: unknown operation {op!r} "
                            "(expected INSERT, UPDATE, DELETE or TRUNCATE)")
        unknown = sorted(set(m) - set(MAPPING_KEYS))
        if unknown:
            problems.append(f"{at}: unknown key{'s' if len(unknown) > 1 else ''} "
                            + ", ".join(map(repr, unknown)))
        if not (isinstance(table, str) and isinstance(channel, str) and isinstance(op, str)
                and table and channel and op.upper() in OPERATIONS):
            continue
        if (table, channel, op.upper()) in seen:
            continue  # the Node connector's control table kept one row per mapping
        seen.add((table, channel, op.upper()))
        paths[f"routes[{len(routes)}]"] = at
        for ours, theirs in (("table", "tablename"), ("channel", "ablychannelname"),
                             ("operations", "operation")):
            paths[f"routes[{len(routes)}].{ours}"] = f"{at}.{theirs}"
        routes.append({
            "table": table,
            "operations": [op.lower()],
            "publisher": PUBLISHER,
            # our channel is a template: the Node connector's names are literal
            "channel": channel.replace("{", "{{").replace("}", "}}"),
        })
    return routes


def _endpoint(env: Mapping[str, str], problems: list[str],
              paths: dict[str, str]) -> dict[str, Any]:
    """The Node connector always used Ably's main endpoint; ABLY_ENDPOINT (a routing policy
    or hostname) and ABLY_PORT point a converted config elsewhere without editing it."""
    paths[f"publishers.{PUBLISHER}.endpoint"] = "ABLY_ENDPOINT"
    paths[f"publishers.{PUBLISHER}.port"] = "ABLY_PORT"
    out: dict[str, Any] = {}
    if env.get("ABLY_ENDPOINT"):
        out["endpoint"] = env["ABLY_ENDPOINT"]
    if env.get("ABLY_PORT"):
        port = _port(env["ABLY_PORT"])
        if port is None:
            problems.append(f"ABLY_PORT: expected a port number, got {env['ABLY_PORT']!r}")
        else:
            out["port"] = port
    return out


def _config(postgres: dict[str, Any], key: str, routes: list[dict[str, Any]],
            ably_options: Mapping[str, Any]) -> dict[str, Any]:
    # Our config expands ${VAR} and reads $$ as $; the Node connector's values are literal.
    out: dict[str, Any] = {}
    if postgres:
        out["postgres"] = {k: _literal(v) for k, v in postgres.items()}
    out["publishers"] = {PUBLISHER: {"type": "ably", "api_key": _literal(key),
                                     **{k: _literal(v) for k, v in ably_options.items()}}}
    out["routes"] = [{k: _literal(v) for k, v in r.items()} for r in routes]
    return out


def _literal(value: Any) -> Any:
    return value.replace("$", "$$") if isinstance(value, str) else value


# --------------------------------------------------------------------------- output


def to_yaml(config: Mapping[str, Any], *, inline_secrets: bool = False) -> tuple[str, list[str]]:
    """The config as YAML, and the environment variables it expects. Unless
    ``inline_secrets``, the API key and the password become ``${ABLY_API_KEY}`` and
    ``${DB_PASSWORD}`` (the Node connector's own variable names; a password inside
    ``connectionString`` moves there too): a config file is no place for them."""
    data = json.loads(json.dumps(config))  # a deep copy of plain data
    needed: list[str] = []
    if not inline_secrets:
        for publisher in data.get("publishers", {}).values():
            if "api_key" in publisher:
                publisher["api_key"] = "${ABLY_API_KEY}"
                needed.append("ABLY_API_KEY")
        postgres = data.get("postgres", {})
        dsn, dsn_password = _split_password(postgres.get("dsn"))
        if dsn_password:
            postgres["dsn"] = dsn
        if "password" in postgres or dsn_password:
            postgres["password"] = "${DB_PASSWORD}"
            needed.append("DB_PASSWORD")
    header = ("# pgconnector config converted from an Ably Postgres connector config.\n"
              "# Each mapping is one route; every mapping is delivered.\n")
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return header + body, needed


def _split_password(dsn: Any) -> tuple[Any, bool]:
    """``dsn`` without a password (in ``user:password@`` or ``?password=``), and whether it
    had one. Text only, nothing re-encoded."""
    if not isinstance(dsn, str):
        return dsn, False
    m = re.match(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<netloc>[^/?#]*)(?P<rest>.*)\Z",
                 dsn, re.S)
    if m is None:
        return dsn, False
    netloc, found = m["netloc"], False
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc, found = userinfo.split(":", 1)[0] + "@" + hosts, True
    path, _, query = m["rest"].partition("?")
    params = [p for p in query.split("&") if p]
    kept = [p for p in params if p.split("=", 1)[0] != "password"]
    found = found or len(kept) != len(params)
    rest = path + ("?" + "&".join(kept) if kept else "")
    return (m["scheme"] + netloc + rest, True) if found else (dsn, False)
