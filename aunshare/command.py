"""The :class:`Command` builder and the :class:`Stdio` / :class:`Fd` specs.

A Command is pure data: building one opens nothing and starts nothing
(except :meth:`Stdio.dup_file` / :meth:`Fd.dup_file`, which duplicate the
file's descriptor at once so the Command owns a copy). Starting a child is
``await command.spawn()`` (see :mod:`aunshare.child`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal as _signal
import sys
from collections.abc import Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any, Union

from ._linux import NS_GET_NSTYPE
from .errors import SetNs
from .namespaces import (
    Capability, GidMap, Namespace, UidMap, cap_name as _cap_name, check_maps, namespace_names,
    to_namespaces,
)
from .policy import KillPolicy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .child import Child, Output
    from .status import ExitStatus

__all__ = ["Command", "Stdio", "Fd", "StrOrBytesPath"]

StrOrBytesPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_MAX_FD = 2**31 - 1
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel


def _to_bytes(value: object, what: str) -> bytes:
    """str/bytes/PathLike to bytes, refusing NUL bytes and other types."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = os.fsencode(value)
    elif isinstance(value, os.PathLike):
        data = os.fsencode(value)
    else:
        raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")
    if b"\0" in data:
        raise ValueError(f"{what} contains a NUL byte: {value!r}")
    return data


def _env_key(key: object) -> bytes:
    k = _to_bytes(key, "env key")
    if not k or b"=" in k:
        raise ValueError(f"env key must be non-empty and contain no '=': {key!r}")
    return k


def _quote(data: bytes) -> str:
    """Double-quoted, with quotes, backslashes and non-printables escaped."""
    text = data.decode("utf-8", errors="surrogateescape")
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode())
    return '"' + "".join(out) + '"'


def _check_id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _MAX_ID:
        raise ValueError(f"{what} must be between 0 and {_MAX_ID}, got {value}")
    return value


_RLIM_INFINITY = 2**64 - 1
_SINGLE_NS = frozenset(int(ns) for ns in Namespace)


def _check_limit(value: object, what: str) -> int:
    if value is None or value == -1:  # resource.RLIM_INFINITY is -1 in Python
        return _RLIM_INFINITY
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int or None, not {type(value).__name__}")
    if not 0 <= value <= _RLIM_INFINITY:
        raise ValueError(f"{what} must be between 0 and {_RLIM_INFINITY}, got {value}")
    return value


def _limit_str(value: int) -> str:
    return "unlimited" if value == _RLIM_INFINITY else str(value)


def _check_signal(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be a signal number, not {type(value).__name__}")
    if not 1 <= value <= 64:
        raise ValueError(f"{what} must be a signal number from 1 to 64, got {value}")
    return int(value)


class _OwnedFd:
    """A descriptor the Command owns (a dup of a user's file); closed with it."""

    __slots__ = ("fd", "__weakref__")

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def _dup_fileobj(file: Any, what: str) -> _OwnedFd:
    if isinstance(file, int) and not isinstance(file, bool):
        fd = file
    elif hasattr(file, "fileno"):
        fd = file.fileno()
    else:
        raise TypeError(f"{what} needs an object with fileno() or an int fd, "
                        f"not {type(file).__name__}")
    try:
        return _OwnedFd(os.dup(fd))  # os.dup makes the copy non-inheritable
    except OSError as exc:
        raise ValueError(f"{what}: cannot duplicate fd {fd}: {exc.strerror}") from None


class _Spec:
    """What one descriptor of the child is to be: a kind and its data."""

    __slots__ = ("kind", "fd", "owned", "arg")

    def __init__(self, kind: str, fd: int | None = None, owned: _OwnedFd | None = None,
                 arg: Any = None) -> None:
        self.kind = kind
        self.fd = fd
        self.owned = owned
        self.arg = arg


class Fd(_Spec):
    """What the child gets on one file descriptor number.

    Use the constructors: :meth:`piped_read`, :meth:`piped_write`,
    :meth:`inherit`, :meth:`read_null`, :meth:`write_null`,
    :meth:`from_fd`, :meth:`dup_file`.
    """

    # kinds: "pipe_r" (child reads), "pipe_w" (child writes), "inherit",
    # "null_r", "null_w", "fd" (a borrowed parent fd), "file" (an owned dup);
    # from Stdio only: "path" (arg: (path, "r"|"w"|"a")), "pty" (arg: (rows,
    # cols), each None for the default), "merge" (fd 2 gets fd 1's source)
    __slots__ = ()

    @classmethod
    def piped_read(cls) -> Fd:
        """A pipe the child reads from; the parent gets the writing end."""
        return cls("pipe_r")

    @classmethod
    def piped_write(cls) -> Fd:
        """A pipe the child writes to; the parent gets the reading end."""
        return cls("pipe_w")

    @classmethod
    def inherit(cls) -> Fd:
        """The child gets the parent's descriptor of the same number."""
        return cls("inherit")

    @classmethod
    def read_null(cls) -> Fd:
        """/dev/null opened for reading."""
        return cls("null_r")

    @classmethod
    def write_null(cls) -> Fd:
        """/dev/null opened for writing."""
        return cls("null_w")

    @classmethod
    def from_fd(cls, fd: int) -> Fd:
        """A copy of the parent's descriptor ``fd`` (still owned by the caller,
        who must keep it open until the child is spawned)."""
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"fd must be an int, not {type(fd).__name__}")
        if not 0 <= fd <= _MAX_FD:
            raise ValueError(f"fd must be between 0 and {_MAX_FD}, got {fd}")
        return cls("fd", fd)

    @classmethod
    def dup_file(cls, file: IO[Any] | int) -> Fd:
        """A copy of ``file``'s descriptor, duplicated now and owned by the spec."""
        return cls("file", owned=_dup_fileobj(file, "dup_file"))

    def _source_fd(self) -> int | None:
        return self.owned.fd if self.owned is not None else self.fd

    def __repr__(self) -> str:
        if self.kind in ("fd", "file"):
            return f"Fd.{'from_fd' if self.kind == 'fd' else 'dup_file'}({self._source_fd()})"
        if self.kind in ("path", "pty", "merge"):
            return _stdio_repr(self.kind, self.arg)
        names = {"pipe_r": "piped_read", "pipe_w": "piped_write", "inherit": "inherit",
                 "null_r": "read_null", "null_w": "write_null"}
        return f"Fd.{names[self.kind]}()"


def _stdio_repr(kind: str, arg: Any) -> str:
    if kind == "path":
        path, mode = arg
        extra = ", append=True" if mode == "a" else ""
        return f"Stdio.to_file({os.fsdecode(path)!r}{extra})"
    if kind == "pty":
        rows, cols = arg
        size = ", ".join(f"{k}={v}" for k, v in (("rows", rows), ("cols", cols)) if v is not None)
        return f"Stdio.pty({size})"
    return "Stdio.merge_into_stdout()"


def _check_size(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Stdio.pty() {what} must be an int or None, not {type(value).__name__}")
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"Stdio.pty() {what} must be between 0 and 65535, got {value}")
    return value


class Stdio(_Spec):
    """What the child gets as stdin, stdout or stderr."""

    # kinds: "piped", "null", "inherit", "fd", "file", "path", "pty", "merge"
    __slots__ = ()

    @classmethod
    def piped(cls) -> Stdio:
        """A pipe to the parent; the Child gets an async stream for it."""
        return cls("piped")

    @classmethod
    def null(cls) -> Stdio:
        """/dev/null."""
        return cls("null")

    @classmethod
    def inherit(cls) -> Stdio:
        """The parent's own descriptor (the default)."""
        return cls("inherit")

    @classmethod
    def from_fd(cls, fd: int) -> Stdio:
        """A copy of the parent's descriptor ``fd`` (the caller keeps owning it)."""
        spec = Fd.from_fd(fd)
        return cls("fd", spec.fd)

    @classmethod
    def dup_file(cls, file: IO[Any] | int) -> Stdio:
        """A copy of ``file``'s descriptor, duplicated now."""
        return cls("file", owned=_dup_fileobj(file, "Stdio.dup_file"))

    @classmethod
    def to_file(cls, path: StrOrBytesPath, append: bool = False) -> Stdio:
        """The file at ``path``, opened by the parent at each spawn.

        For stdout and stderr it is opened for writing, created (mode 0666
        less the umask) when missing, and truncated, or appended to with
        ``append=True``; for stdin it is opened read-only. A relative path
        is relative to the parent's working directory (not
        :meth:`Command.current_dir`). A failure to open raises
        :class:`~aunshare.StdioError` naming the path from ``spawn()``.
        """
        data = _to_bytes(path, "Stdio.to_file path")
        if not data:
            raise ValueError("Stdio.to_file path must not be empty")
        return cls("path", arg=(data, "a" if append else "w"))

    @classmethod
    def merge_into_stdout(cls) -> Stdio:
        """For :meth:`Command.stderr` only: the child's stderr is the same
        descriptor as its stdout (the shell's ``2>&1``), so both streams
        arrive interleaved in the order written, wherever stdout goes (a
        pipe read from ``child.stdout``, a file, a pty)."""
        return cls("merge")

    @classmethod
    def pty(cls, rows: int | None = None, cols: int | None = None) -> Stdio:
        """A pseudo-terminal: the child gets its slave side as its
        controlling terminal, the parent a stream on the master.

        Every standard stream given ``Stdio.pty()`` gets the same terminal.
        The parent writes the child's input to ``child.stdin`` and reads
        its output from ``child.stdout`` (or ``child.stderr`` when only
        stderr is a pty). ``rows`` and ``cols`` set the window size
        (default 24 x 80); :meth:`Child.set_pty_size` changes it later.

        The child becomes a session leader (setsid), so this cannot be
        combined with :meth:`Command.make_group_leader`. The terminal is in
        its default (cooked) mode: it echoes input, and turns "\\n" in the
        output into "\\r\\n".
        """
        return cls("pty", arg=(_check_size(rows, "rows"), _check_size(cols, "cols")))

    def _to_fd(self, target: int) -> Fd:
        kind = self.kind
        if kind == "piped":
            return Fd("pipe_r" if target == 0 else "pipe_w")
        if kind == "null":
            return Fd("null_r" if target == 0 else "null_w")
        if kind == "merge" and target != 2:
            raise ValueError("Stdio.merge_into_stdout() is for stderr() only (it makes "
                             f"fd 2 a copy of fd 1); {_STDIO[target]}() cannot take it")
        if kind == "path":
            path, mode = self.arg
            if target == 0:
                if mode == "a":
                    raise ValueError("stdin(Stdio.to_file(..., append=True)): append is "
                                     "for stdout() and stderr(); stdin reads the file")
                mode = "r"
            return Fd(kind, arg=(path, mode))
        return Fd(kind, self.fd, self.owned, self.arg)

    def __repr__(self) -> str:
        if self.kind == "fd":
            return f"Stdio.from_fd({self.fd})"
        if self.kind == "file":
            return f"Stdio.dup_file({self.owned.fd if self.owned else -1})"
        if self.kind in ("path", "pty", "merge"):
            return _stdio_repr(self.kind, self.arg)
        return f"Stdio.{self.kind}()"


_STDIO = {0: "stdin", 1: "stdout", 2: "stderr"}


class Command:
    """A builder for a child process: program, arguments, environment, fds,
    identity and what happens to the child before exec.

    Every builder method returns the same Command, so calls chain::

        child = await Command("ls").arg("-l").stdout(Stdio.piped()).spawn()

    A Command can be spawned any number of times. Arguments are validated at
    the call that receives them (``ValueError``/``TypeError`` naming it).
    """

    def __init__(self, program: StrOrBytesPath) -> None:
        """Start building a command that runs ``program``.

        A program without a slash is looked up in ``PATH`` (the child's PATH
        when :meth:`env` sets one, else the parent's) when it is spawned.
        """
        self._program = _to_bytes(program, "program")
        if not self._program:
            raise ValueError("program must not be empty")
        self._arg0: bytes | None = None
        self._args: list[bytes] = []
        self._env_clear = False
        self._env: dict[bytes, bytes | None] = {}
        self._cwd: bytes | None = None
        self._fds: dict[int, Fd] = {}
        self._close: list[tuple[int, int]] = [(3, _MAX_FD)]
        self._uid: int | None = None
        self._gid: int | None = None
        self._groups: list[int] | None = None
        self._group_leader = False
        self._death_signal: int | None = int(_signal.SIGKILL)
        self._keep_sigmask = False
        self._kill_policy: KillPolicy | None = None
        self._cgroup_parent: bytes | None = None
        self._cgroup_path: bytes | None = None
        # isolation (see plan.py for the order the child applies it in)
        self._unshare = Namespace(0)
        self._setns: dict[Namespace, _OwnedFd] = {}
        self._uid_maps: tuple[UidMap, ...] | None = None
        self._gid_maps: tuple[GidMap, ...] | None = None
        self._allow_setgroups: bool | None = None
        self._id_map_commands: tuple[bytes, bytes] | None = None
        self._self_map: str | None = None  # "root" or "current"
        self._before_unfreeze: Callable[[int], Awaitable[object]] | None = None
        self._chroot: bytes | None = None
        self._pivot: tuple[bytes, bytes, bool] | None = None
        self._hostname: bytes | None = None
        self._mount_proc = False
        self._keep_caps: frozenset[int] | None = None
        self._no_new_privs = False
        self._rlimits: dict[int, tuple[int, int]] = {}

    # -- program and arguments -------------------------------------------
    def arg(self, arg: StrOrBytesPath) -> Command:
        """Append one argument."""
        self._args.append(_to_bytes(arg, "arg"))
        return self

    def args(self, args: Iterable[StrOrBytesPath]) -> Command:
        """Append several arguments."""
        if isinstance(args, (str, bytes)):
            raise TypeError("args() takes an iterable of arguments, not a single "
                            "str/bytes; use arg() for one argument")
        new = [_to_bytes(a, "args item") for a in args]
        self._args.extend(new)
        return self

    def arg0(self, arg0: StrOrBytesPath) -> Command:
        """Set argv[0] as the child sees it (default: the program as given)."""
        self._arg0 = _to_bytes(arg0, "arg0")
        return self

    # -- environment -------------------------------------------------------
    def env(self, key: StrOrBytesPath, value: StrOrBytesPath) -> Command:
        """Set one environment variable for the child."""
        k = _env_key(key)
        self._env[k] = _to_bytes(value, "env value")
        return self

    def envs(self, mapping: Mapping[Any, Any]) -> Command:
        """Set several environment variables from a mapping."""
        checked = [(_env_key(k), _to_bytes(v, "env value")) for k, v in mapping.items()]
        self._env.update(checked)  # all or nothing: nothing is set if one is bad
        return self

    def env_remove(self, key: StrOrBytesPath) -> Command:
        """Remove one variable from the child's environment."""
        self._env[_env_key(key)] = None
        return self

    def env_clear(self) -> Command:
        """Start the child's environment empty (then add with :meth:`env`)."""
        self._env_clear = True
        self._env.clear()
        return self

    # -- working directory -------------------------------------------------
    def current_dir(self, path: StrOrBytesPath) -> Command:
        """Change to ``path`` in the child before exec (Chdir on failure)."""
        cwd = _to_bytes(path, "current_dir")
        if not cwd:
            raise ValueError("current_dir must not be empty")
        self._cwd = cwd
        return self

    # -- file descriptors -----------------------------------------------------
    def _set_stdio(self, target: int, stdio: Stdio, name: str) -> Command:
        if not isinstance(stdio, Stdio):
            raise TypeError(f"{name}() takes a Stdio (e.g. Stdio.piped()), "
                            f"not {type(stdio).__name__}")
        fd = stdio._to_fd(target)
        if fd.kind == "pty":
            if self._group_leader:
                raise ValueError(f"{name}(Stdio.pty()) conflicts with make_group_leader(): "
                                 "a pty makes the child a session leader (setsid), which "
                                 "already leads its own process group and cannot be moved "
                                 "to another; drop make_group_leader()")
            for other in (0, 1, 2):
                spec = self._fds.get(other)
                if other == target or spec is None or spec.kind != "pty":
                    continue
                for i, what in enumerate(("rows", "cols")):
                    mine, theirs = fd.arg[i], spec.arg[i]
                    if mine is not None and theirs is not None and mine != theirs:
                        raise ValueError(
                            f"{name}(Stdio.pty({what}={mine})) conflicts with "
                            f"{_STDIO[other]}(Stdio.pty({what}={theirs})): the standard "
                            "streams share one terminal, which has one window size")
        self._fds[target] = fd
        return self

    def _pty_target(self) -> int | None:
        """The first standard stream that is a pty, or None."""
        for target in (0, 1, 2):
            spec = self._fds.get(target)
            if spec is not None and spec.kind == "pty":
                return target
        return None

    def stdin(self, stdio: Stdio) -> Command:
        """What the child gets as fd 0."""
        return self._set_stdio(0, stdio, "stdin")

    def stdout(self, stdio: Stdio) -> Command:
        """What the child gets as fd 1."""
        return self._set_stdio(1, stdio, "stdout")

    def stderr(self, stdio: Stdio) -> Command:
        """What the child gets as fd 2."""
        return self._set_stdio(2, stdio, "stderr")

    def file_descriptor(self, target_fd: int, fd: Fd) -> Command:
        """Give the child ``fd`` as descriptor number ``target_fd`` (3 or more).

        Sources and targets may overlap freely (the shuffle is done safely).
        Mapping the same target twice is an error; :meth:`reset_fds` starts over.
        """
        if isinstance(target_fd, bool) or not isinstance(target_fd, int):
            raise TypeError(f"target_fd must be an int, not {type(target_fd).__name__}")
        if target_fd in (0, 1, 2):
            raise ValueError(f"target_fd {target_fd} is stdio: use stdin()/stdout()/"
                             "stderr() for descriptors 0-2")
        if not 3 <= target_fd < _MAX_FD:
            raise ValueError(f"target_fd must be between 3 and {_MAX_FD - 1}, got {target_fd}")
        if not isinstance(fd, Fd):
            raise TypeError(f"file_descriptor() takes an Fd (e.g. Fd.piped_write()), "
                            f"not {type(fd).__name__}")
        if target_fd in self._fds:
            raise ValueError(f"target_fd {target_fd} is already mapped to "
                             f"{self._fds[target_fd]!r}; call reset_fds() to start over")
        self._fds[target_fd] = fd
        return self

    def close_fds(self, fds: range) -> Command:
        """Also close the descriptors in ``fds`` (a ``range`` with step 1) at exec.

        By default every descriptor from 3 up that is not mapped with
        :meth:`file_descriptor` is closed at exec; after :meth:`reset_fds`
        nothing is, and this adds ranges back. Descriptors 0-2 cannot be
        closed (use ``Stdio.null()``).
        """
        if not isinstance(fds, range) or fds.step != 1:
            raise TypeError("close_fds() takes a range with step 1, e.g. range(3, 100)")
        if len(fds) == 0:
            return self
        if fds.start < 3:
            raise ValueError(f"close_fds range {fds} includes stdio (0-2): use Stdio.null()")
        if fds.start > _MAX_FD:
            raise ValueError(f"close_fds range {fds} starts above the largest fd {_MAX_FD}")
        self._close.append((fds.start, min(fds.stop - 1, _MAX_FD)))
        return self

    def reset_fds(self) -> Command:
        """Back to the initial fd state with nothing closed: stdio inherited,
        no mappings, and every inheritable parent descriptor left open."""
        self._fds.clear()
        self._close = []
        return self

    # -- identity -----------------------------------------------------------------
    def uid(self, uid: int) -> Command:
        """Run the child as ``uid`` (setresuid, after groups and gid)."""
        self._uid = _check_id(uid, "uid")
        return self

    def gid(self, gid: int) -> Command:
        """Run the child with group ``gid`` (setresgid)."""
        self._gid = _check_id(gid, "gid")
        return self

    def groups(self, groups: Iterable[int]) -> Command:
        """Set the child's supplementary groups (setgroups).

        When unset and the parent is root, a child given :meth:`uid` or
        :meth:`gid` gets an empty list, so it keeps none of root's groups.
        """
        if isinstance(groups, (str, bytes)):
            raise TypeError("groups() takes an iterable of gids")
        self._groups = [_check_id(g, "groups item") for g in groups]
        return self

    def make_group_leader(self, make: bool = True) -> Command:
        """Put the child in a new process group of its own (setpgid(0, 0)).

        A kill policy aimed at :attr:`KillTarget.AUTO` then signals the
        whole group. Refused (ValueError) together with :meth:`Stdio.pty`,
        which makes the child a session leader: that leads its own group
        already.
        """
        if make:
            pty = self._pty_target()
            if pty is not None:
                raise ValueError(f"make_group_leader() conflicts with {_STDIO[pty]}"
                                 "(Stdio.pty()): a pty makes the child a session leader "
                                 "(setsid), which already leads its own process group "
                                 "and cannot be moved to another")
        self._group_leader = bool(make)
        return self

    # -- supervision ------------------------------------------------------------------
    def kill_policy(self, policy: KillPolicy) -> Command:
        """How the child is stopped when its supervision ends early (an error
        or a cancellation in ``async with child``, a timeout in
        :func:`aunshare.run`, :meth:`Child.shutdown`). Default:
        ``KillPolicy()`` (SIGTERM, 5 s grace, SIGKILL, target AUTO).

        A :attr:`KillTarget.GROUP` target makes the child a group leader; a
        :attr:`KillTarget.CGROUP` target needs :meth:`new_cgroup`.
        """
        if not isinstance(policy, KillPolicy):
            raise TypeError(f"kill_policy() takes a KillPolicy, not {type(policy).__name__}")
        self._kill_policy = policy
        return self

    def new_cgroup(self, parent: StrOrBytesPath | None) -> Command:
        """Start the child in a cgroup v2 of its own, created for it under the
        existing cgroup directory ``parent`` (an absolute path), with
        ``CLONE_INTO_CGROUP``; None turns this off.

        Every process the child starts stays in that cgroup, so the kill
        policy (target AUTO or CGROUP) can stop the whole tree with
        ``cgroup.kill``. When the child is done with (``async with`` exits,
        :meth:`Child.shutdown`, :func:`aunshare.run` returns), whatever is
        left in its cgroup is killed and the cgroup removed; a plain
        :meth:`Child.wait` removes it when the child left nothing behind.
        The parent must be allowed to create directories in ``parent`` and
        to move processes into them (root, or a delegated subtree).
        """
        if parent is None:
            self._cgroup_parent = None
            return self
        path = _to_bytes(parent, "new_cgroup parent")
        if not path.startswith(b"/"):
            raise ValueError(f"new_cgroup parent must be an absolute path, got {parent!r}")
        self._cgroup_parent = path.rstrip(b"/") or b"/"
        return self

    # -- signals ----------------------------------------------------------------------
    def set_parent_death_signal(self, sig: int) -> Command:
        """Signal sent to the child when the thread that spawned it exits
        (PR_SET_PDEATHSIG). The default is SIGKILL, as in the Rust crate.

        The kernel ties this to the spawning *thread*: spawn from a
        long-lived thread (the event loop's), not a short-lived worker.
        """
        self._death_signal = _check_signal(sig, "parent death signal")
        return self

    def allow_daemonize(self) -> Command:
        """Let the child outlive the parent (no parent-death signal)."""
        self._death_signal = None
        return self

    def keep_sigmask(self) -> Command:
        """Keep the parent's signal mask and ignored signals in the child.

        By default the child starts with an empty mask and every signal at
        its default action.
        """
        self._keep_sigmask = True
        return self

    # -- namespaces and isolation ------------------------------------------------------
    def unshare(self, namespaces: Namespace | Iterable[Namespace]) -> Command:
        """Create the child in new namespaces: a :class:`Namespace` combination
        (``Namespace.USER | Namespace.NET``) or an iterable of members. Adds
        to the namespaces asked for before.

        clone3 creates them with the child, so the child is, for example,
        pid 1 of a new PID namespace. A new USER namespace owns the others,
        which lets an unprivileged caller create them (give it an id map:
        :meth:`map_root_user`, :meth:`set_id_maps`). TIME needs Linux 5.6.
        """
        self._unshare |= to_namespaces(namespaces, "unshare()")
        return self

    def set_namespace(self, file: IO[Any] | int | StrOrBytesPath, ns: Namespace) -> Command:
        """Join an existing namespace of type ``ns`` (setns): ``file`` is an
        open namespace file or its descriptor (e.g. ``/proc/PID/ns/net``
        opened), or a path to one.

        The descriptor is duplicated (close-on-exec) and owned by the
        Command. The child joins in a fixed order: the user namespace
        first, the mount namespace last (see :mod:`aunshare.plan`). Joining
        a PID namespace places the child's children, not the child, in it.
        Raises ValueError if the file is not a namespace of type ``ns``,
        :class:`~aunshare.SetNs` if the path cannot be opened.
        """
        if not isinstance(ns, Namespace) or ns.value not in _SINGLE_NS:
            raise TypeError(f"set_namespace() takes one Namespace member, got {ns!r}")
        if isinstance(file, (str, bytes, os.PathLike)):
            path = _to_bytes(file, "set_namespace path")
            try:
                owned = _OwnedFd(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                raise SetNs(exc.errno or errno.ENOENT, path, f"the {ns.name} namespace file "
                            "to join (e.g. /proc/PID/ns/...)", action="open") from None
        else:
            owned = _dup_fileobj(file, "set_namespace")
        try:
            kind = fcntl.ioctl(owned.fd, NS_GET_NSTYPE)
        except OSError:
            raise ValueError(f"set_namespace: {file!r} is not a namespace file "
                             "(open /proc/PID/ns/<type>)") from None
        if kind != ns.value:
            try:
                what = Namespace(kind).name
            except ValueError:
                what = hex(kind)
            raise ValueError(f"set_namespace: {file!r} is a {what} namespace, "
                             f"not {ns.name}")
        self._setns[ns] = owned
        return self

    def set_id_maps(self, uid_maps: Iterable[UidMap], gid_maps: Iterable[GidMap], *,
                    allow_setgroups: bool | None = None) -> Command:
        """Map ids of a new user namespace (implies ``unshare(Namespace.USER)``).

        The parent writes /proc/PID/uid_map and gid_map while the child
        waits (the handshake), or runs the helpers of
        :meth:`set_id_map_commands`. Before the gid map, ``deny`` is written
        to /proc/PID/setgroups when the parent lacks CAP_SETGID (the kernel
        requires it for an unprivileged gid map); ``allow_setgroups=True``
        never writes it (the child may then call setgroups), False always
        does. Replaces :meth:`map_root_user` / :meth:`map_current_user`.
        """
        if allow_setgroups is not None and not isinstance(allow_setgroups, bool):
            raise TypeError("allow_setgroups must be True, False or None")
        self._uid_maps = check_maps(uid_maps, UidMap, "set_id_maps uid_maps")  # type: ignore[assignment]
        self._gid_maps = check_maps(gid_maps, GidMap, "set_id_maps gid_maps")  # type: ignore[assignment]
        self._allow_setgroups = allow_setgroups
        self._self_map = None
        self._unshare |= Namespace.USER
        return self

    def set_id_map_commands(self, newuidmap: StrOrBytesPath,
                            newgidmap: StrOrBytesPath) -> Command:
        """Write the maps of :meth:`set_id_maps` with these helper programs
        (shadow's ``newuidmap``/``newgidmap``, which let an unprivileged
        user map the ranges /etc/subuid and /etc/subgid grant).

        They run as awaited children of the parent while the child waits:
        failing to start them is :class:`~aunshare.SetIdMap`, a non-zero
        exit :class:`~aunshare.AuxCommandExited`, death by a signal
        :class:`~aunshare.AuxCommandKilled`; their stderr is in the message.
        """
        self._id_map_commands = (_to_bytes(newuidmap, "newuidmap"),
                                 _to_bytes(newgidmap, "newgidmap"))
        return self

    def map_root_user(self) -> Command:
        """Be root in a new user namespace: uid and gid 0 inside map to the
        caller's effective uid and gid (implies ``unshare(Namespace.USER)``).

        The child writes its own one-line maps, so no handshake is needed
        and the fast spawn path stays in use; setgroups is denied in the
        namespace. Replaces :meth:`set_id_maps` and :meth:`map_current_user`.
        """
        return self._map_self("root")

    def map_current_user(self) -> Command:
        """Keep the caller's uid and gid in a new user namespace (each mapped
        to itself; implies ``unshare(Namespace.USER)``). Like
        :meth:`map_root_user`, done by the child itself."""
        return self._map_self("current")

    def _map_self(self, how: str) -> Command:
        self._self_map = how
        self._uid_maps = self._gid_maps = None
        self._id_map_commands = None
        self._unshare |= Namespace.USER
        return self

    def before_unfreeze(self, callback: Callable[[int], Awaitable[object]] | None) -> Command:
        """Await ``callback(pid)`` in the parent after the id maps are written
        and before the child goes on to exec (e.g. to move a network
        interface into its namespace). It runs in the spawning task; an
        exception from it is raised as :class:`~aunshare.BeforeUnfreeze`
        with the original as ``__cause__``, and the child is killed and
        reaped. None removes it.
        """
        if callback is not None and not callable(callback):
            raise TypeError("before_unfreeze() takes an async function of the child's pid")
        self._before_unfreeze = callback
        return self

    def chroot_dir(self, path: StrOrBytesPath) -> Command:
        """chroot to ``path`` before exec; the program and
        :meth:`current_dir` are then looked up inside it (the working
        directory defaults to its "/"). ChangeRoot on failure."""
        root = _to_bytes(path, "chroot_dir")
        if not root.startswith(b"/"):
            raise ValueError(f"chroot_dir must be an absolute path, got {path!r}")
        self._chroot = root
        return self

    def pivot_root(self, new_root: StrOrBytesPath, put_old: StrOrBytesPath,
                   unmount: bool = True) -> Command:
        """Make ``new_root`` the child's root with pivot_root(2) (needs
        ``unshare(Namespace.MOUNT)``). ``put_old`` is where the old root is
        put, relative to ``new_root`` (an existing directory there, e.g.
        ``"oldroot"``); with ``unmount`` it is detached before exec, so the
        child cannot reach the old root. ``new_root`` is bind-mounted on
        itself first, so it need not be a mount point. The program is
        looked up inside the new root. ChangeRoot on failure.
        """
        root = _to_bytes(new_root, "pivot_root new_root")
        if not root.startswith(b"/"):
            raise ValueError(f"pivot_root new_root must be an absolute path, got {new_root!r}")
        old = _to_bytes(put_old, "pivot_root put_old").strip(b"/")
        if not old or old == b"." or b".." in old.split(b"/"):
            raise ValueError("pivot_root put_old must name a directory under new_root "
                             f"(like 'oldroot'), got {put_old!r}")
        self._pivot = (root.rstrip(b"/") or b"/", old, bool(unmount))
        return self

    def hostname(self, name: StrOrBytesPath) -> Command:
        """Set the host name in the child's UTS namespace (needs
        ``unshare(Namespace.UTS)`` or a joined one)."""
        h = _to_bytes(name, "hostname")
        if not 0 < len(h) <= 64:
            raise ValueError(f"hostname must be 1 to 64 bytes, got {len(h)}")
        self._hostname = h
        return self

    def mount_proc(self, mount: bool = True) -> Command:
        """Mount a fresh /proc in the child (inside the new root, if any), so
        that ``ps`` shows the child's PID namespace. Needs
        ``unshare(Namespace.MOUNT)``, and ``Namespace.PID`` to be useful."""
        self._mount_proc = bool(mount)
        return self

    def keep_caps(self, caps: Iterable[Capability | int]) -> Command:
        """Give the child exactly these capabilities, kept across a
        :meth:`uid` change and exec (ambient capabilities).

        Every other capability is dropped from the bounding set (needs
        CAP_SETPCAP: root, or root of a new user namespace). CapSet on
        failure.
        """
        if isinstance(caps, (str, bytes, int)):
            raise TypeError("keep_caps() takes an iterable of Capability")
        out = set()
        for cap in caps:
            if isinstance(cap, bool) or not isinstance(cap, int):
                raise TypeError(f"keep_caps: {cap!r} is not a Capability")
            if not 0 <= cap <= 63:
                raise ValueError(f"keep_caps: {cap} is not a capability number (0..63)")
            out.add(int(cap))
        self._keep_caps = frozenset(out)
        return self

    def no_new_privs(self, enable: bool = True) -> Command:
        """Set PR_SET_NO_NEW_PRIVS: exec can no longer grant privileges
        (setuid bits and file capabilities are ignored)."""
        self._no_new_privs = bool(enable)
        return self

    def rlimit(self, resource: int, soft: int | None, hard: int | None = None) -> Command:
        """Set a resource limit (``resource.RLIMIT_*``) for the child.

        ``None`` or ``resource.RLIM_INFINITY`` means unlimited; ``hard``
        defaults to ``soft``. Raising a hard limit needs CAP_SYS_RESOURCE.
        """
        if isinstance(resource, bool) or not isinstance(resource, int):
            raise TypeError(f"rlimit resource must be an int (resource.RLIMIT_*), "
                            f"not {type(resource).__name__}")
        if not 0 <= resource < 16:
            raise ValueError(f"rlimit resource must be a resource.RLIMIT_* value, got {resource}")
        lim = _check_limit(soft, "rlimit soft")
        hi = lim if hard is None and soft is not None else _check_limit(hard, "rlimit hard")
        if lim > hi:
            raise ValueError(f"rlimit soft limit {soft} is above the hard limit {hard}")
        self._rlimits[resource] = (lim, hi)
        return self

    def cgroup(self, path: StrOrBytesPath | None) -> Command:
        """Start the child inside the existing cgroup v2 directory ``path``
        (CLONE_INTO_CGROUP: it never runs outside it). None turns this off.
        See :meth:`new_cgroup` for a cgroup of the child's own."""
        if path is None:
            self._cgroup_path = None
            return self
        p = _to_bytes(path, "cgroup path")
        if not p.startswith(b"/"):
            raise ValueError(f"cgroup path must be an absolute path, got {path!r}")
        self._cgroup_path = p
        return self

    # -- running (the async layer) -----------------------------------------------
    async def spawn(self) -> Child:
        """Start the child; errors before exec are raised here, typed."""
        from .child import spawn

        return await spawn(self)

    async def status(self) -> ExitStatus:
        """Start the child with stdio inherited (unless set) and wait for it."""
        from .child import spawn

        async with await spawn(self, default_stdio="inherit") as child:
            return await child.wait()

    async def output(self) -> Output:
        """Run the child with stdout and stderr piped (unless set) and collect them."""
        from .child import spawn

        child = await spawn(self, default_stdio="output")
        return await child.wait_with_output()

    def _copy(self) -> Command:
        """An independent copy (containers copied, owned fds shared), so a
        helper can adjust a caller's Command without changing it."""
        new = Command.__new__(Command)
        for key, value in vars(self).items():
            if isinstance(value, (list, dict)):
                value = value.copy()
            setattr(new, key, value)
        return new

    # -- debugging ------------------------------------------------------------------
    def get_argv(self) -> list[bytes]:
        """argv as the child will get it (argv[0] first)."""
        return [self._arg0 if self._arg0 is not None else self._program, *self._args]

    def __repr__(self) -> str:
        text = "<Command " + " ".join(_quote(a) for a in [self._program, *self._args])
        extra = []
        if self._cwd is not None:
            extra.append(f"cwd={os.fsdecode(self._cwd)!r}")
        if self._uid is not None:
            extra.append(f"uid={self._uid}")
        if self._gid is not None:
            extra.append(f"gid={self._gid}")
        if self._env_clear:
            extra.append("env_clear")
        if self._unshare:
            extra.append(f"unshare={namespace_names(self._unshare)}")
        for ns in self._setns:
            extra.append(f"setns={ns.name}")
        if self._self_map is not None:
            extra.append(f"map_{self._self_map}_user")
        elif self._uid_maps is not None:
            extra.append(f"id_maps={len(self._uid_maps)}+{len(self._gid_maps or ())}")
        if self._chroot is not None:
            extra.append(f"chroot={os.fsdecode(self._chroot)!r}")
        if self._pivot is not None:
            extra.append(f"pivot_root={os.fsdecode(self._pivot[0])!r}")
        if self._hostname is not None:
            extra.append(f"hostname={os.fsdecode(self._hostname)!r}")
        if self._mount_proc:
            extra.append("mount_proc")
        if self._keep_caps is not None:
            names = ",".join(_cap_name(c) for c in sorted(self._keep_caps))
            extra.append(f"keep_caps=[{names}]")
        if self._no_new_privs:
            extra.append("no_new_privs")
        for res, (soft, hard) in sorted(self._rlimits.items()):
            extra.append(f"rlimit[{res}]={_limit_str(soft)}:{_limit_str(hard)}")
        if self._death_signal != _signal.SIGKILL:
            extra.append("allow_daemonize" if self._death_signal is None
                         else f"death_signal={self._death_signal}")
        for t, f in sorted(self._fds.items()):
            extra.append(f"fd{t}={f!r}")
        if extra:
            text += "; " + ", ".join(extra)
        return text + ">"


if sys.platform != "linux":  # pragma: no cover
    raise ImportError("aunshare runs on Linux only")
