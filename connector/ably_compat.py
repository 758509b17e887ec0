"""Drop-in for the Ably Postgres connector: its ``default.json`` and ``.env`` configs, unchanged.

That project (ably-labs/ably-postgres-connector) reads either a JSON file with ``dbConfig``,
``connector`` (a list of ``{tablename, ablychannelname, operation}``) and ``ably: {apiKey}``,
or the variables ``DB_HOST`` … ``ABLY_API_KEY`` and ``ABLY_CONNECTOR`` (the list as JSON) from a
``.env`` file or the environment. Both become an ordinary pgconnector config here: one ``ably``
publisher and one route per mapping, then the usual validation runs on the result.

Pure functions only; reading files stays in connector.config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

LEGACY_KEYS = frozenset({"dbConfig", "connector", "ably"})
ENV_KEYS = ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME", "ABLY_API_KEY",
            "ABLY_CONNECTOR", "ABLY_ENDPOINT", "ABLY_PORT")
OPERATIONS = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
PUBLISHER = "ably"


class LegacyConfigError(ValueError):
    """Problems with a legacy config, one ``key.path: message`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def is_env_path(path: str | os.PathLike[str]) -> bool:
    """The Node connector treats a path ending in ``.env`` as a dotenv file."""
    return Path(path).name.endswith(".env")


def is_legacy(data: Any) -> bool:
    """A JSON config of the Node connector: only its top-level keys, and its mapping list."""
    return (isinstance(data, dict) and bool(data) and set(data) <= LEGACY_KEYS
            and "connector" in data)


def read_env_file(text: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The ``.env`` variables, the real environment winning (as Node's ``dotenv`` does: it
    never overwrites a variable that is already set). No ``${VAR}`` interpolation, as there."""
    import io

    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(stream=io.StringIO(text), interpolate=False).items()
              if v is not None}
    return {**values, **{k: environ[k] for k in ENV_KEYS if k in environ}}


def from_json(data: Mapping[str, Any],
              environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Our config dict for the Node connector's JSON config."""
    problems: list[str] = []
    db = data.get("dbConfig", {})
    if not isinstance(db, dict):
        problems.append("dbConfig: expected an object")
        db = {}
    ably = data.get("ably")
    key = ably.get("apiKey") if isinstance(ably, dict) else None
    if not isinstance(key, str) or not key:
        problems.append("ably.apiKey: required (a string)")
    postgres = _postgres(
        {"host": db.get("host"), "port": db.get("port"), "user": db.get("user"),
         "password": db.get("password"), "database": db.get("database")},
        {"host": "dbConfig.host", "port": "dbConfig.port", "user": "dbConfig.user",
         "password": "dbConfig.password", "database": "dbConfig.database"}, problems)
    routes = _routes(data.get("connector"), "connector", problems)
    ably_options = _endpoint(os.environ if environ is None else environ, problems)
    if problems:
        raise LegacyConfigError(problems)
    return _config(postgres, str(key), routes, ably_options)


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Our config dict for the Node connector's environment variables."""
    problems: list[str] = []
    key = env.get("ABLY_API_KEY")
    if not key:
        problems.append("ABLY_API_KEY: not set")
    postgres = _postgres(
        {"host": env.get("DB_HOST"), "port": env.get("DB_PORT"), "user": env.get("DB_USER"),
         "password": env.get("DB_PASSWORD"), "database": env.get("DB_NAME")},
        {"host": "DB_HOST", "port": "DB_PORT", "user": "DB_USER", "password": "DB_PASSWORD",
         "database": "DB_NAME"}, problems)
    raw = env.get("ABLY_CONNECTOR")
    mappings: Any = None
    if not raw:
        problems.append("ABLY_CONNECTOR: not set (the table → channel list, as JSON)")
    else:
        try:
            mappings = json.loads(raw)
        except ValueError as exc:
            problems.append(f"ABLY_CONNECTOR: not valid JSON: {exc}")
    routes = _routes(mappings, "ABLY_CONNECTOR", problems) if mappings is not None else []
    ably_options = _endpoint(env, problems)
    if problems:
        raise LegacyConfigError(problems)
    return _config(postgres, str(key), routes, ably_options)


def _postgres(values: Mapping[str, Any], names: Mapping[str, str],
              problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in values.items():
        if value is None or value == "":
            continue
        if field == "port":
            try:
                port = int(value)
            except (TypeError, ValueError):
                problems.append(f"{names[field]}: expected a port number, got {value!r}")
                continue
            if not 0 < port < 65536:
                problems.append(f"{names[field]}: expected a port number, got {value!r}")
                continue
            out["port"] = port
        elif not isinstance(value, str):
            problems.append(f"{names[field]}: expected a string")
        else:
            out[field] = value
    return out


def _routes(mappings: Any, where: str, problems: list[str]) -> list[dict[str, Any]]:
    if not isinstance(mappings, list) or not mappings:
        problems.append(f"{where}: expected a non-empty list of "
                        "{tablename, ablychannelname, operation}")
        return []
    routes = []
    for i, m in enumerate(mappings):
        at = f"{where}[{i}]"
        if not isinstance(m, dict):
            problems.append(f"{at}: expected an object")
            continue
        table, channel, op = m.get("tablename"), m.get("ablychannelname"), m.get("operation")
        for name, value in (("tablename", table), ("ablychannelname", channel),
                            ("operation", op)):
            if not isinstance(value, str) or not value:
                problems.append(f"{at}.{name}: required (a string)")
        if isinstance(op, str) and op and op.upper() not in OPERATIONS:
            problems.append(f"{at}.operation: unknown operation {op!r} "
                            "(expected INSERT, UPDATE, DELETE or TRUNCATE)")
        unknown = sorted(set(m) - {"tablename", "ablychannelname", "operation"})
        if unknown:
            problems.append(f"{at}: unknown key{'s' if len(unknown) > 1 else ''} "
                            + ", ".join(map(repr, unknown)))
        if all(isinstance(v, str) and v for v in (table, channel, op)) and (
                str(op).upper() in OPERATIONS):
            routes.append({
                "table": table,
                "operations": [str(op).lower()],
                "publisher": PUBLISHER,
                # our channel is a template: the Node connector's names are literal
                "channel": str(channel).replace("{", "{{").replace("}", "}}"),
            })
    return routes


def _endpoint(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """The Node connector always used Ably's main endpoint; ABLY_ENDPOINT (a routing policy
    or hostname) and ABLY_PORT point a converted config elsewhere without editing it."""
    out: dict[str, Any] = {}
    if env.get("ABLY_ENDPOINT"):
        out["endpoint"] = env["ABLY_ENDPOINT"]
    if env.get("ABLY_PORT"):
        if env["ABLY_PORT"].isdigit() and 0 < int(env["ABLY_PORT"]) < 65536:
            out["port"] = int(env["ABLY_PORT"])
        else:
            problems.append(f"ABLY_PORT: expected a port number, got {env['ABLY_PORT']!r}")
    return out


def _config(postgres: dict[str, Any], key: str, routes: list[dict[str, Any]],
            ably_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    # Our config expands ${VAR} and reads $$ as $; the Node connector's values are literal.
    postgres = {k: _literal(v) for k, v in postgres.items()}
    key = _literal(key)
    routes = [{k: _literal(v) for k, v in r.items()} for r in routes]
    out: dict[str, Any] = {}
    if postgres:
        out["postgres"] = postgres
    out["publishers"] = {PUBLISHER: {"type": "ably", "api_key": key,
                                     **{k: _literal(v) for k, v in (ably_options or {}).items()}}}
    out["routes"] = routes
    return out


def to_yaml(config: Mapping[str, Any], *, inline_secrets: bool = False) -> tuple[str, list[str]]:
    """The config as YAML, and the environment variables it expects. Unless
    ``inline_secrets``, the API key and the password become ``${ABLY_API_KEY}`` and
    ``${DB_PASSWORD}`` (the Node connector's own variable names): a config file is no place
    for them."""
    data = json.loads(json.dumps(config))  # a deep copy of plain data
    needed: list[str] = []
    if not inline_secrets:
        for publisher in data.get("publishers", {}).values():
            if "api_key" in publisher:
                publisher["api_key"] = "${ABLY_API_KEY}"
                needed.append("ABLY_API_KEY")
        if "password" in data.get("postgres", {}):
            data["postgres"]["password"] = "${DB_PASSWORD}"
            needed.append("DB_PASSWORD")
    header = ("# pgconnector config converted from an Ably Postgres connector config.\n"
              "# Each mapping is one route; every mapping is delivered.\n")
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return header + body, needed


def _literal(value: Any) -> Any:
    return value.replace("$", "$$") if isinstance(value, str) else value
