"""Rate limits and connection limits: ``hypercorn -k trio examples.limited:app``.

(Or plain ``hypercorn examples.limited:app`` for the asyncio worker.) Two endpoints:

- ``ws://127.0.0.1:8000/chat`` echoes what it gets, 20 messages a second (bursts of 40)
  at most; past that a message is dropped, and the client is told so at most once per
  token's interval: ``{"error": "rate limit exceeded", "retry_after": 0.05, ...}``.
  At most 1,000 clients at once: the next handshake gets HTTP 503.
- ``ws://127.0.0.1:8000/feed`` takes the App's limit: 5 messages a second, bursts of
  10; an eleventh message sent at once closes the connection with 1008.

The App holds at most 10,000 connections, whatever their route.
"""

from __future__ import annotations

import plait
from plait import RateLimit


@plait.listener(
    "/chat",
    rate_limit=RateLimit(messages=20, per=1.0, burst=40, on_exceed="reply"),
    max_connections=1_000,
)
async def chat(data: str) -> str:
    """Echo each message that the rate limit lets through."""
    return data


@plait.listener("/feed")
async def feed(data: str) -> str:
    """Acknowledge each message; a client over the App's limit is closed."""
    return f"got {data}"


app = plait.App(
    routes=[chat, feed],
    rate_limit=RateLimit(messages=5, per=1.0, burst=10, on_exceed="close"),
    max_connections=10_000,
)
