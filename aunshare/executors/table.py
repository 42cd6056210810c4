"""Encode a :class:`~aunshare.plan.Plan` into the memory an executor runs.

One buffer holds everything the child reads: a header (signal masks and
the failure record), struct clone_args, the step table and the strings and
arrays the steps point to. Both executors use this layout; the native one
runs it from machine code, the portable one from a forked Python.

Header: +0 full signal mask, +8 saved mask, +16 u32 step index, +20 u32 errno,
+24 the pidfd clone3 returns.
Step (72 bytes): syscall number, six arguments, flags, code (= step index).
"""

from __future__ import annotations

import ctypes
import struct

from .._linux import CLONE_ARGS_SIZE, SYSCALLS, libc
from ..plan import CStr, CStrArray, Plan, Ptr, Step, U32Array

__all__ = ["Table", "encode", "HEADER_SIZE", "STEP_SIZE"]

HEADER_SIZE = 32
STEP_SIZE = 72
_STEP = struct.Struct("=9Q")
_CLONE = struct.Struct("=11Q")
_MASK64 = (1 << 64) - 1

# Process-lifetime statics the steps may point to.
_sigaction_default = ctypes.create_string_buffer(32)  # SIG_DFL, no flags, empty mask
_empty_sigset = ctypes.create_string_buffer(8)
_environ = ctypes.c_void_p.in_dll(libc, "environ")
_STATIC = {
    "sigaction_default": ctypes.addressof(_sigaction_default),
    "empty_sigset": ctypes.addressof(_empty_sigset),
}

# Steps whose arguments are all plain numbers or statics encode the same way
# every time (the 62 signal resets, for a start): cache their bytes.
_packed_cache: dict[Step, bytes] = {}


class Table:
    """An encoded plan: the buffer and the addresses an executor needs."""

    __slots__ = ("buf", "base", "clone_args", "steps", "nsteps", "rows")

    def __init__(self, buf: ctypes.Array, nsteps: int, rows: list[tuple[int, ...]]) -> None:
        self.buf = buf
        self.base = ctypes.addressof(buf)
        self.clone_args = self.base + HEADER_SIZE
        self.steps = self.clone_args + CLONE_ARGS_SIZE
        self.nsteps = nsteps
        self.rows = rows  # (nr, a0..a5, flags) per step, for the portable executor

    def set_clone(self, flags: int, exit_signal: int, stack: int = 0, stack_size: int = 0,
                  cgroup: int = 0) -> None:
        """Fill struct clone_args; with CLONE_PIDFD the pidfd lands in the header."""
        _CLONE.pack_into(self.buf, HEADER_SIZE, flags, self.base + 24, 0, 0, exit_signal,
                         stack, stack_size, 0, 0, 0, cgroup)

    def record(self) -> tuple[int, int]:
        """(step index, errno) as the child stored it; errno 0 means none."""
        idx, err = struct.unpack_from("=II", self.buf, 16)
        return idx, err

    def pidfd(self) -> int:
        """The pidfd clone3 stored in the header."""
        return struct.unpack_from("=i", self.buf, 24)[0]

    def set_saved_mask(self, mask: int) -> None:
        """Store the parent's signal mask where the plan's restore step reads it."""
        struct.pack_into("=Q", self.buf, 8, mask)


def _static_value(arg: object, base: int) -> int | None:
    if isinstance(arg, int):
        return arg & _MASK64
    if isinstance(arg, Ptr):
        if arg.name == "saved_sigmask":
            return base + 8
        if arg.name == "environ":
            return _environ.value or 0
        return _STATIC[arg.name]
    return None


def encode(plan: Plan) -> Table:
    """Lay out ``plan`` in one buffer and return the :class:`Table`."""
    steps = plan.steps
    n = len(steps)
    data_off = HEADER_SIZE + CLONE_ARGS_SIZE + STEP_SIZE * n
    # First pass: size the data area (strings, pointer and id arrays).
    size = data_off
    for step in steps:
        for a in step.args:
            if type(a) is CStr:
                size += len(a.data) + 1
            elif type(a) is CStrArray:
                size += 8 * (len(a.items) + 1) + sum(len(i) + 1 for i in a.items)
            elif type(a) is U32Array:
                size += 4 * len(a.items)
            size = (size + 7) & ~7
    buf = (ctypes.c_char * size)()
    base = ctypes.addressof(buf)
    struct.pack_into("=Q", buf, 0, _MASK64)  # the mask held during clone: all

    pos = data_off
    rows: list[tuple[int, ...]] = []
    off = HEADER_SIZE + CLONE_ARGS_SIZE
    nums = SYSCALLS
    cache = _packed_cache
    for idx, step in enumerate(steps):
        packed = cache.get(step)
        if packed is not None:
            buf[off:off + STEP_SIZE] = packed[:64] + struct.pack("=Q", idx)
            rows.append(_STEP.unpack_from(packed)[:8])
            off += STEP_SIZE
            continue
        vals: list[int] = []
        cacheable = True
        for a in step.args:
            v = _static_value(a, base)
            if v is not None:
                if isinstance(a, Ptr) and a.name in ("saved_sigmask", "environ"):
                    cacheable = False
                vals.append(v)
                continue
            cacheable = False
            if type(a) is CStr:
                vals.append(base + pos)
                end = pos + len(a.data)
                buf[pos:end] = a.data  # the zeroed buffer supplies the NUL
                pos = end + 1
            elif type(a) is CStrArray:
                items = a.items
                arr = pos
                vals.append(base + arr)
                pos += 8 * (len(items) + 1)
                ptrs = []
                for item in items:
                    ptrs.append(base + pos)
                    end = pos + len(item)
                    buf[pos:end] = item
                    pos = end + 1
                struct.pack_into(f"={len(items)}Q", buf, arr, *ptrs)
            elif type(a) is U32Array:
                vals.append(base + pos)
                struct.pack_into(f"={len(a.items)}I", buf, pos, *a.items)
                pos += 4 * len(a.items)
            else:
                raise TypeError(f"unknown step argument {a!r}")
            pos = (pos + 7) & ~7
        vals += [0] * (6 - len(vals))
        row = (nums[step.syscall], *vals, step.flags)
        _STEP.pack_into(buf, off, *row, idx)
        if cacheable and len(cache) < 1024:
            cache[step] = _STEP.pack(*row, 0)
        rows.append(row)
        off += STEP_SIZE
    return Table(buf, n, rows)
