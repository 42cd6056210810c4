"""Starting a child on the event loop: :func:`spawn` turns a frozen
:class:`~aunshare.spec.Spec` into a running :class:`~aunshare.Child`.

It chooses the path (the vfork path when the loop has no other child to
serve), starts the child (:func:`aunshare.launch.start`), does the
parent's part of the handshake while the child waits (id maps,
newuidmap/newgidmap, the ``before_unfreeze`` hook, the child's pid), and
watches the error pipe until the exec. On any failure or cancellation
before the Child exists, the half-started child is torn down by
:meth:`Pending.abandon <aunshare.launch.Pending.abandon>`, the one
teardown path.
"""

from __future__ import annotations

import errno as _errno
import math
import os
from collections.abc import Callable

import anyio

from . import errors
from ._linux import SYSCALLS
from .child import Child, Output, _orphans, _running_trio, _stuck, _unreaped, reap_orphans
from .fds import Fd, FdKind
from .handshake import listener_ready, map_ids, start_network, take_listener, wake, watch_exec
from .launch import DefaultStdio, Pending, start
from .spec import DescriptorSpec, ProgramSpec, Spec

__all__ = ["spawn", "DefaultStdio", "Child", "Output"]

# Spawns under way (tokens: set operations are atomic across threads):
# while there are others, a spawn must not put the event loop's thread to
# sleep until its exec (the vfork path).
_starting: set[object] = set()


_asyncio_deadline: Callable[[], float] | None = None


def _find_asyncio_deadline() -> Callable[[], float]:
    """anyio's asyncio backend's own current_effective_deadline, where
    anyio lets a library reach it (anyio.lowlevel.get_async_backend);
    else anyio's public function."""
    global _asyncio_deadline
    get = getattr(anyio.lowlevel, "get_async_backend", None)
    found: Callable[[], float] = (anyio.current_effective_deadline if get is None
                                  else get("asyncio").current_effective_deadline)
    _asyncio_deadline = found
    return found


async def spawn(spec: Spec, default_stdio: DefaultStdio = DefaultStdio.INHERIT) -> Child:
    """Start the child ``spec`` describes; return once it has exec'd.
    Errors before exec are raised typed, with nothing left behind.

    Nothing is started in a cancelled scope, or in one whose deadline has
    passed (on asyncio a deadline is noticed one loop iteration late, and
    thousands of queued spawns would otherwise all clone in it).
    """
    # -inf in a cancelled scope: one check for both (cheaper than
    # checkpoint_if_cancelled, which would miss a passed deadline). The
    # backend's own call: anyio's dispatch to it costs a spawn ~4 us.
    trio = _running_trio()
    if trio is not None:
        deadline = trio.current_effective_deadline()
    else:
        deadline = (_asyncio_deadline or _find_asyncio_deadline())()
    if deadline != math.inf:
        while deadline == -math.inf or anyio.current_time() >= deadline:
            await anyio.lowlevel.checkpoint()  # lets the cancellation arrive
            deadline = anyio.current_effective_deadline()
    if _orphans or _stuck:
        reap_orphans()
    token = object()
    _starting.add(token)
    try:
        pending = start(spec, default_stdio, allow_vfork=len(_starting) == 1 and not _unreaped)
        if pending.wake_fd >= 0 or pending.report_fd >= 0:
            try:
                if pending.wake_fd >= 0:
                    await _handshake(pending)

                if pending.report_fd >= 0:
                    await _await_exec(pending)
            except BaseException:
                # Cancelled (or worse) before the exec was confirmed.
                with anyio.CancelScope(shield=True):
                    await pending.abandon()
                raise
        return Child(pending)
    finally:
        _starting.discard(token)


async def _handshake(pending: Pending) -> None:
    """The parent's part while the child waits, then let it go on."""
    if not map_ids(pending):  # newuidmap/newgidmap write the maps
        iso, pid = pending.spec.isolation, pending.pid
        assert iso.id_map_commands is not None and iso.uid_maps is not None
        newuidmap, newgidmap = iso.id_map_commands
        if iso.uid_maps:
            await _run_map_helper(newuidmap, pid, iso.uid_maps)
        if iso.gid_maps:
            await _run_map_helper(newgidmap, pid, iso.gid_maps)
    if pending.spec.isolation.user_network is not None:
        steps = start_network(pending)
        try:
            for fds, seconds in steps:
                with anyio.move_on_after(seconds):
                    await _readable_any(fds)
        finally:
            steps.close()  # cancelled: stops pasta
    hook = pending.spec.isolation.before_unfreeze
    if hook is not None:
        try:
            await hook(pending.pid)
        except Exception as exc:
            raise errors.BeforeUnfreeze(
                f"the before_unfreeze callback {getattr(hook, '__qualname__', hook)!s} "
                f"raised {type(exc).__name__}: {exc}") from exc
    wake(pending)
    if pending.ready_fd >= 0:  # syscall supervision: take the listener, let it exec
        while listener_ready(pending) is None:
            await anyio.wait_readable(pending.ready_fd)
        take_listener(pending)


async def _readable_any(fds: tuple[int, ...]) -> None:
    """Return once one of ``fds`` is readable."""
    if len(fds) == 1:
        await anyio.wait_readable(fds[0])
        return
    async with anyio.create_task_group() as tg:
        async def one(fd: int) -> None:
            await anyio.wait_readable(fd)
            tg.cancel_scope.cancel()
        for fd in fds:
            tg.start_soon(one, fd)


async def _run_map_helper(program: bytes, pid: int, maps: tuple[tuple[int, int, int], ...]
                          ) -> None:
    """Run newuidmap/newgidmap for ``pid`` as an awaited child of our own."""
    name = os.path.basename(os.fsdecode(program))
    args = [str(pid).encode()]
    for m in maps:
        args += [str(m[0]).encode(), str(m[1]).encode(), str(m[2]).encode()]
    helper = Spec(ProgramSpec(program, tuple(args)),
                  DescriptorSpec(((0, Fd(FdKind.NULL_READ)), (1, Fd(FdKind.NULL_WRITE)),
                                  (2, Fd(FdKind.PIPE_FROM_CHILD)))))
    try:
        child = await spawn(helper)
        out = await child.wait_with_output()
    except errors._OSError as exc:
        raise errors.SetIdMap(exc.errno or _errno.EIO, program, f"cannot run {name}: {exc}",
                              action="run") from exc
    status = out.status
    if status.signal is not None:
        raise errors.AuxCommandKilled(status.signal, name, out.stderr)
    if status.code:
        raise errors.AuxCommandExited(status.code, name, out.stderr)


async def _await_exec(pending: Pending) -> None:
    """Read the error pipe until EOF (exec done) or a failure record."""
    if pending.listener_fd < 0:
        for fd in watch_exec(pending):
            await anyio.wait_readable(fd)
        return
    async with anyio.create_task_group() as tg:
        tg.start_soon(_answer_plan_calls, pending)
        for fd in watch_exec(pending):
            await anyio.wait_readable(fd)
        tg.cancel_scope.cancel()


async def _answer_plan_calls(pending: Pending) -> None:
    """Until the exec, the supervised calls are the plan's own: let its
    ``execve`` (and the report of a failed one) through. A call that is
    not the plan's (the program already runs: we have not yet seen the
    EOF) is left pending, for ``child.syscalls()`` to yield first."""
    import select

    from .supervision import recv, send

    assert pending.table is not None
    nrs = SYSCALLS
    # the plan's exec steps (a PATH search in a new root tries several):
    # (number, first argument), the program's path in the table
    execs = {(row[0], row[1]) for row in pending.table.rows()
             if row[0] in (nrs["execve"], nrs["execveat"])}
    fd = pending.listener_fd
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        events = poller.poll(0)
        if not events:
            await anyio.wait_readable(fd)
            continue
        if not events[0][1] & select.POLLIN:
            return
        got = recv(fd)
        if got is None:
            continue
        nid, _pid, nr, args = got
        if (nr, args[0]) in execs or (
                nr == nrs["write"] and args[0] == pending.errfd_child):
            try:
                send(fd, nid, 0, 0, 1)  # SECCOMP_USER_NOTIF_FLAG_CONTINUE
            except errors.SyscallGone:
                pass
            continue
        pending.early.append(got)
        await anyio.sleep_forever()  # the program runs: the rest is the user's
