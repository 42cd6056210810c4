"""The native executor: machine code that clones and runs the plan.

The child of a CLONE_VM clone shares the parent's memory, so it must not
run Python (it would corrupt the interpreter state of the thread it copies)
nor libc (locks, errno and TLS are the parent's). The routines below, built
from ``spawn_<arch>.S`` in this directory, do clone3 (or clone(2) where
clone3 is refused, see :mod:`.clone`) themselves and in the child walk the
step table with raw syscalls only. ctypes calls them with the GIL released;
with CLONE_VFORK the calling thread sleeps until the child has exec'd or
exited, so the table (and the child's view of it) stay alive exactly as
long as needed.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import signal

from .. import errors
from .._linux import (
    ARCH, CLONE_ARGS_SIZE, CLONE_CLEAR_SIGHAND, CLONE_PIDFD, CLONE_VFORK, CLONE_VM, SYSCALLS,
    libc, pipe_above,
)
from . import clone as _clone
from .clone import REFUSED, clone3_usable, legacy_flags
from .table import Table

__all__ = ["CODE", "NativeExecutor", "NativeUnavailable", "load"]


class NativeUnavailable(OSError):
    """The native routine cannot run here (architecture, or no executable memory)."""


# Assembled from spawn_<arch>.S (GNU as, .text only). Tests re-assemble the
# sources and compare.
CODE: dict[str, bytes] = {
    "x86_64": bytes.fromhex(
        "535541544155415641574889fb4889f54989d44989cd4d89c64d89cfb80e0000"
        "00bf020000004c89fe498d570841ba080000000f054885ed740f4889df4889ee"
        "b8b30100000f05eb18488b3b488b7328488b53084531d24531c0b8380000000f"
        "054885c074294889c3b80e000000bf02000000498d770831d241ba080000000f"
        "054889d8415f415e415d415c5d5bc331ed4d85ed0f8494000000498b0424498b"
        "7c2408498b742410498b5424184d8b5424204d8b4424284d8b4c2430498b5c24"
        "38f6c30174034889ef0f05f6c302751d483d01f0ffff7321f6c3047410493b44"
        "2430740948c7c0fdffffffeb0c4889c54983c44849ffcdeb98f7d84189471441"
        "8b442440418947104d85f67813b8010000004c89f7498d7710ba080000000f05"
        "b83c000000bf7f0000000f050f0bb83c00000031ff0f050f0b"
    ),
    "aarch64": bytes.fromhex(
        "e90300aaea0301aaeb0302aaec0303aaed0304aaee0305aa400080d2e1030eaa"
        "c2210091030180d2e81080d2010000d4ca0000b4e00309aae1030aaa683680d2"
        "010000d408000014200140f9211540f9220540f9e3031faae4031faa881b80d2"
        "010000d4400100b4ef0300aa400080d2c1210091e2031faa030180d2e81080d2"
        "010000d4e0030faac0035fd6ef031faa8c0400b4680140f9608540a9628d41a9"
        "649542a9701d40f950000036e0030faa010000d4300108371ffc3fb162010054"
        "d0001036711940f91f0011eb600000544000809205000014ef0300aa6b210191"
        "8c0500d1ebffff17e003004bc01500b9604140b9c01100b9cd00f8b7e0030daa"
        "c1410091020180d2080880d2010000d4e00f80d2a80b80d2010000d400000000"
        "e0031faaa80b80d2010000d400000000"
    ),
}

_SpawnFn = ctypes.CFUNCTYPE(
    ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
    ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
)


TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:  # (typing costs the command's start-up ~5 ms)
    from typing import Protocol

    class SpawnRoutine(Protocol):
        """The loaded routine as Python calls it (a ``_SpawnFn`` instance):
        clone_args, its size (0: clone(2)), steps, nsteps, errfd, table base;
        returns the pid or -errno."""

        def __call__(self, clone_args: int, size: int, steps: int, nsteps: int, errfd: int,
                     base: int, /) -> int: ...


_mmap = libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                  ctypes.c_int, ctypes.c_long]
_mprotect = libc.mprotect
_mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _sync_icache(addr: int, size: int) -> None:
    """Make freshly written code visible to instruction fetch.

    x86 keeps the caches coherent. On aarch64 they are not, but Linux
    cleans the data cache and invalidates the instruction cache for a page
    the first time a user mapping of it becomes executable (set_pte_at ->
    __sync_icache_dcache, keyed on a page flag that a newly allocated page
    has clear), and the page here is a fresh anonymous one that mprotect
    makes executable once: that alone suffices. libgcc's __clear_cache is
    called as well where it can be loaded, so correctness does not rest on
    that kernel detail alone; it is a few cache operations, once per
    process. (A maintenance routine of our own would be fresh code itself.)
    """
    if ARCH == "x86_64":
        return
    try:
        gcc = ctypes.CDLL("libgcc_s.so.1")
        clear = gcc.__clear_cache
    except (OSError, AttributeError):
        return
    clear.restype = None
    clear.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    clear(addr, addr + size)


def load() -> SpawnRoutine:
    """Map the routine into executable memory (write, then read+exec).

    Raises NativeUnavailable where the architecture has no routine or
    executable memory is refused (SELinux execmem, PaX): the portable
    executor is then used instead.
    """
    code = CODE.get(ARCH)
    if code is None:
        raise NativeUnavailable(f"no native spawn routine for {ARCH}")
    size = mmap.PAGESIZE
    addr = _mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                 mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap for the spawn routine failed")
    ctypes.memmove(addr, code, len(code))
    if _mprotect(addr, size, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        err = ctypes.get_errno()
        if err in (errno.EACCES, errno.EPERM):
            raise NativeUnavailable(err, "executable memory refused (mprotect)")
        raise OSError(err, "mprotect of the spawn routine failed")
    _sync_icache(addr, len(code))
    return _SpawnFn(addr)


_STACK_SIZE = 16384


class NativeExecutor(_clone.CloneMode):
    """Runs a plan from machine code in a CLONE_VM child (see module doc)."""

    name = "native"
    can_vfork = True
    shares_memory = True

    def __init__(self) -> None:
        self._fn = load()

    def start(self, table: Table, clone_flags: int, errfd: int, vfork: bool,
              cgroup_fd: int = 0) -> int:
        """Clone and run ``table`` in the child; return the pid or -errno.

        With ``vfork`` the call returns once the child has exec'd or failed,
        and a failure is already in ``table.record()``; ``errfd`` is then -1.
        Without it the child reports on ``errfd`` and the caller must keep
        ``table`` alive until that pipe reaches EOF.

        Where clone3 is refused (ENOSYS; EPERM from a filter) clone(2) is
        used, and a failure of both raises :class:`~aunshare.errors.Fork`
        naming each attempt; see :mod:`.clone` for what clone(2) cannot do.
        """
        flags = CLONE_VM | CLONE_PIDFD | CLONE_CLEAR_SIGHAND | clone_flags
        if vfork:
            flags |= CLONE_VFORK
        elif table.stack is None:  # the parent runs on: give the child a stack
            table.stack = ctypes.create_string_buffer(_STACK_SIZE)  # a reused table keeps it
        if _clone.state.clone3 is not False:
            if vfork:
                table.set_clone(flags, signal.SIGCHLD, cgroup=cgroup_fd)
            else:
                assert table.stack is not None  # set above when not vfork
                table.set_clone(flags, signal.SIGCHLD, ctypes.addressof(table.stack),
                                _STACK_SIZE, cgroup_fd)
            pid = self._fn(table.clone_args, CLONE_ARGS_SIZE, table.steps, table.nsteps,
                           errfd, table.base)
            if pid >= 0 or -pid not in REFUSED:
                return pid
            if -pid == errno.EPERM and clone3_usable():
                return pid  # clone3 works here: the flags themselves are refused
            _clone.state.refused(-pid)
        return self._start_legacy(table, flags, errfd, vfork)

    def _start_legacy(self, table: Table, flags: int, errfd: int, vfork: bool) -> int:
        tried = [("clone3", _clone.state.refusal)]
        cflags = asked = legacy_flags(flags)
        while (pid := self._clone(table, cflags, errfd, vfork)) == -errno.EINVAL:
            tried.append(("clone", errno.EINVAL))
            fewer = _clone.degrade(cflags)
            if fewer is None:
                break
            cflags = fewer
        if pid < 0:
            if pid != -errno.EINVAL:
                tried.append(("clone", -pid))
            raise _clone.failure(tried, flags)
        _clone.learn(asked, cflags)
        if not cflags & CLONE_PIDFD:
            _clone.open_pidfd(table, pid)
        return pid

    def _clone(self, table: Table, cflags: int, errfd: int, vfork: bool) -> int:
        """One clone(2) attempt. On the vfork path the child reports on a pipe
        of our own as well: where CLONE_VFORK is emulated by a fork (qemu)
        the parent neither waits nor sees the child's header."""
        stack = 0
        if not vfork and cflags & CLONE_VM:
            assert table.stack is not None  # start() gives a non-vfork child a stack
            stack = ctypes.addressof(table.stack) + _STACK_SIZE
        table.set_clone_legacy(cflags, signal.SIGCHLD, stack)
        if not vfork:
            return self._fn(table.clone_args, 0, table.steps, table.nsteps, errfd, table.base)
        r, w = _report_pipe(table)
        try:
            pid = self._fn(table.clone_args, 0, table.steps, table.nsteps, w, table.base)
            os.close(w)
            w = -1
            if pid > 0:
                record = b""
                while len(record) < 8 and (chunk := os.read(r, 8 - len(record))):
                    record += chunk
                if len(record) == 8:
                    table.buf[16:24] = record
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        return pid


def _report_pipe(table: Table) -> tuple[int, int]:
    """A close-on-exec pipe whose write end no dup3 step of ``table`` overwrites."""
    dup3 = SYSCALLS["dup3"]
    hi = max([3, *(row[2] + 1 for row in table.rows() if row[0] == dup3)])
    try:
        return pipe_above(hi)
    except OSError as exc:
        raise errors.CreatePipe(exc.errno or errno.EMFILE, "the error pipe") from None
