"""Supervision: carrying out a :class:`~aunshare.policy.KillPolicy`, and
waiting for a child's cgroup to empty.

:meth:`Child.shutdown <aunshare.Child.shutdown>` (also what ``async with
child`` does on an error or a cancellation) runs :func:`shutdown`:

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

import ctypes
import dataclasses
import functools
import os
import signal as _signal
from typing import TYPE_CHECKING

import anyio

from . import cgroup as _cgroup
from . import errors
from ._linux import WEXITED, WNOHANG, libc, pidfd_send_signal
from .policy import KillPolicy, KillTarget
from .status import ExitStatus

if TYPE_CHECKING:
    from .child import Child

__all__ = ["shutdown", "resolve_policy", "wait_cgroup_empty"]


@functools.lru_cache(maxsize=128)
@functools.lru_cache(maxsize=256)  # on every spawn; dataclasses.replace is slow
def resolve_policy(policy: KillPolicy, *, group_leader: bool, cgroup: bool) -> KillPolicy:
    """``policy`` with its target made concrete for a child that leads its
    own process group (``group_leader``) and/or has its own cgroup.

    AUTO becomes CGROUP, GROUP or CHILD, in that order of preference. Raises
    ValueError for a target the child cannot have.
    """
    target = policy.target
    if target is KillTarget.AUTO:
        target = (KillTarget.CGROUP if cgroup else
                  KillTarget.GROUP if group_leader else KillTarget.CHILD)
        return dataclasses.replace(policy, target=target)
    if target is KillTarget.GROUP and not group_leader:
        raise ValueError("kill target 'group' needs a child that leads its own process "
                         "group (Command.make_group_leader(), or this target on the Command)")
    if target is KillTarget.CGROUP and not cgroup:
        raise ValueError("kill target 'cgroup' needs a child started in its own cgroup "
                         "(Command.new_cgroup(parent))")
    return policy


def _signal_tree(child: Child, target: KillTarget, sig: int) -> None:
    """Send ``sig`` to ``target`` of the unreaped ``child``; the child itself
    is always signalled, and exactly once (a trap would run twice)."""
    if target is KillTarget.GROUP:
        try:
            os.killpg(child.pid, sig)  # safe: the unreaped child pins the pgid
            if os.getpgid(child.pid) == child.pid and sig != _signal.SIGKILL:
                return
        except (ProcessLookupError, PermissionError):
            pass
    elif target is KillTarget.CGROUP and child._cgroup is not None and sig == _signal.SIGKILL:
        _cgroup.kill(child._cgroup)
    try:
        pidfd_send_signal(child._pidfd, sig)
    except ProcessLookupError:
        pass
    if target is KillTarget.CGROUP and child._cgroup is not None and sig != _signal.SIGKILL:
        # The child first: were a process it waits for to die first, it could
        # exit on its own before its signal arrived.
        for path, _, _ in os.walk(child._cgroup):
            _cgroup.signal_all(path, sig, exclude=child.pid)


async def _stop(child: Child, policy: KillPolicy) -> None:
    target = policy.target
    if not policy.immediate:
        _signal_tree(child, target, policy.signal)
        if policy.signal != _signal.SIGCONT:
            _signal_tree(child, target, _signal.SIGCONT)  # a stopped process must run to exit
        with anyio.move_on_after(policy.grace):
            await child._until_exited()
            if target is KillTarget.CGROUP and child._cgroup is not None:
                await wait_cgroup_empty(child._cgroup)
    if target is not KillTarget.CHILD or not child._exited:
        _signal_tree(child, target, _signal.SIGKILL)
    while child._status is None:
        await child._until_exited()
        child._reap(WEXITED | WNOHANG)


async def shutdown(child: Child, policy: KillPolicy | None = None) -> ExitStatus:
    """Stop ``child`` by ``policy`` (default: the child's own), reap it, and
    remove its cgroup; see the module docstring. Shielded from cancellation.

    A child already reaped is not signalled (its pid may belong to another
    process by now), but anything left in its cgroup is still killed.
    """
    policy = child.kill_policy if policy is None else child._resolve(policy)
    if child._status is not None and child._cgroup is None:
        return child._status  # nothing left to do (the common, fast case)
    with anyio.CancelScope(shield=True):
        if child._stopping is not None:  # another shutdown is under way: join it
            await child._stopping.wait()
        elif child._status is None:
            child._stopping = done = anyio.Event()
            try:
                await _stop(child, policy)
            finally:
                child._stopping = None
                done.set()
        if child._status is None:  # the other shutdown failed
            await child.wait()
        if child._cgroup is not None:
            await _clear_cgroup(child)
    assert child._status is not None
    return child._status


async def _clear_cgroup(child: Child) -> None:
    """Kill whatever is left in the child's cgroup, wait until it is empty,
    and remove it."""
    path = child._cgroup
    assert path is not None
    for _ in range(3):  # a privileged process could move a new one in meanwhile
        if _cgroup.populated(path):
            _cgroup.kill(path)
            await wait_cgroup_empty(path)
        if _cgroup.remove(path):
            child._cgroup = None
            return
    raise errors.CgroupError(16, path, "processes keep appearing in it", action="remove cgroup")


# -- waiting for a cgroup to empty ------------------------------------------------------
_IN_MODIFY = 0x2
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


async def wait_cgroup_empty(path: bytes, *, use_inotify: bool = True) -> None:
    """Return once no live process is left in the cgroup ``path``.

    The kernel reports a change of ``populated`` in ``cgroup.events`` as a
    file modification, so this sleeps on an inotify descriptor, not a timer.
    Where inotify is unavailable (descriptor or watch limits reached) it
    polls, backing off from 1 ms to 50 ms.
    """
    fd = -1
    if use_inotify:
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd >= 0 and libc.inotify_add_watch(fd, ctypes.c_char_p(path + b"/cgroup.events"),
                                              _IN_MODIFY) < 0:
            os.close(fd)
            fd = -1
    try:
        delay = 0.001
        # The watch is in place before each check, so no change can be missed.
        while _cgroup.populated(path):
            if fd >= 0:
                await anyio.wait_readable(fd)
                try:
                    os.read(fd, 4096)
                except BlockingIOError:
                    pass
            else:
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.05)
    finally:
        if fd >= 0:
            os.close(fd)
