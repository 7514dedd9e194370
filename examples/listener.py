"""Typed messages with a listener: ``hypercorn -k trio examples.listener:app``.

(Or plain ``hypercorn examples.listener:app`` for the asyncio worker.) Connect to
``ws://127.0.0.1:8000/calc`` and send JSON, one of two kinds told apart by ``type``:

- ``{"type": "add", "a": 1, "b": 2}`` is answered with ``{"type": "sum", "result": 3}``;
- ``{"type": "greet", "name": "ada"}`` with ``{"type": "greeting", "text": "Hello, ada!"}``.

Anything else closes the connection with 1007 and a reason naming what did not fit.
"""

from __future__ import annotations

import msgspec

import plait


class Add(msgspec.Struct, tag="add"):
    """Add two numbers."""

    a: float
    b: float


class Greet(msgspec.Struct, tag="greet"):
    """Greet someone by name."""

    name: str


class Sum(msgspec.Struct, tag="sum"):
    """The answer to :class:`Add`."""

    result: float


class Greeting(msgspec.Struct, tag="greeting"):
    """The answer to :class:`Greet`."""

    text: str


@plait.listener("/calc")
async def calc(data: Add | Greet) -> Sum | Greeting:
    """Answer each message; it arrives decoded and validated by msgspec."""
    match data:
        case Add(a=a, b=b):
            return Sum(result=a + b)
        case Greet(name=name):
            return Greeting(text=f"Hello, {name}!")


app = plait.App(routes=[calc])
