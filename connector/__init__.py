"""pgconnector: stream PostgreSQL row changes to pub/sub systems, durably."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "Connector", "__version__"]

from connector.connector import Connector
from connector.vocabulary import Config, ConfigError
