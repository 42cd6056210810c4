"""How a child ended: :class:`ExitStatus` and :class:`ResourceUsage`."""

from __future__ import annotations

import os
import sys

from ._names import CLD_DUMPED, CLD_EXITED, signal_name
from ._record import record

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from ._linux import Rusage, Siginfo

__all__ = ["ExitStatus", "ResourceUsage", "from_waitid", "from_init", "read_wait_status"]


@record
class ResourceUsage:
    """Resource usage of a reaped child, from the waitid syscall's rusage.

    ``max_rss_kib`` is the kernel's high-water mark. For a child started with
    CLONE_VM it is at least the parent's RSS at spawn time, because exec takes
    the peak of the shared address space it leaves.
    """

    user_time: float
    """CPU seconds spent in user mode."""
    system_time: float
    """CPU seconds spent in the kernel."""
    max_rss_kib: int
    """Peak resident set size in KiB (see the class note)."""


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
        return (f"killed by signal {name}"
                + (" (core dumped)" if self.core_dumped else ""))


def from_waitid(info: Siginfo, ru: Rusage) -> ExitStatus:
    """How a child reaped by ``waitid`` ended (see :func:`aunshare._linux.waitid_pidfd`):
    the one reading of its siginfo and rusage, for :class:`~aunshare.Child` and the
    command line alike."""
    usage = ResourceUsage(
        ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
        ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
        ru.ru_maxrss,
    )
    if info.si_code == CLD_EXITED:
        return ExitStatus(info.si_status & 0xFF, None, False, usage)
    return ExitStatus(None, info.si_status, info.si_code == CLD_DUMPED, usage)


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
            return ExitStatus(os.WEXITSTATUS(wait_status), None, False, status.rusage)
        if os.WIFSIGNALED(wait_status):
            return ExitStatus(None, os.WTERMSIG(wait_status), os.WCOREDUMP(wait_status),
                              status.rusage)
    code = status.code
    if code is not None and 128 < code <= 128 + 64:
        return ExitStatus(None, code - 128, False, status.rusage)
    return status
