"""cgroup v2 from the parent's side: find the hierarchy, create a child's own
cgroup, signal or kill everything in it, remove it.

Synchronous and quick, except :func:`wait_empty`, which awaits a cgroup's
``populated`` flag on the event loop; the layers above decide when. A
child started with :meth:`Command.new_cgroup <aunshare.Command.new_cgroup>`
is created inside its cgroup by ``clone3(CLONE_INTO_CGROUP)``, so nothing
it starts can escape the kill without privilege.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import itertools
import os
import signal as _signal

from . import errors
from ._linux import libc, pidfd_send_signal, syscall

__all__ = ["v2_mount", "current", "is_cgroup2", "create", "populated", "signal_all",
           "kill", "remove", "wait_empty", "CGROUP2_SUPER_MAGIC"]

CGROUP2_SUPER_MAGIC = 0x63677270

_counter = itertools.count()
_statfs = libc.statfs
_statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return field.encode().decode("unicode_escape").encode("latin-1").decode(
        "utf-8", "surrogateescape") if "\\" in field else field


def _mountinfo_v2() -> tuple[str, str] | None:
    """(mount point, root inside the hierarchy) of the first cgroup2 mount."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        head, sep, tail = line.partition(" - ")
        if not sep or not tail.startswith("cgroup2 "):
            continue
        fields = head.split()
        return _unescape(fields[4]), _unescape(fields[3])
    return None


def v2_mount() -> str | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` on unified
    systems, ``/sys/fs/cgroup/unified`` on hybrid ones), or None."""
    found = _mountinfo_v2()
    return found[0] if found else None


def current() -> str | None:
    """The cgroup v2 directory of this process, or None when there is none
    (no v2 mount, or this process's cgroup is outside the mounted part)."""
    found = _mountinfo_v2()
    if found is None:
        return None
    mount, root = found
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            path = line[3:]
            if root != "/":
                if path != root and not path.startswith(root + "/"):
                    return None
                path = path[len(root):] or "/"
            return mount.rstrip("/") + path if path != "/" else mount
    return None


def is_cgroup2(path: bytes) -> bool:
    """True when ``path`` is a directory on a cgroup v2 filesystem."""
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type comes first
    if _statfs(path, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fsdecode(path))
    return ctypes.c_long.from_buffer(buf).value == CGROUP2_SUPER_MAGIC


def create(parent: bytes) -> tuple[bytes, int]:
    """Create a new cgroup under ``parent``; return its path and an
    ``O_PATH | O_DIRECTORY`` descriptor for ``clone_args.cgroup``."""
    try:
        if not is_cgroup2(parent):
            raise errors.CgroupError(_errno.ENOTDIR, parent, "not a cgroup v2 directory "
                                     f"(cgroup v2 is mounted at {v2_mount() or 'no place'})",
                                     action="create cgroup under")
    except OSError as exc:
        if isinstance(exc, errors.Error):
            raise
        raise errors.CgroupError(exc.errno or _errno.EIO, parent,
                                 action="create cgroup under") from None
    prefix = parent + b"/aunshare-" + str(os.getpid()).encode() + b"-"
    while True:
        path = prefix + str(next(_counter)).encode()
        try:
            os.mkdir(path)
            break
        except FileExistsError:  # a leftover of an earlier process with our pid
            continue
        except OSError as exc:
            raise errors.CgroupError(exc.errno or _errno.EIO, parent,
                                     action="create cgroup under") from None
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        _rmdir_quiet(path)
        raise errors.CgroupError(exc.errno or _errno.EIO, path, action="open cgroup") from None
    return path, fd


def open_dir(path: bytes) -> int:
    """An ``O_PATH | O_DIRECTORY`` descriptor of the existing cgroup v2
    directory ``path``, for ``clone_args.cgroup``."""
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise errors.CgroupError(exc.errno or _errno.EIO, path, "the cgroup to start the child in",
                                 action="open cgroup") from None
    if not is_cgroup2(path):
        os.close(fd)
        raise errors.CgroupError(_errno.ENOTDIR, path, "not a cgroup v2 directory (see "
                                 "/proc/self/mountinfo for the cgroup2 mount)",
                                 action="open cgroup")
    return fd


def move(path: bytes, pid: int) -> None:
    """Move ``pid`` into the cgroup ``path`` (where CLONE_INTO_CGROUP is not
    available); the child is still waiting, so it has run nothing outside."""
    try:
        with open(path + b"/cgroup.procs", "wb", buffering=0) as f:
            f.write(b"%d" % pid)
    except OSError as exc:
        raise errors.CgroupError(exc.errno or _errno.EIO, path,
                                 f"moving the child {pid} in through cgroup.procs",
                                 action="join cgroup") from None


def populated(path: bytes) -> bool:
    """True while a live process is in ``path`` or below (zombies do not count)."""
    try:
        with open(path + b"/cgroup.events", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    return b"populated 1" in data


def _pids(path: bytes) -> set[int]:
    try:
        with open(path + b"/cgroup.procs", "rb") as f:
            return {int(x) for x in f.read().split()}
    except FileNotFoundError:
        return set()


def signal_all(path: bytes, sig: int, exclude: int = 0) -> int:
    """Send ``sig`` to every process directly in ``path`` except the pid
    ``exclude``; return how many.

    Race-free against pid reuse: each pid is pinned with a pidfd, and only
    pids still listed in ``cgroup.procs`` after that are signalled (a pid
    reused by an outsider in between is not listed; one reused *again* by a
    member leaves the pidfd pointing at a dead process, which ignores it).
    """
    pidfds: dict[int, int] = {}
    try:
        for pid in _pids(path):
            if pid == exclude:
                continue
            try:
                pidfds[pid] = syscall("pidfd_open", pid, 0)
            except OSError:
                pass  # gone already
        sent = 0
        for pid in _pids(path) & pidfds.keys():
            try:
                pidfd_send_signal(pidfds[pid], sig)
                sent += 1
            except OSError:
                pass
        return sent
    finally:
        for fd in pidfds.values():
            os.close(fd)


def kill(path: bytes) -> None:
    """SIGKILL everything in ``path`` and below, atomically against forks
    (``cgroup.kill``, Linux 5.14); on older kernels, signal every process in
    each cgroup until a pass finds none."""
    try:
        fd = os.open(path + b"/cgroup.kill", os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not os.path.isdir(path):
            return  # already removed
        for _ in range(1000):
            if not sum(signal_all(d, _signal.SIGKILL) for d, _, _ in os.walk(path)):
                return
        return
    except OSError as exc:
        raise errors.CgroupError(exc.errno or _errno.EIO, path, action="kill cgroup") from None
    try:
        os.write(fd, b"1")
    except OSError as exc:
        raise errors.CgroupError(exc.errno or _errno.EIO, path, action="kill cgroup") from None
    finally:
        os.close(fd)


def _rmdir_quiet(path: bytes) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def remove(path: bytes) -> bool:
    """Remove the cgroup ``path`` and any cgroups its processes created in it.

    Returns False (and removes nothing more) while a live process is still in
    it; True once it is gone.
    """
    for dirpath, dirnames, _ in os.walk(path, topdown=False):
        for name in dirnames:
            try:
                os.rmdir(os.path.join(dirpath, name))
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno == _errno.EBUSY:
                    return False
                raise errors.CgroupError(exc.errno or _errno.EIO, os.path.join(dirpath, name),
                                         action="remove cgroup") from None
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == _errno.EBUSY:
            return False
        raise errors.CgroupError(exc.errno or _errno.EIO, path, action="remove cgroup") from None
    return True


_IN_MODIFY = 0x2
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


async def wait_empty(path: bytes, *, use_inotify: bool = True) -> None:
    """Return once no live process is left in the cgroup ``path``.

    The kernel reports a change of ``populated`` in ``cgroup.events`` as a
    file modification, so this sleeps on an inotify descriptor, not a timer.
    Where inotify is unavailable (descriptor or watch limits reached) it
    polls, backing off from 1 ms to 50 ms.
    """
    import anyio  # here only: the rest of this module serves the command line too

    fd = -1
    if use_inotify:
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd >= 0 and libc.inotify_add_watch(fd, ctypes.c_char_p(path + b"/cgroup.events"),
                                              _IN_MODIFY) < 0:
            os.close(fd)
            fd = -1
    try:
        delay = 0.001
        # The watch is in place before each check, so no change can be missed.
        while populated(path):
            if fd >= 0:
                await anyio.wait_readable(fd)
                try:
                    os.read(fd, 4096)
                except BlockingIOError:
                    pass
            else:
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.05)
    finally:
        if fd >= 0:
            os.close(fd)
