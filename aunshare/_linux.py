"""Linux constants, syscall numbers and thin ctypes wrappers used by the parent.

Nothing here runs in the child: the child only ever executes the step table
built by :mod:`aunshare.plan` (see :mod:`aunshare.executors`).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

from ._syscalls import TABLES

__all__ = ["ARCH", "SYSCALLS", "libc", "syscall", "waitid_pidfd", "pidfd_send_signal"]

ARCH = os.uname().machine  # platform.machine(), without importing platform
if ARCH in ("amd64", "AMD64"):
    ARCH = "x86_64"
elif ARCH == "arm64":
    ARCH = "aarch64"
# Syscall numbers of this architecture, from the generated tables (one
# source of truth; empty where aunshare has no table: the portable executor
# and the parent then cannot run).
SYSCALLS: dict[str, int] = TABLES.get(ARCH, {})

# clone3 flags
CLONE_VM = 0x00000100
CLONE_VFORK = 0x00004000
CLONE_PIDFD = 0x00001000
CLONE_PARENT_SETTID = 0x00100000
CLONE_CLEAR_SIGHAND = 0x100000000
CLONE_INTO_CGROUP = 0x200000000
CLONE_ARGS_SIZE = 88  # struct clone_args up to and including .cgroup

# waitid / siginfo
P_PIDFD = 3
WEXITED = 4
WNOHANG = 1

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
# mount(2) and umount2(2)
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 2
# mount_setattr(2): struct mount_attr's attr_set bits, and its flag
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 1, 2, 4
AT_RECURSIVE = 0x8000
# bringing "lo" up: ioctl(SIOCSIFFLAGS) on an AF_INET datagram socket
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
SOCK_CLOEXEC = 0o2000000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: its CLONE_NEW* type
# tty ioctls (asm-generic values, the same on x86_64 and aarch64)
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int): lock/unlock the pty slave
TIOCGPTPEER = 0x5441     # _IO('T', 0x41): open the slave from the master (Linux 4.13)
F_SETPIPE_SZ = 1031
CLOSE_RANGE_CLOEXEC = 4
SIG_SETMASK = 2
# seccomp(2)
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8

libc = ctypes.CDLL(None, use_errno=True)
_syscall = libc.syscall
_syscall.restype = ctypes.c_long


def syscall(name: str, *args: int) -> int:
    """Run one syscall by name in the calling (parent) thread, GIL released.

    Returns the result; raises OSError with errno on failure.
    """
    r: int = _syscall(ctypes.c_long(SYSCALLS[name]), *(ctypes.c_long(a) for a in args))
    if r == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return r


class Waited(tuple[int, ...]):
    """What ``waitid`` reported for one child: the part of its siginfo a
    SIGCHLD fills, and the part of its rusage aunshare reads. (A tuple with
    named fields; not a NamedTuple, whose class costs every start-up of the
    command a fraction of a millisecond.)"""

    __slots__ = ()

    @property
    def si_code(self) -> int:
        """CLD_EXITED, CLD_KILLED, CLD_DUMPED, CLD_STOPPED, ..."""
        return self[0]

    @property
    def si_pid(self) -> int:
        """The child's pid; 0 when WNOHANG found nothing to report."""
        return self[1]

    @property
    def si_status(self) -> int:
        """The exit code (CLD_EXITED), else the signal."""
        return self[2]

    @property
    def user_time(self) -> float:
        """CPU seconds in user mode."""
        return self[3] + self[4] / 1e6

    @property
    def system_time(self) -> float:
        """CPU seconds in the kernel."""
        return self[5] + self[6] / 1e6

    @property
    def max_rss_kib(self) -> int:
        """Peak resident set size, KiB."""
        return self[7]


# The buffer: siginfo_t (128 bytes: signo, errno, code, 4 bytes of padding,
# pid, uid, status, the rest unused), then struct rusage, whose first five
# longs are utime and stime (seconds, microseconds) and maxrss. Unpacked:
# code, pid, status and those five.
_SIGINFO_SIZE = 128
_WAITED = struct.Struct("=8xi4xi4xi100x5q")
_Buffer = ctypes.c_char * (_SIGINFO_SIZE + 144)  # 144: the whole of struct rusage
_WAITID_NR = SYSCALLS.get("waitid", -1)
_new_waited = tuple.__new__


def waitid_pidfd(pidfd: int, options: int) -> Waited:
    """waitid(P_PIDFD, pidfd, ...) through the raw syscall, which also fills rusage."""
    # One buffer for both structures, read with one unpack: a reap is on the
    # path of every wait, right after the child's exit, and ctypes
    # structures cost it several times as much.
    buf = _Buffer()
    if _syscall(_WAITID_NR, P_PIDFD, pidfd, buf, options,
                ctypes.byref(buf, _SIGINFO_SIZE)) == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return _new_waited(Waited, _WAITED.unpack_from(buf))


def pipe_above(hi: int, flags: int = 0) -> tuple[int, int]:
    """A close-on-exec pipe (``flags`` added, e.g. O_NONBLOCK) whose write
    end is ``hi`` or above, clear of the descriptors a child's plan sets
    up below ``hi``. Raises OSError, leaving nothing open."""
    r, w = os.pipe2(os.O_CLOEXEC | flags)
    if w < hi:
        try:
            moved = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, hi)
        except OSError:
            os.close(r)
            raise
        finally:
            os.close(w)
        w = moved
    return r, w


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """Signal the process behind a pidfd: no pid-reuse race."""
    syscall("pidfd_send_signal", pidfd, sig, 0, 0)
