"""The benchmark harness's pure helpers: statistics, formatting, the results table, parsing."""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.common import (
    at_least,
    at_most,
    fmt_num,
    fmt_ratio,
    is_flat,
    parse_only,
    parse_proc_stat,
    percentile,
    rates_per_second,
    ratio,
)
from bench.database import parse_pgbench
from bench.latency import latencies_ms
from bench.operators import Backlog, Drained
from bench.ref_publisher import payloads
from bench.report import Row, fmt_duration, render_table, target_counts
from bench.run import output_paths, parse_args
from bench.wal import COPIED, cluster_setting
from tests.e2e.support import REPO_ROOT


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(list(reversed(values)), 1) == 1
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_ratio_and_formatting() -> None:
    assert ratio(3.0, 4.0) == 0.75
    assert ratio(None, 4.0) is None
    assert ratio(3.0, 0.0) is None
    assert fmt_num(12345.678) == "12,346"
    assert fmt_num(1.234, 2) == "1.23"
    assert fmt_num(None) == "n/a"
    assert fmt_ratio(0.8765) == "0.88"
    assert fmt_ratio(5.16, "x") == "5.16x"
    assert fmt_ratio(None) == "n/a"
    assert fmt_duration(45.2) == "45 s"
    assert fmt_duration(1900) == "32 min"


def test_target_cells_say_met_or_missed() -> None:
    assert at_least(0.91, 0.90, "≥ 0.90") == "≥ 0.90 (met)"
    assert at_least(0.90, 0.90, "≥ 0.90") == "≥ 0.90 (met)"
    assert at_least(0.77, 0.90, "≥ 0.90") == "≥ 0.90 (missed)"
    assert at_least(None, 0.90, "≥ 0.90") == "≥ 0.90 (n/a)"
    assert at_most(1.9, 2.0, "≤ 2 ms") == "≤ 2 ms (met)"
    assert at_most(4.1, 4.0, "≤ 4 ms") == "≤ 4 ms (missed)"


def test_table_renders_rows_and_counts_targets() -> None:
    rows = [Row("P1 a | b", "1", "2", "0.50", "≥ 0.90 (missed)"),
            Row("P3", "70,000", "150,000", "0.47", "≥ 60,000/s (met)"),
            Row("P2 update", "3", "1", "3.00x", "—")]
    table = render_table(rows)
    lines = table.splitlines()
    assert lines[0] == "| measure | pgconnector | reference (same run) | ratio | target |"
    assert lines[1] == "|---|---:|---:|---:|---|"
    assert lines[2] == "| P1 a \\| b | 1 | 2 | 0.50 | ≥ 0.90 (missed) |"  # pipes escaped
    assert len(lines) == 5
    assert target_counts(rows) == (1, 2)


def test_parse_only() -> None:
    assert parse_only(None) == ("P1", "P2", "P3", "P4", "P5", "idle", "H", "L", "O", "WAL")
    assert parse_only("wal, p3") == ("P3", "WAL")
    assert parse_only("h") == ("H",)
    assert parse_only("wal,o") == ("O", "WAL")
    assert parse_only("p3, P1,IDLE,p3") == ("P1", "P3", "idle")  # canonical order, no repeats
    with pytest.raises(ValueError, match="P9"):
        parse_only("P1,P9")


def test_operator_backlog() -> None:
    # 1 % posts, then comment inserts and updates 2:1; both layouts write the same changes.
    spread, clustered = Backlog.of(100_000), Backlog.of(100_000, clustered=True)
    assert (spread.posts, spread.inserts, spread.updates) == (1_000, 66_000, 33_000)
    assert spread.changes == clustered.changes == 100_000
    assert (Backlog.of(2_000).posts, Backlog.of(2_000).changes) == (20, 2_000)
    assert Backlog.of(50).posts == 1
    assert "round robin" in spread.describe() and "post after post" in clustered.describe()
    drained = Drained(4.0, 100_000, daemon_cpu=0.42, backend_cpu=0.5, merges=2_500)
    assert drained.rate == 25_000
    assert drained.detail() == ("100,000 in 4.0 s; 2,500 MERGE runs (40.0 changes each); "
                                "daemon CPU 42% of a core, its PostgreSQL sessions 50%")
    assert Drained(2.0, 1_000).detail() == "1,000 in 2.0 s"


def test_wal_options() -> None:
    args = parse_args(["--only", "WAL", "--seconds", "3", "--rounds", "1"])
    assert (args.only, args.seconds, args.rounds) == ("WAL", 3, 1)


def test_wal_cluster_settings_are_plain_words() -> None:
    # What SHOW answers for the copied settings passes; anything a shell could read does not.
    shown = {"fsync": "on", "shared_buffers": "128MB", "checkpoint_timeout": "5min",
             "wal_buffers": "4MB", "max_wal_size": "1GB", "synchronous_commit": "remote_apply"}
    assert [cluster_setting(n, v) for n, v in shown.items()][:2] == [
        "fsync=on", "shared_buffers=128MB"]
    assert set(COPIED) >= set(shown)
    for bad in ("", "1 GB", "on;rm", "$(x)", "'on'"):
        with pytest.raises(ValueError):
            cluster_setting("fsync", bad)


def test_rates_per_second_from_cumulative_counts() -> None:
    samples = [(0.0, 0.0), (0.5, 500.0), (1.0, 1000.0), (2.0, 4000.0), (2.5, 4500.0)]
    assert rates_per_second(samples) == [(0.0, 1000.0), (1.0, 3000.0), (2.0, 1000.0)]
    # Bucket edges between samples are interpolated; the start is the first sample's time.
    assert rates_per_second([(10.0, 0.0), (12.0, 400.0)]) == [(0.0, 200.0), (1.0, 200.0)]
    assert rates_per_second([(0.0, 5.0)]) == []


def test_rss_is_flat_within_the_slack() -> None:
    assert is_flat(60_000, 60_000 + 10 * 1024)
    assert not is_flat(60_000, 60_000 + 10 * 1024 + 1)


def test_proc_stat_cpu_seconds() -> None:
    # A command name with spaces and parentheses must not shift the fields.
    fields = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 30
    text = "1234 (python (bench) x) " + " ".join(fields)
    assert parse_proc_stat(text) == pytest.approx(300 / 100)  # CLK_TCK is 100 on Linux


def test_parse_pgbench_report() -> None:
    text = """transaction type: insert.sql
scaling factor: 1
number of clients: 8
duration: 10 s
number of transactions actually processed: 171234
number of failed transactions: 0 (0.000%)
latency average = 0.467 ms
initial connection time = 12.345 ms
tps = 17123.456789 (without initial connection time)
"""
    result = parse_pgbench(text)
    assert result.tps == pytest.approx(17123.456789)
    assert result.transactions == 171234
    with pytest.raises(RuntimeError):
        parse_pgbench("pgbench: error")


def test_latencies_from_the_subscriber_records() -> None:
    written = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.UTC)
    event = orjson.dumps({"new": {"name": "steady-7", "updated_at": written.isoformat()}})
    other = orjson.dumps({"new": {"name": "warmup-steady-1", "updated_at": written.isoformat()}})
    truncate = orjson.dumps({"new": None, "op": "truncate"})
    records = [(written.timestamp() + 0.0025, event), (written.timestamp() + 1, other),
               (written.timestamp() + 1, truncate)]
    assert latencies_ms(records, "steady") == [pytest.approx(2.5, abs=1e-3)]


def test_reference_payloads_keep_the_event_size() -> None:
    sample = b'{"id":"905-17","op":"insert","schema":"public","new":{"id":1}}'
    before, after, txid, first = payloads(sample)
    assert (txid, first) == (905, 17)
    rebuilt = b'%s"id":"%d-%d"%s' % (before, txid, first + 3, after)
    assert orjson.loads(rebuilt)["id"] == "905-20"
    assert len(rebuilt) == len(sample)


def test_output_paths(tmp_path: Path) -> None:
    out, chart = output_paths(tmp_path / "x" / "res.md", smoke=False)
    assert (out, chart) == (tmp_path / "x" / "res.md", tmp_path / "x" / "res.png")
    assert out.parent.is_dir()
    out, chart = output_paths(None, smoke=False)
    assert (out.name, chart.name) == ("RESULTS.md", "results.png")
    assert out.parent == chart.parent == Path(__file__).resolve().parents[2] / "bench"


def imported_modules(source: Path) -> set[str]:
    """Every module ``source`` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_bench_imports_nothing_from_the_tests() -> None:
    """bench/ is a tool of its own: the tests may use its helpers, never the other way."""
    sources = sorted((REPO_ROOT / "bench").glob("*.py"))
    assert len(sources) > 10
    uses = {f"{s.name}: {m}" for s in sources for m in imported_modules(s)
            if m == "tests" or m.startswith("tests.")}
    assert uses == set()
    # And at run time: every bench module imported, no module of the tests loaded with them.
    code = ("import importlib, sys\n"
            f"for name in {[f'bench.{s.stem}' for s in sources]!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'tests' or m.startswith('tests.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"
