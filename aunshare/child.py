"""The :class:`Child` handle: its streams, waiting, signalling, and its
own shutdown (carrying out a :class:`~aunshare.policy.KillPolicy`).

A child's exit is awaited on its pidfd (readable once it has exited) and
reaped with ``waitid(P_PIDFD)``, so aunshare never reaps a process it did
not start and never races pid reuse.

Shutdown (:meth:`Child.shutdown`, also what ``async with child`` does on an
error or a cancellation):

1. the first signal (default SIGTERM) and SIGCONT go to the target: the
   child, its process group (``killpg``) or every process in its cgroup;
2. up to ``grace`` seconds pass until the child exited (target GROUP: the
   child itself; target CGROUP: the whole cgroup is empty);
3. SIGKILL goes to the target (``cgroup.kill`` for a cgroup) *while the
   child is still unreaped*: until it is reaped its pid cannot be reused, and
   so neither can the process group id, which is the same number;
4. the child is reaped; a cgroup is waited until empty and removed.

All of it is shielded from cancellation: a cancelled caller gets its
cancellation back only once the child is gone and reaped.
"""

from __future__ import annotations

import asyncio
import errno as _errno
import fcntl
import math
import os
import signal as _signal
import socket
import struct
import sys
import warnings
import weakref
from typing import Any

import anyio

from . import cgroup as _cgroup
from . import errors
from . import netns as _netns
from ._linux import TIOCSWINSZ, WEXITED, WNOHANG, pidfd_send_signal, waitid_pidfd
from ._names import STDIO_NAMES, check_signal
from ._record import record
from .forward import TcpForward
from .landlock import LandlockReport
from .launch import Pending, stop_aux
from .policy import DEFAULT_KILL_POLICY, KillPolicy, KillTarget, resolve_policy
from .status import ExitStatus
from .status import from_init, read_wait_status
from .status import from_waitid as _status
from .streams import Capture, PipeReader, PipeWriter, check_capture, send_then_close
from .supervision import Listener, SyscallStream
from .tree import signal_tree

__all__ = ["Child", "Output", "busy", "reap_orphans"]

_Stream = PipeReader | PipeWriter


@record
class Output:
    """What :meth:`Command.output` returns: the status and captured bytes."""

    status: ExitStatus
    """How the child ended."""
    stdout: bytes
    """Everything the child wrote to stdout (empty when not piped)."""
    stderr: bytes
    """Everything the child wrote to stderr (empty when not piped)."""
    stdout_truncated: bool = False
    """True when stdout had more than ``max_output`` bytes: ``stdout`` holds
    only the first (or, with ``keep="tail"``, the last) ``max_output``."""
    stderr_truncated: bool = False
    """The same for stderr."""
    cut_short: bool = False
    """True when ``wait_delay`` ran out after the child exited while a pipe
    was still open (a grandchild holding it, say): the parent closed its
    ends, and the streams hold what was read until then."""


# Children not yet reaped: while there are any, the event loop has other
# children to serve, so a spawn must not put its thread to sleep until the
# exec (the vfork path) but watch the error pipe (see aunshare.spawn).
_unreaped: weakref.WeakSet[Child] = weakref.WeakSet()
# (pid, pidfd) of children whose Child was dropped unreaped: reaped by
# reap_orphans() once they exit, as subprocess does with its dropped Popens.
_orphans: list[tuple[int, int]] = []
# Helpers (pasta) of those dropped children, by pidfd: stopped once it is reaped.
_orphan_aux: dict[int, list[tuple[int, int]]] = {}
# Children a shutdown stopped waiting for after SIGKILL (KillPolicy.reap_timeout):
# the Child keeps its pidfd and status; reap_orphans() reaps them once they died.
_stuck: weakref.WeakSet[Child] = weakref.WeakSet()


def busy() -> bool:
    """True while some Child is unreaped (the event loop may have to serve it)."""
    return bool(_unreaped)


def reap_orphans() -> None:
    """Reap the dropped children that have exited (cheap: one waitid each),
    and those a shutdown gave up on (ReapTimeout) once they died."""
    for child in list(_stuck):
        try:
            done = child.try_wait() is not None
        except errors.WaitError:
            done = True  # reaped by someone else: nothing left to wait for
        if done:
            _stuck.discard(child)
            path = child._cgroup
            if path is not None and _cgroup.remove(path):  # False while populated
                child._cgroup = None
    if not _orphans:
        return
    for item in list(_orphans):
        pid, pidfd = item
        try:
            info = waitid_pidfd(pidfd, WEXITED | WNOHANG)
        except OSError:
            info = None  # reaped elsewhere: nothing left to wait for
        if info is None or info.si_pid != 0:
            try:
                _orphans.remove(item)
            except ValueError:
                continue  # another thread took it
            aux = _orphan_aux.pop(pidfd, None)
            if aux:
                stop_aux(aux)
            os.close(pidfd)


def _set_result(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _running_trio() -> Any:
    """The trio module when the caller runs under trio (also as a guest of
    an asyncio loop), else None. Trio names itself to sniffio for as long as
    it runs in this thread; asking asyncio first would cost trio a raised
    RuntimeError on every wait."""
    sniffio = sys.modules.get("sniffio")
    if sniffio is not None and sniffio.thread_local.name == "trio":
        return sys.modules["trio"]
    return None


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop when the caller is an asyncio task; None
    under trio (also trio run as a guest of an asyncio loop, whose tasks
    are not asyncio tasks)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop in this thread
        return None
    return None if task is None else task.get_loop()


# The default policy as resolved for a child without a cgroup: (leads no
# group, leads one). Made once: resolving it costs a spawn several microseconds.
_DEFAULT_POLICY = (resolve_policy(DEFAULT_KILL_POLICY, group_leader=False, cgroup=False),
                   resolve_policy(DEFAULT_KILL_POLICY, group_leader=True, cgroup=False))


class Child:
    """A running (or finished) child process started by aunshare.

    ``async with child:`` closes stdin and waits on normal exit (then kills
    whatever is left in the child's own cgroup, if it has one, and removes
    the cgroup); on an error or cancellation in the block it stops the child
    by its :attr:`kill_policy` (:meth:`shutdown`) and reaps it before the
    exception propagates. (A pty stdin is not closed before the child exits:
    that would hang up its terminal.)
    """

    # The state a child starts in, as class attributes: a spawn then sets
    # only what differs (a store costs the spawn path, cold, ~0.2 us).
    _ptys: tuple[_Stream, ...] = ()
    _listener: Listener | None = None
    _status: ExitStatus | None = None
    _status_fd = -1  # with an init: its status pipe
    _wait_error: errors.WaitError | None = None  # reaped by someone else
    _exited = False   # the pidfd was seen readable: exited, maybe unreaped
    _waiting = False  # one task waits on the pidfd; others on _waiter
    _waiter: anyio.Event | None = None
    _readable: asyncio.Future[None] | None = None  # the asyncio fast wait
    _stopping: anyio.Event | None = None  # set when a shutdown() finishes
    _stuck: float | None = None  # reap_timeout that ran out (ReapTimeout raised)
    _socket_helper: socket.socket | None = None  # see open_tcp_stream()
    _socket_lock: anyio.Lock | None = None

    def __init__(self, pending: Pending) -> None:
        """Take over a started child (see :func:`aunshare.spawn.spawn`)."""
        plan = pending.plan
        assert plan is not None
        self.pid: int = pending.pid
        """The child's process id."""
        self._pidfd, pending.pidfd = pending.pidfd, -1
        self.executor: str = pending.executor.name
        """Which executor started the child ("native" or "portable")."""
        self.spawn_mode: str = "vfork" if pending.vfork else "pipe"
        """How the parent waited for exec: "vfork" (the spawning thread slept
        until the exec) or "pipe" (the event loop watched the error pipe until
        EOF: the portable executor, a handshake, or the native one while other
        children are running, so that the loop keeps serving them)."""
        self.handshake: bool = plan.handshake
        """True when the parent acted while the child waited between clone
        and exec (id maps written by the parent, newuidmap/newgidmap, a
        before_unfreeze hook, its pid sent); False for the direct path."""
        # Wrap every parent end at once: a stream closes its descriptor even
        # when the Child is dropped without aclose_streams().
        streams: dict[int, _Stream] = {}
        stdin: PipeWriter | None = None
        stdout: PipeReader | None = None
        stderr: PipeReader | None = None
        if pending.opened.parent_ends:
            ends, writers, ttys = pending.hand_over()
            for target, fd in ends.items():
                cls = PipeWriter if target in writers else PipeReader
                streams[target] = cls(fd, tty=target in ttys)
            # (the ends were made by direction: 0 writes, 1 and 2 read)
            stdin = streams.pop(0, None)  # type: ignore[assignment]
            stdout = streams.pop(1, None)  # type: ignore[assignment]
            stderr = streams.pop(2, None)  # type: ignore[assignment]
            self._ptys = tuple(s for s in (stdin, stdout, stderr)
                               if s is not None and s.is_tty)
        self.stdin: PipeWriter | None = stdin
        """Async stream to the child's stdin when piped (or a pty), else None."""
        self.stdout: PipeReader | None = stdout
        """Async stream from the child's stdout when piped (or a pty), else None."""
        self.stderr: PipeReader | None = stderr
        """Async stream from the child's stderr when piped, else None (also when
        it shares a pty with stdout: its output then arrives on ``stdout``)."""
        self._extra: dict[int, _Stream] = streams  # pipes on fds 3+, until taken
        self._taken: dict[int, _Stream] = {}
        if pending.listener_fd >= 0:
            self._listener = Listener(pending.listener_fd, pending.early)
            pending.listener_fd = -1
        self._init = pending.spec.lifetime.init_process
        if pending.status_fd >= 0:
            # With an init: its status pipe, read (then closed) when it is reaped.
            self._status_fd, pending.status_fd = pending.status_fd, -1
        self.landlock_report: LandlockReport | None = pending.landlock_report
        """What the child's :meth:`Command.landlock` rules became on this
        kernel (what was enforced, dropped or skipped); None without rules."""
        self._group_leader = plan.leads_group
        # Helper processes that live as long as the child (pasta): stopped
        # when it is reaped.
        self._aux, pending.aux = pending.aux, []
        self._cgroup, pending.cgroup = pending.cgroup, None
        policy = pending.spec.lifetime.kill_policy
        self._kill_policy = (
            _DEFAULT_POLICY[plan.leads_group] if policy is None and self._cgroup is None
            else self._resolve(policy or DEFAULT_KILL_POLICY))
        _unreaped.add(self)

    @property
    def pidfd(self) -> int:
        """The child's pidfd; -1 once the child has been reaped."""
        return self._pidfd

    @property
    def landlock_abi(self) -> int | None:
        """The Landlock ABI the child's rules were fitted to (0: Landlock
        unavailable, nothing enforced); None without :meth:`Command.landlock`."""
        report = self.landlock_report
        return None if report is None else report.abi

    @property
    def cgroup(self) -> str | None:
        """The child's own cgroup directory (:meth:`Command.new_cgroup`), or
        None when it has none or it was removed."""
        return None if self._cgroup is None else os.fsdecode(self._cgroup)

    @property
    def kill_policy(self) -> KillPolicy:
        """How :meth:`shutdown` (and ``async with`` on an error) stops this
        child; its target is never AUTO here but what AUTO chose for it.
        Assigning checks the target: GROUP needs a group leader, CGROUP a
        child with its own cgroup (ValueError otherwise)."""
        return self._kill_policy

    @kill_policy.setter
    def kill_policy(self, policy: KillPolicy) -> None:
        self._kill_policy = self._resolve(policy)

    def _resolve(self, policy: KillPolicy) -> KillPolicy:
        if not isinstance(policy, KillPolicy):
            raise TypeError(f"kill policy must be a KillPolicy, not {type(policy).__name__}")
        return resolve_policy(policy, group_leader=self._group_leader,
                              cgroup=self._cgroup is not None)

    @property
    def returncode(self) -> int | None:
        """The subprocess-style return code once reaped, else None."""
        return None if self._status is None else self._status.returncode

    @property
    def status(self) -> ExitStatus | None:
        """How the child ended, once reaped; None before."""
        return self._status

    # -- waiting -------------------------------------------------------------------
    def _lost(self) -> errors.WaitError:
        """The error every method gives once the child was reaped elsewhere."""
        err = self._wait_error
        assert err is not None
        return errors.WaitError(err.errno or _errno.ECHILD, err.filename, err.detail)

    def _reap(self, options: int) -> ExitStatus | None:
        if self._status is not None:  # another task reaped it meanwhile
            return self._status
        if self._wait_error is not None:
            raise self._lost()
        try:
            info = waitid_pidfd(self._pidfd, options)
        except OSError as exc:
            if exc.errno != _errno.ECHILD:
                raise errors.WaitError(exc.errno or _errno.EIO, f"pid {self.pid}") from None
            # Reaped by someone else: the status is lost for good. Give the
            # same answer from now on, and stop counting it as running.
            self._wait_error = errors.WaitError(
                exc.errno, f"pid {self.pid}", "the child was reaped by someone else (a "
                "SIGCHLD handler set to SIG_IGN, or waitpid(-1) elsewhere?); its status "
                "is lost")
            self._exited = True
            self._close_pidfd()
            _unreaped.discard(self)
            self._stop_aux()
            raise self._lost() from None
        if info.si_pid == 0:
            return None
        # The cgroup's figures now: the child has exited, the cgroup is still there.
        st = _status(info, None if self._cgroup is None else _cgroup.usage(self._cgroup))
        if self._init:  # the init wrote the program's status, or encodes it
            st = from_init(st, read_wait_status(self._status_fd)
                           if self._status_fd >= 0 else None)
        self._status = st
        self._close_pidfd()
        _unreaped.discard(self)
        self._stop_aux()
        return st

    def _stop_aux(self) -> None:
        """The child is reaped: stop the helpers that lived as long as it."""
        helper, self._socket_helper = self._socket_helper, None
        if helper is not None:
            helper.close()
        if self._aux:
            aux, self._aux = self._aux, []
            stop_aux(aux)

    def syscalls(self) -> SyscallStream:
        """The supervised syscalls (:meth:`Command.supervise_syscalls`) as
        they happen: ``async for call in child.syscalls(): await call.allow()``.

        Each call waits in the kernel until answered. The iteration ends
        when the child and everything it started are gone. Leaving it
        (the stream dropped, or :meth:`~aunshare.supervision.SyscallStream.aclose`),
        being cancelled, or the child being reaped ends the supervision: the
        listener is closed and the kernel fails this child's later
        supervised calls with ENOSYS, so none hangs (see
        :mod:`aunshare.supervision`).
        """
        if self._listener is None:
            raise ValueError("this child's syscalls are not supervised: use "
                             "Command.supervise_syscalls(names)")
        return self._listener.requests()

    def _close_pidfd(self) -> None:
        if self._status_fd >= 0:
            self._close_status_fd()
        listener = self._listener
        if listener is not None:
            listener.close(reaped=True)  # supervision ends with the child
        fd, self._pidfd = self._pidfd, -1
        if fd >= 0:
            if self._waiting:  # try_wait() reaped while a task waits on the fd
                fut = self._readable
                if fut is not None:
                    fut.get_loop().remove_reader(fd)
                    if not fut.done():
                        fut.set_exception(anyio.ClosedResourceError())
                else:
                    try:
                        anyio.notify_closing(fd)
                    except RuntimeError:  # no event loop in this thread
                        pass
            os.close(fd)

    def _close_status_fd(self) -> None:
        fd, self._status_fd = self._status_fd, -1
        if fd >= 0:
            os.close(fd)

    def try_wait(self) -> ExitStatus | None:
        """The exit status if the child has exited (reaping it), else None."""
        if self._status is not None:
            return self._status
        return self._reap(WEXITED | WNOHANG)

    async def until_exited(self) -> None:
        """Return once the child has exited, without reaping it: until
        :meth:`wait`, its pid and process group id stay its own, so a
        caller can still signal what it left behind."""
        while self._status is None and not self._exited:
            if self._waiting:  # another task owns the pidfd wait: wait for it
                if self._waiter is None:
                    self._waiter = anyio.Event()
                await self._waiter.wait()
                continue
            self._waiting = True
            fd = self._pidfd
            trio = _running_trio()
            loop = None if trio is not None else _asyncio_loop()
            try:
                if trio is not None:
                    # trio's own wait, not anyio's wrapper around it
                    try:
                        await trio.lowlevel.wait_readable(fd)
                    except trio.ClosedResourceError:
                        raise anyio.ClosedResourceError from None
                elif loop is None:
                    await anyio.wait_readable(fd)
                else:
                    # The loop's own reader: anyio.wait_readable costs more
                    # per spawn than the rest of the async layer together.
                    fut = self._readable = loop.create_future()
                    loop.add_reader(fd, _set_result, fut)
                    try:
                        await fut
                    finally:
                        self._readable = None
                        if self._pidfd == fd:
                            loop.remove_reader(fd)
                self._exited = True
            except anyio.ClosedResourceError:
                pass  # reaped by try_wait() meanwhile: the status is set
            finally:
                self._waiting = False
                if self._waiter is not None:
                    self._waiter.set()
                    self._waiter = None

    async def wait(self) -> ExitStatus:
        """Wait for the child to exit and reap it; the result is cached.

        Once reaped, the child's own cgroup (if any) is removed when the
        child left nothing running in it; otherwise that waits for
        :meth:`shutdown` or the end of ``async with``.
        """
        while self._status is None:
            if self._wait_error is not None:
                raise self._lost()
            if self._stopping is not None:  # shutdown() reaps; wait for it
                await self._stopping.wait()
                continue
            if not self._exited:
                # No reap attempt first: a child waited for was mostly just
                # spawned, and the loop wakes at once if it has exited.
                await self.until_exited()
                continue
            self._reap(WEXITED | WNOHANG)
        # remove() refuses (False) while a process is left in it: no check first
        if self._cgroup is not None and _cgroup.remove(self._cgroup):
            self._cgroup = None
        return self._status

    async def communicate(self, input: bytes | None = None, *, max_output: int | None = None,
                          keep: str = "head", wait_delay: float | None = None,
                          ) -> tuple[bytes | None, bytes | None]:
        """Send ``input`` to stdin and close it, read stdout and stderr to
        EOF, and wait for the child to exit; returns ``(stdout, stderr)``.

        All three run concurrently, so a child that writes a lot before it
        has read all its input cannot deadlock with the parent. A stream
        that is not piped gives None. A child that exits (or closes its
        stdin) without reading all of ``input`` is not an error, as in
        asyncio. Reading ends when the last writer of a pipe closes it,
        which may be a grandchild that outlives the child (see
        ``wait_delay``). On error or cancellation the child is killed and
        reaped before the exception propagates.

        ``max_output`` (bytes, per stream) keeps only the first bytes of
        each stream, or the last ones with ``keep="tail"``; the rest is
        read and dropped, so the child never blocks on a full pipe.
        ``wait_delay`` (seconds) bounds the reading once the child has
        exited: then the parent closes its ends and returns what it read.
        :meth:`wait_with_output` takes the same options and also tells
        whether a stream was truncated or cut short.

        With a pty as stdin there is no end of input by closing (closing the
        master would hang up the terminal and SIGHUP the child): the pty
        stays open until the child has exited, so end ``input`` with the
        terminal's EOF character, b"\\x04", if the child reads to the end.
        """
        check_capture(max_output, keep, wait_delay, "communicate()")
        if max_output is None and wait_delay is None:
            return await self._communicate_all(self._input(input))
        out, err, _ = await self._communicate(self._input(input), max_output, keep, wait_delay)
        return (None if out is None else out.value(), None if err is None else err.value())

    def _input(self, input: bytes | None) -> memoryview | None:
        if input is None:
            return None
        stdin = self.stdin
        if stdin is None:
            raise ValueError("communicate(input=...) needs the child's stdin piped: "
                             "Command.stdin(Stdio.piped())")
        if stdin.fileno() < 0:
            raise ValueError("communicate(input=...): child.stdin is already closed")
        return memoryview(input)  # no copy when slicing

    async def _communicate_all(self, input: memoryview | None,
                               ) -> tuple[bytes | None, bytes | None]:
        """communicate() without limits: each stream read whole, to EOF."""
        stdin = self.stdin
        out: bytes | None = None
        err: bytes | None = None

        # A pty master is closed only once the child is reaped: closing the
        # last one hangs up the terminal, and the kernel sends SIGHUP to the
        # child even in the moment between closing its descriptors and exit.
        async def drain(stream: PipeReader, which: int) -> None:
            nonlocal out, err
            data = await stream.read_all()
            if not stream.is_tty:
                await stream.aclose()
            if which == 1:
                out = data
            else:
                err = data

        try:
            async with anyio.create_task_group() as tg:
                if stdin is not None:
                    tg.start_soon(send_then_close, stdin, input)
                if self.stdout is not None:
                    tg.start_soon(drain, self.stdout, 1)
                if self.stderr is not None:
                    tg.start_soon(drain, self.stderr, 2)
                await self.wait()
            for stream in self._ptys:
                await stream.aclose()
        except BaseException:
            await self.aclose()
            raise
        return out, err

    async def _communicate(self, input: memoryview | None, max_output: int | None, keep: str,
                           wait_delay: float | None,
                           ) -> tuple[Capture | None, Capture | None, bool]:
        """communicate() with limits: (stdout capture, stderr capture, cut short)."""
        out = None if self.stdout is None else Capture(max_output, keep)
        err = None if self.stderr is None else Capture(max_output, keep)
        try:
            cut = await self._pump(input, out, err, wait_delay)
            await self.wait()
            for stream in self._ptys:
                await stream.aclose()
        except BaseException:
            await self.aclose()
            raise
        return out, err, cut

    async def _pump(self, input: bytes | memoryview | None, out: Capture | None,
                    err: Capture | None, wait_delay: float | None) -> bool:
        """Feed stdin and drain stdout/stderr into the captures until the
        child has exited and the streams ended, or until ``wait_delay``
        after the exit (then they are cut short: returns True). Does not
        reap. Closes the pipes it read (not a pty: see communicate)."""
        stdin = self.stdin
        pending = 0
        finished = anyio.Event()
        fed = stdin is None

        async def run(job: Any, *args: Any) -> None:
            nonlocal pending, fed
            try:
                await job(*args)
                fed = fed or job is send_then_close
            finally:
                pending -= 1
                if not pending:
                    finished.set()

        pairs = [(cap, stream) for cap, stream in ((out, self.stdout), (err, self.stderr))
                 if cap is not None and stream is not None]
        stopped = False
        async with anyio.create_task_group() as tg:
            if stdin is not None:
                pending += 1
                tg.start_soon(run, send_then_close, stdin, input)
            for cap, stream in pairs:
                pending += 1
                tg.start_soon(run, cap.drain, stream)
            # Not reaped yet: its process group stays ours to kill.
            await self.until_exited()
            if pending and wait_delay is not None:
                with anyio.move_on_after(wait_delay):
                    await finished.wait()
                if pending:  # Go's WaitDelay: stop reading, close our ends
                    stopped = True
                    tg.cancel_scope.cancel()
        cut = False
        if stopped:
            # What the pipes hold already was written before the end: take it
            # (bounded: a writer may still be going), then close.
            for cap, stream in pairs:
                if not cap.eof:
                    cap.read_ready(stream, max_reads=4)
            cut = not fed or not all(cap.eof for cap, _ in pairs)
        for end in (stdin, self.stdout, self.stderr):
            if end is not None and not end.is_tty:
                await end.aclose()
        return cut

    async def wait_with_output(self, input: bytes | None = None, *,
                               max_output: int | None = None, keep: str = "head",
                               wait_delay: float | None = None) -> Output:
        """Like :meth:`communicate` (``input`` goes to stdin, which is then
        closed; the same ``max_output``, ``keep`` and ``wait_delay``), but
        returns the same :class:`Output` as :meth:`Command.output`: the exit
        status, the captured bytes (empty for a stream that is not piped),
        and whether they were truncated or cut short."""
        check_capture(max_output, keep, wait_delay, "wait_with_output()")
        if max_output is None and wait_delay is None:
            o, e = await self._communicate_all(self._input(input))
            assert self._status is not None  # communicate() waited
            return Output(self._status, o or b"", e or b"")
        out, err, cut = await self._communicate(self._input(input), max_output, keep,
                                                wait_delay)
        assert self._status is not None
        return Output(self._status, b"" if out is None else out.value(),
                      b"" if err is None else err.value(),
                      out is not None and out.truncated, err is not None and err.truncated,
                      cut)

    # -- extra pipes and the pty ---------------------------------------------------------
    def take_pipe_reader(self, fd: int) -> PipeReader:
        """The stream reading the pipe the child writes to on ``fd``
        (``file_descriptor(fd, Fd.piped_write())``). Each stream can be
        taken once; the Child still closes it in :meth:`aclose_streams`."""
        stream = self._take(fd, PipeReader, "take_pipe_reader")
        assert isinstance(stream, PipeReader)
        return stream

    def take_pipe_writer(self, fd: int) -> PipeWriter:
        """The stream writing to the pipe the child reads from on ``fd``
        (``file_descriptor(fd, Fd.piped_read())``). Each stream can be
        taken once; the Child still closes it in :meth:`aclose_streams`."""
        stream = self._take(fd, PipeWriter, "take_pipe_writer")
        assert isinstance(stream, PipeWriter)
        return stream

    def _take(self, fd: int, cls: type, method: str) -> _Stream:
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"{method}() takes an fd number, not {type(fd).__name__}")
        if fd in STDIO_NAMES:
            name = STDIO_NAMES[fd]
            raise ValueError(f"{method}({fd}): fd {fd} is {name}; use child.{name}")
        stream = self._extra.get(fd)
        if stream is None:
            if fd in self._taken:
                raise ValueError(f"{method}({fd}): the pipe on fd {fd} was already taken")
            have = ", ".join(str(f) for f in sorted(self._extra)) or "none"
            raise ValueError(f"{method}({fd}): fd {fd} was not given a pipe "
                             f"(file_descriptor({fd}, Fd.piped_write()) or "
                             f"Fd.piped_read()); pipes not yet taken: {have}")
        if not isinstance(stream, cls):
            if cls is PipeReader:
                raise ValueError(f"take_pipe_reader({fd}): the child reads from fd {fd} "
                                 f"(Fd.piped_read()); use take_pipe_writer({fd})")
            raise ValueError(f"take_pipe_writer({fd}): the child writes to fd {fd} "
                             f"(Fd.piped_write()); use take_pipe_reader({fd})")
        self._taken[fd] = self._extra.pop(fd)
        return stream

    def set_pty_size(self, rows: int, cols: int) -> None:
        """Set the window size of the child's pty (TIOCSWINSZ on the master);
        the kernel sends SIGWINCH to the terminal's foreground process group."""
        for what, value in (("rows", rows), ("cols", cols)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"set_pty_size() {what} must be an int, "
                                f"not {type(value).__name__}")
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"set_pty_size() {what} must be between 0 and 65535, "
                                 f"got {value}")
        if not self._ptys:
            raise ValueError("set_pty_size(): the child has no pty "
                             "(give a standard stream Stdio.pty())")
        for stream in self._ptys:
            fd = stream.fileno()
            if fd >= 0:
                fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                return
        raise anyio.ClosedResourceError("set_pty_size(): every stream on the pty is closed")

    # -- network ---------------------------------------------------------------------
    async def open_tcp_stream(self, port: int, host: str = "127.0.0.1"
                              ) -> anyio.abc.SocketStream:
        """A TCP connection to ``host:port`` *inside the child's network
        namespace* (e.g. a server the child binds to 127.0.0.1), as an anyio
        byte stream, with no network plumbing.

        The socket is created in the child's namespace (by a short-lived
        thread that joins it; unprivileged, by a helper process that joins
        the child's user and network namespaces), then connected on the event
        loop. ``host`` is an address; a name is resolved by the caller's
        resolver. A child sharing the caller's network namespace is simply
        connected to. Raises ProcessLookupError once the child has exited,
        OSError (ConnectionRefusedError...) from the connect.
        """
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"open_tcp_stream(): port must be an int in 1..65535, got {port!r}")
        what = "open_tcp_stream()"
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        sock = await self._socket_inside(family, what)
        try:
            sock.setblocking(False)
            try:
                sock.connect(address)
            except BlockingIOError:
                await anyio.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"{os.strerror(err)}: connecting to {host}:{port} "
                                       f"in the network namespace of child {self.pid}"
                                  ) from None
            return await anyio.abc.SocketStream.from_socket(sock)
        except BaseException:
            sock.close()
            raise

    async def _socket_inside(self, family: int, what: str) -> socket.socket:
        if self._pidfd < 0 or self._exited:
            raise _netns._gone(self.pid, what)
        try:
            netns = _netns.open_namespace(self.pid, "net", what)
        except _netns.NoNamespace:
            return socket.socket(family, socket.SOCK_STREAM)
        try:
            sock = _netns.socket_by_thread(netns, family)
        finally:
            os.close(netns)
        if sock is not None:
            return sock
        # Unprivileged: one helper process per child, started on first use
        # (a Python start-up is slow), asked for each socket in turn.
        if self._socket_lock is None:
            self._socket_lock = anyio.Lock()
        async with self._socket_lock:
            if self._socket_helper is None:
                pending, ours = _netns.start_socket_helper(self.pid, what)
                self._aux.append((pending.pid, pending.pidfd))
                pending.pidfd = -1  # stopped with the child now
                pending.close()
                self._socket_helper = ours
            ours = self._socket_helper
            try:
                ours.send(bytes([family]))
                await anyio.wait_readable(ours)
            except OSError:
                pass  # the helper is gone: receive_socket says so
            return _netns.receive_socket(ours, self.pid, what)

    def forward_tcp(self, port: int, *, host_port: int = 0, host: str = "127.0.0.1"
                    ) -> TcpForward:
        """A forwarder from a host address to ``port`` inside the child's
        network namespace, for ordinary clients: ``async with
        child.forward_tcp(6379) as fwd:`` listens on ``host:host_port``
        (``host_port=0``: an ephemeral port, see ``fwd.port`` and
        ``fwd.address``) and forwards every connection on the event loop
        through :meth:`open_tcp_stream`, with back-pressure. Leaving the
        block stops it and closes every connection. A host port already in
        use raises :class:`~aunshare.NetworkError` (EADDRINUSE) on entry."""
        for name, value, low in (("port", port, 1), ("host_port", host_port, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 65536:
                raise ValueError(f"forward_tcp(): {name} must be an int in {low}..65535, "
                                 f"got {value!r}")

        async def connect() -> anyio.abc.SocketStream:
            return await self.open_tcp_stream(port)

        return TcpForward(connect, port, host_port, host)

    # -- signals ---------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        """Send ``sig`` (a signal number, 1-64) through the pidfd (no
        pid-reuse race).

        Raises ProcessLookupError once the child has been reaped, WaitError
        when it was reaped by someone else, TypeError/ValueError for a value
        that is not a signal number.
        """
        sig = check_signal(sig, "Child.signal()")
        if self._wait_error is not None:
            raise self._lost()
        if self._pidfd < 0:
            raise ProcessLookupError(
                _errno.ESRCH, f"cannot signal child {self.pid}: it has already been reaped "
                              f"({self._status})")
        pidfd_send_signal(self._pidfd, sig)

    def kill(self) -> None:
        """Send SIGKILL."""
        self.signal(_signal.SIGKILL)

    def terminate(self) -> None:
        """Send SIGTERM."""
        self.signal(_signal.SIGTERM)

    # -- supervision -------------------------------------------------------------------
    async def shutdown(self, policy: KillPolicy | None = None) -> ExitStatus:
        """Stop the child by ``policy`` (default: :attr:`kill_policy`) and reap it.

        Sends the policy's signal (and SIGCONT) to its target, waits up to
        the grace period, then SIGKILLs the target (before reaping the child,
        so no reused pid or process group can be hit), reaps the child and
        removes its cgroup. Shielded from cancellation: it always finishes,
        at most the grace period plus the time SIGKILL takes; a policy's
        ``reap_timeout`` bounds the latter, raising
        :class:`~aunshare.ReapTimeout` for a child that SIGKILL has not
        ended by then (it is reaped later, once it dies). A child that
        has already been reaped is not signalled, but whatever is left in
        its cgroup is killed. Concurrent calls share one shutdown.
        Returns the exit status.
        """
        policy = self.kill_policy if policy is None else self._resolve(policy)
        if self._wait_error is not None:
            raise self._lost()
        if self._stuck is not None and self.try_wait() is None:
            # Known unkillable for now: say so again at once, not after another wait.
            raise self._stuck_now(self._stuck)
        if self._status is not None and self._cgroup is None:
            return self._status  # nothing left to do (the common, fast case)
        with anyio.CancelScope(shield=True):
            if self._stopping is not None:  # another shutdown is under way: join it
                await self._stopping.wait()
            elif self._status is None:
                self._stopping = done = anyio.Event()
                try:
                    await self._stop(policy)
                finally:
                    self._stopping = None
                    done.set()
            if self._status is None:  # the other shutdown failed
                if self._stuck is not None:
                    raise self._stuck_now(self._stuck)
                await self.wait()
            if self._cgroup is not None:
                await self._clear_cgroup()
        assert self._status is not None
        return self._status

    def _signal(self, target: KillTarget, sig: int) -> None:
        signal_tree(self.pid, self._pidfd, target, self._cgroup, sig)

    async def _stop(self, policy: KillPolicy) -> None:
        target = policy.target
        if not policy.immediate:
            self._signal(target, policy.signal)
            if policy.signal != _signal.SIGCONT:
                self._signal(target, _signal.SIGCONT)  # a stopped process must run to exit
            with anyio.move_on_after(policy.grace):
                await self.until_exited()
                if target is KillTarget.CGROUP and self._cgroup is not None:
                    await _cgroup.wait_empty(self._cgroup)
        if target is not KillTarget.CHILD or not self._exited:
            self._signal(target, _signal.SIGKILL)
        limit = policy.reap_timeout
        with anyio.move_on_after(math.inf if limit is None else limit):
            while self._status is None:
                await self.until_exited()
                self._reap(WEXITED | WNOHANG)
        if self._status is None:
            assert limit is not None
            raise self._stuck_now(limit)

    def _stuck_now(self, timeout: float) -> errors.ReapTimeout:
        """Mark the child as unkillable for now (reaped later: reap_orphans)
        and the error that says so, with its state from /proc."""
        self._stuck = timeout
        _stuck.add(self)
        state = wchan = ""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                # "pid (comm) S ...": comm may hold spaces and parentheses
                state = f.read().rpartition(b")")[2].split()[0].decode()
            with open(f"/proc/{self.pid}/wchan", "rb") as f:
                wchan = f.read().decode(errors="replace").strip()
        except (OSError, IndexError):
            pass  # /proc not mounted or hidden: say what we know
        return errors.ReapTimeout(self.pid, state, "" if wchan == "0" else wchan, timeout)

    async def _clear_cgroup(self) -> None:
        """Kill whatever is left in the child's cgroup, wait until it is
        empty, and remove it."""
        path = self._cgroup
        assert path is not None
        for _ in range(3):  # a privileged process could move a new one in meanwhile
            # Mostly empty already: the first rmdir succeeds, no check or wait.
            if _cgroup.remove(path):
                self._cgroup = None
                return
            _cgroup.kill(path)
            await _cgroup.wait_empty(path)
        if _cgroup.remove(path):
            self._cgroup = None
            return
        raise errors.CgroupError(_errno.EBUSY, path, "processes keep appearing in it",
                                 action="remove cgroup")

    async def aclose(self) -> None:
        """Release the child: :meth:`shutdown` (a no-op for the child itself
        when it has already been reaped) and close every pipe to it."""
        if (self._status is not None or self._wait_error is not None) and self._cgroup is None:
            await self.aclose_streams()
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.shutdown()
            finally:
                await self.aclose_streams()

    async def aclose_streams(self) -> None:
        """Close every pipe (and pty) the parent holds to the child,
        including the extra pipes, taken or not."""
        if self._extra or self._taken:
            streams: tuple[_Stream | None, ...] = (
                self.stdin, self.stdout, self.stderr, *self._extra.values(),
                *self._taken.values())
        else:
            streams = (self.stdin, self.stdout, self.stderr)
        for s in streams:
            if s is not None:
                await s.aclose()

    # -- context manager ---------------------------------------------------------------
    async def __aenter__(self) -> Child:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: Any) -> None:
        if self._wait_error is not None:
            await self.aclose_streams()
            if exc_type is None:
                raise self._lost()
            return
        if exc_type is None:
            # A pipe's EOF; a pty stays open until the child exits (closing
            # it would hang up the terminal: SIGHUP).
            if self.stdin is not None and not self.stdin.is_tty:
                await self.stdin.aclose()
            if self._status is None or self._cgroup is not None:
                try:
                    await self.wait()
                except BaseException:
                    await self.aclose()
                    raise
            elif (self.stdout is None and self.stderr is None and self.stdin is None
                  and not self._extra and not self._taken):
                return  # reaped, no cgroup, no pipe: aclose() has nothing to do
        await self.aclose()

    def __del__(self) -> None:
        if getattr(self, "_pidfd", -1) >= 0 and getattr(self, "_status", None) is None:
            try:
                running = self._reap(WEXITED | WNOHANG) is None
            except Exception:
                running = False
            if running and getattr(self, "_stuck", None) is not None:
                # Its ReapTimeout already told: hand it to the next spawn quietly.
                fd, self._pidfd = self._pidfd, -1
                _orphans.append((self.pid, fd))
            elif running:
                warnings.warn(f"child {self.pid} was never waited for and is still "
                              "running; it will be reaped once it exits", ResourceWarning,
                              stacklevel=2)
                # Keep its pidfd: the next spawn reaps it once it has exited.
                self._close_status_fd()
                fd, self._pidfd = self._pidfd, -1
                helper, self._socket_helper = self._socket_helper, None
                if helper is not None:
                    helper.close()  # the socket helper exits at once
                if self._aux:  # pasta serves the child until it exits
                    _orphan_aux[fd] = self._aux
                    self._aux = []
                _orphans.append((self.pid, fd))
            else:
                self._close_pidfd()
        path = getattr(self, "_cgroup", None)
        if path is not None:
            try:
                removed = _cgroup.remove(path)  # False while populated
            except Exception:
                removed = False
            if not removed:
                warnings.warn(f"the cgroup {os.fsdecode(path)} of child {self.pid} still has "
                              "processes and is left behind: call shutdown() or use "
                              "'async with'", ResourceWarning, stacklevel=2)

    def __repr__(self) -> str:
        state = "running" if self._status is None else str(self._status)
        return f"<Child pid={self.pid} {state}>"
