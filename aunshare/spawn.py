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

import anyio

from . import cgroup as _cgroup
from . import errors
from .child import Child, Output, busy, reap_orphans
from .fds import Fd, FdKind
from .idmaps import write_maps
from .launch import DefaultStdio, Pending, start
from .namespaces import Namespace, self_maps
from .plan import PID_SLOT_SIZE
from .spec import DescriptorSpec, ProgramSpec, SelfMap, Spec

__all__ = ["spawn", "DefaultStdio", "Child", "Output"]

# Spawns under way (tokens: set operations are atomic across threads):
# while there are others, a spawn must not put the event loop's thread to
# sleep until its exec (the vfork path).
_starting: set[object] = set()


async def spawn(spec: Spec, default_stdio: DefaultStdio = DefaultStdio.INHERIT) -> Child:
    """Start the child ``spec`` describes; return once it has exec'd.
    Errors before exec are raised typed, with nothing left behind.

    Nothing is started in a cancelled scope, or in one whose deadline has
    passed (on asyncio a deadline is noticed one loop iteration late, and
    thousands of queued spawns would otherwise all clone in it).
    """
    await anyio.lowlevel.checkpoint_if_cancelled()
    deadline = anyio.current_effective_deadline()
    if deadline != math.inf:
        while anyio.current_time() >= deadline:
            await anyio.lowlevel.checkpoint()  # lets the cancellation arrive
    reap_orphans()
    token = object()
    _starting.add(token)
    try:
        pending = start(spec, default_stdio, allow_vfork=len(_starting) == 1 and not busy())
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
    spec, pid = pending.spec, pending.pid
    iso = spec.isolation
    if pending.join_cgroup is not None:  # clone3 refused: no CLONE_INTO_CGROUP
        _cgroup.move(pending.join_cgroup, pid)
    if iso.self_map is not None:  # the child's one-line maps, written for it
        uid_map, gid_map = self_maps(iso.self_map is SelfMap.ROOT, os.geteuid(), os.getegid())
        write_maps(pid, (uid_map,), (gid_map,), False)
    elif iso.uid_maps is not None:
        uid_maps, gid_maps = iso.uid_maps, iso.gid_maps or ()
        if iso.id_map_commands is not None:
            newuidmap, newgidmap = iso.id_map_commands
            if uid_maps:
                await _run_map_helper(newuidmap, pid, uid_maps)
            if gid_maps:
                await _run_map_helper(newgidmap, pid, gid_maps)
        else:
            write_maps(pid, uid_maps, gid_maps, iso.allow_setgroups)
    hook = iso.before_unfreeze
    if hook is not None:
        try:
            await hook(pid)
        except Exception as exc:
            raise errors.BeforeUnfreeze(
                f"the before_unfreeze callback {getattr(hook, '__qualname__', hook)!s} "
                f"raised {type(exc).__name__}: {exc}") from exc
    message = b"\1"
    if spec.program.env_pid:
        # The pid as the child sees it: 1 as the first of a new pid namespace.
        inside = 1 if iso.unshare & Namespace.PID else pid
        message += str(inside).encode().ljust(PID_SLOT_SIZE, b"\0") * len(spec.program.env_pid)
    fd, pending.wake_fd = pending.wake_fd, -1
    try:
        os.write(fd, message)
    except OSError as exc:
        raise errors.PipeError(exc.errno or _errno.EPIPE, "the wake-up pipe",
                               "the child was gone before it could go on",
                               action="write") from None
    finally:
        os.close(fd)


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
    fd = pending.report_fd
    data = b""
    while True:
        try:
            chunk = os.read(fd, 8 - len(data))
        except BlockingIOError:
            await anyio.wait_readable(fd)
            continue
        except OSError as exc:
            raise errors.PipeError(exc.errno or _errno.EIO, "the error pipe") from None
        if not chunk:
            break
        data += chunk
        if len(data) == 8:
            break
    if data:
        if len(data) < 8:
            raise errors.UnknownError(f"the child sent a truncated error record {data!r}")
        raise pending.fail(int.from_bytes(data[:4], "little"),
                           int.from_bytes(data[4:], "little"))
    pending.exec_confirmed()
