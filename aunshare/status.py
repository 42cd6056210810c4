"""How a child ended: :class:`ExitStatus` and :class:`ResourceUsage`."""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass

__all__ = ["ExitStatus", "ResourceUsage"]


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
        name = f"signal {self.signal}"  # a number without a name (or a hand-made status)
        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                pass
        return f"killed by signal {name}" + (" (core dumped)" if self.core_dumped else "")
