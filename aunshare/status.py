"""How a child ended: :class:`ExitStatus` and :class:`ResourceUsage`."""

from __future__ import annotations

from ._names import CLD_DUMPED, CLD_EXITED, signal_name
from ._record import record

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from ._linux import Rusage, Siginfo

__all__ = ["ExitStatus", "ResourceUsage", "from_waitid", "from_init"]


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


def from_init(status: ExitStatus) -> ExitStatus:
    """The program's status from that of the init that ran it
    (:meth:`Command.init_process`): the init exits with the program's code,
    or 128+N when a signal N killed the program, since a namespace's init
    cannot be killed by a signal sent from inside; 128+N is read back as
    that signal (a program that exits with 128+N itself reads the same)."""
    code = status.code
    if code is not None and 128 < code <= 128 + 64:
        return ExitStatus(None, code - 128, False, status.rusage)
    return status
