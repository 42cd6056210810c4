"""asyncio's subprocess API on aunshare: change one import.

::

    from aunshare.compat.asyncio import create_subprocess_exec, PIPE

    proc = await create_subprocess_exec("ls", "-l", stdout=PIPE)
    out, _ = await proc.communicate()

:func:`create_subprocess_exec` and :func:`create_subprocess_shell` take
asyncio's arguments and return a :class:`Process` that behaves as
:class:`asyncio.subprocess.Process`: ``stdout``/``stderr`` are
:class:`asyncio.StreamReader` objects (``limit=`` applies as in asyncio),
``stdin`` has a StreamWriter's ``write``/``drain``/``close``/``wait_closed``.
The child is started by aunshare, and the extra keyword ``command=``
receives the :class:`~aunshare.Command` before the spawn (add namespaces,
a kill policy, a cgroup, ...).

One difference, on purpose: cancelling :meth:`Process.wait` or
:meth:`Process.communicate` stops the child by its kill policy (SIGTERM,
grace, SIGKILL by default) and reaps it before the cancellation goes on,
where asyncio would leave it running.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal as _signal
from collections.abc import Callable, Iterable
from typing import Any

from .. import errors
from ..child import Child
from ..command import Command
from ..streams import PipeReader, PipeWriter
from ._popen import DEVNULL, PIPE, STDOUT, shell_argv, spawn

__all__ = ["create_subprocess_exec", "create_subprocess_shell", "Process", "PIPE", "STDOUT",
           "DEVNULL"]

_DEFAULT_LIMIT = 2**16  # asyncio.streams._DEFAULT_LIMIT
_READ_SIZE = 65536
# The transport's flow control: drain() waits while more than _HIGH bytes
# are buffered, until at most _LOW are.
_HIGH = 64 * 1024
_LOW = _HIGH // 4
_logger = logging.getLogger("aunshare.compat.asyncio")


class _Reader(asyncio.StreamReader):
    """An :class:`asyncio.StreamReader` fed from the child's pipe on demand.

    Every read method, ``limit`` and its errors (LimitOverrunError,
    IncompleteReadError, ValueError) are asyncio's own; only the wait for
    more data is replaced: it reads the pipe directly, so nothing is read
    ahead of what the caller asks for.
    """

    def __init__(self, pipe: PipeReader, limit: int) -> None:
        super().__init__(limit=limit)
        self._pipe = pipe
        self._pulling = False

    async def _wait_for_data(self, func_name: str) -> None:
        if self._pulling:
            raise RuntimeError(f"{func_name}() called while another coroutine is already "
                               "waiting for incoming data")
        pipe = self._pipe
        if pipe.fileno() < 0:  # closed by communicate(): as asyncio, no more data
            self.feed_eof()
            return
        self._pulling = True
        try:
            data = await pipe._read(_READ_SIZE)
        finally:
            self._pulling = False
        if data:
            self.feed_data(data)
        else:
            self.feed_eof()


class _Writer:
    """The child's stdin, as asyncio's StreamWriter on a pipe transport:
    :meth:`write` never blocks (what the pipe does not take at once is
    buffered and written as the child reads), :meth:`drain` waits while
    more than 64 KiB are buffered."""

    def __init__(self, pipe: PipeWriter, loop: asyncio.AbstractEventLoop) -> None:
        self._pipe = pipe
        self._loop = loop
        self._buffer = bytearray()
        self._closing = False
        self._exc: BaseException | None = None
        self._lost = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] = loop.create_future()

    # -- the transport part --------------------------------------------------
    def _lose(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._exc = exc
        fd = self._pipe.fileno()
        if self._buffer and fd >= 0:
            self._loop.remove_writer(fd)
        self._buffer.clear()
        self._pipe._close()
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)
        if not self._closed.done():
            if exc is None:
                self._closed.set_result(None)
            else:
                self._closed.set_exception(exc)
                self._closed.exception()  # retrieved: no "never retrieved" log

    def _on_writable(self) -> None:
        fd = self._pipe.fileno()
        try:
            n = os.write(fd, self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        del self._buffer[:n]
        if not self._buffer:
            self._loop.remove_writer(fd)
            if self._closing:
                self._lose(None)
        if len(self._buffer) <= _LOW:
            waiter, self._drain_waiter = self._drain_waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # -- StreamWriter ------------------------------------------------------------
    @property
    def transport(self) -> _Writer:
        """This object (it is its own transport)."""
        return self

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``: written at once as far as the pipe takes it, the
        rest as the child reads. Ignored once the pipe is closed or broken,
        as asyncio does (:meth:`drain` reports a broken pipe)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._lost or self._closing or not data:
            return
        if not self._buffer:
            fd = self._pipe.fileno()
            try:
                n = os.write(fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._lose(exc)
                return
            if n == len(data):
                return
            self._loop.add_writer(fd, self._on_writable)
            data = memoryview(data)[n:]
        self._buffer += data

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write every item of ``data``."""
        self.write(b"".join(data))

    def can_write_eof(self) -> bool:
        """True: closing the pipe is the child's end of input."""
        return True

    def write_eof(self) -> None:
        """Close the pipe once the buffered data is written."""
        self.close()

    def get_write_buffer_size(self) -> int:
        """Bytes queued and not yet taken by the pipe."""
        return len(self._buffer)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``"pipe"``: the descriptor of the pipe (-1 once closed); else ``default``."""
        return self._pipe.fileno() if name == "pipe" else default

    def is_closing(self) -> bool:
        """True once :meth:`close` was called or the pipe broke."""
        return self._closing or self._lost

    def close(self) -> None:
        """Close the pipe once the buffered data is written (the child sees EOF)."""
        if self._closing:
            return
        self._closing = True
        if not self._buffer:
            self._lose(None)

    async def wait_closed(self) -> None:
        """Wait until the pipe is closed; raises the error that broke it, if any."""
        await asyncio.shield(self._closed)

    async def drain(self) -> None:
        """Wait until the buffer is small enough to write more; raises
        BrokenPipeError (or ConnectionResetError) once the child closed its end."""
        if self._lost:
            if self._exc is not None:
                raise self._exc
            if self._closing:
                await asyncio.sleep(0)
                return
            raise ConnectionResetError("Connection lost")
        if self._closing:
            await asyncio.sleep(0)
        if len(self._buffer) <= _HIGH:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = self._loop.create_future()
        await asyncio.shield(waiter)

    def __repr__(self) -> str:
        return f"<StreamWriter fd={self._pipe.fileno()}>"


class Process:
    """A child started by :func:`create_subprocess_exec` or
    :func:`create_subprocess_shell`, as :class:`asyncio.subprocess.Process`.

    ``child`` is the underlying :class:`aunshare.Child` (its kill policy,
    pidfd, cgroup, ...).
    """

    def __init__(self, child: Child, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self.child = child
        """The :class:`aunshare.Child` behind this process."""
        self.pid: int = child.pid
        """The child's process id."""
        self.stdin: _Writer | None = None
        """The child's stdin when ``stdin=PIPE``: a StreamWriter-like object."""
        self.stdout: _Reader | None = None
        """The child's stdout when ``stdout=PIPE``: an :class:`asyncio.StreamReader`."""
        self.stderr: _Reader | None = None
        """The child's stderr when ``stderr=PIPE``: an :class:`asyncio.StreamReader`."""
        if child.stdin is not None:
            self.stdin = _Writer(child.stdin, loop)
        if child.stdout is not None:
            self.stdout = _Reader(child.stdout, limit)
        if child.stderr is not None:
            self.stderr = _Reader(child.stderr, limit)

    def __repr__(self) -> str:
        return f"<Process {self.pid}>"

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has exited (negative: the signal
        that killed it), else None. Updated without :meth:`wait`, as in asyncio."""
        child = self.child
        status = child.status
        if status is None:
            try:
                status = child.try_wait()
            except errors.WaitError:
                return 255  # reaped by someone else: asyncio's answer
        return None if status is None else status.returncode

    async def wait(self) -> int:
        """Wait for the child to exit; return its :attr:`returncode`.

        Cancelled, it stops the child by its kill policy and reaps it first."""
        child = self.child
        status = child.status
        if status is not None:
            return status.returncode
        try:
            status = await child.wait()
        except errors.WaitError:
            _logger.warning("child %d was reaped by someone else; reporting returncode 255",
                            self.pid)
            return 255
        except asyncio.CancelledError:
            await child.shutdown()
            raise
        return status.returncode

    async def _feed(self, input: bytes | None) -> None:
        stdin = self.stdin
        assert stdin is not None
        try:
            if input:
                stdin.write(input)
                await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child stopped reading: its exit status tells the story
        stdin.close()

    @staticmethod
    async def _drain(reader: _Reader) -> bytes:
        data = await reader.read()
        reader._pipe._close()
        return data

    @staticmethod
    async def _none() -> None:
        return None

    async def communicate(self, input: bytes | None = None
                          ) -> tuple[bytes | None, bytes | None]:
        """Send ``input`` to stdin (when piped) and close it, read stdout and
        stderr to EOF, wait for the exit; return ``(stdout, stderr)``, None
        for a stream that is not piped. A child that stops reading its input
        is not an error. Cancelled, it stops the child by its kill policy."""
        try:
            _, out, err = await asyncio.gather(
                self._none() if self.stdin is None else self._feed(input),
                self._none() if self.stdout is None else self._drain(self.stdout),
                self._none() if self.stderr is None else self._drain(self.stderr))
        except asyncio.CancelledError:
            await self.child.shutdown()
            raise
        await self.wait()
        return out, err

    def send_signal(self, signal: int) -> None:
        """Send ``signal`` (through the pidfd: never to a reused pid); nothing
        once the child has been reaped, as :meth:`subprocess.Popen.send_signal`."""
        if self.child.status is not None:
            return
        try:
            self.child.signal(signal)
        except ProcessLookupError:
            pass  # reaped meanwhile
        except errors.WaitError as exc:
            raise ProcessLookupError(errno.ESRCH, str(exc)) from None

    def terminate(self) -> None:
        """Send SIGTERM."""
        self.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL."""
        self.send_signal(_signal.SIGKILL)


def _check_exec_options(kwds: dict[str, Any], *, shell: bool) -> None:
    """asyncio's own refusals (it supports byte streams only)."""
    if kwds.pop("universal_newlines", False):
        raise ValueError("universal_newlines must be False")
    if kwds.pop("shell", shell) != shell:
        raise ValueError("shell must be True" if shell else "shell must be False")
    if kwds.pop("bufsize", 0) != 0:
        raise ValueError("bufsize must be 0")
    if kwds.pop("text", False):
        raise ValueError("text must be False")
    if kwds.pop("encoding", None) is not None:
        raise ValueError("encoding must be None")
    if kwds.pop("errors", None) is not None:
        raise ValueError("errors must be None")


async def _start(argv: list[Any], stdin: object, stdout: object, stderr: object, limit: int,
                 command: Callable[[Command], Command | None] | None,
                 kwds: dict[str, Any]) -> Process:
    if limit <= 0:
        raise ValueError("Limit cannot be <= 0")
    loop = asyncio.get_running_loop()
    child, _ = await spawn(argv, stdin=stdin, stdout=stdout, stderr=stderr, command=command,
                           options=kwds)
    return Process(child, limit, loop)


async def create_subprocess_exec(program: Any, *args: Any, stdin: Any = None,
                                 stdout: Any = None, stderr: Any = None,
                                 limit: int = _DEFAULT_LIMIT,
                                 command: Callable[[Command], Command | None] | None = None,
                                 **kwds: Any) -> Process:
    """Start ``program`` with ``args``, as :func:`asyncio.create_subprocess_exec`.

    ``stdin``/``stdout``/``stderr`` take None (inherit), :data:`PIPE`,
    :data:`DEVNULL`, :data:`STDOUT` (stderr only), a descriptor or a file;
    the other :mod:`subprocess` keywords asyncio passes on are honoured
    (``cwd``, ``env``, ``executable``, ``pass_fds``, ``close_fds``,
    ``start_new_session``, ``process_group``, ``user``, ``group``,
    ``extra_groups``, ``umask``, ``pipesize``). ``preexec_fn`` and the
    Windows-only keywords raise: nothing runs in the child before exec.
    ``command``: a callable given the :class:`~aunshare.Command` before
    the spawn, to change it (or return another).
    """
    _check_exec_options(kwds, shell=False)
    return await _start([program, *args], stdin, stdout, stderr, limit, command, kwds)


async def create_subprocess_shell(cmd: str | bytes, stdin: Any = None, stdout: Any = None,
                                  stderr: Any = None, limit: int = _DEFAULT_LIMIT, *,
                                  command: Callable[[Command], Command | None] | None = None,
                                  **kwds: Any) -> Process:
    """Run ``cmd`` with ``/bin/sh -c``, as :func:`asyncio.create_subprocess_shell`;
    the other arguments as in :func:`create_subprocess_exec`."""
    _check_exec_options(kwds, shell=True)
    return await _start(shell_argv(cmd), stdin, stdout, stderr, limit, command, kwds)



