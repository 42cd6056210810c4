"""The portable executor: a fork-like clone3 and the plan run from Python.

For architectures without a native routine, systems that refuse executable
memory, or ``AUNSHARE_EXECUTOR=portable``. The child is a copy of the
parent (no CLONE_VM), so running Python in it corrupts nothing of the
parent's; the price is copying page tables, which grows with the parent's
size. clone3 is called through a ctypes function that keeps the GIL held,
so the child starts owning it; it then makes the plan's syscalls through
the same function and never returns to the caller: it execs or exits.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import struct

from .._linux import CLONE_ARGS_SIZE, CLONE_CLEAR_SIGHAND, CLONE_PIDFD, SYSCALLS
from ..plan import EXPECT_ARG5, IGNORE_ERROR, USE_PREVIOUS
from .table import Table

__all__ = ["PortableExecutor"]

_py = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held
_sc = _py.syscall
_sc.restype = ctypes.c_long
_sc.argtypes = [ctypes.c_long] * 7
_ALL = set(range(1, signal.NSIG)) - {32, 33}  # glibc reserves 32 and 33


def _mask_bits(sigs: set[signal.Signals] | set[int]) -> int:
    bits = 0
    for s in sigs:
        bits |= 1 << (int(s) - 1)
    return bits


class PortableExecutor:
    """Runs a plan from Python in a fork-like child (see module doc)."""

    name = "portable"

    def start(self, table: Table, clone_flags: int, errfd: int, vfork: bool,
              cgroup_fd: int = 0) -> int:
        """Clone and run ``table`` in the child; return the pid or -errno.

        The child is a separate copy, so it always reports on ``errfd``
        (``vfork`` is ignored: the parent must watch the pipe to EOF).
        """
        table.set_clone(CLONE_PIDFD | CLONE_CLEAR_SIGHAND | clone_flags, signal.SIGCHLD,
                        cgroup=cgroup_fd)
        exit_nr = SYSCALLS["exit"]
        rows = table.rows()
        old = signal.pthread_sigmask(signal.SIG_SETMASK, _ALL)
        table.set_saved_mask(_mask_bits(old))
        gc_enabled = gc.isenabled()
        gc.disable()  # no collection (and no finalizer) may run in the child
        try:
            pid = _sc(SYSCALLS["clone3"], table.clone_args, CLONE_ARGS_SIZE, 0, 0, 0, 0)
            if pid == 0:
                _run_child(table, rows, errfd, exit_nr)
            if pid == -1:
                pid = -ctypes.get_errno()
        finally:
            if gc_enabled:
                gc.enable()
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return pid


def _run_child(table: Table, rows: list[tuple[int, ...]], errfd: int, exit_nr: int) -> None:
    """The child: each step's syscall, then exit. Never returns."""
    sc = _sc
    prev = 0
    for idx, (nr, a0, a1, a2, a3, a4, a5, flags) in enumerate(rows):
        if flags & USE_PREVIOUS:
            a0 = prev
        r = sc(nr, a0, a1, a2, a3, a4, a5)
        if not flags & IGNORE_ERROR:
            err = 0
            if r == -1:
                err = ctypes.get_errno()
            elif flags & EXPECT_ARG5 and r != a5:
                err = 3  # ESRCH
            if err:
                rec = struct.pack("=II", idx, err)
                table.buf[16:24] = rec  # same record the native child stores
                try:
                    os.write(errfd, rec)
                finally:
                    sc(exit_nr, 127, 0, 0, 0, 0, 0)
        prev = r
    sc(exit_nr, 0, 0, 0, 0, 0, 0)
