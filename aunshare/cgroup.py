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
from collections.abc import Callable

from . import errors
from ._linux import libc, pidfd_send_signal, syscall
from .descriptors import Opened, above
from .spec import CgroupLimits
from .status import CgroupUsage

__all__ = ["v2_mount", "current", "is_cgroup2", "create", "populated", "signal_all",
           "kill", "remove", "wait_empty", "CGROUP2_SUPER_MAGIC", "create_limited", "usage",
           "clear_blocking", "v1_dirs", "open_tasks"]

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
    return _own_dir(lambda hid, _names: hid == "0", mount, root)


def _own_dir(hierarchy: Callable[[str, str], bool], mount: str, root: str) -> str | None:
    """This process's directory in the hierarchy that ``hierarchy(id,
    controllers)`` picks from /proc/self/cgroup, given where that hierarchy
    is mounted and which of its directories the mount shows as its root;
    None when there is none or it lies outside the mounted part."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        hid, names, path = line.split(":", 2)
        if hierarchy(hid, names):
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
    for d in _V1.get(path, (path,)):
        try:
            with open(d + b"/cgroup.procs", "wb", buffering=0) as f:
                f.write(b"%d" % pid)
        except OSError as exc:
            raise errors.CgroupError(exc.errno or _errno.EIO, d,
                                     f"moving the child {pid} in through cgroup.procs",
                                     action="join cgroup") from None


def populated(path: bytes) -> bool:
    """True while a live process is in ``path`` or below (zombies do not count)."""
    dirs = _V1.get(path)
    if dirs is not None:
        # v1 has no cgroup.events; exited tasks leave cgroup.procs. Every
        # process the child starts is in each of the group's directories, so
        # the first one's list tells (a cgroup made below it by a privileged
        # child shows as remove() failing with EBUSY).
        return bool(_pids(path))
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
    dirs = _V1.get(path)
    if dirs is not None:
        for d in dirs:
            if not _remove(d):
                return False
        del _V1[path]
        _V1_USAGE.pop(path, None)
        return True
    return _remove(path)


def _remove(path: bytes) -> bool:
    try:  # the common case: nothing was made below it
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        pass  # EBUSY (a process or a cgroup below it): see below
    if _pids(path):
        return False  # a live process in it: nothing to walk for
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


def clear_blocking(path: bytes, timeout: float = 10.0) -> bool:
    """Kill whatever is left in the cgroup ``path``, wait until it is empty
    and remove it, blocking the thread (polling: the command line has no
    event loop). False when it is still there after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        if populated(path):
            kill(path)
        if not populated(path) and remove(path):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


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


# -- limits and accounting ---------------------------------------------------------
#
# cgroup v2 first: one directory, limits written before the child is created
# in it with CLONE_INTO_CGROUP. Where the controllers are mounted on cgroup v1
# instead (hybrid hosts), one directory per hierarchy, all with the same name;
# the child moves itself into each (the first steps of its plan write 0 to
# their tasks files, opened by the parent: open_tasks, plan.Setup.cgroup_tasks),
# before it does anything else. The first of those directories stands for
# the group everywhere a path is passed (Child.cgroup, kill, remove); the
# others are found in _V1.

_V1: dict[bytes, tuple[bytes, ...]] = {}
"""v1 groups: the first directory -> every directory of the group."""
_V1_USAGE: dict[bytes, tuple[bytes | None, int | None, bytes | None, bytes | None]] = {}
"""v1 groups: the first directory -> where usage() reads: (memory directory,
the memory limit as the kernel keeps it, pids directory, cpuacct directory)."""
_PAGE = os.sysconf("SC_PAGE_SIZE")

_REMEDY = ("give the child a cgroup subtree this process may manage: run it in a "
           "delegated one (a systemd unit or scope with Delegate=yes, e.g. systemd-run "
           "--user --scope -p Delegate=yes ...) and pass a directory of it to "
           "Command.new_cgroup(parent)")
# v1 accounting that costs one directory more and is worth it: CPU times.
_V1_ACCOUNTING = ("cpuacct",)


def v1_dirs(path: bytes) -> tuple[bytes, ...]:
    """Every directory of the cgroup v1 group ``path`` made here (one per
    hierarchy); empty for a cgroup v2 directory."""
    return _V1.get(path, ())


def _v1_mounts() -> dict[str, tuple[str, str]]:
    """controller -> (mount point, root inside the hierarchy) of each cgroup v1 mount."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out: dict[str, tuple[str, str]] = {}
    for line in lines:
        head, sep, tail = line.partition(" - ")
        if not sep or not tail.startswith("cgroup "):
            continue
        fields = head.split()
        for opt in tail.split()[-1].split(","):
            out.setdefault(opt, (_unescape(fields[4]), _unescape(fields[3])))
    return out


def _v1_own(controller: str, mount: str, root: str) -> str | None:
    """This process's directory in the v1 hierarchy of ``controller``."""
    return _own_dir(lambda _hid, names: controller in names.split(","), mount, root)


def open_tasks(directory: bytes, hi: int, opened: Opened) -> int:
    """A write-only, close-on-exec descriptor of the cgroup v1 ``directory``'s
    ``tasks`` file, above every dup3 target and recorded in ``opened`` (closed
    once the child is started): the child writes 0 to it to move itself in.

    The kernel moves the *writer* (pid 0), checking permission against the
    credentials of the descriptor's opener, the parent; the child has the
    same ones at that point (it is the first thing it does).
    """
    tasks = directory + b"/tasks"
    try:
        fd = os.open(tasks, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise errors.CgroupError(exc.errno or _errno.EIO, tasks,
                                 "for the child to move itself in", action="open") from None
    opened.child_side.append(fd)
    return above(fd, hi, opened, f"the cgroup {os.fsdecode(tasks)!r}")


def _read(path: bytes) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            # cgroup files are seq_files, which fill a read's buffer up to
            # the end of the file: a short read is the end, no second call.
            chunk = os.read(fd, 65536)
            chunks.append(chunk)
            if len(chunk) < 65536:
                return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_int(path: bytes) -> int | None:
    data = _read(path)
    if data is None:
        return None
    try:
        return int(data)
    except ValueError:
        return None  # "max"


def _keyed(path: bytes, key: bytes) -> int | None:
    """The value of ``key`` in a flat-keyed file ("key value" lines)."""
    data = _read(path)
    if data is None:
        return None
    for line in data.splitlines():
        k, _, v = line.partition(b" ")
        if k == key:
            try:
                return int(v)
            except ValueError:
                return None
    return None


def _write(directory: bytes, name: str, value: int | str) -> None:
    path = directory + b"/" + name.encode()
    text = str(value)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        detail = f"writing {text!r}"
        if exc.errno == _errno.ENOENT:
            detail += " (this kernel or hierarchy has no such file)"
        raise errors.CgroupError(exc.errno or _errno.EIO, path, detail,
                                 action="set limit") from None


def _enable_v2(parent: bytes, needed: tuple[str, ...]) -> None:
    """Make the ``needed`` controllers available to the children of the v2
    directory ``parent`` (its ``cgroup.subtree_control``), or raise."""
    control = parent + b"/cgroup.subtree_control"
    data = _read(control)
    if data is None:
        raise errors.CgroupError(_errno.ENOENT, control, "cannot read it", action="enable "
                                 "controllers in")
    missing = [c for c in needed if c not in data.decode().split()]
    if not missing:
        return
    available = (_read(parent + b"/cgroup.controllers") or b"").decode().split()
    lacking = [c for c in missing if c not in available]
    if lacking:
        raise errors.CgroupError(
            _errno.EOPNOTSUPP, parent + b"/cgroup.controllers",
            f"the {', '.join(lacking)} controller is not available here (it has "
            f"{' '.join(available) or 'none'}); {_REMEDY}", action="enable controllers in")
    try:
        with open(control, "wb", buffering=0) as f:
            f.write(" ".join("+" + c for c in missing).encode())
    except OSError as exc:
        why = (f"writing '+{' +'.join(missing)}'"
               + (": the cgroup has processes of its own, and cgroup v2 enables "
                  "controllers only for a cgroup without ('no internal processes')"
                  if exc.errno == _errno.EBUSY else ""))
        raise errors.CgroupError(exc.errno or _errno.EIO, control, f"{why}; {_REMEDY}",
                                 action="enable controllers in") from None


def _limit_v2(path: bytes, limits: CgroupLimits) -> None:
    if limits.memory_max is not None:
        _write(path, "memory.max", limits.memory_max)
        if limits.swap_max is not None:
            _write(path, "memory.swap.max", limits.swap_max)
        if limits.oom_group:
            _write(path, "memory.oom.group", 1)
    if limits.pids_max is not None:
        _write(path, "pids.max", limits.pids_max)
    if limits.cpu_quota_us is not None:
        _write(path, "cpu.max", f"{limits.cpu_quota_us} {limits.cpu_period_us}")


def _limit_v1(dirs: dict[str, bytes], limits: CgroupLimits) -> None:
    if limits.memory_max is not None:
        _write(dirs["memory"], "memory.limit_in_bytes", limits.memory_max)
        if limits.swap_max is not None:
            # memsw is memory and swap together; swap accounting must be on.
            _write(dirs["memory"], "memory.memsw.limit_in_bytes",
                   limits.memory_max + limits.swap_max)
    if limits.pids_max is not None:
        _write(dirs["pids"], "pids.max", limits.pids_max)
    if limits.cpu_quota_us is not None:
        _write(dirs["cpu"], "cpu.cfs_period_us", limits.cpu_period_us)
        _write(dirs["cpu"], "cpu.cfs_quota_us", limits.cpu_quota_us)


def _create_v1(parents: dict[str, bytes], limits: CgroupLimits) -> bytes:
    """One new directory with the same name under each of ``parents``
    (controller -> v1 directory; co-mounted controllers share one), limits
    written; registered in _V1. Returns the first."""
    made: list[bytes] = []
    dirs: dict[str, bytes] = {}
    by_parent: dict[bytes, bytes] = {}
    name = b"aunshare-" + str(os.getpid()).encode() + b"-"
    try:
        while True:
            leaf = name + str(next(_counter)).encode()
            try:
                for controller, parent in parents.items():
                    if parent not in by_parent:
                        path = parent + b"/" + leaf
                        try:
                            os.mkdir(path)
                        except OSError as exc:
                            if exc.errno == _errno.EEXIST:
                                raise
                            why = (" may not be created by this process"
                                   if exc.errno in (_errno.EACCES, _errno.EPERM, _errno.EROFS)
                                   else "")
                            raise errors.CgroupError(
                                exc.errno or _errno.EIO, parent,
                                f"the child's cgroup in the cgroup v1 {controller} hierarchy"
                                f"{why}; {_REMEDY}", action="create cgroup under") from None
                        made.append(path)
                        by_parent[parent] = path
                    dirs[controller] = by_parent[parent]
                break
            except FileExistsError:  # a leftover of an earlier process with our pid
                for path in reversed(made):
                    _rmdir_quiet(path)
                made.clear()
                dirs.clear()
                by_parent.clear()
        _limit_v1(dirs, limits)
    except BaseException:
        for path in reversed(made):
            _rmdir_quiet(path)
        raise
    _V1[made[0]] = tuple(made)
    memory_limit = None
    if limits.memory_max is not None:  # the kernel keeps whole pages
        memory_limit = limits.memory_max // _PAGE * _PAGE
    _V1_USAGE[made[0]] = (dirs.get("memory"), memory_limit, dirs.get("pids"),
                          dirs.get("cpuacct"))
    return made[0]


def create_limited(parent: bytes | None, limits: CgroupLimits) -> tuple[bytes, int, bool]:
    """Create the child's own cgroup with ``limits`` written into it, under
    ``parent`` (:meth:`Command.new_cgroup`) or, when None, under this
    process's own cgroup. Returns its path, a descriptor for
    ``CLONE_INTO_CGROUP`` (-1 on v1) and whether it is on cgroup v2 (else
    the child must be moved in through ``cgroup.procs`` before it runs).

    cgroup v2 is used where it has the controllers the limits need; else the
    cgroup v1 hierarchies of those controllers. CgroupError when neither
    can be used, naming the path, the reason and the remedy.
    """
    key = (os.getpid(), parent, limits.controllers)
    place = _PLACES.get(key)
    if place is None:
        place = _place(parent, limits.controllers)
        if len(_PLACES) > 64:
            _PLACES.clear()
        _PLACES[key] = place
    v2_parent, v1_parents = place
    if v2_parent is not None:
        return _finish_v2(v2_parent, limits)
    assert v1_parents is not None
    return _create_v1(v1_parents, limits), -1, False


# Where the cgroups of a parent and a set of controllers go, once found (the
# search reads mountinfo and /proc/self/cgroup and may enable controllers):
# (pid, parent, controllers) -> (v2 directory, None) or (None, v1 directories).
_PLACES: dict[tuple[int, bytes | None, tuple[str, ...]],
              tuple[bytes | None, dict[str, bytes] | None]] = {}


def _place(parent: bytes | None, needed: tuple[str, ...]
           ) -> tuple[bytes | None, dict[str, bytes] | None]:
    v1 = _v1_mounts()
    if parent is not None:
        try:
            on_v2 = is_cgroup2(parent)
        except OSError as exc:
            raise errors.CgroupError(exc.errno or _errno.EIO, parent,
                                     action="create cgroup under") from None
        if on_v2:
            _enable_v2(parent, needed)
            return parent, None
        # A directory in a v1 hierarchy: the same place in each hierarchy.
        text = os.fsdecode(parent)
        for mount, _ in v1.values():
            if text == mount or text.startswith(mount.rstrip("/") + "/"):
                rel = text[len(mount.rstrip("/")):]
                if any(c not in v1 for c in needed):
                    break
                return None, {c: os.fsencode(v1[c][0].rstrip("/") + rel)
                              for c in (*needed, *_V1_ACCOUNTING) if c in v1}
        raise errors.CgroupError(_errno.ENOTDIR, parent,
                                 f"neither a cgroup v2 directory nor one in the cgroup v1 "
                                 f"hierarchies of {', '.join(needed)}",
                                 action="create cgroup under")
    # The default: under this process's own cgroup.
    own = current()
    reasons = []
    if own is not None:
        try:
            _enable_v2(os.fsencode(own), needed)
            return os.fsencode(own), None
        except errors.CgroupError as exc:
            reasons.append(str(exc).partition("; give the child")[0])
    else:
        reasons.append("cgroup v2 is not mounted, or this process's cgroup is outside the mount")
    if all(c in v1 for c in needed):
        parents = {}
        for c in (*needed, *_V1_ACCOUNTING):
            if c in v1:
                own_dir = _v1_own(c, *v1[c])
                if own_dir is None:
                    if c in needed:
                        raise errors.CgroupError(
                            _errno.ENOENT, os.fsencode(v1[c][0]),
                            f"this process's cgroup is outside the mounted part of the "
                            f"cgroup v1 {c} hierarchy; {_REMEDY}", action="create cgroup under")
                    continue
                parents[c] = os.fsencode(own_dir)
        return None, parents
    missing = [c for c in needed if c not in v1]
    raise errors.CgroupError(
        _errno.EOPNOTSUPP, os.fsencode(own or v2_mount() or "/sys/fs/cgroup"),
        f"no cgroup hierarchy offers {', '.join(needed)}: on cgroup v2 "
        f"{'; '.join(reasons)}; cgroup v1 has no {', '.join(missing)} hierarchy; {_REMEDY}",
        action="create limited cgroup under")


def _finish_v2(parent: bytes, limits: CgroupLimits) -> tuple[bytes, int, bool]:
    try:
        path, fd = create(parent)
    except errors.CgroupError as exc:
        if exc.errno not in (_errno.EACCES, _errno.EPERM, _errno.EROFS):
            raise
        raise errors.CgroupError(exc.errno, parent, f"this process may not create cgroups "
                                 f"here; {_REMEDY}", action="create cgroup under") from None
    try:
        _limit_v2(path, limits)
    except BaseException:
        os.close(fd)
        _rmdir_quiet(path)
        raise
    return path, fd, True


def usage(path: bytes) -> CgroupUsage:
    """What the cgroup ``path`` (v2, or a v1 group made here) has used so
    far; None for every figure the kernel does not give."""
    dirs = _V1.get(path)
    if dirs is None:
        cpu = _read(path + b"/cpu.stat") or b""
        stat = dict(line.split(b" ", 1) for line in cpu.splitlines() if b" " in line)
        return CgroupUsage(
            memory_peak=_read_int(path + b"/memory.peak"),
            memory_limit=_read_int(path + b"/memory.max"),
            cpu_user_usec=int(stat[b"user_usec"]) if b"user_usec" in stat else None,
            cpu_system_usec=int(stat[b"system_usec"]) if b"system_usec" in stat else None,
            oom_kills=_keyed(path + b"/memory.events", b"oom_kill"),
            pids_peak=_read_int(path + b"/pids.peak"),
            pids_limit_hits=_keyed(path + b"/pids.events", b"max"))
    memory, limit, pids, cpuacct = _V1_USAGE.get(path, (None, None, None, None))
    peak = user = system = oom = hits = None
    # Only the hierarchies the group has, one read per figure's file.
    if memory is not None:
        peak = _read_int(memory + b"/memory.max_usage_in_bytes")
        oom = _keyed(memory + b"/memory.oom_control", b"oom_kill")
    if pids is not None:
        hits = _keyed(pids + b"/pids.events", b"max")
    if cpuacct is not None:
        # Per CPU "cpu user system" in ns (Linux 4.7); the two totals otherwise.
        data = _read(cpuacct + b"/cpuacct.usage_all")
        if data is not None and data.startswith(b"cpu user system"):
            user = system = 0
            for line in data.splitlines()[1:]:
                _, u, s = line.split()
                user += int(u)
                system += int(s)
            user //= 1000
            system //= 1000
        else:
            ns = _read_int(cpuacct + b"/cpuacct.usage_user")
            user = None if ns is None else ns // 1000
            ns = _read_int(cpuacct + b"/cpuacct.usage_sys")
            system = None if ns is None else ns // 1000
    return CgroupUsage(memory_peak=peak, memory_limit=limit, cpu_user_usec=user,
                       cpu_system_usec=system, oom_kills=oom, pids_peak=None,
                       pids_limit_hits=hits)
