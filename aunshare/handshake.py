"""The parent's side between the clone and the exec, with no event loop:
the handshake's steps that need none, and reading the error pipe.

One implementation for two callers: :mod:`aunshare.spawn` awaits what
only the event loop can do (newuidmap/newgidmap, the ``before_unfreeze``
hook, waiting for the error pipe), and :func:`spawn_blocking` (the
``aunshare`` command) blocks the thread instead, so that running a
program does not need to import anyio and asyncio.
"""

from __future__ import annotations

import errno as _errno
import os
import select
from collections.abc import Iterator

from . import cgroup as _cgroup
from . import errors
from ._linux import syscall
from .idmaps import write_maps
from .launch import DefaultStdio, Pending, start
from .namespaces import Namespace, self_maps
from .plan import PID_SLOT_SIZE
from .spec import SelfMap, Spec

__all__ = ["map_ids", "spawn_blocking", "wake", "watch_exec", "listener_ready", "take_listener"]


def map_ids(pending: Pending) -> bool:
    """The handshake's first part: move the child into the cgroup it joins
    (where clone3 is refused), then write the id maps the parent writes
    itself. False when newuidmap/newgidmap are to write them: the caller
    runs those."""
    iso, pid = pending.spec.isolation, pending.pid
    if pending.join_cgroup is not None:  # clone3 refused: no CLONE_INTO_CGROUP
        _cgroup.move(pending.join_cgroup, pid)
    if iso.self_map is not None:  # the child's one-line maps, written for it
        uid_map, gid_map = self_maps(iso.self_map is SelfMap.ROOT, os.geteuid(), os.getegid())
        write_maps(pid, (uid_map,), (gid_map,), False)
    elif iso.uid_maps is not None:
        if iso.id_map_commands is not None:
            return False
        write_maps(pid, iso.uid_maps, iso.gid_maps or (), iso.allow_setgroups)
    return True


def wake(pending: Pending) -> None:
    """The handshake's last part: let the waiting child go on (and tell it
    its pid, for the variables that carry it)."""
    spec, pid = pending.spec, pending.pid
    message = b"\1"
    if spec.program.env_pid:
        # The pid as the child sees it: 1 as the first of a new pid namespace,
        # 2 for the program an init starts there (the namespace's next pid).
        if spec.isolation.unshare & Namespace.PID:
            inside = 2 if spec.lifetime.init_process else 1
        else:
            inside = pid
        message += str(inside).encode().ljust(PID_SLOT_SIZE, b"\0") * len(spec.program.env_pid)
    again = pending.ready_fd >= 0  # it waits once more, for its seccomp listener taken
    fd = pending.wake_fd
    if not again:
        pending.wake_fd = -1
    try:
        os.write(fd, message)
    except OSError as exc:
        raise errors.PipeError(exc.errno or _errno.EPIPE, "the wake-up pipe",
                               "the child was gone before it could go on",
                               action="write") from None
    finally:
        if not again:
            os.close(fd)


def listener_ready(pending: Pending) -> bool | None:
    """Syscall supervision: has the child moved its seccomp listener to the
    reserved descriptor (EOF on the ready pipe)? None: not yet, the pipe is empty."""
    try:
        os.read(pending.ready_fd, 1)
    except BlockingIOError:
        return None
    fd, pending.ready_fd = pending.ready_fd, -1
    os.close(fd)
    return True


def take_listener(pending: Pending) -> None:
    """Take the child's seccomp listener (``pidfd_getfd``), then let the
    child go on to its exec. A child that failed before (it exited) keeps
    its report on the error pipe: nothing is taken, the caller reads it."""
    try:
        pending.listener_fd = syscall("pidfd_getfd", pending.pidfd, pending.listener_target, 0)
    except OSError as exc:
        if exc.errno != _errno.ESRCH:
            raise errors.SeccompError(exc.errno or _errno.EPERM, None,
                                      "pidfd_getfd needs ptrace access to the child",
                                      action="take the seccomp listener of the child") from None
    fd, pending.wake_fd = pending.wake_fd, -1
    try:
        os.write(fd, b"\1")
    except OSError:
        pass  # it is gone: its report (or exit) tells why
    finally:
        os.close(fd)


def watch_exec(pending: Pending) -> Iterator[int]:
    """Read the error pipe until EOF (the exec is done: then
    :meth:`Pending.exec_confirmed`) or a failure record (raised typed, the
    child reaped). Yields the pipe each time it is empty: the caller waits
    until it is readable, then goes on with the iteration."""
    fd = pending.report_fd
    data = b""
    while True:
        try:
            chunk = os.read(fd, 8 - len(data))
        except BlockingIOError:
            yield fd
            continue
        except OSError as exc:
            raise errors.PipeError(exc.errno or _errno.EIO, "the error pipe") from None
        if not chunk:
            break
        data += chunk
        if len(data) == 8:
            break
    if not data and pending.executor.shares_memory and pending.table is not None:
        # A seccomp filter may refuse the child's write of its report; a
        # child sharing our memory stored the same record in the table.
        idx, err = pending.table.record()
        if err:
            raise pending.fail(idx, err)
    if data:
        if len(data) < 8:
            raise errors.UnknownError(f"the child sent a truncated error record {data!r}")
        raise pending.fail(int.from_bytes(data[:4], "little"),
                           int.from_bytes(data[4:], "little"))
    pending.exec_confirmed()


def spawn_blocking(spec: Spec, default_stdio: DefaultStdio = DefaultStdio.INHERIT) -> Pending:
    """Start the child ``spec`` describes and return once it has exec'd,
    blocking the calling thread throughout (the vfork path where it can be
    taken; else the handshake and the error pipe, waited for with poll).

    The caller owns the result: the child's ``pid`` and ``pidfd``, and
    :meth:`Pending.close` once it has reaped the child. Errors before the
    exec are raised typed, with nothing left behind. A spec that needs the
    event loop (a ``before_unfreeze`` hook, newuidmap/newgidmap) raises
    ValueError before anything is started: use :func:`aunshare.spawn.spawn`.
    A cgroup of its own (resource limits) is the caller's to empty and
    remove once the child is reaped (:func:`aunshare.cgroup.clear_blocking`).
    """
    iso = spec.isolation
    if (iso.before_unfreeze is not None or iso.supervise
            or (iso.uid_maps is not None and iso.id_map_commands is not None)):
        raise ValueError("spawn_blocking(): this spec needs the event loop (before_unfreeze, "
                         "set_id_map_commands or supervise_syscalls); use spawn()")
    pending = start(spec, default_stdio, allow_vfork=True)
    try:
        if pending.wake_fd >= 0:
            map_ids(pending)
            wake(pending)

        if pending.report_fd >= 0:
            poller = select.poll()
            poller.register(pending.report_fd, select.POLLIN)
            for _ in watch_exec(pending):
                poller.poll()
    except BaseException:
        pending.kill()
        if pending.cgroup is not None:  # what it started may still be dying
            _cgroup.clear_blocking(pending.cgroup)
        pending.close()
        raise
    return pending
