"""Watching many children at once: :func:`child_events` and :func:`reap_zombies`.

The Rust crate's ``child_events()`` / ``reap_zombies()`` call
``waitpid(-1)``, which reaps *any* child of the process, including ones
another library started and is waiting for. These watch only the
:class:`~aunshare.Child` objects they are given, through their pidfds:

* **exits** are awaited on each child's pidfd (readable once it exits, no
  polling, no signal handler) and reaped with ``waitid(P_PIDFD)``, exactly
  as :meth:`Child.wait` does (the two can be mixed freely);
* **stops and continues**, when asked for, come from
  ``waitid(P_PIDFD, WSTOPPED | WCONTINUED | WNOHANG)`` on each watched
  child, because a pidfd becomes readable only on exit. That check runs
  every ``poll_interval`` seconds by default, or, with ``sigchld=True``,
  whenever the process receives SIGCHLD.

Limits, by design: stop and continue events are sampled, so a child that
stops and continues (or stops and dies) between two checks may report only
the last state or nothing; each watched child costs one ``waitid`` per
check. ``sigchld=True`` installs a SIGCHLD handler for the duration of the
block, through ``anyio.open_signal_receiver``: Python runs signal handlers in
the main thread only, so it must be used there (RuntimeError otherwise);
uvloop refuses a SIGCHLD handler because libuv tracks its own subprocesses
with it (RuntimeError too); and on exit the handler is reset to the
default, which would disturb another user of SIGCHLD in the process
(asyncio's old SafeChildWatcher). aunshare itself never needs SIGCHLD.
"""

from __future__ import annotations

import enum
import math
import signal as _signal
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

from . import errors
from ._record import record
from ._linux import WNOHANG, waitid_pidfd
from ._tasks import background_tasks
from .child import Child
from .status import ExitStatus

__all__ = ["ChildEvent", "ChildEventKind", "ChildEvents", "child_events", "reap_zombies"]

_WSTOPPED = 2
_WCONTINUED = 8
_CLD_TRAPPED, _CLD_STOPPED, _CLD_CONTINUED = 4, 5, 6


class ChildEventKind(enum.Enum):
    """What happened to a watched child."""

    EXITED = "exited"
    """It exited or was killed, and has been reaped."""
    STOPPED = "stopped"
    """It was stopped by a signal (or is stopped under ptrace)."""
    CONTINUED = "continued"
    """It was resumed by SIGCONT."""


@record
class ChildEvent:
    """One state change of a watched child."""

    child: Child
    """The child it happened to."""
    kind: ChildEventKind
    """What happened."""
    status: ExitStatus | None = None
    """For EXITED: how it ended (also ``child.wait()``'s result)."""
    signal: int | None = None
    """For STOPPED: the stopping signal; CONTINUED: SIGCONT; EXITED: the
    killing signal, if any."""


class ChildEvents:
    """The async iterator :func:`child_events` yields.

    Iteration ends once every watched child has exited and its EXITED event
    was delivered; :meth:`add` more children before that (or iterate again
    after adding).
    """

    def __init__(self, tg: TaskGroup, stops: bool) -> None:
        self._tg = tg
        self._stops = stops
        self._send, self._receive = anyio.create_memory_object_stream[
            ChildEvent | BaseException](math.inf)
        self._watched: dict[int, Child] = {}  # id(child) -> child, until its exit is sent
        self._stop_check: anyio.Event | None = None

    def add(self, child: Child) -> None:
        """Watch ``child`` too (ignored when it is already watched)."""
        if not isinstance(child, Child):
            raise TypeError(f"child_events watches aunshare Child objects, "
                            f"not {type(child).__name__}")
        if id(child) in self._watched:
            return
        self._watched[id(child)] = child
        self._tg.start_soon(self._watch_exit, child)
        if self._stop_check is not None:
            self._stop_check.set()  # check the newcomer's state at once

    async def _watch_exit(self, child: Child) -> None:
        try:
            status = await child.wait()
        except errors.WaitError as exc:  # reaped behind aunshare's back: tell the block
            self._send.send_nowait(exc)
        else:
            self._send.send_nowait(ChildEvent(child, ChildEventKind.EXITED, status,
                                              status.signal))
        del self._watched[id(child)]

    def _check_stops(self) -> None:
        for child in list(self._watched.values()):
            if child.status is not None or child.pidfd < 0:
                continue
            try:
                info = waitid_pidfd(child.pidfd, _WSTOPPED | _WCONTINUED | WNOHANG)
            except OSError:
                continue  # exiting: its EXITED event comes from _watch_exit
            if info.si_pid == 0:
                continue
            if info.si_code == _CLD_CONTINUED:
                event = ChildEvent(child, ChildEventKind.CONTINUED, None, _signal.SIGCONT)
            elif info.si_code in (_CLD_STOPPED, _CLD_TRAPPED):
                event = ChildEvent(child, ChildEventKind.STOPPED, None, info.si_status)
            else:
                continue
            self._send.send_nowait(event)

    async def _poll_stops(self, interval: float) -> None:
        while True:
            self._check_stops()
            self._stop_check = anyio.Event()
            with anyio.move_on_after(interval):
                await self._stop_check.wait()

    async def _sigchld_stops(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        receiver = anyio.open_signal_receiver(_signal.SIGCHLD)
        try:
            signals = receiver.__enter__()
        except RuntimeError as exc:  # uvloop keeps SIGCHLD for libuv
            raise RuntimeError(f"child_events(sigchld=True) cannot handle SIGCHLD on this "
                               f"event loop ({exc}); use the default polling instead") from None
        try:
            task_status.started()
            self._check_stops()  # whatever changed before the handler was in place
            async for _ in signals:
                self._check_stops()
        finally:
            receiver.__exit__(None, None, None)

    def __aiter__(self) -> ChildEvents:
        return self

    async def __anext__(self) -> ChildEvent:
        if not self._watched and self._receive.statistics().current_buffer_used == 0:
            raise StopAsyncIteration
        item = await self._receive.receive()
        if isinstance(item, BaseException):
            raise item
        return item


@asynccontextmanager
async def child_events(children: Iterable[Child] = (), *, stops: bool = False,
                       sigchld: bool = False,
                       poll_interval: float = 0.05) -> AsyncIterator[ChildEvents]:
    """Watch ``children`` and iterate over their state changes as they happen::

        async with aunshare.child_events(children, stops=True) as events:
            async for event in events:
                print(event.child.pid, event.kind, event.status or event.signal)

    Each child's exit is reported once, as EXITED with its reaped status (a
    child reaped by someone else, e.g. a ``waitpid(-1)`` elsewhere, makes the
    iteration raise :class:`~aunshare.WaitError` instead).
    With ``stops``, STOPPED and CONTINUED are reported too, checked every
    ``poll_interval`` seconds or, with ``sigchld``, on every SIGCHLD (main
    thread only, not on uvloop). See the module docstring for what this can and cannot
    see. Leaving the block stops watching; it does not touch the children.
    """
    if sigchld and not stops:
        raise ValueError("sigchld=True only drives stop/continue detection: pass stops=True")
    if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)):
        raise TypeError(f"poll_interval must be a number of seconds, "
                        f"not {type(poll_interval).__name__}")
    if not poll_interval > 0 or math.isinf(poll_interval):
        raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval}")
    if sigchld and threading.current_thread() is not threading.main_thread():
        raise RuntimeError("child_events(sigchld=True) needs the main thread: Python runs "
                           "signal handlers only there. Use the default polling instead.")
    children = list(children)
    async with background_tasks() as tg:
        events = ChildEvents(tg, stops)
        if stops:
            if sigchld:
                await tg.start(events._sigchld_stops)
            else:
                tg.start_soon(events._poll_stops, poll_interval)
        for child in children:
            events.add(child)
        yield events


@asynccontextmanager
async def reap_zombies(
        children: Iterable[Child]) -> AsyncIterator[AsyncIterator[tuple[Child, ExitStatus]]]:
    """Iterate over ``(child, status)`` as each of ``children`` exits and is
    reaped, in the order they exit; the iteration ends after the last one::

        async with aunshare.reap_zombies(children) as exits:
            async for child, status in exits:
                ...

    Only the given children are ever reaped (no ``waitpid(-1)``).
    """
    async with child_events(children) as events:
        yield _exits(events)


async def _exits(events: ChildEvents) -> AsyncIterator[tuple[Child, ExitStatus]]:
    async for event in events:
        assert event.status is not None
        yield event.child, event.status
