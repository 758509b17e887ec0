"""A database snapshot as ``pg_current_snapshot()`` writes it: which transactions it sees."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """``pg_current_snapshot()``: which transactions it shows as committed (a handler's
    subscription skips their changes; the wal source's writer waits until a batch's are).
    Compared on 32 bits with wraparound, so it applies to the trigger source's txids and the
    wal source's xids alike (an event in flight is never 2^31 transactions away)."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin) & 0xFFFFFFFF, int(xmax) & 0xFFFFFFFF,
                   frozenset(int(x) & 0xFFFFFFFF for x in xip.split(",") if x))

    def committed_before(self, txid: int) -> bool:
        x = txid & 0xFFFFFFFF
        since_xmin = (x - self.xmin) & 0xFFFFFFFF
        if since_xmin >= 0x80000000:  # before xmin: finished before the snapshot
            return True
        if since_xmin >= ((self.xmax - self.xmin) & 0xFFFFFFFF):  # xmax or later
            return False
        return x not in self.xip
