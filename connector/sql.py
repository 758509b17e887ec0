"""Loading SQL from ``sql/`` and filling in identifiers.

Placeholders are ``{name}`` for a fixed set of names; each is replaced by an identifier
already quoted with :func:`quote_ident` (or a fixed keyword list built by the caller). Values
are never substituted: they travel as bind parameters (``$1``…).
"""

from __future__ import annotations

import re

from connector import resources
from connector.config import TableName

_PLACEHOLDER = re.compile(r"\{(schema|table|row_trigger|truncate_trigger|events)\}")


def quote_ident(name: str) -> str:
    """Always-quoted identifier, the same rule as PostgreSQL's quote_ident / format('%I')."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def qualified(table: TableName) -> str:
    return f"{quote_ident(table.schema)}.{quote_ident(table.name)}"


def load(name: str, **idents: str) -> str:
    """``sql/<name>.sql`` with its placeholders replaced by the given pre-quoted text."""
    text = resources.sql_text(f"{name}.sql")

    def fill(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in idents:
            raise KeyError(f"sql/{name}.sql needs {{{key}}}")
        return idents[key]

    return _PLACEHOLDER.sub(fill, text)


class Queries:
    """The statements of one installation (one schema), rendered once."""

    def __init__(self, schema: str) -> None:
        self.schema_name = schema
        self.schema = quote_ident(schema)
        self.row_trigger_name = f"{schema}_capture_v1"
        self.truncate_trigger_name = f"{schema}_truncate_v1"

    def get(self, name: str, **idents: str) -> str:
        return load(name, schema=self.schema, row_trigger=quote_ident(self.row_trigger_name),
                    truncate_trigger=quote_ident(self.truncate_trigger_name), **idents)
