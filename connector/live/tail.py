"""``pgconnector tail``: a client of the running daemon's live endpoint that prints events as
they happen - readable and coloured on a terminal, one JSON event per line otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import aiohttp
import jwt
import orjson
from rich.console import Console
from rich.text import Text

from connector.vocabulary import LiveConfig

TOKEN_SECONDS = 300  # a minted token's life; tail reconnects with a new one when it ends
_COLOURS = {"insert": "green", "update": "yellow", "delete": "red", "truncate": "magenta"}


class TailError(Exception):
    """One line for the user (exit 1)."""


def mint_token(live: LiveConfig, claims: Mapping[str, Any]) -> str:
    """A short-lived token signed with the configured HS secret."""
    if live.auth.secret is None:
        raise TailError("live.auth.jwt has no secret to sign a token with: pass --token")
    payload: dict[str, Any] = {"sub": "pgconnector-tail", **claims,
                               "exp": int(time.time()) + TOKEN_SECONDS}
    if live.auth.audience is not None:
        payload["aud"] = live.auth.audience
    if live.auth.issuer is not None:
        payload["iss"] = live.auth.issuer
    return jwt.encode(payload, live.auth.secret, algorithm=live.auth.algorithms[0])


def endpoint(live: LiveConfig, host: str | None = None) -> str:
    h = host or live.host
    if h in ("0.0.0.0", "::"):
        h = "127.0.0.1"
    if ":" in h:
        h = f"[{h}]"
    return f"http://{h}:{live.port}{live.path}"


def render(message: Mapping[str, Any]) -> Text:
    """One event, for a terminal: time, operation, table, id, then what changed."""
    event = message["event"]
    op = event.get("op", "?")
    line = Text()
    line.append(time.strftime("%H:%M:%S "), style="dim")
    line.append(f"{op:<8}", style=f"bold {_COLOURS.get(op, 'white')}")
    line.append(f"{event.get('schema')}.{event.get('table')} ", style="cyan")
    line.append(f"{event.get('id')} ", style="dim")
    if op == "update" and event.get("changes"):
        line.append(" ".join(f"{k}: {_short(v.get('old'))} → {_short(v.get('new'))}"
                             for k, v in event["changes"].items()))
    elif event.get("new") is not None or event.get("old") is not None:
        row = event.get("new") if event.get("new") is not None else event.get("old")
        line.append(orjson.dumps(row).decode())
    return line


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:39] + "…"


async def tail(live: LiveConfig, queries: Sequence[str], token: str | None,
               claims: Mapping[str, Any], *, host: str | None = None, out: TextIO = sys.stdout,
               limit: int | None = None) -> int:
    """Follow until interrupted (or ``limit`` events); returns how many were printed."""
    console = Console(file=out, highlight=False) if out.isatty() else None
    chosen = list(queries) or [f"*:{t}" for t in live.tables]
    url = endpoint(live, host)
    printed = 0
    last: str | None = None
    async with aiohttp.ClientSession() as session:
        while limit is None or printed < limit:
            params = [("query", q) for q in chosen]
            params.append(("token", token or mint_token(live, claims)))
            if last is not None:
                params.append(("since", last))
            try:
                ws = await session.ws_connect(url, params=params)
            except aiohttp.WSServerHandshakeError as exc:
                reason = "the token was refused" if exc.status == 401 else exc.message
                raise TailError(f"{url}: {exc.status} {reason}") from None
            except aiohttp.ClientError as exc:
                raise TailError(f"{url}: cannot connect ({exc}); is the daemon running with "
                                "live: configured?") from None
            async with ws:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    data = orjson.loads(msg.data)
                    if data.get("type") == "error":
                        raise TailError(f"{data.get('id') or 'query'}: {data.get('message')}")
                    if data.get("type") == "resync":
                        last = None
                        continue
                    if data.get("type") != "event":
                        continue
                    last = data["event"].get("id")
                    if console is not None:
                        console.print(render(data))
                    else:
                        out.write(orjson.dumps(data["event"]).decode() + "\n")
                        out.flush()
                    printed += 1
                    if limit is not None and printed >= limit:
                        return printed
            if ws.close_code == 4401 and token is not None:
                raise TailError(f"the token was refused: {ws.close_code}")
            if ws.close_code not in (None, 1000, 1013, 4401, 1006):
                raise TailError(f"the endpoint closed the connection ({ws.close_code})")
    return printed
