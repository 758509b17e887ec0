"""``handlers:`` in the config: a ``call`` that cannot be used is one line with its key path
(exit 2 from the CLI), before anything is installed; the options are a route's."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from connector.config import from_dict, resolve_call
from connector.handlers import Snapshot, handler_name, scrub, with_handlers
from connector.vocabulary import ConfigError
from tests.e2e.support import base_env, run

MODULE = """
import json

VALUE = 42

def on_change(event):
    pass

class Handlers:
    @staticmethod
    def ship(event):
        pass
"""


@pytest.fixture
def handlers_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"pgc_handlers_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    (tmp_path / f"{name}_broken.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def problems(handler: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        from_dict({"handlers": [handler]})
    return err.value.problems


def test_a_config_handler_resolves_and_gets_a_route(handlers_module: str) -> None:
    cfg = from_dict({"handlers": [
        {"table": "orders", "call": f"{handlers_module}:on_change", "operations": ["insert"],
         "key": "customer_id", "concurrency": 4, "retry": {"max_attempts": 3}, "timeout": 5},
        {"table": "users", "call": f"{handlers_module}:Handlers.ship",
         "where": {"plan": "pro"}, "batch": "transaction"}]})
    first, second = cfg.handlers
    assert first.function.__name__ == "on_change" and first.key == ("customer_id",)
    assert first.concurrency == 4 and first.retry.max_attempts == 3 and first.timeout == 5
    assert second.where is not None and second.batch == "transaction"
    routes = with_handlers(cfg).routes
    assert [r.publisher for r in routes] == [
        f"handler:{handlers_module}.on_change", f"handler:{handlers_module}.Handlers.ship"]
    assert [r.at for r in routes] == ["handlers[0]", "handlers[1]"]
    assert routes[0].operations == {"insert"}


@pytest.mark.parametrize(("call", "expected"), [
    ("nodots", 'handlers[0].call: expected "package.module:function", got \'nodots\''),
    ("no_such_module_xyz:f", "handlers[0].call: cannot import 'no_such_module_xyz': "
                             "No module named 'no_such_module_xyz'"),
    ("{m}_broken:f", "handlers[0].call: importing '{m}_broken' failed: RuntimeError: boom at "
                     "import"),
    ("{m}:missing", "handlers[0].call: '{m}' has no attribute 'missing'"),
    ("{m}:Handlers.nope", "handlers[0].call: '{m}:Handlers' has no attribute 'nope'"),
    ("{m}:VALUE", "handlers[0].call: '{m}:VALUE' is not callable (it is int)"),
])
def test_a_call_that_cannot_be_used_is_one_line(handlers_module: str, call: str,
                                                expected: str) -> None:
    got = problems({"table": "t", "call": call.format(m=handlers_module)})
    assert got == [expected.format(m=handlers_module)]


def test_handler_options_are_checked_with_their_path(handlers_module: str) -> None:
    call = f"{handlers_module}:on_change"
    assert problems({"table": "t", "call": call, "concurrency": 0}) == [
        "handlers[0].concurrency: 0 is less than the minimum of 1"]
    assert problems({"table": "t", "call": call, "batch": "row"}) == [
        "handlers[0].batch: 'row' is not one of transaction"]
    assert problems({"table": "t", "call": call, "colour": "red"}) == [
        "handlers[0]: unknown key 'colour'"]
    assert problems({"table": "t", "call": call, "columns": ["a"],
                     "ignore_columns": ["b"]}) == [
        "handlers[0]: give columns or ignore_columns, not both"]


def test_resolve_call_finds_modules_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cwd_handlers_mod.py").write_text("def f(event):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert resolve_call("cwd_handlers_mod:f").__name__ == "f"


def test_names_and_snapshots() -> None:
    def local(event: object) -> None: ...
    assert handler_name(local) == (
        f"handler:{__name__}.test_names_and_snapshots.<locals>.local")
    snap = Snapshot.parse("100:105:101,103")
    assert [snap.committed_before(x) for x in (99, 100, 101, 102, 103, 104, 105, 200)] == [
        True, True, False, True, False, True, False, False]
    # 32-bit xids of a later epoch compare on the same circle
    epoch = Snapshot.parse(f"{(1 << 32) + 10}:{(1 << 32) + 20}:")
    assert epoch.committed_before(5) and not epoch.committed_before(25)
    wrapped = Snapshot.parse(f"{(1 << 32) - 5}:{(1 << 32) + 5}:")
    assert wrapped.committed_before((1 << 32) - 6) and wrapped.committed_before(2)
    assert not wrapped.committed_before(6)


async def test_the_cli_refuses_a_bad_call_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent("""\
        postgres: {dsn: "postgresql://127.0.0.1:1/none"}
        handlers:
          - table: orders
            call: "no_such_module_xyz:ship"
        """))
    result = await run("validate", "-c", path, env=base_env(), cwd=tmp_path)
    assert result.code == 2, result
    assert result.stderr_lines == ["error: handlers[0].call: cannot import 'no_such_module_xyz':"
                                   " No module named 'no_such_module_xyz'"], result
    empty = tmp_path / "empty.yaml"
    empty.write_text("postgres: {dsn: \"postgresql://127.0.0.1:1/none\"}\n")
    result = await run("start", "-c", empty, env=base_env(), cwd=tmp_path)
    assert result.code == 2 and "nothing to capture" in result.stderr, result


def test_a_handler_error_loses_its_secrets() -> None:
    assert scrub("OperationalError: postgresql://app:s3cr%t@db:5432/x refused; "
                 "password=hunter2 api_key: 'k-123'") == (
        "OperationalError: postgresql://app:***@db:5432/x refused; password=*** api_key: ***")
    assert scrub("ValueError: no such customer 42") == "ValueError: no such customer 42"
