"""The init of a new pid namespace: a tiny static ELF, run from a memfd.

With :meth:`Command.init_process`, the last step of the plan is not the
program's ``execve`` but ``execveat(memfd, "", argv, envp, AT_EMPTY_PATH)``
of this init, which becomes pid 1 and starts the program as pid 2. Like
the spawn routine it is machine code with no libc (``init_<arch>.S`` in
this directory, header included, assembled with GNU ``as`` and
``objcopy -O binary``; tests re-assemble the sources and compare).

Its argv: ``[name, report fd, report code, status fd, program path,
*program argv]``, so the program gets its own argv[0] and the path to exec
separately. The report fd is the write end of the spawn's error pipe, put
at a fixed number by a ``dup3`` step (so it survives the init's exec); the
program's copy is marked close-on-exec, the init closes its own once the
program is started, so the parent sees EOF when the program has exec'd, or
the record ``(code, errno)`` of the exec step when it could not be, exactly
as for a child without an init. The status fd is the write end of a pipe
of its own (another ``dup3`` target), closed in the program's process
before its exec, kept by the init.

The init blocks every signal and takes them with ``rt_sigtimedwait``:
``SIGCHLD`` reaps every exited child (the orphans the namespace hands it
too), any other signal is sent on to the program. Once the program has
been reaped the init writes its wait status (4 bytes, native order, as
``wait4`` gave it) on the status fd, then exits with the program's code,
or 128+N when a signal N killed it: a namespace's init cannot be killed by
a signal sent from inside it, its own included. The parent builds the
status from those 4 bytes (code, signal and core dump exactly); the exit
code is only the fallback when they are missing
(:func:`aunshare.status.from_init`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading

from .._linux import ARCH

__all__ = ["INIT", "init_memfd"]

# Assembled from init_<arch>.S (the whole file is the .text section).
INIT: dict[str, bytes] = {
    "x86_64": bytes.fromhex(
        "7f454c4602010100000000000000000002003e0001000000b000400000000000"
        "4000000000000000000000000000000000000000400038000200000000000000"
        "0100000005000000000000000000000000004000000000000000400000000000"
        "9e020000000000009e02000000000000000001000000000051e5746406000000"
        "0000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000010000000000000004c8b24244c8d6c24084f8d74e5084883"
        "ec2048c70424ffffffff49c7c7ffffffff48c7c3ffffffff31ed4983fc050f82"
        "80010000498b7d08e8850100004989c7498b7d10e87901000089c58944241049"
        "8b7d18e86a0100004889c3b80e00000031ff4889e6488d54240841ba08000000"
        "0f05b838000000bf1141000031f631d24531d24531c00f054885c00f84b10000"
        "000f88fe0000004989c4b8b401000031ffbe0200000031d20f054d85ff780ab8"
        "030000004c89ff0f05b8800000004889e731f631d241ba080000000f054885c0"
        "78e783f811740e89c64c89e7b83e0000000f05ebd4b83d00000048c7c7ffffff"
        "ff488d742418ba010000004531d20f054885c07eb44c39e075db4885db7814b8"
        "010000004889df488d742418ba040000000f058b44241889c783e77f740881c7"
        "80000000eb030fb6fcb8e70000000f050f0b4d85ff7814b8480000004c89ffbe"
        "02000000ba010000000f054885db780ab8030000004889df0f05b80e000000bf"
        "02000000488d74240831d241ba080000000f05b83b000000498b7d20498d7528"
        "4c89f20f05f7d8894424144d85ff7814b8010000004c89ff488d742410ba0800"
        "00000f05b8e7000000bf7f0000000f050f0b48c7c0ffffffff0fb60f83e93083"
        "f909771931c00fb60f83e93083f909770c486bc00a4801c848ffc7ebe9c3"
    ),
    "aarch64": bytes.fromhex(
        "7f454c460201010000000000000000000200b70001000000b000400000000000"
        "4000000000000000000000000000000000000000400038000200000000000000"
        "0100000005000000000000000000000000004000000000000000400000000000"
        "c002000000000000c002000000000000000001000000000051e5746406000000"
        "0000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000001000000000000000f30340f9f4230091950e138bb5220091"
        "ff8300d100008092e00300f916008092170080927f1600f1e30c0054800640f9"
        "69000094f60300aa800a40f966000094e01300b9800e40f963000094f70300aa"
        "000080d2e1030091e2230091030180d2e81080d2010000d4202288d2010080d2"
        "020080d2030080d2040080d2881b80d2010000d4600600b4e008f8b7f30300aa"
        "000080d2410080d2020080d2883680d2010000d49600f8b7e00316aa280780d2"
        "010000d4e0030091010080d2020080d2030180d2281180d2010000d440ffffb7"
        "1f4400f1c0000054e10300aae00313aa281080d2010000d4f3ffff1700008092"
        "e1630091220080d2030080d2882080d2010000d41f0000f16dfdff541f0013eb"
        "e1feff54d700f8b7e00317aae1630091820080d2080880d2010000d4e11b40b9"
        "20180072600000540000021102000014203c0853c80b80d2010000d400000000"
        "d600f8b7e00316aa410080d2220080d2280380d2010000d49700f8b7e00317aa"
        "280780d2010000d4400080d2e1230091020080d2030180d2e81080d2010000d4"
        "801240f981a20091e20315aaa81b80d2010000d4e003004be01700b9d600f8b7"
        "e00316aae1430091020180d2080880d2010000d4e00f80d2c80b80d2010000d4"
        "00000000e10300aa000080922200403942c000515f24007128010054000080d2"
        "430180d22214403842c000515f240071680000540008039bfbffff17c0035fd6"
    ),
}

_MFD_EXEC = 0x10  # Linux 6.3: executable even where vm.memfd_noexec says otherwise
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_lock = threading.Lock()
_memfd: tuple[int, int, int] | None = None  # (fd, st_dev, st_ino)


def init_memfd() -> int:
    """A close-on-exec, sealed memfd holding this architecture's init,
    made once per process and reused (checked on each call: the number may
    have been closed and reused by someone else since).

    Raises OSError when it cannot be made (no memfd_create) and
    NotImplementedError where there is no init for this architecture.
    """
    global _memfd
    with _lock:
        if _memfd is not None:
            fd, dev, ino = _memfd
            try:
                st = os.fstat(fd)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == (dev, ino):
                return fd
            _memfd = None
        code = INIT.get(ARCH)
        if code is None:
            raise NotImplementedError(f"no init for {ARCH}")
        flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
        try:
            fd = os.memfd_create("aunshare-init", flags | _MFD_EXEC)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # a kernel before MFD_EXEC
                raise
            fd = os.memfd_create("aunshare-init", flags)
        try:
            os.write(fd, code)
            os.fchmod(fd, 0o500)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        _memfd = (fd, st.st_dev, st.st_ino)
        return fd
