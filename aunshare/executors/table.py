"""Encode a :class:`~aunshare.plan.Plan` into the memory an executor runs.

One buffer holds everything the child reads: a header, struct clone_args,
the step table and the strings and arrays the steps point to. Both
executors use this layout; the native one runs it from machine code, the
portable one from a forked Python.

Header: +0 full signal mask, +8 saved mask, +16 u32 step index, +20 u32 errno,
+24 the pidfd clone3 (or clone) returns, +28 the child's pid (with CLONE_PARENT_SETTID),
+32 eight scratch bytes the child may write (the handshake reads into them).
Step (72 bytes): syscall number, six arguments, flags, code (= step index).

This runs on every spawn, so it writes through a memoryview (slice
assignment into a ctypes array goes byte by byte) and copies runs of
constant steps (the signal resets) as one precomputed block.
"""

from __future__ import annotations

import ctypes
import struct

from .._linux import CLONE_ARGS_SIZE, SYSCALLS, libc
from ..plan import (
    CONSTANT_RUNS, Arg, Bytes, CStr, CStrArray, Fprog, Plan, Ptr, Slot, Step, U32Array,
)

__all__ = ["Table", "encode", "environ_pointer", "environ_copy", "HEADER_SIZE", "STEP_SIZE"]

HEADER_SIZE = 40
STEP_SIZE = 72
_STEP = struct.Struct("=9Q")
_ROW = struct.Struct("=8Q")
_CLONE = struct.Struct("=11Q")
_Q = struct.Struct("=Q")
_FPROG = struct.Struct("=H6xQ")  # struct sock_fprog: len, padding, filter pointer
_MASK64 = (1 << 64) - 1

# Process-lifetime statics the steps may point to.
_sigaction_default = ctypes.create_string_buffer(32)  # SIG_DFL, no flags, empty mask
_empty_sigset = ctypes.create_string_buffer(8)
_environ = ctypes.c_void_p.in_dll(libc, "environ")
_STATIC = {
    "sigaction_default": ctypes.addressof(_sigaction_default),
    "empty_sigset": ctypes.addressof(_empty_sigset),
}

def environ_pointer() -> int:
    """The parent's live ``environ`` array, as the child would get it."""
    return _environ.value or 0


def environ_copy() -> list[bytes]:
    """The entries of the live ``environ`` array, copied: for a child that
    runs alongside the parent, which may change (and reallocate) it."""
    addr = _environ.value
    if not addr:
        return []
    arr = ctypes.cast(addr, ctypes.POINTER(ctypes.c_char_p))
    out = []
    i = 0
    while (entry := arr[i]) is not None:
        out.append(entry)
        i += 1
    return out


# (id of a constant run, index it starts at) -> its encoded rows
_run_cache: dict[tuple[int, int], bytes] = {}
_RUN_STARTS = {id(run[0]): run for run in CONSTANT_RUNS}


class Table:
    """An encoded plan: the buffer and the addresses an executor needs."""

    __slots__ = ("buf", "view", "base", "clone_args", "steps", "nsteps", "stack")

    def __init__(self, buf: bytearray, nsteps: int) -> None:
        self.buf = buf
        self.view = (ctypes.c_char * len(buf)).from_buffer(buf)  # pins buf
        self.base = ctypes.addressof(self.view)
        self.clone_args = self.base + HEADER_SIZE
        self.steps = self.clone_args + CLONE_ARGS_SIZE
        self.nsteps = nsteps
        self.stack: ctypes.Array[ctypes.c_char] | None = None

    def set_clone(self, flags: int, exit_signal: int, stack: int = 0, stack_size: int = 0,
                  cgroup: int = 0) -> None:
        """Fill struct clone_args; with CLONE_PIDFD the pidfd lands in the header."""
        _CLONE.pack_into(self.buf, HEADER_SIZE, flags, self.base + 24, 0, self.base + 28,
                         exit_signal, stack, stack_size, 0, 0, 0, cgroup)

    def set_clone_legacy(self, flags: int, exit_signal: int, stack_top: int = 0) -> None:
        """Fill the same struct for clone(2) (an executor calls it with size 0):
        flags with the exit signal in the low byte, the stack's top (clone(2)
        takes the initial stack pointer, not the area) and, where CLONE_PIDFD
        stores the pidfd, the same header slot clone3 uses."""
        _CLONE.pack_into(self.buf, HEADER_SIZE, flags | exit_signal, self.base + 24, 0, 0, 0,
                         stack_top, 0, 0, 0, 0, 0)

    def set_first_arg(self, index: int, value: int) -> None:
        """Change the first argument of step ``index`` (a reused table's dup3
        source, which differs from spawn to spawn)."""
        _Q.pack_into(self.buf, HEADER_SIZE + CLONE_ARGS_SIZE + STEP_SIZE * index + 8, value)

    def clear_record(self) -> None:
        """Forget a previous run's failure record before the table is reused."""
        _Q.pack_into(self.buf, 16, 0)

    def record(self) -> tuple[int, int]:
        """(step index, errno) as the child stored it; errno 0 means none."""
        return struct.unpack_from("=II", self.buf, 16)

    def pidfd(self) -> int:
        """The pidfd clone3 stored in the header."""
        pidfd: int = struct.unpack_from("=i", self.buf, 24)[0]
        return pidfd

    def child_pid(self) -> int:
        """The pid clone3 stored with CLONE_PARENT_SETTID (0 in the child's copy)."""
        pid: int = struct.unpack_from("=i", self.buf, 28)[0]
        return pid

    def set_saved_mask(self, mask: int) -> None:
        """Store the parent's signal mask where the plan's restore step reads it."""
        _Q.pack_into(self.buf, 8, mask)

    def rows(self) -> list[tuple[int, ...]]:
        """Each step as (number, a0..a5, flags), for an executor that runs it in Python."""
        off = HEADER_SIZE + CLONE_ARGS_SIZE
        return [_ROW.unpack_from(self.buf, off + STEP_SIZE * i) for i in range(self.nsteps)]


def _data_size(arg: Arg) -> int:
    if type(arg) is CStr:
        n = len(arg.data) + 1
    elif type(arg) is CStrArray:
        items = arg.items
        n = 8 * (len(items) + 1) + sum(map(_item_size, items))
    elif type(arg) is Slot:
        n = _item_size(arg)
    elif type(arg) is U32Array:
        n = 4 * len(arg.items)
    elif type(arg) is Bytes:
        n = len(arg.data)
    elif type(arg) is Fprog:
        n = ((len(arg.data) + 7) & ~7) + 16  # the filter, then struct sock_fprog
    else:
        return 0
    return (n + 7) & ~7


def _item_size(item: bytes | Slot) -> int:
    # A slot is counted wherever it appears, though laid out once: a few
    # spare bytes, never too few.
    if type(item) is Slot:
        return len(item.prefix) + item.size + 8
    return len(item) + 1


def _static_arg(arg: Arg) -> int:
    """An argument of a constant run: an int, or a process-lifetime static."""
    if isinstance(arg, int):
        return arg
    if isinstance(arg, Ptr):
        return _STATIC[arg.name]
    raise TypeError(f"a constant run cannot take {arg!r}")


def _encode_run(run: tuple[Step, ...], start: int) -> bytes:
    out = bytearray()
    for i, step in enumerate(run):
        vals = [_static_arg(a) for a in step.args]
        vals += [0] * (6 - len(vals))
        out += _STEP.pack(SYSCALLS[step.syscall], *vals, step.flags, start + i)
    return bytes(out)


def encode(plan: Plan) -> Table:
    """Lay out ``plan`` in one buffer and return the :class:`Table`."""
    steps = plan.steps
    n = len(steps)
    # Pass 1: find the constant runs and size the data area.
    runs: dict[int, tuple[Step, ...]] = {}
    size = HEADER_SIZE + CLONE_ARGS_SIZE + STEP_SIZE * n
    idx = 0
    while idx < n:
        step = steps[idx]
        run = _RUN_STARTS.get(id(step))
        if run is not None and steps[idx:idx + len(run)] == run:
            runs[idx] = run
            idx += len(run)
            continue
        for a in step.args:
            if type(a) is not int:
                size += _data_size(a)
        idx += 1
    data_off = HEADER_SIZE + CLONE_ARGS_SIZE + STEP_SIZE * n
    buf = bytearray(size)
    table = Table(buf, n)
    base = table.base
    _Q.pack_into(buf, 0, _MASK64)  # the mask held during clone: all signals

    pos = data_off
    slots: dict[Slot, int] = {}  # where each slot's string was laid out

    def place(slot: Slot) -> int:
        nonlocal pos
        addr = slots.get(slot)
        if addr is None:  # the zeroed buffer supplies the blank digits and the NUL
            addr = slots[slot] = base + pos
            buf[pos:pos + len(slot.prefix)] = slot.prefix
            pos = (pos + len(slot.prefix) + slot.size + 8) & ~7
        return addr

    off = HEADER_SIZE + CLONE_ARGS_SIZE
    nums = SYSCALLS
    idx = 0
    while idx < n:
        run = runs.get(idx)
        if run is not None:
            block = _run_cache.get((id(run), idx))
            if block is None:
                block = _run_cache[(id(run), idx)] = _encode_run(run, idx)
            buf[off:off + len(block)] = block
            off += len(block)
            idx += len(run)
            continue
        step = steps[idx]
        vals = []
        for a in step.args:
            if type(a) is int:
                vals.append(a & _MASK64)
            elif type(a) is CStr:
                vals.append(base + pos)
                data = a.data
                buf[pos:pos + len(data)] = data  # the zeroed buffer supplies the NUL
                pos = (pos + len(data) + 8) & ~7
            elif type(a) is CStrArray:
                items = a.items
                arr = pos
                vals.append(base + arr)
                pos += 8 * (len(items) + 1)
                for i, item in enumerate(items):
                    if type(item) is Slot:
                        _Q.pack_into(buf, arr + 8 * i, place(item))
                        continue
                    _Q.pack_into(buf, arr + 8 * i, base + pos)
                    buf[pos:pos + len(item)] = item
                    pos += len(item) + 1
                pos = (pos + 7) & ~7
            elif type(a) is Slot:
                vals.append(place(a) + len(a.prefix))
            elif type(a) is U32Array:
                vals.append(base + pos)
                struct.pack_into(f"={len(a.items)}I", buf, pos, *a.items)
                pos = (pos + 4 * len(a.items) + 7) & ~7
            elif type(a) is Bytes:
                vals.append(base + pos)
                data = a.data
                buf[pos:pos + len(data)] = data
                pos = (pos + len(data) + 7) & ~7
            elif type(a) is Fprog:
                data = a.data
                buf[pos:pos + len(data)] = data
                prog = (pos + len(data) + 7) & ~7
                _FPROG.pack_into(buf, prog, len(data) // 8, base + pos)
                vals.append(base + prog)
                pos = prog + 16
            elif type(a) is Ptr:
                name = a.name
                if name == "saved_sigmask":
                    vals.append(base + 8)
                elif name == "scratch":
                    vals.append(base + 32)
                elif name == "environ":
                    vals.append(_environ.value or 0)
                else:
                    vals.append(_STATIC[name])
            else:
                raise TypeError(f"unknown step argument {a!r}")
        vals += [0] * (6 - len(vals))
        _STEP.pack_into(buf, off, nums[step.syscall], *vals, step.flags, idx)
        off += STEP_SIZE
        idx += 1
    return table
