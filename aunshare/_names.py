"""How messages name signals and descriptors, and the one signal-number
check every public entry point shares. The lowest layer: imports nothing
of aunshare."""

from __future__ import annotations

import signal as _signal

__all__ = ["CLD_DUMPED", "CLD_EXITED", "STDIO_NAMES", "check_signal", "fd_name", "signal_name"]

STDIO_NAMES = {0: "stdin", 1: "stdout", 2: "stderr"}
# siginfo si_code values of a child that ended (waitid)
CLD_EXITED, CLD_DUMPED = 1, 3


def fd_name(fd: int) -> str:
    """``"fd 1 (stdout)"``, ``"fd 5"``: how messages name a descriptor."""
    name = STDIO_NAMES.get(fd)
    return f"fd {fd} ({name})" if name else f"fd {fd}"


def signal_name(sig: int) -> str:
    """``"SIGTERM"`` for 15, ``"signal 40"`` for a number without a name."""
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def check_signal(value: object, what: str) -> int:
    """``value`` as a signal number 1-64, or TypeError/ValueError naming
    ``what``. Refuses bools, floats and names: ``int(1.9)`` would quietly
    send SIGHUP."""
    if isinstance(value, bool) or not isinstance(value, int):
        hint = " (use signal.SIGTERM, not a name)" if isinstance(value, str) else ""
        raise TypeError(f"{what} must be a signal number, not {type(value).__name__}{hint}")
    if not 1 <= value <= 64:
        raise ValueError(f"{what} must be a signal number from 1 to 64, got {value}")
    return int(value)
