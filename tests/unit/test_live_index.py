"""The live sink's subscription index is a pre-filter only: for any subscriptions and any
change, what the candidates render equals what rendering every subscription gives."""

from __future__ import annotations

import random

from connector.binding import TableInfo
from connector.live.index import SubscriptionIndex
from connector.live.protocol import Catalog, Subscription
from connector.live.replay import Entry
from connector.vocabulary import TableName

INFO = TableInfo(("id", "name", "score"), {}, {"id": "integer", "name": "text",
                                                "score": "numeric"}, ("id",))
QUERIES = ["*:t", "insert:t:name.eq.a", "*:t:name.eq.b", "update|delete:t:id.eq.2",
           "*:t:id.eq.3", "*:t:score.gte.5", "*:t:name.in.(a,c)", "*:u", "*:u:name.eq.a"]


def test_candidates_render_what_a_full_scan_renders() -> None:
    rng = random.Random(7)
    catalog = Catalog({TableName("public", "t"): INFO, TableName("public", "u"): INFO}, ())
    index: SubscriptionIndex[int] = SubscriptionIndex()
    subs: dict[int, list[Subscription]] = {}
    for client in range(30):
        for i in range(rng.randrange(1, 4)):
            sub = catalog.from_query(i, rng.choice(QUERIES), {})
            subs.setdefault(client, []).append(sub)
            index.add(client, sub)
    for client in range(0, 30, 7):  # some unsubscribe again
        index.remove(client, subs[client].pop(0).id)

    def row() -> dict[str, object]:
        return {"id": rng.randrange(1, 5), "name": rng.choice("abcd"),
                "score": rng.randrange(10)}

    for seq in range(500):
        op = rng.choice(["insert", "update", "delete"])
        data = {"id": f"e{seq}", "op": op, "schema": "public", "table": rng.choice("tu"),
                "new": row() if op != "delete" else None,
                "old": row() if op != "insert" else None}
        entry = Entry(seq, str(data["id"]), "public", str(data["table"]), op, data)
        candidates = index.candidates(entry)
        for client, mine in subs.items():
            full = [s.render(entry) if s.table.name == entry.table else None for s in mine]
            fast = [s.render(entry) if s in candidates.get(client, []) else None for s in mine]
            assert fast == full, (entry, client)
