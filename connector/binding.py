"""Routes bound to their tables: filters typed by the columns' PostgreSQL types, column lists
checked, primary keys known. Done at ``install`` and ``start`` with what connector/store/
catalog.py read of the tables; a mistake is a config error (exit 2) naming the route's key
path. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from connector.filters.bind import bind_types
from connector.vocabulary import Config, ConfigError, Filter, Route, TableName


@dataclass(frozen=True)
class TableInfo:
    columns: tuple[str, ...]
    declared: Mapping[str, str]  # column → type as declared (format_type), for include_types
    types: Mapping[str, str]  # column → type as filters compare it (domains → their base)
    key: tuple[str, ...]  # primary key columns in key order; () when there is none
    generated: frozenset[str] = frozenset()  # generated (computed) columns


@dataclass(frozen=True)
class BoundRoute:
    route: Route
    info: TableInfo
    where: Filter | None  # typed
    keep: frozenset[str] | None  # the columns published; None = all
    watched: frozenset[str] | None  # an update changing none of these publishes nothing


def filter_type(type_name: str, is_enum: bool) -> str:
    """The type string connector.filters expects: enums marked ``enum:<name>``."""
    return f"enum:{type_name}" if is_enum else type_name


def bind(config: Config, infos: Mapping[TableName, TableInfo]) -> list[BoundRoute]:
    problems: list[str] = []
    bound = []
    for route in config.routes:
        info = infos.get(route.table)
        if info is None:  # install reports a missing table; the source never sees its rows
            continue
        at = route.at
        known = set(info.columns)
        for key, names in (("columns", route.columns or ()),
                           ("ignore_columns", route.ignore_columns)):
            for i, name in enumerate(names):
                if name not in known:
                    problems.append(f"{at}.{key}[{i}]: unknown column {name!r} in {route.table}")
        where = None
        if route.where is not None:
            where, where_problems = bind_types(route.where, info.types, f"{at}.where",
                                               table=str(route.table))
            problems += where_problems
        keep: frozenset[str] | None = None
        watched: frozenset[str] | None = None
        if route.columns is not None:
            keep = frozenset(route.columns) | frozenset(info.key)
            watched = keep
        elif route.ignore_columns:
            keep = frozenset(info.columns) - (frozenset(route.ignore_columns)
                                              - frozenset(info.key))
            watched = keep
        bound.append(BoundRoute(route, info, where, keep, watched))
    if problems:
        raise ConfigError(problems)
    return bound
