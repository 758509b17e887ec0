"""Loading SQL from ``sql/`` and filling in identifiers.

Placeholders are ``{name}`` for a fixed set of names; each is replaced by an identifier
already quoted with :func:`quote_ident` (or a fixed keyword list built by the caller). Values
travel as bind parameters (``$1``…), with one exception: a trigger's WHEN clause cannot take
parameters, so connector/filters/ renders filter values there as escaped, typed literals.
"""

from __future__ import annotations

import re

from connector import resources
from connector.vocabulary import qualified, quote_ident

__all__ = ["Queries", "load", "qualified", "quote_ident"]

_PLACEHOLDER = re.compile(
    r"\{(schema|table|row_trigger|insert_trigger|update_trigger|delete_trigger|"
    r"truncate_trigger|events|when|count|type|publication|tables|identity|column|target|target_key|exists)\}")


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
        self.schema_name = schema  # as written (error messages, bound as a value)
        self.schema = quote_ident(schema)
        self.legacy_row_trigger_name = f"{schema}_capture_v1"  # before per-operation triggers
        self.op_trigger_names = {op: f"{schema}_{op}_v1" for op in ("insert", "update", "delete")}
        self.truncate_trigger_name = f"{schema}_truncate_v1"
        self.trigger_names = [*self.op_trigger_names.values(), self.truncate_trigger_name]

    def get(self, name: str, **idents: str) -> str:
        names = {"schema": self.schema,
                 "row_trigger": quote_ident(self.legacy_row_trigger_name),
                 "truncate_trigger": quote_ident(self.truncate_trigger_name),
                 **{f"{op}_trigger": quote_ident(n) for op, n in self.op_trigger_names.items()}}
        return load(name, **{**names, **idents})
