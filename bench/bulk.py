"""P2 - bulk writes: one statement inserting, and one updating, ``bulk_rows`` rows; wall time
with capture vs none."""

from __future__ import annotations

import statistics
import time

from bench.common import BULK_INSERT, BULK_UPDATE, PAYLOAD, at_most, fmt_num, fmt_ratio, log
from bench.database import Bench
from bench.machine import wait_until_quiet
from bench.report import Report, Row

TARGET_INSERT = 1.6  # capture ÷ none time of the bulk insert, at most


async def bulk_statement(bench: Bench, op: str, rows: int) -> float:
    """Run P2's one statement (insert ``rows`` rows, or update every row); milliseconds."""
    started = time.perf_counter()
    if op == "insert":
        await bench.db.execute(BULK_INSERT, PAYLOAD, 1, rows)
    else:
        await bench.db.execute(BULK_UPDATE)
    return (time.perf_counter() - started) * 1000


async def run_p2(bench: Bench, report: Report) -> None:
    s = report.settings
    for op in ("insert", "update"):
        runs: dict[str, list[float]] = {"none": [], "capture": []}
        for rnd in range(s.bulk_rounds):
            order = ("none", "capture") if rnd % 2 == 0 else ("capture", "none")
            for variant in order:
                await bench.set_capture(variant == "capture")
                await bench.reset(s.bulk_rows if op == "update" else 0)
                await wait_until_quiet(report, f"P2 {op} {variant} round {rnd + 1}")
                ms = await bulk_statement(bench, op, s.bulk_rows)
                if variant == "capture":
                    outbox = await bench.outbox_count()
                    if outbox != s.bulk_rows:
                        raise RuntimeError(f"P2 {op}: {s.bulk_rows} rows changed but {outbox} "
                                           "in the outbox")
                runs[variant].append(ms)
                log(f"P2 {op} of {s.bulk_rows:,} rows, round {rnd + 1}/{s.bulk_rounds}, "
                    f"{variant}: {ms:,.0f} ms")
        none, capture = statistics.median(runs["none"]), statistics.median(runs["capture"])
        r = capture / none
        statement = "INSERT…SELECT" if op == "insert" else "UPDATE (every row)"
        target = at_most(r, TARGET_INSERT, f"≤ {TARGET_INSERT}x") if op == "insert" else "—"
        report.add(Row(f"P2 one {statement} of {s.bulk_rows:,} rows (ms, median)",
                       fmt_num(capture), fmt_num(none), fmt_ratio(r, "x"), target))
        report.details.append(
            f"P2 {op} of {s.bulk_rows:,} rows: none " + ", ".join(fmt_num(x) for x in runs["none"])
            + " ms; capture " + ", ".join(fmt_num(x) for x in runs["capture"]) + " ms")
