"""The native executor: machine code that clones and runs the plan.

The child of a CLONE_VM clone shares the parent's memory, so it must not
run Python (it would corrupt the interpreter state of the thread it copies)
nor libc (locks, errno and TLS are the parent's). The routine below, built
from ``spawn_x86_64.S`` in this directory, does clone3 itself and in the
child walks the step table with raw syscalls only. ctypes calls it with
the GIL released; with CLONE_VFORK the calling thread sleeps until the
child has exec'd or exited, so the table (and the child's view of it) stay
alive exactly as long as needed.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import signal

from .._linux import ARCH, CLONE_ARGS_SIZE, CLONE_CLEAR_SIGHAND, CLONE_PIDFD, CLONE_VFORK, CLONE_VM, libc
from .table import Table

__all__ = ["CODE", "NativeExecutor", "NativeUnavailable", "load"]


class NativeUnavailable(OSError):
    """The native routine cannot run here (architecture, or no executable memory)."""

# Assembled from spawn_x86_64.S (GNU as --64, .text only). A test re-assembles
# the source and compares.
CODE: dict[str, bytes] = {
    "x86_64": bytes.fromhex(
        "535541544155415641574889fb4889f54989d44989cd4d89c64d89cfb80e0000"
        "00bf020000004c89fe498d570841ba080000000f054889df4889eeb8b3010000"
        "0f054885c074294889c3b80e000000bf02000000498d770831d241ba08000000"
        "0f054889d8415f415e415d415c5d5bc331ed4d85ed0f8494000000498b042449"
        "8b7c2408498b742410498b5424184d8b5424204d8b4424284d8b4c2430498b5c"
        "2438f6c30174034889ef0f05f6c302751d483d01f0ffff7321f6c3047410493b"
        "442430740948c7c0fdffffffeb0c4889c54983c44849ffcdeb98f7d841894714"
        "418b442440418947104d85f67813b8010000004c89f7498d7710ba080000000f"
        "05b83c000000bf7f0000000f050f0bb83c00000031ff0f050f0b"
    ),
}

_SpawnFn = ctypes.CFUNCTYPE(
    ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
    ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
)

_mmap = libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                  ctypes.c_int, ctypes.c_long]
_mprotect = libc.mprotect
_mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def load() -> _SpawnFn:
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
    return _SpawnFn(addr)


class NativeExecutor:
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
        """
        flags = CLONE_VM | CLONE_PIDFD | CLONE_CLEAR_SIGHAND | clone_flags
        if vfork:
            flags |= CLONE_VFORK
            table.set_clone(flags, signal.SIGCHLD, cgroup=cgroup_fd)
        else:  # the parent runs on while the child does: give it a stack
            if table.stack is None:  # a reused table keeps its own
                table.stack = ctypes.create_string_buffer(16384)
            table.set_clone(flags, signal.SIGCHLD, ctypes.addressof(table.stack), 16384,
                            cgroup_fd)
        return self._fn(table.clone_args, CLONE_ARGS_SIZE, table.steps, table.nsteps,
                        errfd, table.base)
