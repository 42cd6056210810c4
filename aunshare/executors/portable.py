"""The portable executor: a fork-like clone3 (or clone(2), where clone3 is
refused: see :mod:`.clone`) and the plan run from Python.

For architectures without a native routine, systems that refuse executable
memory, or ``AUNSHARE_EXECUTOR=portable``. The child is a copy of the
parent (no CLONE_VM), so running Python in it corrupts nothing of the
parent's; the price is copying page tables, which grows with the parent's
size. clone3 is called through a ctypes function that keeps the GIL held,
so the child starts owning it; around the clone the interpreter gets the
same before/after-fork bookkeeping os.fork gives it. The child then makes
the plan's syscalls through the same function and never returns to the
caller: it execs or exits.

What remains outside the interpreter's reach: glibc's own fork handlers do
not run for a raw clone, so a malloc lock held by another thread at that
instant stays held in the copy. The child's path allocates almost nothing
(small objects come from the interpreter's pools or the thread's cache),
but the native executor, whose child allocates nothing at all, is the one
to prefer.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import gc
import operator
import os
import signal
import struct
from collections import deque
from collections.abc import Callable
from itertools import repeat, tee

from .._linux import (
    CLONE_ARGS_SIZE, CLONE_CLEAR_SIGHAND, CLONE_PARENT_SETTID, CLONE_PIDFD, SYSCALLS,
)
from ..plan import EXPECT_ARG5, IGNORE_ERROR, USE_PREVIOUS
from . import clone as _clone
from .clone import REFUSED, clone3_usable, legacy_flags
from .table import Table

__all__ = ["PortableExecutor"]

_py = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held
_sc = _py.syscall
_sc.restype = ctypes.c_long
_sc.argtypes = [ctypes.c_long] * 7
_ALL = set(range(1, signal.NSIG)) - {32, 33}  # glibc reserves 32 and 33
# The interpreter's own bookkeeping around a process clone, as os.fork does
# it (import lock, thread states, the GIL, at-fork hooks).
_before_fork = ctypes.pythonapi.PyOS_BeforeFork
_after_fork_parent = ctypes.pythonapi.PyOS_AfterFork_Parent
_after_fork_child = ctypes.pythonapi.PyOS_AfterFork_Child
for _f in (_before_fork, _after_fork_parent, _after_fork_child):
    _f.restype = None
    _f.argtypes = []
# What to call after each step of the chain in start(): nothing after
# PyOS_BeforeFork (it returns None; tuple() is a C no-op), the child's
# bookkeeping after clone3 returned 0, the parent's after any other result.
_AFTER: dict[int | None, Callable[[], object]] = {None: tuple, 0: _after_fork_child}


def _mask_bits(sigs: set[signal.Signals] | set[int]) -> int:
    bits = 0
    for s in sigs:
        bits |= 1 << (int(s) - 1)
    return bits


class PortableExecutor(_clone.CloneMode):
    """Runs a plan from Python in a fork-like child (see module doc)."""

    name = "portable"
    can_vfork = False
    shares_memory = False

    def start(self, table: Table, clone_flags: int, errfd: int, vfork: bool,
              cgroup_fd: int = 0) -> int:
        """Clone and run ``table`` in the child; return the pid or -errno.

        The child is a separate copy, so it always reports on ``errfd``
        (``vfork`` is ignored: the parent must watch the pipe to EOF).
        Where clone3 is refused, clone(2) is used (see :mod:`.clone`), and
        a failure of both raises :class:`~aunshare.errors.Fork`.
        """
        # CLONE_PARENT_SETTID: the pid lands in the header (parent's copy only)
        flags = CLONE_PIDFD | CLONE_CLEAR_SIGHAND | CLONE_PARENT_SETTID | clone_flags
        rows = table.rows()
        if _clone.state.clone3 is not False:
            table.set_clone(flags, signal.SIGCHLD, cgroup=cgroup_fd)
            pid = _clone_and_run(table, rows, errfd, functools.partial(
                _sc, SYSCALLS["clone3"], table.clone_args, CLONE_ARGS_SIZE, 0, 0, 0, 0))
            if pid >= 0 or -pid not in REFUSED:
                return pid
            if -pid == errno.EPERM and clone3_usable():
                return pid  # clone3 works here: the flags themselves are refused
            _clone.state.refused(-pid)
        cflags = asked = legacy_flags(flags)
        tried = [("clone3", _clone.state.refusal)]
        while True:
            # Without CLONE_PARENT_SETTID (clone(2) refuses it beside
            # CLONE_PIDFD) the pid is clone's return value.
            pid = _clone_and_run(table, rows, errfd, functools.partial(
                _sc, SYSCALLS["clone"], cflags | signal.SIGCHLD, 0, table.base + 24, 0, 0, 0),
                legacy=True)
            if pid >= 0:
                break
            tried.append(("clone", -pid))
            if pid != -errno.EINVAL or not cflags & CLONE_PIDFD:
                raise _clone.failure(tried, flags)
            cflags &= ~CLONE_PIDFD  # an emulator without it (qemu before 8.0)
        _clone.learn(asked, cflags)
        if not cflags & CLONE_PIDFD:
            _clone.open_pidfd(table, pid)
        return pid


def _clone_and_run(table: Table, rows: list[tuple[int, ...]], errfd: int,
                   clone: functools.partial[int], legacy: bool = False) -> int:
    """Clone with ``clone`` (a ctypes call of clone3 or clone); the child runs
    the plan and never returns. Returns the pid or -errno."""
    exit_nr = SYSCALLS["exit"]
    old = signal.pthread_sigmask(signal.SIG_SETMASK, _ALL)
    table.set_saved_mask(_mask_bits(old))
    gc_enabled = gc.isenabled()
    gc.disable()  # no collection (and no finalizer) may run in the child
    me = os.getpid()
    try:
        # No bytecode may run from PyOS_BeforeFork to the end of the
        # clone's bookkeeping: between them this thread holds the
        # interpreter's runtime and import locks, and bytecode can hand
        # the GIL to a thread that then waits for those locks (seen on
        # 3.13: a deadlock with a thread being started). In the child,
        # the interpreter would also check for pending work at the end
        # of the call that returns from clone3, and a GIL drop request
        # copied from another thread would wait forever for a thread the
        # copy does not have. So the whole sequence is chained in C:
        # before-fork, clone3, then by clone3's result the parent's
        # after-fork (pid or -1) or the child's (0). tee keeps the
        # results, for clone(2)'s pid.
        chain: tuple[Callable[[], int | None], ...] = (_before_fork, clone)
        results, kept = tee(map(operator.call, chain))
        after = map(_AFTER.get, results, repeat(_after_fork_parent))
        deque(map(operator.call, after), 0)
        if os.getpid() != me:
            _run_child(table, rows, errfd, exit_nr)
        if legacy:
            cloned = list(kept)[1]
            assert cloned is not None  # clone's result (restype c_long), not PyOS_BeforeFork's
            pid = cloned
            if pid < 0:
                pid = -ctypes.get_errno()
        else:
            pid = table.child_pid() or -ctypes.get_errno()
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
