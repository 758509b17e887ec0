"""pgconnector: stream PostgreSQL row changes to pub/sub systems, durably."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["ChangeEvent", "Config", "ConfigError", "Connector", "Subscription", "__version__"]

from connector import logs
from connector.connector import Connector, Subscription
from connector.handlers import ChangeEvent
from connector.vocabulary import Config, ConfigError

# Used as a library, pgconnector logs through the host program's `logging` setup (the
# `pgconnector` loggers) unless the host configured structlog itself; the CLI configures
# its own output instead.
logs.as_guest()
