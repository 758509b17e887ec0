"""Loading the config: read a file, expand the environment, validate, cross-check.

Order matters: parse → expand ``${VAR}`` → JSON Schema → cross-references. Every problem is
collected (not just the first) and reported as ``key.path: message``; nothing here opens a
connection, so an invalid file never touches the database.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from connector import resources
from connector.compat import ably as ably_compat
from connector.filters.parse import parse_where
from connector.operators import loops
from connector.publishers.registry import publisher_class
from connector.vocabulary import (
    OPERATIONS,
    OPERATOR_RETRY,
    CaptureConfig,
    Config,
    ConfigError,
    HandlerConfig,
    LiveAuth,
    LiveConfig,
    LiveRule,
    LoggingConfig,
    OperatorConfig,
    PostgresConfig,
    PublisherConfig,
    RetryConfig,
    Route,
    ServerConfig,
    TableName,
    format_path,
    join_path,
    parse_table,
    parse_template,
)


def load(path: str | os.PathLike[str]) -> Config:
    """The config in file ``path`` (ours, or the Ably connector's, converted)."""
    data = read_config_data(path)
    try:
        return parse(data, source=str(path))
    except ConfigError as exc:  # name a converted legacy config's keys as its file does
        raise ConfigError(ably_compat.remap_problems(data, exc.problems)) from None


def from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    return parse(data, source=source)


def check_legacy(data: ably_compat.LegacyConfig, *, key_written: bool = True) -> list[str]:
    """The normal validation's problems with a converted legacy config, under the legacy
    names; the API key's format only if ``key_written`` (else the output holds a reference)."""
    try:
        parse(data, env={})
    except ConfigError as exc:
        key = data.paths.get(f"publishers.{ably_compat.PUBLISHER}.api_key", "")
        return [p for p in ably_compat.remap_problems(data, exc.problems)
                if key_written or not p.startswith(key + ": ")]
    return []


# --------------------------------------------------------------------------- reading


def read_config_data(path: str | os.PathLike[str]) -> Any:
    """A config file's data: ours (YAML or JSON), or the Ably Postgres connector's
    ``default.json`` / ``.env``, converted to ours (connector/compat/ably.py)."""
    try:
        if ably_compat.is_env_path(path):
            if not Path(path).exists() and "ABLY_CONNECTOR" in os.environ:
                # as the Node connector (dotenv skips a missing file): the environment alone
                return ably_compat.from_env(ably_compat.env_only(os.environ))
            env = ably_compat.read_env_file(_read_text(Path(path)), os.environ)
            return ably_compat.from_env(env)
        data = read_file(path)
        return ably_compat.from_json(data) if ably_compat.is_legacy(data) else data
    except ably_compat.LegacyConfigError as exc:
        raise ConfigError(exc.problems) from None


def read_file(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML or JSON file; errors name the file and the line."""
    p = Path(path)
    text = _read_text(p)
    try:
        # YAML 1.2 is a superset of JSON, so one parser reads both.
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError([f"{p}: invalid YAML at {where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{p}: invalid YAML: {exc}"]) from None


def _read_text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{p}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{p}: is a directory, not a config file"]) from None
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: not UTF-8 text"]) from None


_VAR = re.compile(r"\$(\$)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, env: Mapping[str, str], path: str = "") -> tuple[Any, list[str]]:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``."""
    problems: list[str] = []
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(1):
                return "$"
            name, default = m.group(2), m.group(3)
            got = env.get(name)
            if got is not None and (got != "" or default is None):
                return got
            if default is not None:
                return default
            problems.append(f"{path or '<root>'}: environment variable {name} is not set")
            return ""

        return _VAR.sub(sub, value), problems
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            out[k], p = expand_env(v, env, join_path(path, str(k)))
            problems += p
        return out, problems
    if isinstance(value, list):
        items = []
        for i, v in enumerate(value):
            item, p = expand_env(v, env, f"{path}[{i}]")
            items.append(item)
            problems += p
        return items, problems
    return value, problems


# --------------------------------------------------------------------------- validation


_validator: jsonschema.protocols.Validator | None = None


def _schema_validator() -> jsonschema.protocols.Validator:
    global _validator
    if _validator is None:
        schema = json.loads(resources.schema_text())
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _validator = cls(schema)
    return _validator


def _leaf_errors(errors: Any) -> Iterator[Any]:
    for err in errors:
        # if/then and allOf wrap the useful error; report the innermost ones.
        if err.context:
            yield from _leaf_errors(err.context)
        else:
            yield err


def _describe(err: Any) -> str:
    kind = "propertyNames" if "propertyNames" in err.schema_path else err.validator
    if kind == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        return "unknown key" + ("s " if len(extra) > 1 else " ") + ", ".join(map(repr, extra))
    if kind == "required":
        return str(err.message).replace(" is a required property", " is required")
    if kind == "type":
        return f"expected {err.validator_value}, got {_json_type(err.instance)}"
    if kind in ("enum", "const"):
        allowed = err.validator_value if kind == "enum" else [err.validator_value]
        return f"{err.instance!r} is not one of {', '.join(map(str, allowed))}"
    if kind == "pattern":  # never echo the value: it may be a secret (an API key)
        return str(err.schema.get("x-pattern-message") or f"does not match {err.validator_value}")
    if kind == "propertyNames":
        return "invalid name: use letters, digits, '_' and '-', starting with a letter or '_'"
    return str(err.message)


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def schema_problems(data: Any) -> list[str]:
    problems = []
    for err in sorted(_leaf_errors(_schema_validator().iter_errors(data)),
                      key=lambda e: [str(p) for p in e.absolute_path]):
        path = list(err.absolute_path)
        if "propertyNames" in err.schema_path:
            path.append(err.instance)
        line = f"{format_path(path)}: {_describe(err)}"
        if line not in problems:
            problems.append(line)
    return problems


def parse(data: Any, source: str = "<dict>", env: Mapping[str, str] | None = None) -> Config:
    if data is None:
        raise ConfigError([f"{source}: empty config"])
    if not isinstance(data, dict):
        got = _json_type(data)
        raise ConfigError([f"{source}: expected a mapping at the top level, got {got}"])
    data, env_problems = expand_env(data, os.environ if env is None else env)
    unset = {p.split(": ")[0] for p in env_problems}
    # An unset variable also fails the schema at its key; say it once.
    problems = env_problems + [p for p in schema_problems(data) if p.split(": ")[0] not in unset]

    raw_publishers = data.get("publishers") if isinstance(data.get("publishers"), dict) else {}
    publishers: dict[str, PublisherConfig] = {}
    for name, raw in raw_publishers.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            continue
        options = {k: v for k, v in raw.items() if k not in ("type", "retry")}
        try:
            cls = publisher_class(raw["type"])
        except LookupError as exc:
            problems.append(f"{join_path('publishers', name)}.type: {exc.args[0]}")
            continue
        problems += [join_path("publishers", name) + p for p in cls.check_options(options)]
        raw_retry = raw.get("retry")
        # (an unknown or mistyped key is a schema problem already reported)
        retry = {k: v for k, v in raw_retry.items() if k in RetryConfig.__dataclass_fields__
                 } if isinstance(raw_retry, dict) else {}
        publishers[name] = PublisherConfig(name, raw["type"], options, RetryConfig(**retry))

    routes: list[Route] = []
    raw_routes = data.get("routes") if isinstance(data.get("routes"), list) else []
    for i, raw in enumerate(raw_routes):
        where = f"routes[{i}]"
        if not isinstance(raw, dict):
            continue
        table = channel = None
        if isinstance(raw.get("table"), str):
            try:
                table = parse_table(raw["table"])
            except ValueError as exc:
                problems.append(f"{where}.table: {exc}: {raw['table']!r}")
        if isinstance(raw.get("publisher"), str) and raw["publisher"] not in raw_publishers:
            known = ", ".join(sorted(raw_publishers)) or "none"
            problems.append(f"{where}.publisher: unknown publisher {raw['publisher']!r} "
                            f"(defined: {known})")
        if isinstance(raw.get("channel"), str):
            try:
                channel = parse_template(raw["channel"])
            except ValueError as exc:
                problems.append(f"{where}.channel: {exc}")
        row_filter = None
        if isinstance(raw.get("where"), dict):
            row_filter, filter_problems = parse_where(raw["where"], f"{where}.where")
            problems += filter_problems
        if "columns" in raw and "ignore_columns" in raw:
            problems.append(f"{where}: give columns or ignore_columns, not both")
        if table is not None and channel is not None and not problems:
            columns = raw.get("columns")
            routes.append(Route(
                i, table, frozenset(raw.get("operations", OPERATIONS)), raw["publisher"],
                channel, where=row_filter, transitions=raw.get("transitions", True),
                columns=tuple(columns) if columns is not None else None,
                ignore_columns=tuple(raw.get("ignore_columns", ())),
                split_key_change=raw.get("split_key_change", False),
                include_types=raw.get("include_types", False)))

    handlers: list[HandlerConfig] = []
    raw_handlers = data.get("handlers") if isinstance(data.get("handlers"), list) else []
    for i, raw in enumerate(raw_handlers):
        if not isinstance(raw, dict) or not isinstance(raw.get("call"), str):
            continue  # a schema problem, reported
        try:
            function = resolve_call(raw["call"])
        except ValueError as exc:
            problems.append(f"handlers[{i}].call: {exc}")
            continue
        options = {k: v for k, v in raw.items() if k not in ("table", "operations", "call")}
        try:
            handlers.append(handler_config(
                raw.get("table"), function, raw.get("operations"), options, f"handlers[{i}]",
                call=raw["call"], checked=True))
        except ConfigError as exc:
            problems += exc.problems

    live, live_problems = parse_live(data.get("live"))
    problems += live_problems

    raw_operators = data.get("operators") if isinstance(data.get("operators"), list) else []
    operators, operator_problems = parse_operators(raw_operators)
    problems += operator_problems

    pg = data.get("postgres", {})
    if isinstance(pg, dict) and len(str(pg.get("schema", "pgconnector")).encode()) > 40:
        problems.append("postgres.schema: at most 40 bytes")
    cap = data.get("capture", {})
    if isinstance(cap, dict):
        defaults = CaptureConfig()
        interval = cap.get("liveness_interval", defaults.liveness_interval)
        timeout = cap.get("liveness_timeout", defaults.liveness_timeout)
        takeover = cap.get("takeover_after", defaults.takeover_after)
        if all(isinstance(v, int | float) for v in (interval, timeout, takeover)) and \
                takeover <= interval + timeout:
            # Else a standby could end a live active instance that is merely between pings.
            problems.append(f"capture.takeover_after: must exceed liveness_interval + "
                            f"liveness_timeout ({interval + timeout:g} s), got {takeover:g}")
    if problems:
        raise ConfigError(problems)
    log = data.get("logging", {})
    server = data.get("server")
    return Config(
        publishers=publishers,
        routes=tuple(routes),
        handlers=tuple(handlers),
        operators=tuple(operators),
        postgres=PostgresConfig(**pg),
        capture=CaptureConfig(**data.get("capture", {})),
        logging=LoggingConfig(**log),
        server=ServerConfig(**server) if server is not None else None,
        live=live,
        source=source,
    )


# --------------------------------------------------------------------------- live

_SYMMETRIC = ("HS256", "HS384", "HS512")


def parse_live(raw: Any) -> tuple[LiveConfig | None, list[str]]:
    """The ``live:`` section (its structure already checked by the schema): tables, the
    token rules, where_claims; problems as ``live.key: message`` lines."""
    if not isinstance(raw, dict):
        return None, []
    problems: list[str] = []
    tables = []
    for i, text in enumerate(raw.get("tables") or []):
        try:
            tables.append(parse_table(text))
        except (ValueError, TypeError) as exc:
            problems.append(f"live.tables[{i}]: {exc}: {text!r}")
    auth_raw: dict[str, Any] = raw["auth"] if isinstance(raw.get("auth"), dict) else {}
    jwt = auth_raw.get("jwt") if isinstance(auth_raw.get("jwt"), dict) else None
    anonymous = auth_raw.get("anonymous", False) is True
    algorithms = tuple((jwt or {}).get("algorithms", ["HS256"]))
    if jwt is None and not anonymous:
        problems.append("live.auth: give jwt (secret or public_key), or anonymous: true to "
                        "let anyone subscribe")
    if jwt is not None:
        has_secret, has_key = "secret" in jwt, "public_key" in jwt
        if has_secret == has_key:
            problems.append("live.auth.jwt: give secret (HS*) or public_key, one of them")
        elif has_secret and any(a not in _SYMMETRIC for a in algorithms):
            problems.append("live.auth.jwt.algorithms: a secret signs HS256/384/512 only")
        elif has_key and any(a in _SYMMETRIC for a in algorithms):
            problems.append("live.auth.jwt.algorithms: a public_key verifies asymmetric "
                            "algorithms only (HS* need the secret)")
    rules = []
    for i, rule in enumerate(raw.get("rules") or []):
        if not isinstance(rule, dict) or not isinstance(rule.get("table"), str):
            continue
        try:
            table = parse_table(rule["table"])
        except ValueError as exc:
            problems.append(f"live.rules[{i}].table: {exc}: {rule['table']!r}")
            continue
        if table not in tables:
            problems.append(f"live.rules[{i}].table: {table} is not in live.tables")
        rules.append(LiveRule(table, dict(rule.get("where_claims") or {})))
    if problems:
        return None, problems
    replay = raw.get("replay") or {}
    origins = raw.get("allowed_origins")
    auth = LiveAuth(secret=(jwt or {}).get("secret"), public_key=(jwt or {}).get("public_key"),
                    algorithms=algorithms, audience=(jwt or {}).get("audience"),
                    issuer=(jwt or {}).get("issuer"), anonymous=anonymous)
    return LiveConfig(
        tables=tuple(tables), auth=auth, host=raw.get("host", "127.0.0.1"),
        port=raw.get("port", 8765), path=raw.get("path", "/live"), rules=tuple(rules),
        allowed_origins=tuple(origins) if origins is not None else None,
        replay_events=replay.get("events", 10_000), replay_seconds=replay.get("seconds", 300),
        client_queue=raw.get("client_queue", 1_000),
        max_subscriptions=raw.get("max_subscriptions", 20),
        max_message_bytes=raw.get("max_message_bytes", 16_384)), []


# --------------------------------------------------------------------------- operators


def parse_operators(raw: list[Any]) -> tuple[list[OperatorConfig], list[str]]:
    """The ``operators:`` entries (their structure already checked by the schema), with the
    checks that need no database: names, tables, delete_with, target, loops through the
    declared targets (connector/store/operators.py checks the SQL against the database)."""
    problems: list[str] = []
    out: list[OperatorConfig] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        path = f"operators[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("tables"), dict):
            continue  # a schema problem, reported
        name = item["name"]
        if name in names:
            problems.append(f"{path}.name: {name!r} is used by an earlier operator")
        names.add(name)
        try:
            options = {k: v for k, v in item.items() if k not in ("name", "tables", "call")}
            function = None
            if isinstance(item.get("call"), str):
                try:
                    function = resolve_call(item["call"])
                except ValueError as exc:
                    problems.append(f"{path}.call: {exc}")
                    continue
            out.append(operator_config(name, item["tables"], function, options, path,
                                       call=item.get("call")))
        except ConfigError as exc:
            problems += exc.problems
    if not problems:
        problems += loops(out, {op.name: [op.target] for op in out if op.target is not None})
    return out, problems


@functools.cache
def _code_validator(kind: str, required: tuple[str, ...]) -> jsonschema.protocols.Validator:
    """The config's ``$defs/<kind>`` (handler, operator) without ``call``, for what code
    registers (it passes the function itself)."""
    schema = json.loads(resources.schema_text())
    definition = dict(schema["$defs"][kind])
    definition["properties"] = {k: v for k, v in definition["properties"].items()
                                if k != "call"}
    definition["required"] = list(required)
    return jsonschema.Draft202012Validator({**definition, "$defs": schema["$defs"]})


def _code_problems(kind: str, required: tuple[str, ...], data: Mapping[str, Any],
                   path: str) -> None:
    """Raise ConfigError with a ``path.key: message`` line per problem of ``data``."""
    validator = _code_validator(kind, required)
    problems = []
    for err in sorted(_leaf_errors(validator.iter_errors(dict(data))),
                      key=lambda e: [str(x) for x in e.absolute_path]):
        where = format_path(list(err.absolute_path))
        problems.append(f"{path}{'' if where == '<root>' else '.' + where}: {_describe(err)}")
    if problems:
        raise ConfigError(problems)


def operator_config(name: str, tables: Mapping[str, Any], function: Any,
                    options: Mapping[str, Any], path: str, *, call: str | None = None,
                    checked: bool = True) -> OperatorConfig:
    """An operator from its name, tables, Python function (or None) and options (the
    config's other keys); ``checked``: the config schema validated them already (else they
    are checked here: ``Connector.operator``). Problems raise ConfigError naming ``path``."""
    problems: list[str] = []
    if not checked:
        if function is not None and not callable(function):
            raise ConfigError([f"{path}: the operator must be callable, got "
                               f"{type(function).__name__}"])
        _code_problems("operator", ("name", "tables"),
                       {**options, "name": name, "tables": dict(tables)}, path)
    parsed: dict[TableName, str] = {}
    for text, column in tables.items():
        where = join_path(f"{path}.tables", str(text))
        try:
            table = parse_table(str(text))
        except ValueError as exc:
            problems.append(f"{where}: {exc}: {text!r}")
            continue
        if not isinstance(column, str) or not column:
            problems.append(f"{where}: expected the key column's name, got {column!r}")
        elif table in parsed:
            problems.append(f"{where}: {table} is listed twice")
        else:
            parsed[table] = column
    sql = options.get("sql")
    if (sql is None) == (function is None):
        problems.append(f"{path}: give sql or call (a Python operator), one of them")
    elif function is not None and not inspect.iscoroutinefunction(function):
        problems.append(f"{path}{'.call' if call else ''}: a Python operator is an "
                        "async def f(tx, key, events) (it runs on the transaction's "
                        "connection, on the event loop)")
    delete_with: set[TableName] = set()
    for j, text in enumerate(options.get("delete_with") or []):
        try:
            table = parse_table(str(text))
        except ValueError as exc:
            problems.append(f"{path}.delete_with[{j}]: {exc}: {text!r}")
            continue
        if table not in parsed:
            problems.append(f"{path}.delete_with[{j}]: {table} is not among the operator's "
                            "tables")
        delete_with.add(table)
    target = target_key = None
    raw_target = options.get("target")
    if isinstance(raw_target, dict):
        try:
            target = parse_table(str(raw_target.get("table")))
        except ValueError as exc:
            problems.append(f"{path}.target.table: {exc}: {raw_target.get('table')!r}")
        target_key = raw_target.get("key")
    if delete_with and target is None:
        problems.append(f"{path}.delete_with: needs target (the table and key column whose "
                        "row a delete removes)")
    if problems:
        raise ConfigError(problems)
    retry = options.get("retry")
    return OperatorConfig(
        name=name, tables=parsed, sql=sql, function=function,
        operations=frozenset(options.get("operations", ("insert", "update", "delete"))),
        on_truncate=options.get("on_truncate", "rebuild"), delete_with=frozenset(delete_with),
        target=target, target_key=target_key, rebuild_sql=options.get("rebuild_sql"),
        coalesce=options.get("coalesce", True),
        retry=dataclasses.replace(OPERATOR_RETRY, **retry) if isinstance(retry, dict)
        else OPERATOR_RETRY,
        path=path, call=call)


# --------------------------------------------------------------------------- handlers


def handler_config(table: Any, function: Any, operations: Any, options: Mapping[str, Any],
                   path: str, *, call: str | None = None, checked: bool = False
                   ) -> HandlerConfig:
    """A handler from its table, callable, operations and options (the config's keys), for
    ``handlers:`` entries and ``Connector.on`` / ``subscribe`` alike; ``checked``: the config
    schema validated them already. Problems raise ConfigError naming ``path``."""
    if not callable(function):
        raise ConfigError([f"{path}: the handler must be callable, got "
                           f"{type(function).__name__}"])
    data = dict(options)
    data["table"] = table
    if operations is not None:
        data["operations"] = list(operations)
    problems: list[str] = []
    if not checked:
        _code_problems("handler", ("table",), data, path)
    try:
        name = parse_table(data["table"])
    except ValueError as exc:
        raise ConfigError([f"{path}.table: {exc}: {data['table']!r}"]) from None
    row_filter = None
    if isinstance(data.get("where"), dict):
        row_filter, problems = parse_where(data["where"], f"{path}.where")
    if "columns" in data and "ignore_columns" in data:
        problems.append(f"{path}: give columns or ignore_columns, not both")
    if problems:
        raise ConfigError(problems)
    key = data.get("key")
    columns = data.get("columns")
    retry = data.get("retry") or {}
    return HandlerConfig(
        table=name, function=function,
        operations=frozenset(data.get("operations", OPERATIONS)), where=row_filter,
        columns=tuple(columns) if columns is not None else None,
        ignore_columns=tuple(data.get("ignore_columns", ())),
        transitions=data.get("transitions", True),
        split_key_change=data.get("split_key_change", False),
        key=(key,) if isinstance(key, str) else tuple(key) if key is not None else None,
        concurrency=data.get("concurrency", 1), retry=RetryConfig(**retry),
        timeout=data.get("timeout"), batch=data.get("batch"), path=path, call=call)


_CALL = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


def resolve_call(spec: str) -> Any:
    """The callable ``package.module:function`` names (``function`` may be ``Class.attr``);
    the working directory is importable, as for ``python -m``. ValueError says what is
    wrong in one line."""
    if not _CALL.fullmatch(spec):
        raise ValueError(f"expected \"package.module:function\", got {spec!r}")
    module_name, attrs = spec.split(":", 1)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module's own code failed
        raise ValueError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
                         ) from None
    done = module_name
    for attr in attrs.split("."):
        if not hasattr(target, attr):
            raise ValueError(f"{done!r} has no attribute {attr!r}")
        target = getattr(target, attr)
        done = f"{done}:{attr}" if ":" not in done else f"{done}.{attr}"
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable (it is {type(target).__name__})")
    return target


def coerce(config: Config | Mapping[str, Any] | str | os.PathLike[str]) -> Config:
    """Accept what ``Connector(...)`` accepts: a Config, a dict, or a file path."""
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return from_dict(config)
    return load(config)
