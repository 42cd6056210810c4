"""trio's subprocess API on aunshare: change one import.

::

    from aunshare.compat.trio import run_process, open_process

    result = await run_process(["ls", "-l"], capture_stdout=True)
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(run_process, ["cat"])

:func:`run_process` and :func:`open_process` take trio's arguments and
behave as :func:`trio.run_process` and :func:`trio.lowlevel.open_process`:
``check``, ``capture_stdout``/``capture_stderr``, ``stdin`` bytes,
``deliver_cancel`` and ``task_status`` (run it with ``nursery.start``), and
a :class:`Process` with trio's streams. They run under trio and under
anyio on asyncio (anyio task groups' ``start`` works too). The extra
keyword ``configure=`` receives the :class:`~aunshare.Command` before the
spawn (trio's own ``command`` is the argument list).

Stream errors are trio's classes where trio is installed (each also an
anyio one: catch either).
"""

from __future__ import annotations

import os
import signal as _signal
import subprocess
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint

from .. import errors
from ..child import Child
from ..command import Command
from ..streams import PipeReader, PipeWriter
from ._popen import DEVNULL, PIPE, STDOUT, spawn

__all__ = ["run_process", "open_process", "Process", "PIPE", "STDOUT", "DEVNULL",
           "BrokenResourceError", "BusyResourceError", "ClosedResourceError"]

if TYPE_CHECKING:
    from trio import BrokenResourceError as _TrioBroken
    from trio import BusyResourceError as _TrioBusy
    from trio import ClosedResourceError as _TrioClosed
else:
    try:
        from trio import BrokenResourceError as _TrioBroken
        from trio import BusyResourceError as _TrioBusy
        from trio import ClosedResourceError as _TrioClosed
    except ImportError:  # no trio: anyio's classes alone
        _TrioBroken = _TrioBusy = _TrioClosed = Exception


class ClosedResourceError(_TrioClosed, anyio.ClosedResourceError):
    """The stream was closed (by this task or another): trio's and anyio's error."""


class BrokenResourceError(_TrioBroken, anyio.BrokenResourceError):
    """The child closed its end of the pipe: trio's and anyio's error."""


class BusyResourceError(_TrioBusy, anyio.BusyResourceError):
    """Another task is already sending (or receiving) on this stream."""


_READ_SIZE = 65536


class ReceiveStream:
    """The reading end of a pipe from the child, as ``trio.abc.ReceiveStream``:
    :meth:`receive_some` returns b"" at EOF; ``async for chunk in stream``."""

    def __init__(self, pipe: PipeReader) -> None:
        self._pipe = pipe
        self._busy = False

    def fileno(self) -> int:
        """The pipe's descriptor (-1 once closed)."""
        return self._pipe.fileno()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` bytes (at least one), or b"" at EOF."""
        if max_bytes is None:
            max_bytes = _READ_SIZE
        elif isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError("max_bytes must be integer >= 1")
        if self._busy:
            raise BusyResourceError("another task is using this stream for receive")
        self._busy = True
        try:
            return await self._pipe._read(max_bytes)
        except anyio.ClosedResourceError:
            raise ClosedResourceError("file was already closed") from None
        except _TrioClosed:
            raise ClosedResourceError("file was already closed") from None
        finally:
            self._busy = False

    def close(self) -> None:
        """Close the pipe now (a task blocked receiving gets ClosedResourceError)."""
        self._pipe._close()

    async def aclose(self) -> None:
        """Close the pipe (a checkpoint, as trio's aclose)."""
        self._pipe._close()
        await checkpoint()

    def __aiter__(self) -> ReceiveStream:
        return self

    async def __anext__(self) -> bytes:
        data = await self.receive_some()
        if not data:
            raise StopAsyncIteration
        return data

    async def __aenter__(self) -> ReceiveStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SendStream:
    """The writing end of a pipe to the child, as ``trio.abc.SendStream``."""

    def __init__(self, pipe: PipeWriter) -> None:
        self._pipe = pipe
        self._busy = False

    def fileno(self) -> int:
        """The pipe's descriptor (-1 once closed)."""
        return self._pipe.fileno()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``; BrokenResourceError once the child closed its end."""
        if self._busy:
            raise BusyResourceError("another task is using this stream for send")
        self._busy = True
        try:
            await self._pipe.send(memoryview(data))
        except anyio.BrokenResourceError:
            raise BrokenResourceError("the child closed its end of the pipe") from None
        except anyio.ClosedResourceError:
            raise ClosedResourceError("file was already closed") from None
        except _TrioClosed:
            raise ClosedResourceError("file was already closed") from None
        finally:
            self._busy = False

    async def wait_send_all_might_not_block(self) -> None:
        """Return once the pipe has room."""
        fd = self._pipe.fileno()
        if fd < 0:
            raise ClosedResourceError("file was already closed")
        await anyio.wait_writable(fd)

    def close(self) -> None:
        """Close the pipe now (the child sees EOF)."""
        self._pipe._close()

    async def aclose(self) -> None:
        """Close the pipe (a checkpoint, as trio's aclose)."""
        self._pipe._close()
        await checkpoint()

    async def __aenter__(self) -> SendStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class StapledStream:
    """stdin and stdout as one bidirectional stream (``Process.stdio``),
    as ``trio.StapledStream``: :meth:`send_eof` closes stdin."""

    def __init__(self, send_stream: SendStream, receive_stream: ReceiveStream) -> None:
        self.send_stream = send_stream
        """The child's stdin."""
        self.receive_stream = receive_stream
        """The child's stdout."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write to the child's stdin."""
        await self.send_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Return once stdin has room."""
        await self.send_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Close stdin: the child reads EOF."""
        await self.send_stream.aclose()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Read from the child's stdout (b"" at EOF)."""
        return await self.receive_stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        """Close both."""
        try:
            await self.send_stream.aclose()
        finally:
            await self.receive_stream.aclose()

    def __aiter__(self) -> ReceiveStream:
        return self.receive_stream

    async def __aenter__(self) -> StapledStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


try:  # isinstance() checks against trio's ABCs hold where trio is installed
    import trio as _trio

    _trio.abc.ReceiveStream.register(ReceiveStream)
    _trio.abc.SendStream.register(SendStream)
    _trio.abc.HalfCloseableStream.register(StapledStream)
except ImportError:
    pass


class Process:
    """A child started by :func:`open_process` (or :func:`run_process` under
    ``nursery.start``), as :class:`trio.Process`.

    ``async with process:`` runs :meth:`aclose` at the end of the block.
    ``child`` is the underlying :class:`aunshare.Child`.
    """

    universal_newlines = False
    encoding = None
    errors = None

    def __init__(self, child: Child, args: Any) -> None:
        self.child = child
        """The :class:`aunshare.Child` behind this process."""
        self.args = args
        """The command as given."""
        self.pid: int = child.pid
        """The child's process id."""
        self.stdin: SendStream | None = None
        """The child's stdin when ``stdin=PIPE``."""
        self.stdout: ReceiveStream | None = None
        """The child's stdout when ``stdout=PIPE``."""
        self.stderr: ReceiveStream | None = None
        """The child's stderr when ``stderr=PIPE``."""
        self.stdio: StapledStream | None = None
        """stdin and stdout stapled together, when both are piped."""
        self._unknowable = False  # reaped elsewhere: the status is 0, as subprocess says
        self._own_policy = False  # the Command set a kill policy or a cgroup: deliver by it
        if child.stdin is not None:
            self.stdin = SendStream(child.stdin)
        if child.stdout is not None:
            self.stdout = ReceiveStream(child.stdout)
        if child.stderr is not None:
            self.stderr = ReceiveStream(child.stderr)
        if self.stdin is not None and self.stdout is not None:
            self.stdio = StapledStream(self.stdin, self.stdout)

    @property
    def _pidfd(self) -> int | None:
        # trio's own attribute, which its tests read: None once reaped
        fd = self.child.pidfd
        return None if fd < 0 else fd

    def __repr__(self) -> str:
        code = self.returncode
        if code is None:
            status = f"running with PID {self.pid}"
        elif code < 0:
            status = f"exited with signal {-code}"
        else:
            status = f"exited with status {code}"
        return f"<trio.Process {self.args!r}: {status}>"

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while
        running; up to date without :meth:`wait`, as in trio."""
        if self._unknowable:
            return 0
        child = self.child
        status = child.status
        if status is None:
            try:
                status = child.try_wait()
            except errors.WaitError:
                self._unknowable = True
                return 0
        return None if status is None else status.returncode

    def poll(self) -> int | None:
        """The same as :attr:`returncode`."""
        return self.returncode

    async def wait(self) -> int:
        """Wait until the child exits; return its :attr:`returncode`.
        Cancelling it leaves the child alone, as in trio."""
        if not self._unknowable:
            try:
                await self.child.wait()
            except errors.WaitError:
                self._unknowable = True
        code = self.returncode
        assert code is not None
        return code

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` through the pidfd; nothing once the child has exited
        and been reaped (as :meth:`subprocess.Popen.send_signal`)."""
        if self.returncode is not None:
            return
        try:
            self.child.signal(sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        """Send SIGTERM."""
        self.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL."""
        self.send_signal(_signal.SIGKILL)

    async def aclose(self) -> None:
        """Close the pipes to the child and wait for it to exit; if
        cancelled meanwhile, kill it and wait for that before the
        cancellation goes on (trio's ``async with process`` rules)."""
        with anyio.CancelScope(shield=True):
            for stream in (self.stdin, self.stdout, self.stderr):
                if stream is not None:
                    await stream.aclose()
        try:
            await self.wait()
        finally:
            if self.returncode is None:
                self.kill()
                with anyio.CancelScope(shield=True):
                    await self.wait()

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_TEXT_OPTIONS = ("universal_newlines", "text", "encoding", "errors", "bufsize")


async def open_process(command: Any, *, stdin: Any = None, stdout: Any = None,
                       stderr: Any = None,
                       configure: Callable[[Command], Command | None] | None = None,
                       **options: Any) -> Process:
    """Start ``command`` (a sequence; a string with ``shell=True``) and
    return its :class:`Process`, as :func:`trio.lowlevel.open_process`.

    ``stdin``/``stdout``/``stderr``: None (inherit), :data:`PIPE`,
    :data:`DEVNULL`, :data:`STDOUT` (stderr only), a descriptor or a file.
    The other :mod:`subprocess` keywords are honoured as in
    :func:`aunshare.compat.asyncio.create_subprocess_exec` (``preexec_fn``
    raises: nothing runs in the child before exec). ``configure``: a
    callable given the :class:`~aunshare.Command` before the spawn.
    """
    if options:
        for key in _TEXT_OPTIONS:
            if options.pop(key, None):
                raise TypeError("aunshare.compat.trio.Process only supports communicating "
                                f"over unbuffered byte streams; the '{key}' option is not "
                                "supported")
    shell = options.pop("shell", False) if options else False
    if isinstance(command, (str, bytes)) and not shell:
        raise TypeError("command must be a sequence (not a string or bytes) if "
                        "shell=False on UNIX systems")
    if not isinstance(command, (str, bytes)) and shell:
        raise TypeError("command must be a string or bytes (not a sequence) if "
                        "shell=True on UNIX systems")
    argv: list[Any] = (["/bin/sh", "-c", command] if shell
                       else [os.fspath(a) if isinstance(a, os.PathLike) else a
                             for a in command])
    child, cmd = await spawn(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                             command=configure, options=options)
    proc = Process(child, command)
    spec = cmd.spec()
    proc._own_policy = spec.lifetime.kill_policy is not None or spec.own_cgroup
    return proc


async def _deliver_cancel(proc: Process) -> None:
    """trio's default: SIGTERM, 5 seconds, a warning and SIGKILL; or the
    child's own kill policy when the Command set one (``configure=``)."""
    if proc._own_policy:
        await proc.child.shutdown()
        return
    try:
        proc.terminate()
        await anyio.sleep(5)
        warnings.warn(RuntimeWarning(
            f"process {proc!r} ignored SIGTERM for 5 seconds. (Maybe you should pass a "
            "custom deliver_cancel?) Trying SIGKILL."), stacklevel=1)
        proc.kill()
    except OSError as exc:
        warnings.warn(RuntimeWarning(f"tried to kill process {proc!r}, but failed with: "
                                     f"{exc!r}"), stacklevel=1)


_TRIO_IGNORED: object = anyio.TASK_STATUS_IGNORED
try:  # looked up once, not per call
    import trio as _trio_mod

    _TRIO_IGNORED = _trio_mod.TASK_STATUS_IGNORED
except ImportError:
    pass


def _ignored(task_status: object) -> bool:
    return task_status is anyio.TASK_STATUS_IGNORED or task_status is _TRIO_IGNORED


async def run_process(command: Any, *,
                      task_status: TaskStatus[Process] = anyio.TASK_STATUS_IGNORED,
                      stdin: Any = b"", capture_stdout: bool = False,
                      capture_stderr: bool = False, check: bool = True,
                      deliver_cancel: Callable[[Process], Awaitable[object]] | None = None,
                      configure: Callable[[Command], Command | None] | None = None,
                      **options: Any) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` and wait for it, as :func:`trio.run_process`.

    ``stdin``: bytes to feed (default b"": an empty stdin), or what
    :func:`open_process` accepts. ``capture_stdout``/``capture_stderr``
    collect the output into the result. ``check``: raise
    :class:`subprocess.CalledProcessError` on a non-zero exit. Cancelled,
    it calls ``deliver_cancel(process)`` (default: SIGTERM, 5 s, SIGKILL;
    the Command's kill policy when ``configure`` set one) and waits for the
    exit before the cancellation goes on. Under ``nursery.start`` (or an
    anyio task group's ``start``) it hands back the :class:`Process` once
    started. Returns a :class:`subprocess.CompletedProcess`.
    """
    if isinstance(stdin, str):
        raise UnicodeError("process stdin must be bytes, not str")
    if _ignored(task_status):
        if stdin is PIPE:
            raise ValueError("stdin=subprocess.PIPE is only valid with nursery.start, since "
                             "that's the only way to access the pipe; use nursery.start or "
                             "pass the data you want to write directly")
        for name in ("stdout", "stderr"):
            if options.get(name) is PIPE:
                raise ValueError(f"{name}=subprocess.PIPE is only valid with nursery.start, "
                                 "since that's the only way to access the pipe")
    input_: bytes | bytearray | memoryview | None = None
    if isinstance(stdin, (bytes, bytearray, memoryview)):
        # Empty input is an empty stdin: /dev/null says the same, without a pipe.
        if len(stdin):
            input_ = stdin
        options["stdin"] = PIPE if len(stdin) else DEVNULL
    else:
        options["stdin"] = stdin
    if capture_stdout:
        if "stdout" in options:
            raise ValueError("can't specify both stdout and capture_stdout")
        options["stdout"] = PIPE
    if capture_stderr:
        if "stderr" in options:
            raise ValueError("can't specify both stderr and capture_stderr")
        options["stderr"] = PIPE
    if deliver_cancel is None:
        deliver_cancel = _deliver_cancel
    stdout_chunks: list[bytes] = []
    stderr_chunks: list[bytes] = []

    async def feed_input(stream: SendStream) -> None:
        async with stream:
            try:
                assert input_ is not None
                await stream.send_all(input_)
            except BrokenResourceError:
                pass

    async def read_output(stream: ReceiveStream, chunks: list[bytes]) -> None:
        async with stream:
            async for chunk in stream:
                chunks.append(chunk)

    async def stop(proc: Process, tg: anyio.abc.TaskGroup) -> None:
        """Deliver the cancellation in ``tg`` and wait for the exit,
        shielded; the delivery is cancelled once the child has exited."""
        killer_scope = anyio.CancelScope(shield=True)
        assert deliver_cancel is not None

        async def killer() -> None:
            with killer_scope:
                await deliver_cancel(proc)

        with anyio.CancelScope(shield=True):
            tg.start_soon(killer)
            await proc.wait()
            killer_scope.cancel()

    proc = await open_process(command, configure=configure, **options)
    if input_ is None and not capture_stdout and not capture_stderr:
        # Nothing to pump: no task group needed while it runs.
        try:
            task_status.started(proc)
            await proc.wait()
        except BaseException:
            async with anyio.create_task_group() as tg:
                await stop(proc, tg)
            raise
    else:
        async with anyio.create_task_group() as tg:
            try:
                if input_ is not None:
                    assert proc.stdin is not None
                    tg.start_soon(feed_input, proc.stdin)
                    proc.stdin = None
                    proc.stdio = None
                if capture_stdout:
                    assert proc.stdout is not None
                    tg.start_soon(read_output, proc.stdout, stdout_chunks)
                    proc.stdout = None
                    proc.stdio = None
                if capture_stderr:
                    assert proc.stderr is not None
                    tg.start_soon(read_output, proc.stderr, stderr_chunks)
                    proc.stderr = None
                task_status.started(proc)
                await proc.wait()
            except BaseException:
                await stop(proc, tg)
                raise
    out = b"".join(stdout_chunks) if capture_stdout else None
    err = b"".join(stderr_chunks) if capture_stderr else None
    code = proc.returncode
    assert code is not None
    if code and check:
        raise subprocess.CalledProcessError(code, proc.args, output=out, stderr=err)
    return subprocess.CompletedProcess(proc.args, code, out, err)

