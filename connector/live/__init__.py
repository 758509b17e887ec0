"""Live subscriptions: browsers and services subscribe over WebSocket or SSE to a table's
changes, filtered per client, authorized per row from their token's claims, resumable
within a replay buffer. A sink of the pipeline mounted on the daemon's HTTP host
(README: Live subscriptions).

``replay`` (the bounded buffer), ``auth`` (tokens), ``protocol`` (what clients send and
receive: pure) and ``sink`` (the Publisher with its aiohttp endpoints).
"""
