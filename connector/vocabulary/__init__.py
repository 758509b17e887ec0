"""The vocabulary: the values every layer speaks, at the bottom of the package.

Change events and messages, table names and operations, channel templates, the row filter
model, the config dataclasses and ConfigError, and the outcome of a delivery. Pure data and
small pure functions; importing nothing of ours (checked by ``make lint``: .importlinter).
"""

from connector.vocabulary.config import (
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
    backoff,
    format_path,
    join_path,
)
from connector.vocabulary.events import ChangeEvent, Message
from connector.vocabulary.executor import ConnectionLost, Executor, Row
from connector.vocabulary.filter import Condition, Filter
from connector.vocabulary.names import (
    BUILTIN_FIELDS,
    OPERATIONS,
    ChannelTemplate,
    TableName,
    display_ident,
    parse_table,
    parse_template,
    qualified,
    quote_ident,
)
from connector.vocabulary.outcome import (
    DeadLetter,
    Outcome,
    Parked,
    PartialFailure,
    PermanentError,
    PublishError,
    RetryableError,
)
from connector.vocabulary.snapshot import Snapshot

__all__ = [
    "BUILTIN_FIELDS", "OPERATIONS", "OPERATOR_RETRY", "CaptureConfig", "ChangeEvent",
    "ChannelTemplate", "Condition", "Config", "ConfigError", "ConnectionLost", "DeadLetter",
    "Executor", "Filter", "HandlerConfig", "LiveAuth", "LiveConfig", "LiveRule",
    "LoggingConfig", "Message", "OperatorConfig", "Outcome", "Parked", "PartialFailure",
    "PermanentError", "PostgresConfig", "PublishError", "PublisherConfig", "RetryConfig",
    "RetryableError", "Route", "Row", "ServerConfig", "Snapshot", "TableName", "backoff",
    "display_ident", "format_path", "join_path", "parse_table", "parse_template", "qualified",
    "quote_ident",
]
