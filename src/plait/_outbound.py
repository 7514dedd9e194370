"""The outbound side of a connection: one queue, one writer, and the baton.

Every message leaves through ASGI ``send`` one at a time and in the order it was
queued. The writer owns the queue: it delivers what is queued, the close and the final
drain. But most sends find nothing queued and nobody sending; waking a writer task for
them would cost a task hop per message. So a sender that finds the outbound idle takes
the *baton* and makes the ``send`` call itself, as the writer's delegate:

- one at a time: the baton is a flag held for the duration of the call, and while it
  is held every other sender queues behind it, so order is kept;
- never cut halfway: the call is started by hand; one that completes without
  suspending cannot have been interrupted, and one that suspends finishes inside a
  shielded scope, so a sender cancelled meanwhile (a timeout of its own, a sibling's
  failure) sees its cancellation after the frame has left. Only the engine cuts a
  baton send short, when the connection is over anyway (the peer left, or the client
  was too slow);
- handed back: when the call returns and others queued meanwhile, the writer is woken
  (started on first use) to deliver them.

Every send is a checkpoint. One that waits (for room, or in the server's ``send``) is
one like any wait. The others count in :attr:`Outbound.ticks`, with the connection's
receives that found a message waiting: when :data:`~plait._backend.YIELD_EVERY` such
calls came in a row, the next one yields to the event loop first (a send that completes
without suspending would otherwise let a loop of them starve every other connection). A
send refused because the outbound is closed yields before it raises, so that a handler
that swallows the error still lets the engine in.

The writer task exists only once something had to queue. The baton is used on asyncio
only (see :func:`baton_allowed`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Generator
from functools import partial
from typing import Any

import anyio
import sniffio
from anyio import ClosedResourceError, EndOfStream, WouldBlock, get_cancelled_exc_class

from ._backend import YIELD_EVERY, waiters
from ._channel import Channel
from ._types import Message, Send

__all__ = ("Outbound", "baton_allowed")


def baton_allowed() -> bool:
    """Whether senders may make the server's ``send`` call themselves: on asyncio.

    Measured, the baton pays on asyncio, where a task hop is an event-loop iteration
    and a send to hypercorn completes without suspending. On trio a hop is cheap and a
    send always suspends, so the shield costs more than the hop it saves (3.5 µs
    against about 1.5 µs per message); and a trio server may shield its socket writes
    (hypercorn's trio worker does), which would hold a handler stuck in its own send
    past a deadline the engine must enforce. There every send goes through the writer.
    """
    return sniffio.current_async_library() == "asyncio"


class _Resume:
    """Await the rest of an awaitable whose first step already ran (``yield from``)."""

    __slots__ = ("_first", "_steps")

    def __init__(self, steps: Generator[Any, Any, Any], first: Any) -> None:
        self._steps = steps
        self._first = first

    def __await__(self) -> Generator[Any, Any, None]:
        steps, value = self._steps, self._first
        while True:
            try:
                received = yield value
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:
                try:
                    value = steps.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = steps.send(received)
                except StopIteration:
                    return


def _ignore(*_: object) -> None:
    """What a detached outbound calls back."""


def _is_final(message: Message) -> bool:
    message_type = message["type"]
    return message_type == "websocket.close" or (
        message_type == "websocket.http.response.body" and not message.get("more_body")
    )


class Outbound:
    """The queue of messages to send, and who sends them.

    Args:
        send: The server's ASGI ``send``.
        capacity: Messages queued before senders wait.
        baton: Whether an idle outbound lets a sender make the call itself.
        start_writer: Starts the writer task (in the connection's task group).
        failed: Called with the exception when the server's ``send`` raised (the peer
            is gone); the sender then gets :class:`ClosedResourceError`.
        final_sent: Called once the final message (a close, or a denial's last body)
            has left.
    """

    __slots__ = (
        "_asgi_send",
        "_baton",
        "_busy",
        "_done",
        "_failed",
        "_final_sent",
        "_parked",
        "_queue",
        "_rest",
        "_scope",
        "_start_writer",
        "_wait",
        "_writing",
        "checkpoint",
        "sent",
        "ticks",
    )

    def __init__(
        self,
        send: Send,
        capacity: int,
        *,
        baton: bool,
        start_writer: Callable[[Callable[[], Coroutine[Any, Any, None]]], None],
        failed: Callable[[BaseException], object],
        final_sent: Callable[[], object],
    ) -> None:
        self._asgi_send = send
        self._queue: Channel[Message] = Channel(capacity)
        self._baton = baton
        self._start_writer = start_writer
        self._failed = failed
        self._final_sent = final_sent
        self._wait = waiters()
        self._busy = False  # a send call is in flight (the writer's or a baton holder's)
        self._writing = False  # the writer runs (as a task, or inline in drain())
        self._parked: Any = None  # the writer's waiter while it waits for work
        # Only the heartbeat's ping is queued since the writer last waited: it ends once
        # the ping has left, so that a resting connection holds no writer task.
        self._rest = False
        self._done: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None  # a baton send in flight
        # Sends and receives of the connection that did not suspend, in a row, and the
        # loop's yield that ends such a run.
        self.ticks = 0
        self.checkpoint = self._wait.checkpoint
        self.sent = 0

    @property
    def queue(self) -> Channel[Message]:
        """The queue itself (for statistics)."""
        return self._queue

    @property
    def busy(self) -> bool:
        """True while a send call is in flight."""
        return self._busy

    # -- senders -----------------------------------------------------------------------

    async def send_data(self, message: Message) -> None:
        """:meth:`send` for a message that is not the final one (every
        ``websocket.send``): the path of every message.

        Raises:
            ClosedResourceError: The outbound is closed (the connection is over, or the
                peer left); the message was not sent.
        """
        ticks = self.ticks + 1
        if ticks >= YIELD_EVERY:
            ticks = 0
            await self.checkpoint()
        self.ticks = ticks
        queue = self._queue
        if queue.closed:
            await self.checkpoint()  # a loop that swallows this still lets others in
            raise ClosedResourceError
        if not self._baton or self._busy or queue.items:
            self._rest = False
            await queue.send(message)
            self._kick()
            return
        await self._call(message, final=False)

    async def send(self, message: Message) -> None:
        """Send ``message`` now if the outbound is idle, else queue it (waiting for room).

        A close (or a denial's last body) never waits for room, and nothing is
        accepted after it. It is not counted towards the next turn, since it cannot be
        sent twice: a loop that tries again gets the refusal, which yields.

        Raises:
            ClosedResourceError: The outbound is closed (the connection is over, or the
                peer left); the message was not sent.
        """
        if not _is_final(message):
            await self.send_data(message)
            return
        queue = self._queue
        if queue.closed:
            await self.checkpoint()  # a loop that swallows this still lets others in
            raise ClosedResourceError
        if not self._baton or self._busy or queue.items:
            queue.force_nowait(message)
            queue.close()
            self._kick()
            return
        await self._call(message, final=True)

    async def _call(self, message: Message, *, final: bool) -> None:
        """The baton: nothing queued, nothing in flight; make the call here."""
        queue = self._queue
        if final:
            queue.close()
        self._busy = True
        try:
            # Started by hand: a send that completes without suspending (hypercorn's
            # asyncio worker, when the transport takes the frame) cannot be interrupted,
            # and costs no cancel scope. One that suspends finishes shielded.
            steps = self._asgi_send(message).__await__()
            try:
                first = steps.send(None)
            except StopIteration:
                pass
            else:
                self.ticks = 0  # the server's send suspended
                with anyio.CancelScope(shield=True) as scope:
                    self._scope = scope
                    await _Resume(steps, first)
                if scope.cancelled_caught:
                    raise ClosedResourceError  # the engine ended the connection meanwhile
        except ClosedResourceError:
            raise
        except Exception as exc:
            self._failed(exc)
            raise ClosedResourceError from None
        finally:
            self._scope = None
            self._busy = False
            if queue.items or queue.closed:
                self._kick()
        self.sent += 1
        if final:
            self._final_sent()

    def send_soon(self, message: Message) -> Callable[[], Coroutine[Any, Any, None]] | None:
        """Send a data message without waiting, where that can be done (the heartbeat's
        ping, which must not cost a task per ping).

        Queued behind what is queued, or, on an idle outbound with the baton, the
        server's ``send`` called here by hand: one that completes without suspending is
        done. Returns None when it is sent or queued (or dropped: the outbound is
        closed), else what must still run in a task of its own: the rest of a ``send``
        that suspended, or a send that waits for room.
        """
        queue = self._queue
        if queue.closed:
            return None
        if not self._baton or self._busy or queue.items:
            if len(queue.items) >= queue.capacity:
                return partial(self._send_quietly, message)
            if not queue.items and (self._parked is not None or not self._writing):
                self._rest = True  # the ping is the writer's only work
            queue.send_nowait(message)
            self._kick()
            return None
        self._busy = True
        try:
            steps = self._asgi_send(message).__await__()
            first = steps.send(None)
        except StopIteration:
            self._busy = False
            self.sent += 1
            if queue.items:
                self._kick()
            return None
        except Exception as exc:
            self._busy = False
            self._failed(exc)
            self._kick()
            return None
        return partial(self._finish, steps, first)

    async def _send_quietly(self, message: Message) -> None:
        with contextlib.suppress(ClosedResourceError, get_cancelled_exc_class()):
            await self.send_data(message)

    async def _finish(self, steps: Generator[Any, Any, Any], first: Any) -> None:
        """The rest of a :meth:`send_soon` call that suspended, in a task of its own,
        holding the baton until it returns."""
        try:
            with anyio.CancelScope(shield=True) as scope:
                self._scope = scope
                await _Resume(steps, first)
            if not scope.cancelled_caught:
                self.sent += 1
        except Exception as exc:
            self._failed(exc)
        except get_cancelled_exc_class():
            pass  # the connection ended: return (the rule of plait._backend)
        finally:
            self._scope = None
            self._busy = False
            if self._queue.items or self._queue.closed:
                self._kick()

    def finish(self, message: Message) -> None:
        """Queue a final message past the capacity and close the queue behind it.

        Raises:
            ClosedResourceError: The outbound is already closed.
        """
        self._queue.force_nowait(message)
        self._queue.close()
        self._kick()

    def close(self) -> None:
        """Accept nothing more; the writer ends once what is queued has left."""
        self._queue.close()
        self._kick()

    def detach(self) -> None:
        """The connection is over: accept nothing more, and drop the calls back into it
        (they make the one reference cycle between the two)."""
        self._queue.close()
        self._start_writer = self._failed = self._final_sent = _ignore

    def abort(self) -> None:
        """Drop what is queued and cut short a baton send in flight."""
        queue = self._queue
        queue.close()
        while True:
            try:
                queue.receive_nowait()
            except (WouldBlock, EndOfStream):
                break
        if self._scope is not None:
            self._scope.cancel()
        self._kick()

    async def drain(self, limit: float) -> bool:
        """Wait (at most ``limit`` s) until everything queued has left; True if it did."""
        with anyio.move_on_after(limit):
            if self._writing:
                if self._done is None:
                    self._done = anyio.Event()
                await self._done.wait()
            elif len(self._queue) or self._busy:
                self._writing = True
                await self._write()  # no writer task yet: be the writer, here
            return True
        return False

    # -- the writer ----------------------------------------------------------------------

    def _kick(self) -> None:
        parked = self._parked
        if parked is not None:
            self._parked = None
            self._wait.wake(parked)
        elif not self._writing and self._queue.items:
            self._writing = True
            self._start_writer(self._write)

    async def _write(self) -> None:
        """Deliver what is queued, in order, whenever no baton send is in flight.

        It ends when the queue is closed and empty, and also once the heartbeat's ping,
        all it had to do, has left: a resting connection then holds no writer task, and
        no new objects that would wait there until the next ping (on trio, where every
        send goes through the writer, they made the collector's full collections
        frequent with thousands of resting connections). The next send starts it again.
        """
        queue = self._queue
        try:
            while True:
                if self._busy or not queue.items:
                    if not queue.items and not self._busy and (queue.closed or self._rest):
                        return
                    self._parked = waiter = self._wait.new()
                    try:
                        await waiter
                    finally:
                        self._parked = None
                    continue
                message = queue.receive_nowait()
                self._busy = True
                try:
                    await self._asgi_send(message)
                except Exception as exc:
                    self._failed(exc)
                    return
                finally:
                    self._busy = False
                self.sent += 1
                if message["type"] != "websocket.send" and _is_final(message):
                    self._final_sent()
        except get_cancelled_exc_class():
            pass  # the connection ended: return (the rule of plait._backend)
        finally:
            self._writing = self._rest = False
            if self._done is not None:
                self._done.set()
