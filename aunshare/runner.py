"""Running commands to completion: :func:`run` (one, subprocess-style) and
the job runner :func:`run_many` / :func:`run_as_completed` (many, at most
``limit`` at once).

Each child is started as the leader of a new process group by default, so
its kill policy (target AUTO) reaches everything it started: a timeout or a
cancellation never leaves a grandchild behind. While output is being
collected the child is left unreaped, which keeps its process group id (and
pid) from being reused until the group has been dealt with.

No thread is used, per child or otherwise: a job runner with ``limit=N``
is N tasks, each awaiting its child's pidfd and pipes on the event loop.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import (
    AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence, Sized,
)
from contextlib import asynccontextmanager
from subprocess import CompletedProcess
from typing import Any

import anyio

from . import errors
from ._record import record
from ._tasks import background_tasks
from .child import Child
from .command import Command, Stdio, StrOrBytesPath
from .policy import KillPolicy
from .status import CgroupUsage, ExitStatus
from .streams import Capture, check_capture

__all__ = ["run", "run_many", "run_as_completed", "JobResult", "CommandLike", "CompletedRun",
           "DEFAULT_JOB_WAIT_DELAY"]

CommandLike = Command | Sequence[StrOrBytesPath]
"""A :class:`Command`, or an argument list whose first item is the program."""


def _as_command(item: object, what: str) -> tuple[Command, Any]:
    """(a private Command to adjust, the ``args`` to report) for ``item``."""
    if isinstance(item, Command):
        return item.copy(), [os.fsdecode(a) for a in item.get_argv()]
    if isinstance(item, (str, bytes, os.PathLike)):
        raise TypeError(f"{what} takes an argument list or a Command, not a single "
                        f"{type(item).__name__}: aunshare runs no shell (use "
                        f"['sh', '-c', {item!r}] for shell syntax)")
    if not isinstance(item, Sequence):
        raise TypeError(f"{what} takes an argument list or a Command, "
                        f"not {type(item).__name__}")
    if not item:
        raise ValueError(f"{what} got an empty argument list")
    return Command(item[0]).args(item[1:]), item


def _check_timeout(timeout: float | None) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("timeout must be a number of seconds or None, "
                        f"not {type(timeout).__name__}")
    if not timeout > 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")


class CompletedRun(CompletedProcess[bytes]):
    """What :func:`run` returns: a :class:`subprocess.CompletedProcess`
    (``args``, ``returncode``, ``stdout``, ``stderr``) that also says how
    the child ended, with what its own cgroup used, and whether the
    captured output is complete."""

    status: ExitStatus
    """How the child ended (:class:`~aunshare.ExitStatus`)."""
    stdout_truncated: bool = False
    """True when stdout had more than ``max_output`` bytes (only the first,
    or with ``keep="tail"`` the last, ``max_output`` were kept)."""
    stderr_truncated: bool = False
    """The same for stderr."""
    cut_short: bool = False
    """True when ``wait_delay`` ran out while a pipe was still open after
    the child exited (or was killed on timeout): the output is what was
    read until then."""

    def __init__(self, args: Any, status: ExitStatus, stdout: bytes | None,
                 stderr: bytes | None) -> None:
        super().__init__(args, status.returncode, stdout, stderr)
        self.status = status

    @property
    def cgroup_usage(self) -> CgroupUsage | None:
        """What the child's own cgroup used (resource limits or
        :meth:`Command.new_cgroup`), else None."""
        return self.status.cgroup_usage

    @property
    def oom_killed(self) -> bool:
        """The child was killed for running out of memory (its memory limit)."""
        return self.status.oom_killed


@record
class _Finished:
    status: ExitStatus
    stdout: bytes | None
    stderr: bytes | None
    stdout_truncated: bool
    stderr_truncated: bool
    cut_short: bool


def _value(cap: Capture | None) -> bytes | None:
    return None if cap is None else cap.value()


async def _after_kill(child: Child, caps: tuple[Capture | None, Capture | None],
                      wait_delay: float | None) -> bool:
    """The output left once a timed-out child was stopped: with
    ``wait_delay``, read on until EOF for at most that long (True when it
    ran out); without, only what the pipes already hold."""
    pairs = [(cap, stream) for cap, stream in zip(caps, (child.stdout, child.stderr))
             if cap is not None and stream is not None and stream.fileno() >= 0
             and not cap.eof]
    if wait_delay is None or not pairs:
        for cap, stream in pairs:
            cap.read_ready(stream)
        return False
    with anyio.move_on_after(wait_delay):
        async with anyio.create_task_group() as tg:
            for cap, stream in pairs:
                tg.start_soon(cap.drain, stream)
    for cap, stream in pairs:
        if not cap.eof:
            cap.read_ready(stream, max_reads=4)  # written before the delay ran out
    return not all(cap.eof for cap, _ in pairs)


async def _run_to_end(child: Child, args: Any, input: bytes | None,
                     timeout: float | None, max_output: int | None = None,
                     keep: str = "head", wait_delay: float | None = None) -> _Finished:
    """Feed, collect, wait; on timeout stop the child by its policy and raise
    TimeoutExpired; on anything else (a cancellation) stop it and re-raise."""
    out = None if child.stdout is None else Capture(max_output, keep)
    err = None if child.stderr is None else Capture(max_output, keep)
    cut = False
    try:
        with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
            if child.stdin is None and child.stdout is None and child.stderr is None:
                await child.until_exited()
            else:
                cut = await child._pump(input, out, err, wait_delay)
        if scope.cancelled_caught:
            status = await child.shutdown()
            cut = await _after_kill(child, (out, err), wait_delay)
            assert timeout is not None  # an infinite deadline never expires
            exc = errors.TimeoutExpired(args, timeout, _value(out), _value(err), status=status)
            exc.stdout_truncated = out is not None and out.truncated
            exc.stderr_truncated = err is not None and err.truncated
            exc.cut_short = cut
            raise exc
        status = await child.wait()
    finally:
        await child.aclose()  # a no-op for the child once reaped; clears its cgroup
    return _Finished(status, _value(out), _value(err), out is not None and out.truncated,
                     err is not None and err.truncated, cut)


def _prepare(cmd: Command, *, input: bytes | None, capture_output: bool,
             stdin_default: Stdio | None, cwd: StrOrBytesPath | None,
             env: Mapping[Any, Any] | None, kill_policy: KillPolicy | None,
             process_group: bool) -> None:
    if input is not None:
        if not isinstance(input, (bytes, bytearray, memoryview)):
            raise TypeError(f"input must be bytes, not {type(input).__name__}")
        cmd.stdin(Stdio.piped())
    elif stdin_default is not None and cmd.spec().fds.get(0) is None:
        cmd.stdin(stdin_default)
    if capture_output:
        cmd.stdout(Stdio.piped()).stderr(Stdio.piped())
    if cwd is not None:
        cmd.current_dir(cwd)
    if env is not None:
        cmd.env_clear().envs(env)
    if kill_policy is not None:
        cmd.kill_policy(kill_policy)
    if process_group:
        cmd.make_group_leader()


async def run(
    args: CommandLike,
    *,
    input: bytes | None = None,
    capture_output: bool = False,
    check: bool = False,
    timeout: float | None = None,
    cwd: StrOrBytesPath | None = None,
    env: Mapping[Any, Any] | None = None,
    kill_policy: KillPolicy | None = None,
    process_group: bool = True,
    max_output: int | None = None,
    keep: str = "head",
    wait_delay: float | None = None,
) -> CompletedRun:
    """Run a command to completion, like :func:`subprocess.run`, on the event loop.

    ``args`` is an argument list (no shell: a single string is refused) or a
    :class:`Command`, which is not modified. ``input`` is written to the
    child's stdin (then closed); without it stdin is the Command's, by
    default inherited. ``capture_output`` pipes stdout and stderr into the
    result (bytes; None when not captured). ``cwd`` and ``env`` (the whole
    environment) override the Command's.

    ``timeout`` (seconds): when it expires the child is stopped by its kill
    policy (``kill_policy``, else the Command's, else SIGTERM, 5 s, SIGKILL),
    reaped, and :class:`~aunshare.TimeoutExpired` is raised with the output
    captured so far. With ``process_group`` (the default) the child leads a
    new process group and the policy's AUTO target kills the whole group, so
    nothing it started survives the timeout; a Command with
    :meth:`~Command.new_cgroup` is killed as its cgroup instead. A
    cancellation of the caller does the same before it propagates.

    ``max_output`` (bytes, per captured stream) keeps the first bytes, or
    the last ones with ``keep="tail"``; the rest is read and dropped, so
    the child never blocks on a full pipe. ``wait_delay`` (seconds; None,
    the default, waits for the end of output) bounds the reading once the
    child has exited, or once it was stopped on timeout, like Go's
    ``Cmd.WaitDelay``: a grandchild holding stdout open cannot make
    ``run()`` hang. Without it, output is read after a timeout only as far
    as the pipes already hold it.

    Returns a :class:`CompletedRun` (a :class:`subprocess.CompletedProcess`
    with the :class:`~aunshare.ExitStatus` as ``status``, so with the
    ``cgroup_usage`` and ``oom_killed`` verdict of a Command with resource
    limits, and telling also ``stdout_truncated``, ``stderr_truncated`` and
    ``cut_short``); with ``check`` a non-zero exit raises
    :class:`~aunshare.CalledProcessError` (a
    :class:`subprocess.CalledProcessError`, whose message says "out of
    memory" when that is why). Spawn failures raise the typed
    :class:`~aunshare.Error` subclasses.
    """
    _check_timeout(timeout)
    check_capture(max_output, keep, wait_delay, "run()")
    cmd, shown = _as_command(args, "run()")
    _prepare(cmd, input=input, capture_output=capture_output, stdin_default=None, cwd=cwd,
             env=env, kill_policy=kill_policy, process_group=process_group)
    child = await cmd.spawn()
    done = await _run_to_end(child, shown, None if input is None else bytes(input), timeout,
                             max_output, keep, wait_delay)
    code = done.status.returncode
    if check and code != 0:
        raise errors.CalledProcessError(code, shown, done.stdout, done.stderr, status=done.status)
    result = CompletedRun(shown, done.status, done.stdout, done.stderr)
    result.stdout_truncated = done.stdout_truncated
    result.stderr_truncated = done.stderr_truncated
    result.cut_short = done.cut_short
    return result


# -- the job runner ------------------------------------------------------------------------

@record
class JobResult:
    """The outcome of one job of :func:`run_many` / :func:`run_as_completed`."""

    index: int
    """The job's position among the submitted commands (0-based)."""
    args: Any
    """The command as submitted: its argument list (a Command's argv, decoded)."""
    status: ExitStatus | None
    """How the child ended; None when it never started (see ``error``)."""
    stdout: bytes | None
    """Captured stdout (None when not captured)."""
    stderr: bytes | None
    """Captured stderr (None when not captured)."""
    error: errors.Error | None
    """Why the job failed: a spawn error (:class:`~aunshare.Exec`, ...),
    :class:`~aunshare.TimeoutExpired`, or with ``check``
    :class:`~aunshare.CalledProcessError`; None when it did not."""
    elapsed: float
    """Seconds from the start of the spawn to the end of the job."""
    stdout_truncated: bool = False
    """True when stdout had more than ``max_output`` bytes (see :func:`run_many`)."""
    stderr_truncated: bool = False
    """The same for stderr."""
    cut_short: bool = False
    """True when ``wait_delay`` ran out while a pipe was still open after the
    child exited (or was stopped on timeout): the output is what was read."""

    @property
    def returncode(self) -> int | None:
        """The subprocess-style return code, or None when the child never started."""
        return None if self.status is None else self.status.returncode

    @property
    def cgroup_usage(self) -> CgroupUsage | None:
        """What the job's own cgroup used (resource limits), else None."""
        return None if self.status is None else self.status.cgroup_usage

    @property
    def oom_killed(self) -> bool:
        """The job was killed for running out of memory (its memory limit)."""
        return self.status is not None and self.status.oom_killed

    @property
    def ok(self) -> bool:
        """True when the job ran, did not time out, and exited with code 0."""
        return self.error is None and self.status is not None and self.status.success()


Progress = Callable[[JobResult, int, int | None], Awaitable[Any] | Any]


@record
class _JobOptions:
    limit: int
    timeout: float | None
    capture_output: bool
    check: bool
    fail_fast: bool
    progress: Progress | None
    kill_policy: KillPolicy | None
    process_group: bool
    max_output: int | None = None
    keep: str = "head"
    wait_delay: float | None = None


DEFAULT_JOB_WAIT_DELAY = 2.0
"""The default ``wait_delay`` of :func:`run_many` and :func:`run_as_completed`
(seconds): a job runner must not stall a slot forever on a job whose
background process keeps its output open, and 2 s is far longer than a
normal process takes to flush and close its pipes after it exits."""


def _options(limit: int | None, timeout: float | None, capture_output: bool, check: bool,
             fail_fast: bool, progress: Progress | None, kill_policy: KillPolicy | None,
             process_group: bool, max_output: int | None = None, keep: str = "head",
             wait_delay: float | None = None, what: str = "run_many()") -> _JobOptions:
    if limit is None:
        limit = os.cpu_count() or 4
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    _check_timeout(timeout)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable, not {type(progress).__name__}")
    if kill_policy is not None and not isinstance(kill_policy, KillPolicy):
        raise TypeError(f"kill_policy must be a KillPolicy, not {type(kill_policy).__name__}")
    check_capture(max_output, keep, wait_delay, what)
    return _JobOptions(limit, timeout, capture_output, check, fail_fast, progress, kill_policy,
                       process_group, max_output, keep, wait_delay)


async def _run_job(index: int, item: object, opts: _JobOptions) -> JobResult:
    cmd, shown = _as_command(item, "run_many()")
    _prepare(cmd, input=None, capture_output=opts.capture_output,
             stdin_default=Stdio.null(), cwd=None, env=None,
             kill_policy=opts.kill_policy, process_group=opts.process_group)
    t0 = time.monotonic()
    try:
        child = await cmd.spawn()
        done = await _run_to_end(child, shown, None, opts.timeout, opts.max_output, opts.keep,
                                 opts.wait_delay)
    except errors.TimeoutExpired as exc:
        return JobResult(index, shown, exc.status, exc.output, exc.stderr, exc,
                         time.monotonic() - t0, exc.stdout_truncated, exc.stderr_truncated,
                         exc.cut_short)
    except errors.Error as exc:  # the spawn failed: no child
        return JobResult(index, shown, None, None, None, exc, time.monotonic() - t0)
    error = None
    if opts.check and not done.status.success():
        error = errors.CalledProcessError(done.status.returncode, shown, done.stdout,
                                          done.stderr, status=done.status)
    return JobResult(index, shown, done.status, done.stdout, done.stderr, error,
                     time.monotonic() - t0, done.stdout_truncated, done.stderr_truncated,
                     done.cut_short)


async def _run_jobs(commands: Iterable[CommandLike], opts: _JobOptions,
                    emit: Callable[[JobResult], Awaitable[None]]) -> None:
    """Run every command, at most ``opts.limit`` at once, emitting each result
    as it completes. Raises the first failure in fail-fast mode, and any
    error of the iterable, of a command's conversion or of ``emit``."""
    total = len(commands) if isinstance(commands, Sized) else None
    jobs = enumerate(commands)
    done = 0
    failure: list[BaseException] = []

    async def worker(scope: anyio.CancelScope) -> None:
        nonlocal done
        try:
            # The workers share one iterator: a job is taken only when a slot is free.
            for index, item in jobs:
                result = await _run_job(index, item, opts)
                done += 1
                await emit(result)
                if opts.progress is not None:
                    ret = opts.progress(result, done, total)
                    if inspect.isawaitable(ret):
                        await ret
                if opts.fail_fast and result.error is not None:
                    raise result.error
        except Exception as exc:  # not lost in an ExceptionGroup: the first one wins
            if not failure:
                failure.append(exc)
            scope.cancel()

    async with anyio.create_task_group() as tg:
        for _ in range(opts.limit if total is None else min(opts.limit, total)):
            tg.start_soon(worker, tg.cancel_scope)
    if failure:
        raise failure[0]


async def run_many(
    commands: Iterable[CommandLike],
    *,
    limit: int | None = None,
    timeout: float | None = None,
    capture_output: bool = True,
    check: bool = False,
    fail_fast: bool = False,
    progress: Progress | None = None,
    kill_policy: KillPolicy | None = None,
    process_group: bool = True,
    max_output: int | None = None,
    keep: str = "head",
    wait_delay: float | None = DEFAULT_JOB_WAIT_DELAY,
) -> list[JobResult]:
    """Run every command, at most ``limit`` (default: the CPU count) at once,
    and return one :class:`JobResult` per command, in submission order.

    ``commands`` is any iterable of argument lists or Commands (Commands are
    not modified); it is consumed lazily, one item as a slot frees up, so a
    generator of a million jobs is fine. Each job's stdin is /dev/null
    unless its Command sets it; with ``capture_output`` (the default) its
    stdout and stderr are collected.

    ``timeout`` applies to each job: the job's child is stopped by the kill
    policy and the job's result carries :class:`~aunshare.TimeoutExpired`.
    With ``check``, a non-zero exit is an error too
    (:class:`~aunshare.CalledProcessError`). ``progress(result, done,
    total)`` is called (and awaited, if it returns an awaitable) after each
    job; ``total`` is None for an iterable without a length.

    Errors: by default every job runs and errors are collected in the
    results. With ``fail_fast`` the first failing job stops the run: jobs
    not started are skipped, running ones are stopped by their kill policy,
    and that job's error is raised. An exception from ``progress`` or from
    the iterable stops the run the same way and is raised.

    ``max_output``, ``keep`` and ``wait_delay`` bound each job's capture as
    in :func:`run` (``JobResult.stdout_truncated``, ``stderr_truncated``,
    ``cut_short``), except that ``wait_delay`` defaults to
    :data:`DEFAULT_JOB_WAIT_DELAY` (2 s) rather than None: one job whose
    background process keeps stdout open must not hold a slot forever.
    Pass ``wait_delay=None`` to wait for the end of output.
    """
    opts = _options(limit, timeout, capture_output, check, fail_fast, progress, kill_policy,
                    process_group, max_output, keep, wait_delay)
    results: dict[int, JobResult] = {}

    async def store(result: JobResult) -> None:
        results[result.index] = result

    await _run_jobs(commands, opts, store)
    return [results[i] for i in range(len(results))]


class _Results:
    """The async iterator :func:`run_as_completed` yields."""

    def __init__(self, receive: anyio.abc.ObjectReceiveStream[JobResult | BaseException]) -> None:
        self._receive = receive

    def __aiter__(self) -> _Results:
        return self

    async def __anext__(self) -> JobResult:
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        if isinstance(item, BaseException):
            raise item
        return item


@asynccontextmanager
async def run_as_completed(
    commands: Iterable[CommandLike],
    *,
    limit: int | None = None,
    timeout: float | None = None,
    capture_output: bool = True,
    check: bool = False,
    fail_fast: bool = False,
    progress: Progress | None = None,
    kill_policy: KillPolicy | None = None,
    process_group: bool = True,
    max_output: int | None = None,
    keep: str = "head",
    wait_delay: float | None = DEFAULT_JOB_WAIT_DELAY,
) -> AsyncIterator[AsyncIterator[JobResult]]:
    """:func:`run_many` as an async iterator of results in completion order::

        async with aunshare.run_as_completed(commands, limit=8) as results:
            async for result in results:
                print(result.index, result.returncode)

    The same options as :func:`run_many`; with ``fail_fast`` the iteration
    raises the first failure. Leaving the block early (``break``, an error,
    a cancellation) stops the jobs still running by their kill policy and
    starts no more; the block exits once they are reaped.
    """
    opts = _options(limit, timeout, capture_output, check, fail_fast, progress, kill_policy,
                    process_group, max_output, keep, wait_delay, "run_as_completed()")
    send, receive = anyio.create_memory_object_stream[JobResult | BaseException](opts.limit)

    async def produce() -> None:
        async with send:
            try:
                await _run_jobs(commands, opts, send.send)
            except Exception as exc:  # handed to the iterating block, not lost in a group
                await send.send(exc)

    # Exit order: stop the jobs first, then close the receiving end.
    async with receive, background_tasks() as tg:
        tg.start_soon(produce)
        yield _Results(receive)
