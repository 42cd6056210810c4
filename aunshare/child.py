"""The async layer: spawn, the :class:`Child` handle, waiting and signalling.

A child's exit is awaited on its pidfd (readable once it has exited) and
reaped with ``waitid(P_PIDFD)``, so aunshare never reaps a process it did
not start and never races pid reuse. How a child is stopped when its
supervision ends early (its :class:`~aunshare.policy.KillPolicy`) is carried
out by :mod:`aunshare.supervise`.
"""

from __future__ import annotations

import fcntl
import os
import signal as _signal
import struct
import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import anyio

from . import cgroup as _cgroup
from . import errors, supervise
from ._linux import (
    CLD_DUMPED, CLD_EXITED, TIOCSWINSZ, WEXITED, WNOHANG, pidfd_send_signal, waitid_pidfd,
)
from .handshake import run_handshake
from .launch import Started, failed, release, start
from .policy import DEFAULT_KILL_POLICY, KillPolicy
from .status import ExitStatus, ResourceUsage
from .streams import PipeReader, PipeWriter

if TYPE_CHECKING:
    from .command import Command

__all__ = ["Child", "Output", "spawn"]

_Stream = Union[PipeReader, PipeWriter]
_STDIO_NAMES = {0: "stdin", 1: "stdout", 2: "stderr"}


@dataclass(frozen=True, slots=True)
class Output:
    """What :meth:`Command.output` returns: the status and captured bytes."""

    status: ExitStatus
    """How the child ended."""
    stdout: bytes
    """Everything the child wrote to stdout (empty when not piped)."""
    stderr: bytes
    """Everything the child wrote to stderr (empty when not piped)."""


# Children not yet reaped, and spawns under way: while there are any, the
# event loop has other children to serve, so a spawn must not put its
# thread to sleep until the exec (the vfork path) but watch the error pipe.
_unreaped: weakref.WeakSet[Child] = weakref.WeakSet()
_starting: set[object] = set()


async def spawn(cmd: Command, default_stdio: str = "inherit") -> Child:
    """Start ``cmd``; return once the child has exec'd. Errors are typed.

    In an already cancelled scope nothing is started.
    """
    await anyio.lowlevel.checkpoint_if_cancelled()
    token = object()
    _starting.add(token)
    try:
        started = start(cmd, default_stdio, allow_vfork=len(_starting) == 1 and not _unreaped)
        if started.wake_fd >= 0:
            await _handshake(cmd, started)
        if started.report_fd >= 0:
            await _await_exec(started)
            release(started)
        return Child(started, cmd._kill_policy)
    finally:
        _starting.discard(token)


async def _handshake(cmd: Command, started: Started) -> None:
    """The parent's part while the child waits (id maps, before_unfreeze),
    then let it go on. On any failure or cancellation the child is killed
    and reaped before the exception propagates."""
    try:
        await run_handshake(cmd, started.pid, started.wake_fd)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _abandon(started)
        raise
    finally:
        if started.wake_fd >= 0:
            os.close(started.wake_fd)
            started.wake_fd = -1


async def _await_exec(started: Started) -> None:
    """Read the error pipe until EOF (exec done) or a failure record."""
    fd = started.report_fd
    data = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 8 - len(data))
            except BlockingIOError:
                await anyio.wait_readable(fd)
                continue
            except OSError as exc:
                raise errors.PipeError(exc.errno, "the error pipe") from None
            if not chunk:
                break
            data += chunk
            if len(data) == 8:
                break
    except BaseException:
        # Cancelled (or worse) before exec was confirmed: leave nothing behind.
        with anyio.CancelScope(shield=True):
            await _abandon(started)
        raise
    if data:
        if len(data) < 8:
            await _abandon(started)
            raise errors.UnknownError(f"the child sent a truncated error record {data!r}")
        idx = int.from_bytes(data[:4], "little")
        err = int.from_bytes(data[4:], "little")
        raise failed(started, idx, err)
    started.report_fd = -1
    os.close(fd)


async def _abandon(started: Started) -> None:
    """Kill and reap a child the caller will never see, and anything it may
    already have started; close its fds and remove its cgroup."""
    # It may have exec'd and forked before we saw the pipe's EOF. A group
    # with its pid as id can only be its own, and it is not reaped yet.
    if "group" in started.plan.features:
        try:
            os.killpg(started.pid, _signal.SIGKILL)
        except OSError:
            pass
    if started.cgroup is not None:
        _cgroup.kill(started.cgroup)
    try:
        pidfd_send_signal(started.pidfd, _signal.SIGKILL)
    except OSError:
        pass
    try:
        waitid_pidfd(started.pidfd, WEXITED)  # SIGKILL is prompt
    except OSError:
        pass
    for fd in (started.pidfd, started.report_fd, started.wake_fd, *started.pipes.values()):
        if fd >= 0:
            os.close(fd)
    started.pidfd = started.report_fd = started.wake_fd = -1
    started.pipes = {}
    if started.cgroup is not None:
        await supervise.wait_cgroup_empty(started.cgroup)
        _cgroup.remove(started.cgroup)
        started.cgroup = None


def _status(info, ru) -> ExitStatus:  # type: ignore[no-untyped-def]
    usage = ResourceUsage(
        ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
        ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
        ru.ru_maxrss,
    )
    if info.si_code == CLD_EXITED:
        return ExitStatus(info.si_status & 0xFF, None, False, usage)
    return ExitStatus(None, info.si_status, info.si_code == CLD_DUMPED, usage)


class Child:
    """A running (or finished) child process started by aunshare.

    ``async with child:`` closes stdin and waits on normal exit (then kills
    whatever is left in the child's own cgroup, if it has one, and removes
    the cgroup); on an error or cancellation in the block it stops the child
    by its :attr:`kill_policy` (:meth:`shutdown`) and reaps it before the
    exception propagates. (A pty stdin is not closed before the child exits:
    that would hang up its terminal.)
    """

    def __init__(self, started: Started, kill_policy: KillPolicy | None = None) -> None:
        self.pid: int = started.pid
        """The child's process id."""
        self._pidfd = started.pidfd
        self.executor: str = started.executor
        """Which executor started the child ("native" or "portable")."""
        self.spawn_mode: str = "vfork" if started.vfork else "fork"
        """How the parent waited for exec: "vfork" (the spawning thread slept
        until the exec) or "fork" (the event loop watched the error pipe until
        EOF: the portable executor, or the native one while other children
        are running, so that the loop keeps serving them)."""
        self.handshake: bool = "handshake" in started.plan.features
        """True when the parent acted while the child waited between clone
        and exec (id maps written by the parent, newuidmap/newgidmap, a
        before_unfreeze hook); False for the direct path."""
        # Wrap every parent end at once: a stream closes its descriptor even
        # when the Child is dropped without aclose_streams().
        streams: dict[int, _Stream] = {}
        ttys = started.ttys
        for target, fd in started.pipes.items():
            cls = PipeWriter if target in started.writers else PipeReader
            streams[target] = cls(fd, tty=target in ttys)
        started.pipes = {}
        self.stdin: PipeWriter | None = streams.pop(0, None)  # type: ignore[assignment]
        """Async stream to the child's stdin when piped (or a pty), else None."""
        self.stdout: PipeReader | None = streams.pop(1, None)  # type: ignore[assignment]
        """Async stream from the child's stdout when piped (or a pty), else None."""
        self.stderr: PipeReader | None = streams.pop(2, None)  # type: ignore[assignment]
        """Async stream from the child's stderr when piped, else None (also when
        it shares a pty with stdout: its output then arrives on ``stdout``)."""
        self._extra: dict[int, _Stream] = streams  # pipes on fds 3+, until taken
        self._taken: dict[int, _Stream] = {}
        self._ptys: tuple[_Stream, ...] = tuple(
            s for s in (self.stdin, self.stdout, self.stderr) if s is not None and s.is_tty)
        self._status: ExitStatus | None = None
        self._exited = False   # the pidfd was seen readable: exited, maybe unreaped
        self._waiting = False  # one task waits on the pidfd; others on _waiter
        self._waiter: anyio.Event | None = None
        self._stopping: anyio.Event | None = None  # set when a shutdown() finishes
        self._group_leader = "group" in started.plan.features
        self._cgroup = started.cgroup
        self._kill_policy = self._resolve(kill_policy or DEFAULT_KILL_POLICY)
        _unreaped.add(self)

    @property
    def pidfd(self) -> int:
        """The child's pidfd; -1 once the child has been reaped."""
        return self._pidfd

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
        return supervise.resolve_policy(policy, group_leader=self._group_leader,
                                        cgroup=self._cgroup is not None)

    @property
    def returncode(self) -> int | None:
        """The subprocess-style return code once reaped, else None."""
        return None if self._status is None else self._status.returncode

    # -- waiting -------------------------------------------------------------------
    def _reap(self, options: int) -> ExitStatus | None:
        try:
            info, ru = waitid_pidfd(self._pidfd, options)
        except ChildProcessError as exc:
            self._close_pidfd()
            raise errors.WaitError(exc.errno, f"pid {self.pid}",
                                   "the child was reaped by someone else "
                                   "(a SIGCHLD handler or waitpid(-1) elsewhere?)") from None
        except OSError as exc:
            raise errors.WaitError(exc.errno, f"pid {self.pid}") from None
        if info.si_pid == 0:
            return None
        self._status = st = _status(info, ru)
        self._close_pidfd()
        _unreaped.discard(self)
        return st

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, -1
        if fd >= 0:
            if self._waiting:  # try_wait() reaped while a task waits on the fd
                try:
                    anyio.notify_closing(fd)
                except RuntimeError:  # no event loop in this thread
                    pass
            os.close(fd)

    def try_wait(self) -> ExitStatus | None:
        """The exit status if the child has exited (reaping it), else None."""
        if self._status is not None:
            return self._status
        return self._reap(WEXITED | WNOHANG)

    async def _until_exited(self) -> None:
        """Return once the child has exited, without reaping it."""
        while self._status is None and not self._exited:
            if self._waiting:  # another task owns the pidfd wait: wait for it
                if self._waiter is None:
                    self._waiter = anyio.Event()
                await self._waiter.wait()
                continue
            self._waiting = True
            try:
                await anyio.wait_readable(self._pidfd)
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
            if self._stopping is not None:  # shutdown() reaps; wait for it
                await self._stopping.wait()
                continue
            if self._reap(WEXITED | WNOHANG) is None:
                await self._until_exited()
        if self._cgroup is not None and not _cgroup.populated(self._cgroup):
            if _cgroup.remove(self._cgroup):
                self._cgroup = None
        return self._status

    async def communicate(self, input: bytes | None = None) -> tuple[bytes | None, bytes | None]:
        """Send ``input`` to stdin and close it, read stdout and stderr to
        EOF, and wait for the child to exit; returns ``(stdout, stderr)``.

        All three run concurrently, so a child that writes a lot before it
        has read all its input cannot deadlock with the parent. A stream
        that is not piped gives None. A child that exits (or closes its
        stdin) without reading all of ``input`` is not an error, as in
        asyncio. Reading ends when the last writer of a pipe closes it,
        which may be a grandchild that outlives the child. On error or
        cancellation the child is killed and reaped before the exception
        propagates.

        With a pty as stdin there is no end of input by closing (closing the
        master would hang up the terminal and SIGHUP the child): the pty
        stays open until the child has exited, so end ``input`` with the
        terminal's EOF character, b"\\x04", if the child reads to the end.
        """
        stdin = self.stdin
        if input is not None:
            if stdin is None:
                raise ValueError("communicate(input=...) needs the child's stdin piped: "
                                 "Command.stdin(Stdio.piped())")
            if stdin.fileno() < 0:
                raise ValueError("communicate(input=...): child.stdin is already closed")
            input = memoryview(input)  # type: ignore[assignment]  # no copy when slicing
        out: bytes | None = None
        err: bytes | None = None

        # A pty master is closed only once the child is reaped: closing the
        # last one hangs up the terminal, and the kernel sends SIGHUP to the
        # child even in the moment between closing its descriptors and exit.
        async def feed(stream: PipeWriter) -> None:
            try:
                if input:
                    await stream.send(input)
            except anyio.BrokenResourceError:
                pass  # the child stopped reading: its exit status tells the story
            finally:
                if not stream.is_tty:
                    await stream.aclose()

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
                    tg.start_soon(feed, stdin)
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

    async def wait_with_output(self, input: bytes | None = None) -> Output:
        """Like :meth:`communicate` (``input`` goes to stdin, which is then
        closed), but returns the same :class:`Output` as
        :meth:`Command.output`: the exit status and the captured bytes
        (empty for a stream that is not piped)."""
        out, err = await self.communicate(input)
        assert self._status is not None  # communicate() waited
        return Output(self._status, out or b"", err or b"")

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
        if fd in _STDIO_NAMES:
            name = _STDIO_NAMES[fd]
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

    # -- signals ---------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        """Send ``sig`` through the pidfd (no pid-reuse race).

        Raises ProcessLookupError once the child has been reaped.
        """
        if self._pidfd < 0:
            raise ProcessLookupError(
                3, f"cannot signal child {self.pid}: it has already been reaped "
                   f"({self._status})")
        pidfd_send_signal(self._pidfd, int(sig))

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
        at most the grace period plus the time SIGKILL takes. A child that
        has already been reaped is not signalled, but whatever is left in
        its cgroup is killed. Concurrent calls share one shutdown.
        Returns the exit status.
        """
        return await supervise.shutdown(self, policy)

    async def aclose(self) -> None:
        """Release the child: :meth:`shutdown` (a no-op for the child itself
        when it has already been reaped) and close every pipe to it."""
        if self._status is not None and self._cgroup is None:
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
        for s in (self.stdin, self.stdout, self.stderr, *self._extra.values(),
                  *self._taken.values()):
            if s is not None:
                await s.aclose()

    # -- context manager ---------------------------------------------------------------
    async def __aenter__(self) -> Child:
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is None:
            # A pipe's EOF; a pty stays open until the child exits (closing
            # it would hang up the terminal: SIGHUP).
            if self.stdin is not None and not self.stdin.is_tty:
                await self.stdin.aclose()
            try:
                await self.wait()
            except BaseException:
                await self.aclose()
                raise
        await self.aclose()

    def __del__(self) -> None:
        if getattr(self, "_pidfd", -1) >= 0 and getattr(self, "_status", None) is None:
            try:
                if self._reap(WEXITED | WNOHANG) is None:
                    warnings.warn(f"child {self.pid} was never waited for and is still "
                                  "running", ResourceWarning, stacklevel=2)
            except Exception:
                pass
            self._close_pidfd()
        path = getattr(self, "_cgroup", None)
        if path is not None:
            try:
                removed = not _cgroup.populated(path) and _cgroup.remove(path)
            except Exception:
                removed = False
            if not removed:
                warnings.warn(f"the cgroup {os.fsdecode(path)} of child {self.pid} still has "
                              "processes and is left behind: call shutdown() or use "
                              "'async with'", ResourceWarning, stacklevel=2)

    def __repr__(self) -> str:
        state = "running" if self._status is None else str(self._status)
        return f"<Child pid={self.pid} {state}>"
