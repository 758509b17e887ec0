"""Loading and validating the config file.

Order matters: parse → expand ``${VAR}`` → JSON Schema → cross-references. Every problem is
collected (not just the first) and reported as ``key.path: message``; nothing here opens a
connection, so an invalid file never touches the database.
"""

from __future__ import annotations

import functools
import json
import os
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml

from connector import resources

if TYPE_CHECKING:
    from connector.filters import Filter

OPERATIONS = ("insert", "update", "delete", "truncate")
BUILTIN_FIELDS = frozenset({"schema", "table", "op"})


class ConfigError(Exception):
    """The config is invalid; ``problems`` holds one ``path: message`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class TableName:
    schema: str
    name: str

    def __str__(self) -> str:
        return f"{_display_ident(self.schema)}.{_display_ident(self.name)}"


@dataclass(frozen=True)
class ChannelTemplate:
    """A channel template split into literal text and fields, e.g. ``users:{op}``."""

    source: str
    parts: tuple[tuple[str, str | None], ...]  # (literal, field or None)

    @functools.cached_property
    def columns(self) -> frozenset[str]:  # read per event by the router: computed once
        return frozenset(f for _, f in self.parts if f is not None and f not in BUILTIN_FIELDS)


@dataclass(frozen=True)
class Route:
    index: int
    table: TableName
    operations: frozenset[str]
    publisher: str
    channel: ChannelTemplate
    where: Filter | None = None  # values not yet typed: connector.binding types them
    transitions: bool = True
    columns: tuple[str, ...] | None = None
    ignore_columns: tuple[str, ...] = ()
    split_key_change: bool = False
    include_types: bool = False

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


@dataclass(frozen=True)
class PublisherConfig:
    name: str
    type: str
    options: Mapping[str, Any]  # the adapter's own options (without type and retry)
    retry: RetryConfig = field(default_factory=RetryConfig)


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
    source: str = "trigger"  # or "wal" (connector/sources/wal.py)
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
class Config:
    publishers: Mapping[str, PublisherConfig]
    routes: tuple[Route, ...]
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    server: ServerConfig | None = None  # None: no `server:` section, no server
    source: str = "<dict>"

    @property
    def tables(self) -> dict[TableName, frozenset[str]]:
        """Every captured table with the union of its routes' operations."""
        out: dict[TableName, frozenset[str]] = {}
        for route in self.routes:
            out[route.table] = out.get(route.table, frozenset()) | route.operations
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Config:
        data = read_config_data(path)
        try:
            return parse(data, source=str(path))
        except ConfigError as exc:  # name a converted legacy config's keys as its file does
            from connector.ably_compat import remap_problems

            raise ConfigError(remap_problems(data, exc.problems)) from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Config:
        return parse(data, source=source)


# --------------------------------------------------------------------------- reading


def read_config_data(path: str | os.PathLike[str]) -> Any:
    """A config file's data: ours (YAML or JSON), or the Ably Postgres connector's
    ``default.json`` / ``.env``, converted to ours (connector/ably_compat.py)."""
    from connector import ably_compat

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
            out[k], p = expand_env(v, env, _join(path, str(k)))
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


def _join(path: str, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def format_path(parts: Any) -> str:
    path = ""
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, str(part))
    return path or "<root>"


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


def parse_table(text: str) -> TableName:
    """``schema.table`` or ``table``; a part may be double-quoted ("a.b", "x""y")."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise ValueError("unterminated double quote")
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            part, i = "".join(buf), j + 1
        else:
            j = text.find(".", i)
            j = n if j < 0 else j
            part, i = text[i:j].strip(), j
        if not part:
            raise ValueError("empty name")
        parts.append(part)
        if i >= n:
            break
        if text[i] != ".":
            raise ValueError(f"unexpected {text[i]!r} after a quoted name")
        i += 1
    if len(parts) > 2:
        raise ValueError("expected schema.table or table")
    if any(len(p.encode()) > 63 for p in parts):
        raise ValueError("a PostgreSQL name is at most 63 bytes")
    return TableName("public", parts[0]) if len(parts) == 1 else TableName(parts[0], parts[1])


def parse_template(text: str) -> ChannelTemplate:
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in string.Formatter().parse(text):
        if name is not None and (spec or conversion):
            raise ValueError(f"field {{{name}}} may not have a format spec or conversion")
        if name is not None and not name.strip():
            raise ValueError("empty {} field")
        parts.append((literal, name))
    return ChannelTemplate(text, tuple(parts))


def _display_ident(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


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

    from connector.filters import parse_where  # avoid an import cycle (filters → sql → config)
    from connector.publishers.base import publisher_class  # avoid an import cycle

    raw_publishers = data.get("publishers") if isinstance(data.get("publishers"), dict) else {}
    publishers: dict[str, PublisherConfig] = {}
    for name, raw in raw_publishers.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            continue
        options = {k: v for k, v in raw.items() if k not in ("type", "retry")}
        try:
            cls = publisher_class(raw["type"])
        except LookupError as exc:
            problems.append(f"{_join('publishers', name)}.type: {exc.args[0]}")
            continue
        problems += [_join("publishers", name) + p for p in cls.check_options(options)]
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
        postgres=PostgresConfig(**pg),
        capture=CaptureConfig(**data.get("capture", {})),
        logging=LoggingConfig(**log),
        server=ServerConfig(**server) if server is not None else None,
        source=source,
    )


def coerce(config: Config | Mapping[str, Any] | str | os.PathLike[str]) -> Config:
    """Accept what ``Connector(...)`` accepts: a Config, a dict, or a file path."""
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return Config.from_dict(config)
    return Config.load(config)
