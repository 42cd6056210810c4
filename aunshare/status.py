"""How a child ended: :class:`ExitStatus` and :class:`ResourceUsage`."""

from __future__ import annotations

import os
import sys

from ._names import CLD_DUMPED, CLD_EXITED, signal_name
from ._record import record

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from ._linux import Waited

__all__ = ["ExitStatus", "ResourceUsage", "CgroupUsage", "from_waitid", "from_init",
           "read_wait_status", "format_bytes"]


def format_bytes(n: int) -> str:
    """``n`` bytes the way a person reads them: "64 MiB", "1.5 GiB", "512 B"."""
    for unit, shift in (("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20),
                        ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


@record
class CgroupUsage:
    """What the child's own cgroup used, read after the child exited and
    before the cgroup was removed (:attr:`ExitStatus.cgroup_usage`).

    Every figure covers the whole cgroup (the child and everything it
    started); None where this kernel or hierarchy has no such figure, or
    the controller was not enabled for the cgroup.
    """

    memory_peak: int | None = None
    """Peak memory charged, in bytes (v2 ``memory.peak``, v1
    ``memory.max_usage_in_bytes``). Unlike :attr:`ResourceUsage.max_rss_kib`,
    the program's own: nothing of the parent is counted."""
    memory_limit: int | None = None
    """The memory limit the cgroup had, in bytes (None: no limit)."""
    cpu_user_usec: int | None = None
    """CPU time in user mode, microseconds (v2 ``cpu.stat``, v1 ``cpuacct.usage_user``)."""
    cpu_system_usec: int | None = None
    """CPU time in the kernel, microseconds (v2 ``cpu.stat``, v1 ``cpuacct.usage_sys``)."""
    oom_kills: int | None = None
    """Processes the out-of-memory killer killed in it (v2 ``memory.events``
    ``oom_kill``, v1 ``memory.oom_control`` ``oom_kill``)."""
    pids_peak: int | None = None
    """The most tasks at once (v2 ``pids.peak``, Linux 6.2+); None on v1."""
    pids_limit_hits: int | None = None
    """How often a fork or clone failed on ``pids.max`` (``pids.events`` ``max``)."""


@record
class ResourceUsage:
    """Resource usage of a reaped child, from the waitid syscall's rusage.

    ``max_rss_kib`` is the kernel's high-water mark of the process, not of
    the program: aunshare starts children with ``CLONE_VM`` (vfork-style),
    and exec keeps the peak of the address space the child shared with the
    parent, so the figure is at least the parent's RSS at spawn (``sh -c
    id`` started from a 24 MB Python reports about 24 MB). Only a program
    whose own peak exceeds that reads true here. For the program's memory,
    give the child a cgroup of its own (:meth:`Command.new_cgroup`,
    :meth:`Command.limit_memory`) and read
    :attr:`ExitStatus.cgroup_usage`'s ``memory_peak``.
    """

    user_time: float
    """CPU seconds spent in user mode."""
    system_time: float
    """CPU seconds spent in the kernel."""
    max_rss_kib: int
    """Peak resident set size in KiB, at least the parent's at spawn (see the
    class note; :attr:`CgroupUsage.memory_peak` is the program's)."""


@record
class ExitStatus:
    """The end of a child: it exited with a code, or a signal killed it."""

    code: int | None
    """Exit code 0-255 when the child exited, else None."""
    signal: int | None = None
    """The signal number that killed the child, else None."""
    core_dumped: bool = False
    """True when the killing signal produced a core dump."""
    rusage: ResourceUsage | None = None
    """Resource usage reported by the kernel, when known."""
    cgroup_usage: CgroupUsage | None = None
    """What the child's own cgroup used, when it had one (limits or
    :meth:`Command.new_cgroup`), else None."""

    @property
    def oom_killed(self) -> bool:
        """True when SIGKILL ended the child and the out-of-memory killer
        killed in its cgroup: it died because it ran out of memory."""
        usage = self.cgroup_usage
        return (self.signal == 9 and usage is not None
                and bool(usage.oom_kills))

    def success(self) -> bool:
        """True when the child exited with code 0."""
        return self.code == 0

    @property
    def returncode(self) -> int:
        """The subprocess convention: the exit code, or minus the signal number."""
        if self.code is not None:
            return self.code
        assert self.signal is not None
        return -self.signal

    def __str__(self) -> str:
        if self.code is not None:
            return f"exited with code {self.code}"
        name = f"signal {self.signal}" if self.signal is None else signal_name(self.signal)
        text = f"killed by signal {name}" + (" (core dumped)" if self.core_dumped else "")
        if self.oom_killed:
            assert self.cgroup_usage is not None
            limit = self.cgroup_usage.memory_limit
            text += (" (out of memory: memory limit " + format_bytes(limit) + ")"
                     if limit is not None else " (out of memory)")
        return text


def from_waitid(info: Waited, cgroup_usage: CgroupUsage | None = None) -> ExitStatus:
    """How a child reaped by ``waitid`` ended (see :func:`aunshare._linux.waitid_pidfd`):
    the one reading of its siginfo and rusage (and its cgroup's figures, when
    it had one), for :class:`~aunshare.Child` and the command line alike."""
    usage = ResourceUsage(info.user_time, info.system_time, info.max_rss_kib)
    if info.si_code == CLD_EXITED:
        return ExitStatus(info.si_status & 0xFF, None, False, usage, cgroup_usage)
    return ExitStatus(None, info.si_status, info.si_code == CLD_DUMPED, usage, cgroup_usage)


def read_wait_status(fd: int) -> int | None:
    """The wait status the init of a pid namespace wrote on its status pipe
    (``fd``, the non-blocking read end), or None when it wrote none (it did
    not reach the program's end: killed, or the program never started).
    Read once the init has exited; the caller closes ``fd``."""
    try:
        data = os.read(fd, 4)
    except BlockingIOError:
        return None
    return int.from_bytes(data, sys.byteorder) if len(data) == 4 else None


def from_init(status: ExitStatus, wait_status: int | None = None) -> ExitStatus:
    """The program's status from that of the init that ran it
    (:meth:`Command.init_process`), with the init's resource usage (which
    counts the program and every orphan it reaped).

    ``wait_status`` is the program's own wait status as the init wrote it on
    its status pipe (:func:`read_wait_status`): read exactly (code, signal,
    core dump). Without it (the init was killed before the program ended),
    the init's exit code is read as the init makes it: the program's code,
    or 128+N when a signal N killed it, since a namespace's init cannot be
    killed by a signal sent from inside; that fallback cannot tell a program
    that exits with 128+N itself from one killed by N, nor see a core dump.
    An init killed by a signal (from outside) reports that signal."""
    if wait_status is not None:
        if os.WIFEXITED(wait_status):
            return ExitStatus(os.WEXITSTATUS(wait_status), None, False, status.rusage,
                              status.cgroup_usage)
        if os.WIFSIGNALED(wait_status):
            return ExitStatus(None, os.WTERMSIG(wait_status), os.WCOREDUMP(wait_status),
                              status.rusage, status.cgroup_usage)
    code = status.code
    if code is not None and 128 < code <= 128 + 64:
        return ExitStatus(None, code - 128, False, status.rusage,
                              status.cgroup_usage)
    return status
