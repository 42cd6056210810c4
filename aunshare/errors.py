"""The error model: one class per variant of the Rust crate's ``Error`` enum.

Every error says what failed, on what, and why. Errors that carry an errno
are also :class:`OSError` (with ``errno``, ``strerror`` and ``filename``), so
``except OSError`` code keeps working.
"""

from __future__ import annotations

import errno as _errno
import os
import subprocess as _subprocess

from ._names import signal_name
from .namespaces import ALL_NAMESPACES, JOIN_ORDER, Namespace

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NamedTuple

    from .status import ExitStatus
else:
    from ._record import NamedTuple  # (see there)

__all__ = [
    "Error", "NixError", "UnknownError", "CreatePipe", "Fork", "Exec", "Chdir",
    "ParentDeathSignal", "PipeError", "WaitError", "StdioError", "SetUser",
    "ChangeRoot", "Mount", "MountTarget", "SetIdMap", "AuxCommandExited", "AuxCommandKilled",
    "SetPGid", "SetNs", "SetRlimit", "CapSet", "LandlockError", "NetworkError", "BeforeUnfreeze",
    "LineTooLong", "CgroupError",
    "CalledProcessError", "TimeoutExpired", "fork_causes", "SeccompError", "SyscallGone",
    "ReapTimeout",
]


class Error(Exception):
    """Base class of every error aunshare raises about a child it starts."""

    def raw_os_error(self) -> int | None:
        """The errno behind this error, or None when there is none."""
        return None


class _OSError(Error, OSError):
    """An :class:`Error` that carries an errno; also an :class:`OSError`.

    ``action`` names the step ("exec", "chdir", ...), ``filename`` what it
    acted on, ``detail`` adds likely causes or context.

    An instance is also the :class:`OSError` subclass that ``OSError(errno,
    ...)`` would give (``Exec(ENOENT, ...)`` is a :class:`FileNotFoundError`),
    through a subclass made once per (class, OSError subclass) pair that keeps
    the class's name, module and docstring.
    """

    action = "?"

    def __new__(cls, errno: int, filename: object = None, detail: str = "",
                *, action: str | None = None) -> _OSError:
        # With __new__ overridden, OSError.__new__ parses (errno, strerror,
        # filename) itself and OSError.__init__ does nothing, so the fields
        # are set here; __init__ adds ours.
        return super().__new__(_errno_class(cls, errno), errno, os.strerror(errno), filename)

    def __init__(self, errno: int, filename: object = None, detail: str = "",
                 *, action: str | None = None) -> None:
        if action is not None:
            self.action = action
        self.detail = detail

    def raw_os_error(self) -> int | None:
        """The errno behind this error."""
        return self.errno

    def __str__(self) -> str:
        what = self.action
        if self.filename is not None:
            name = self.filename
            if isinstance(name, bytes):
                name = os.fsdecode(name)
            what = f"{what} {name}"
        msg = f"{what}: {self.strerror} (os error {self.errno})"
        if self.detail:
            msg = f"{msg}; {self.detail}"
        return msg

    def __reduce__(self) -> tuple[Callable[..., _OSError], tuple[object, ...]]:
        # keep pickling (multiprocessing, pytest-xdist) sane
        # Name the public class: the per-errno subclass is not importable.
        return (_rebuild, (_public_class(type(self)), self.errno, self.filename,
                           self.detail, self.action))


def _rebuild(cls: type[_OSError], errno: int, filename: object, detail: str,
             action: str) -> _OSError:
    return cls(errno, filename, detail, action=action)


# (class, errno) -> the class to instantiate; (class, OSError subclass) -> the
# subclass deriving from both. Both stay small: a few dozen errnos at most.
_by_errno: dict[tuple[type[_OSError], int], type[_OSError]] = {}
_by_base: dict[tuple[type[_OSError], type[OSError]], type[_OSError]] = {}


def _public_class(cls: type[_OSError]) -> type[_OSError]:
    """The class an errno-specific subclass was made from (else ``cls``)."""
    public: type[_OSError] = cls.__dict__.get("_errno_of", cls)
    return public


def _errno_class(cls: type[_OSError], err: object) -> type[_OSError]:
    """``cls``, or its subclass that is also the OSError subclass CPython
    picks for ``err`` (FileNotFoundError for ENOENT, ...)."""
    cls = _public_class(cls)  # re-raising type(exc)(other_errno) starts afresh
    if not isinstance(err, int):
        return cls
    key = (cls, err)
    found = _by_errno.get(key)
    if found is not None:
        return found
    base = type(OSError(err, ""))  # CPython's own errno -> subclass mapping
    if base is OSError or issubclass(cls, base):
        found = cls
    else:
        found = _by_base.get((cls, base))
        if found is None:
            meta: type[type] = type(cls)
            made = meta(cls.__name__, (cls, base), {
                "__module__": cls.__module__, "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__, "_errno_of": cls,
            })
            assert issubclass(made, cls)  # by construction; narrows "type" for the checker
            found = _by_base.setdefault((cls, base), made)
    return _by_errno.setdefault(key, found)


class NixError(_OSError):
    """A system call in the parent failed outside any specific step."""

    action = "system call"


class UnknownError(Error):
    """The child failed in a way that could not be decoded (no errno)."""

    def __init__(self, message: str = "the child failed for an unknown reason") -> None:
        super().__init__(message)


class CreatePipe(_OSError):
    """A pipe (for stdio or the parent/child handshake) could not be created."""

    action = "create pipe"


class Fork(_OSError):
    """clone3 failed: no child was created. ``detail`` lists the likely causes."""

    action = "clone3"


class Exec(_OSError):
    """execve of the program failed (not found, not executable, bad format...)."""

    action = "exec"


class Chdir(_OSError):
    """The child could not change to the requested working directory."""

    action = "chdir"


class ParentDeathSignal(_OSError):
    """Setting the parent-death signal failed, or the parent was already gone."""

    action = "set parent death signal"


class PipeError(_OSError):
    """Reading the child's error report failed."""

    action = "read error pipe"


class WaitError(_OSError):
    """Waiting for the child failed, typically because someone else reaped it."""

    action = "wait"


class StdioError(_OSError):
    """Setting up one of the child's file descriptors failed."""

    action = "set up"


class SetUser(_OSError):
    """Changing uid, gid or supplementary groups in the child failed."""

    action = "set user"


class ChangeRoot(_OSError):
    """chroot or pivot_root in the child failed."""

    action = "change root"


class MountTarget(NamedTuple):
    """What a step of the filesystem view acts on, for :class:`Mount`."""

    operation: str
    """The builder call, e.g. ``bind_mount('/usr', '/usr', read_only=True)``."""
    syscall: str
    """The system call that failed (``mount``, ``mkdirat``, ...)."""
    source: bytes | None
    """The source as the child saw it (None when the step has none)."""
    destination: bytes
    """The destination as the child saw it (under the staging directories of
    :meth:`Command.new_root`: ``/oldroot`` is the host's root, ``/newroot``
    the sandbox's)."""
    position: int = -1
    """The operation's position among the filesystem view's operations."""


# Likely causes of a failed mount operation, by errno.
_MOUNT_CAUSES: dict[int, str] = {
    _errno.EPERM: "mounting needs CAP_SYS_ADMIN: root, or a new user namespace "
                  "(unshare(Namespace.USER) with map_root_user()); or the mount is locked "
                  "(a mount inherited from a more privileged namespace cannot be unmounted, "
                  "revealed or have its flags cleared)",
    _errno.EACCES: "a directory on the way is not searchable, or not writable where a "
                   "mount point must be created",
    _errno.ENOENT: "the source is missing, or the destination (or a directory above it) "
                   "is missing and could not be created",
    _errno.ENOTDIR: "a directory is mounted on a file, or a file on a directory, or a "
                    "path component is not a directory",
    _errno.EINVAL: "the destination is not a mount point (remount_read_only() needs one), "
                   "an option is invalid (a tmpfs size, overlay directories), or the "
                   "source is not in the child's mount namespace",
    _errno.EROFS: "a mount point cannot be created inside a read-only mount: create it "
                  "before the read-only operation, or mount something writable above it",
    _errno.EEXIST: "the destination exists already (a symlink's destination must not)",
    _errno.ENODEV: "the kernel does not support this file system type",
    _errno.EBUSY: "the destination is busy",
    _errno.ELOOP: "overlay directories may not overlap, or too many symbolic links",
}


class Mount(_OSError):
    """An operation of the child's filesystem view (:meth:`Command.new_root`,
    :meth:`Command.bind_mount`, :meth:`Command.tmpfs`, ...) failed.

    ``operation`` names the builder call, ``source`` and ``destination``
    the paths (``filename`` is the destination), ``syscall`` the system
    call; the message adds the likely causes for the errno.
    """

    action = "mount"

    def __new__(cls, errno: int, filename: object = None, detail: str = "",
                *, action: str | None = None) -> Mount:
        if isinstance(filename, MountTarget):
            filename = filename.destination
        made = super().__new__(cls, errno, filename, detail, action=action)
        assert isinstance(made, Mount)  # the errno subclass derives from cls
        return made

    def __init__(self, errno: int, filename: object = None, detail: str = "",
                 *, action: str | None = None) -> None:
        super().__init__(errno, filename, detail, action=action)
        target = filename if isinstance(filename, MountTarget) else None
        self.target = target
        self.operation = target.operation if target else self.action
        self.syscall = target.syscall if target else "mount"
        self.source = target.source if target else None
        self.destination = target.destination if target else filename

    def __str__(self) -> str:
        if self.target is None:  # made by hand, not from a step
            return super().__str__()
        where = []
        if self.source is not None:
            where.append(f"source {os.fsdecode(self.source)!r}")
        if isinstance(self.destination, bytes):
            where.append(f"destination {os.fsdecode(self.destination)!r}")
        msg = f"{self.operation}: {self.action}"
        if where:
            msg += f" ({', '.join(where)})"
        msg += f": {self.strerror} (os error {self.errno})"
        if self.detail:
            msg += f"; {self.detail}"
        cause = _MOUNT_CAUSES.get(self.errno or 0)
        if cause:
            msg += f"; likely causes: {cause}"
        return msg

    def __reduce__(self) -> tuple[Callable[..., _OSError], tuple[object, ...]]:
        return (_rebuild, (_public_class(type(self)), self.errno, self.target or self.filename,
                           self.detail, self.action))


class SetIdMap(_OSError):
    """Writing a uid/gid map (or running newuidmap/newgidmap) failed."""

    action = "set id map"


class SetPGid(_OSError):
    """Making the child a process group leader failed."""

    action = "setpgid"


class SetNs(_OSError):
    """Joining (setns) or creating (unshare) a namespace failed."""

    action = "setns"


class CgroupError(_OSError):
    """Creating, killing or removing a child's own cgroup failed
    (:meth:`Command.new_cgroup`); ``filename`` is the cgroup directory."""

    action = "cgroup"


class SetRlimit(_OSError):
    """Setting a resource limit (:meth:`Command.rlimit`) in the child failed."""

    action = "setrlimit"


class CapSet(_OSError):
    """Setting the child's capabilities failed."""

    action = "set capabilities"


class SeccompError(_OSError):
    """Installing a seccomp filter in the child failed (or, for the parent,
    taking a supervised child's listener)."""

    action = "install seccomp filter"


class SyscallGone(_OSError):
    """A supervised syscall can no longer be answered or read: its process
    died, or a signal interrupted the call (``ENOENT`` from the kernel)."""

    action = "answer syscall"


class LandlockError(_OSError):
    """Landlock rules (:meth:`Command.landlock`) could not be set up or
    enforced: a path missing (ENOENT), a right, port rule or scope this
    kernel's Landlock ABI lacks (EOPNOTSUPP), Landlock unavailable (ENOSYS,
    EOPNOTSUPP), or ``landlock_restrict_self`` refused in the child."""

    action = "landlock"


class NetworkError(_OSError):
    """Networking for a child failed: a socket in its network namespace, a
    host port to forward (``filename`` is the address), or starting pasta
    for :meth:`Command.user_network`."""

    action = "network"


class AuxCommandExited(Error):
    """An auxiliary command (newuidmap, newgidmap, pasta) exited with a non-zero code."""

    def __init__(self, code: int, command: str = "auxiliary command", stderr: bytes = b"") -> None:
        self.code = code
        self.command = command
        self.stderr = stderr
        msg = f"{command} exited with code {code}"
        text = stderr.decode(errors="replace").strip()
        if text:
            msg = f"{msg}: {text}"
        super().__init__(msg)


class AuxCommandKilled(Error):
    """An auxiliary command (newuidmap, newgidmap, pasta) was killed by a signal."""

    def __init__(self, signal: int, command: str = "auxiliary command",
                 stderr: bytes = b"") -> None:
        self.signal = signal
        self.command = command
        self.stderr = stderr
        msg = f"{command} was killed by {signal_name(signal)}"
        text = stderr.decode(errors="replace").strip()
        if text:
            msg = f"{msg}: {text}"
        super().__init__(msg)


class BeforeUnfreeze(Error):
    """The before-unfreeze callback raised; the original is ``__cause__``."""


class LineTooLong(Error, ValueError):
    """A line read with ``lines()`` / ``text_lines()`` is longer than ``max_line``.

    ``limit`` is the ``max_line`` in force, ``length`` how much of the line
    had been read (without a line ending) when the limit was crossed, and
    ``unit`` is "bytes" or "characters". The stream has consumed that part
    of the line.
    """

    def __init__(self, limit: int, length: int, unit: str = "bytes",
                 method: str = "lines") -> None:
        self.limit = limit
        self.length = length
        self.unit = unit
        self.method = method
        super().__init__(
            f"a line of at least {length} {unit} is longer than max_line={limit} {unit}; "
            f"raise the limit with {method}(max_line=...) to accept longer lines")

    def __reduce__(self) -> tuple[type[LineTooLong], tuple[int, int, str, str]]:
        # the constructor's arguments are not the message
        return (type(self), (self.limit, self.length, self.unit, self.method))


class ReapTimeout(Error):
    """The child did not die within ``KillPolicy.reap_timeout`` seconds of
    SIGKILL: it is stuck in the kernel (uninterruptible sleep, state ``D``,
    or frozen), where SIGKILL takes effect only once it is let go.

    ``pid`` is the child, ``state`` its state letter from ``/proc/PID/stat``
    (``"D"`` uninterruptible sleep, ...), ``wchan`` the kernel function it
    waits in (``/proc/PID/wchan``; "" when unknown), ``timeout`` the
    seconds waited. Nothing was lost: the child stays unreaped (its pid
    cannot be reused) and is reaped once it dies, by ``Child.wait()`` or
    by the next spawn.
    """

    def __init__(self, pid: int, state: str, wchan: str, timeout: float) -> None:
        self.pid = pid
        self.state = state
        self.wchan = wchan
        self.timeout = timeout
        where = f" in kernel function {wchan}" if wchan else ""
        super().__init__(
            f"child {pid} did not die within {timeout:g} s of SIGKILL: it is in state "
            f"{state or '?'} ({_STATES.get(state, 'unknown state')}){where}; it stays "
            "unreaped and is reaped once it dies (Child.wait(), or the next spawn); "
            "look at what it waits for (a hung mount or device, a frozen cgroup)")

    def __reduce__(self) -> tuple[type[ReapTimeout], tuple[int, str, str, float]]:
        # the constructor's arguments are not the message
        return (type(self), (self.pid, self.state, self.wchan, self.timeout))


_STATES = {"R": "running", "S": "sleeping", "D": "uninterruptible sleep",
           "T": "stopped", "t": "traced", "Z": "zombie", "X": "dead", "I": "idle",
           "P": "parked", "W": "waking"}


class CalledProcessError(Error, _subprocess.CalledProcessError):
    """:func:`aunshare.run` with ``check=True``: the child did not exit with 0.

    Also a :class:`subprocess.CalledProcessError` (``returncode``, ``cmd``,
    ``output``/``stdout``, ``stderr``), so code written for subprocess
    catches it; ``status`` is the full :class:`~aunshare.ExitStatus`.
    """

    def __init__(self, returncode: int, cmd: Any, output: bytes | None = None,
                 stderr: bytes | None = None, *, status: ExitStatus | None = None) -> None:
        _subprocess.CalledProcessError.__init__(self, returncode, cmd, output, stderr)
        self.status = status

    def __str__(self) -> str:
        text = _subprocess.CalledProcessError.__str__(self)
        if self.status is not None and self.status.oom_killed:
            # Why it died, in the same words as str(status).
            text = f"{text.rstrip('.')}: {self.status}"
        return text


class TimeoutExpired(Error, _subprocess.TimeoutExpired):
    """:func:`aunshare.run` (or a job of :func:`aunshare.run_many`) ran out of
    time; the child was stopped by its kill policy and reaped first.

    Also a :class:`subprocess.TimeoutExpired` (``cmd``, ``timeout``,
    ``output``/``stdout``, ``stderr``: what was captured before the
    timeout); ``status`` is how the stopped child ended.
    """

    stdout_truncated: bool = False
    """True when the captured stdout was cut to ``max_output`` bytes."""
    stderr_truncated: bool = False
    """The same for stderr."""
    cut_short: bool = False
    """True when ``wait_delay`` ran out after the kill before the pipes ended."""

    def __init__(self, cmd: Any, timeout: float, output: bytes | None = None,
                 stderr: bytes | None = None, *, status: ExitStatus | None = None) -> None:
        _subprocess.TimeoutExpired.__init__(self, cmd, timeout, output, stderr)
        self.status = status


# Likely causes of a clone3 failure, after clone(2)'s ERRORS section, keyed by
# errno. Each entry: (what the request must include for the cause to apply,
# text); see _applies.
_ALWAYS, _NAMESPACE, _NS_USER, _NS_PID, _NS_PRIVILEGED, _CGROUP = range(6)
_FORK_CAUSES: dict[int, list[tuple[int, str]]] = {
    _errno.EAGAIN: [
        (_ALWAYS, "too many processes: RLIMIT_NPROC of this user (ulimit -u), "
                  "/proc/sys/kernel/threads-max or /proc/sys/kernel/pid_max is reached"),
        (_CGROUP, "the pids.max limit of the target cgroup (or an ancestor) is reached"),
    ],
    _errno.EMFILE: [
        (_ALWAYS, "too many open files: the process's RLIMIT_NOFILE (ulimit -n) is "
                  "reached; clone3 must create a pidfd for the child, so one descriptor "
                  "must be free beyond those the spawn itself opens"),
    ],
    _errno.ENFILE: [
        (_ALWAYS, "the system-wide limit on open files (/proc/sys/fs/file-max) is "
                  "reached; clone3 must create a pidfd for the child"),
    ],
    _errno.ENOMEM: [
        (_ALWAYS, "not enough memory for a new task (see RLIMIT_AS, overcommit settings "
                  "and the memory cgroup limits)"),
    ],
    _errno.EPERM: [
        (_CGROUP, "moving a process into the target cgroup is not allowed: the caller "
                  "needs write access to cgroup.procs of the common ancestor of its own "
                  "cgroup and the target (a delegated subtree, or root)"),
        (_NS_PRIVILEGED, "creating a namespace other than a user namespace needs "
                         "CAP_SYS_ADMIN; ask for a user namespace too "
                         "(unshare(Namespace.USER) with map_root_user())"),
        (_NS_USER, "creating a user namespace is refused: the caller is in a chroot, or "
                   "its uid/gid has no mapping in the current user namespace"),
        (_ALWAYS, "the caller lacks a needed capability for the requested flags, or a "
                  "seccomp filter refuses clone3"),
    ],
    _errno.ENOSPC: [
        (_NAMESPACE, "a namespace count limit is reached: see {limits} (each counts per "
                     "user and per user namespace, and a limit lowered in an ancestor user "
                     "namespace applies too), or the nesting depth limit of 32 user or pid "
                     "namespaces"),
        (_NS_PID, "the pid namespace's init has exited, or its pid limit is reached"),
    ],
    _errno.EUSERS: [
        (_NS_USER, "(kernels before 4.9) the user namespace nesting limit is reached, "
                   "see /proc/sys/user/max_user_namespaces"),
    ],
    _errno.EINVAL: [
        (_NAMESPACE, "an impossible combination of flags, or the kernel was built without "
                     "one of the requested namespaces"),
        (_CGROUP, "the target cgroup is not a cgroup v2 directory"),
        (_ALWAYS, "the kernel rejected the clone3 arguments (kernel older than 5.5?)"),
    ],
    _errno.ENOSYS: [
        (_ALWAYS, "the kernel or an emulator (qemu-user, gVisor, a seccomp filter) does "
                  "not provide clone3"),
    ],
    _errno.EACCES: [
        (_CGROUP, "moving a process into the target cgroup is not allowed: the caller "
                  "needs write access to cgroup.procs of the common ancestor of its own "
                  "cgroup and the target (a delegated subtree, or root)"),
    ],
    _errno.ENODEV: [
        (_CGROUP, "the target cgroup was removed while the child was being created"),
    ],
    _errno.EBUSY: [
        (_CGROUP, "the target cgroup has controllers enabled in cgroup.subtree_control "
                  "(no internal processes rule)"),
    ],
    _errno.EOPNOTSUPP: [
        (_CGROUP, "the target cgroup is in an invalid state (threaded or domain invalid)"),
    ],
}


def fork_causes(err: int, clone_flags: int = 0, cgroup: bool = False) -> str:
    """Likely causes of a clone3 failure ``err`` for a clone asking for the
    namespace flags in ``clone_flags`` and, with ``cgroup``, to start in a
    cgroup (CLONE_INTO_CGROUP). Returns "" when nothing is known."""
    new = Namespace(clone_flags & ALL_NAMESPACES)
    have = {_ALWAYS}
    if new:
        have.add(_NAMESPACE)
    if new & Namespace.USER:
        have.add(_NS_USER)
    elif new:
        have.add(_NS_PRIVILEGED)
    if new & Namespace.PID:
        have.add(_NS_PID)
    if cgroup:
        have.add(_CGROUP)
    limits = ", ".join(f"/proc/sys/user/max_{ns.proc_name}_namespaces"
                       for ns in JOIN_ORDER if new & ns)
    causes = [text.replace("{limits}", limits) for cond, text in _FORK_CAUSES.get(err, [])
              if cond in have]
    if not causes:
        return ""
    return "likely causes: " + "; ".join(causes)
