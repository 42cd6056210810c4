"""clone3 where the system lets us, clone(2) where it does not.

clone3 is refused in places where clone(2) still works: user-mode qemu and
gVisor answer ENOSYS, and container seccomp profiles written before clone3
existed answer ENOSYS or EPERM (a filter cannot inspect clone3's struct, so
it refuses the whole call). Like the C library, aunshare then uses clone(2).

What clone(2) cannot do:

* flags above 32 bits: CLONE_CLEAR_SIGHAND is dropped (the plan resets every
  signal to its default action before it unblocks signals), and
  CLONE_INTO_CGROUP cannot be honoured: a spawn that asks for it raises
  :class:`IntoCgroupUnavailable`, and :func:`into_cgroup` says so in advance,
  so the caller can instead let the child wait and write its pid to
  ``cgroup.procs``;
* CLONE_NEWTIME, whose bit clone(2) reads as part of the exit signal;
* CLONE_PARENT_SETTID together with CLONE_PIDFD (both use ``parent_tid``):
  the pid is clone's return value instead.

And what emulators do not take, found by EINVAL and then avoided: user-mode
qemu before 8.0 rejects CLONE_PIDFD (the parent then opens the pidfd with
pidfd_open: the unreaped child's pid cannot be reused meanwhile), and it
makes threads only with CLONE_VM, turning CLONE_VM|CLONE_VFORK into a plain
fork (the native routine then runs in a fork-like child).

The outcome is remembered for the process: once clone3 is found refused,
spawns go straight to clone(2).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct

from .. import errors
from .._linux import (
    CLONE_CLEAR_SIGHAND, CLONE_INTO_CGROUP, CLONE_PARENT_SETTID, CLONE_PIDFD, CLONE_VFORK,
    CLONE_VM, SYSCALLS, libc, syscall,
)

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from .table import Table

__all__ = ["REFUSED", "CloneMode", "IntoCgroupUnavailable", "State", "state", "clone3_usable",
           "into_cgroup", "legacy_flags", "degrade", "learn", "open_pidfd", "failure"]

# What clone3 answers where it is refused rather than failing on its merits.
REFUSED = (errno.ENOSYS, errno.EPERM)
_CLONE_NEWTIME = 0x80
_LOW32 = 0xFFFFFFFF


class IntoCgroupUnavailable(errors.Fork):
    """The child cannot be created inside its cgroup: CLONE_INTO_CGROUP needs
    clone3, which this system refuses. Place it through ``cgroup.procs``."""


class State:
    """How this process clones (one instance, :data:`state`).

    ``clone3`` is None until known; ``refusal`` is the errno clone3 gave
    when it was found refused. ``pidfd`` turns False where clone(2) rejects
    CLONE_PIDFD, ``shared_vm`` where it rejects CLONE_VM without
    CLONE_THREAD (both: user-mode qemu).
    """

    __slots__ = ("clone3", "refusal", "pidfd", "shared_vm")

    def __init__(self) -> None:
        self.clone3: bool | None = None
        self.refusal = 0
        self.pidfd = True
        self.shared_vm = True

    def refused(self, err: int) -> None:
        """Record that clone3 answered ``err`` (ENOSYS/EPERM) for good."""
        self.clone3 = False
        self.refusal = err

    def describe(self) -> str:
        """What is known, for messages: "clone3: ENOSYS" or ""."""
        if self.clone3 is False:
            return f"clone3: {errno.errorcode.get(self.refusal, self.refusal)}"
        return ""


state = State()

_syscall = libc.syscall
_syscall.restype = ctypes.c_long


def clone3_usable() -> bool:
    """Whether clone3 works here, found out once per process.

    The probe clone3(NULL, 0) creates nothing: a kernel that has clone3
    rejects the size (EINVAL) after any seccomp filter has let it through;
    ENOSYS or EPERM means the call itself is refused.
    """
    if state.clone3 is None:
        r = _syscall(ctypes.c_long(SYSCALLS["clone3"]), ctypes.c_long(0), ctypes.c_long(0))
        err = ctypes.get_errno() if r == -1 else 0
        if err in REFUSED:
            state.refused(err)
        else:
            state.clone3 = True
    return bool(state.clone3)


class CloneMode:
    """What an executor can promise, given how this process may clone."""

    @property
    def into_cgroup(self) -> bool:
        """Whether CLONE_INTO_CGROUP can be honoured (clone3 is not refused)."""
        return state.clone3 or clone3_usable()  # asked on every spawn: known after the first

    @property
    def clone_syscall(self) -> str:
        """"clone3", or "clone" once clone3 was found refused in this process."""
        return "clone" if state.clone3 is False else "clone3"


def into_cgroup() -> bool:
    """Whether a child can be created directly inside a cgroup
    (CLONE_INTO_CGROUP). False where clone3 is refused: the caller must
    then move the child by writing its pid to ``cgroup.procs``."""
    return clone3_usable()


def legacy_flags(flags: int) -> int:
    """``flags`` (clone3's) as clone(2) takes them, without the exit signal.

    Drops CLONE_CLEAR_SIGHAND and CLONE_PARENT_SETTID (see the module doc);
    raises a :class:`~aunshare.errors.Fork` for what clone(2) cannot do.
    """
    why = state.describe() or "clone3 refused"
    if flags & CLONE_INTO_CGROUP:
        raise IntoCgroupUnavailable(
            state.refusal or errno.ENOSYS, None,
            f"creating the child inside its cgroup (CLONE_INTO_CGROUP) needs clone3, "
            f"which this system refuses ({why}); the child has to join it through "
            "cgroup.procs instead", action="clone")
    if flags & _CLONE_NEWTIME:
        raise errors.Fork(
            state.refusal or errno.ENOSYS, None,
            f"a new time namespace is created only by clone3, which this system "
            f"refuses ({why})", action="clone")
    flags &= ~(CLONE_CLEAR_SIGHAND | CLONE_PARENT_SETTID)
    if not state.pidfd:
        flags &= ~CLONE_PIDFD
    if not state.shared_vm:
        flags &= ~(CLONE_VM | CLONE_VFORK)
    assert flags <= _LOW32
    return flags


def degrade(flags: int) -> int | None:
    """After clone(2) said EINVAL: ``flags`` without the next thing an
    emulator may not take (CLONE_PIDFD, then CLONE_VM), or None when
    nothing is left to drop."""
    if flags & CLONE_PIDFD:
        return flags & ~CLONE_PIDFD
    if flags & CLONE_VM:
        return flags & ~(CLONE_VM | CLONE_VFORK)
    return None


def learn(asked: int, used: int) -> None:
    """Remember what a successful clone(2) with ``used`` had to drop of ``asked``."""
    dropped = asked & ~used
    if dropped & CLONE_PIDFD:
        state.pidfd = False
    if dropped & CLONE_VM:
        state.shared_vm = False


def open_pidfd(table: Table, pid: int) -> None:
    """For a child cloned without CLONE_PIDFD: open its pidfd and put it in
    the header slot CLONE_PIDFD fills. Until the parent reaps it the child's
    pid stays its own, so this names the right process. If it fails, the
    child is killed and reaped and a Fork error raised."""
    try:
        fd = syscall("pidfd_open", pid, 0)  # close-on-exec by definition
    except OSError as exc:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise errors.Fork(exc.errno or errno.EIO, None, "cloned without CLONE_PIDFD, and "
                          "pidfd_open of the child failed", action="pidfd_open") from None
    struct.pack_into("=i", table.buf, 24, fd)


def failure(tried: list[tuple[str, int]], flags: int) -> errors.Fork:
    """The error for a spawn where every way of cloning failed: each attempt
    and its errno, then the likely causes of the last one."""
    err = tried[-1][1]
    attempts = "; ".join(f"{name}: {errno.errorcode.get(e, e)}" for name, e in tried)
    causes = errors.fork_causes(err, flags, bool(flags & CLONE_INTO_CGROUP))
    detail = f"tried {attempts}" + (f"; {causes}" if causes else "")
    return errors.Fork(err, None, detail, action=tried[-1][0])

