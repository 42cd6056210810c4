"""The :class:`Command` builder.

A Command gathers what the child is to be, one chainable call at a time,
checking each argument at the call that receives it. :meth:`Command.spec`
freezes it into a :class:`~aunshare.spec.Spec` (which checks the
combination); everything below the builder reads only that. Building opens
nothing, with two exceptions that need the file at the call:
:meth:`Stdio.dup_file`/:meth:`Fd.dup_file` and :meth:`Command.set_namespace`
duplicate the caller's descriptor (and check that it is a namespace).

The async methods (:meth:`spawn`, :meth:`status`, :meth:`output`) hand the
spec to :mod:`aunshare.spawn`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal as _signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping

from ._linux import ARCH, NS_GET_NSTYPE
from ._names import STDIO_NAMES, check_signal
from ._record import replace
from .errors import SetNs
from .landlock import Landlock
from .fds import MAX_FD, Fd, OwnedFd, Stdio, StrOrBytesPath, dup_fileobj, to_bytes
from .namespaces import (
    JOIN_ORDER, Capability, GidMap, Namespace, UidMap, cap_name, check_maps, namespace_names,
    to_namespaces,
)
from .policy import KillPolicy
from .seccomp import Action, SeccompFilter, check_bpf
from .spec import (
    DEFAULT_FDS, DEFAULT_IDENTITY, DEFAULT_ISOLATION, DEFAULT_LIFETIME, CgroupLimits, MountKind,
    MountOp, PivotRoot, ProgramSpec, Rlimit, SelfMap, Spec, UserNetwork, parse_size,
)

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from typing import IO, Any

    from .child import Child, Output
    from .status import ExitStatus

__all__ = ["Command", "Stdio", "Fd", "StrOrBytesPath"]

_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel
_RLIM_INFINITY = 2**64 - 1
_SINGLE_NS = frozenset(int(ns) for ns in Namespace)
# The specs of Commands that set nothing but their program, by program:
# specs are immutable, so a one-off Command("prog") (the usual run) shares
# one instead of making records on every spawn, and the plan cache finds it
# by identity.
_PLAIN: dict[bytes, Spec] = {}
_PLAIN_MAX = 256


def _env_key(key: object) -> bytes:
    k = to_bytes(key, "env key")
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


def _check_limit(value: object, what: str) -> int:
    if value is None or value == -1:  # resource.RLIM_INFINITY is -1 in Python
        return _RLIM_INFINITY
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int or None, not {type(value).__name__}")
    if not 0 <= value <= _RLIM_INFINITY:
        raise ValueError(f"{what} must be between 0 and {_RLIM_INFINITY}, got {value}")
    return value


def _view_path(value: object, what: str) -> bytes:
    """An absolute path of the filesystem view, normalised; ``..`` refused
    (it could climb out of the new root)."""
    path = to_bytes(value, what)
    if not path.startswith(b"/"):
        raise ValueError(f"{what} must be an absolute path, got {value!r}")
    parts = [p for p in path.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise ValueError(f"{what} must not contain '..' (it could point outside the new "
                         f"root), got {value!r}; give the path without it")
    return b"/" + b"/".join(parts)


def _mode(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int such as 0o755, not {type(value).__name__}")
    if not 0 <= value <= 0o7777:
        raise ValueError(f"{what} must be between 0 and 0o7777, got {oct(value)}")
    return value


def _limit_str(value: int) -> str:
    return "unlimited" if value == _RLIM_INFINITY else str(value)


class Command:
    """A builder for a child process: program, arguments, environment, fds,
    identity and what happens to the child before exec.

    Every builder method returns the same Command, so calls chain::

        child = await Command("ls").arg("-l").stdout(Stdio.piped()).spawn()

    A Command can be spawned any number of times. Arguments are validated at
    the call that receives them (``ValueError``/``TypeError`` naming it);
    combinations (a pivot_root without a mount namespace, say) when the
    Command is frozen by :meth:`spec`, which every spawn does.
    """

    __slots__ = ("_program", "_fds", "_identity", "_isolation", "_lifetime", "_spec")

    def __init__(self, program: StrOrBytesPath) -> None:
        """Start building a command that runs ``program``.

        A program without a slash is looked up in ``PATH`` (the child's PATH
        when :meth:`env` sets one, else the parent's) when it is spawned.
        """
        prog = to_bytes(program, "program")
        spec = _PLAIN.get(prog)
        if spec is None:
            if not prog:
                raise ValueError("program must not be empty")
            spec = Spec(ProgramSpec(prog))
            if len(_PLAIN) >= _PLAIN_MAX:
                _PLAIN.clear()
            _PLAIN[prog] = spec
        self._program = spec.program
        self._fds = DEFAULT_FDS
        self._identity = DEFAULT_IDENTITY
        self._isolation = DEFAULT_ISOLATION
        self._lifetime = DEFAULT_LIFETIME
        self._spec: Spec | None = spec

    # Every change goes through here: the frozen spec is made again after one.
    def _change(self, record: str, **changes: Any) -> Command:
        setattr(self, record, replace(getattr(self, record), **changes))
        self._spec = None
        return self

    def spec(self) -> Spec:
        """The Command frozen: an immutable, hashable :class:`~aunshare.spec.Spec`.

        Raises ValueError for a combination that cannot run (naming both
        sides and what to do). Made once and kept until the Command changes.
        """
        spec = self._spec
        if spec is None:
            spec = self._spec = Spec(self._program, self._fds, self._identity,
                                     self._isolation, self._lifetime)
        return spec

    # -- program and arguments -------------------------------------------
    def arg(self, arg: StrOrBytesPath) -> Command:
        """Append one argument."""
        return self._change("_program", args=(*self._program.args, to_bytes(arg, "arg")))

    def args(self, args: Iterable[StrOrBytesPath]) -> Command:
        """Append several arguments."""
        if isinstance(args, (str, bytes)):
            raise TypeError("args() takes an iterable of arguments, not a single "
                            "str/bytes; use arg() for one argument")
        new = [to_bytes(a, "args item") for a in args]
        return self._change("_program", args=(*self._program.args, *new))

    def arg0(self, arg0: StrOrBytesPath) -> Command:
        """Set argv[0] as the child sees it (default: the program as given)."""
        return self._change("_program", arg0=to_bytes(arg0, "arg0"))

    # -- environment -------------------------------------------------------
    def _env_update(self, items: Iterable[tuple[bytes, bytes | None]]) -> Command:
        env = dict(self._program.env)
        env.update(items)
        pid_vars = tuple(k for k in self._program.env_pid if k not in env)
        return self._change("_program", env=tuple(env.items()), env_pid=pid_vars)

    def env(self, key: StrOrBytesPath, value: StrOrBytesPath) -> Command:
        """Set one environment variable for the child."""
        return self._env_update([(_env_key(key), to_bytes(value, "env value"))])

    def envs(self, mapping: Mapping[Any, Any]) -> Command:
        """Set several environment variables from a mapping."""
        # all or nothing: nothing is set if one is bad
        return self._env_update([(_env_key(k), to_bytes(v, "env value"))
                                 for k, v in mapping.items()])

    def env_remove(self, key: StrOrBytesPath) -> Command:
        """Remove one variable from the child's environment."""
        return self._env_update([(_env_key(key), None)])

    def env_clear(self) -> Command:
        """Start the child's environment empty (then add with :meth:`env`)."""
        return self._change("_program", env_clear=True, env=(), env_pid=())

    def env_var_with_pid(self, key: StrOrBytesPath) -> Command:
        """Set the variable ``key`` to the child's own pid, as the child sees
        it (1 as the first process of a new pid namespace), like systemd's
        ``LISTEN_PID``.

        The pid is known only once the child exists, so the parent sends it
        while the child waits before exec (the handshake path of
        :mod:`aunshare.plan`), which costs one round trip per spawn.
        """
        k = _env_key(key)
        env = tuple((ek, ev) for ek, ev in self._program.env if ek != k)
        pid_vars = tuple(v for v in self._program.env_pid if v != k)
        return self._change("_program", env=env, env_pid=(*pid_vars, k))

    # -- working directory -------------------------------------------------
    def current_dir(self, path: StrOrBytesPath) -> Command:
        """Change to ``path`` in the child before exec (Chdir on failure)."""
        cwd = to_bytes(path, "current_dir")
        if not cwd:
            raise ValueError("current_dir must not be empty")
        return self._change("_program", cwd=cwd)

    # -- file descriptors -----------------------------------------------------
    def _set_fd(self, target: int, fd: Fd) -> Command:
        fds = dict(self._fds.fds)
        fds[target] = fd
        return self._change("_fds", fds=tuple(sorted(fds.items(), key=lambda item: item[0])))

    def _set_stdio(self, target: int, stdio: Stdio, name: str) -> Command:
        if not isinstance(stdio, Stdio):
            raise TypeError(f"{name}() takes a Stdio (e.g. Stdio.piped()), "
                            f"not {type(stdio).__name__}")
        return self._set_fd(target, stdio.for_target(target))

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
        if target_fd in STDIO_NAMES:
            raise ValueError(f"target_fd {target_fd} is stdio: use stdin()/stdout()/"
                             "stderr() for descriptors 0-2")
        if not 3 <= target_fd < MAX_FD:
            raise ValueError(f"target_fd must be between 3 and {MAX_FD - 1}, got {target_fd}")
        if not isinstance(fd, Fd):
            raise TypeError(f"file_descriptor() takes an Fd (e.g. Fd.piped_write()), "
                            f"not {type(fd).__name__}")
        have = self._fds.get(target_fd)
        if have is not None:
            raise ValueError(f"target_fd {target_fd} is already mapped to "
                             f"{have!r}; call reset_fds() to start over")
        return self._set_fd(target_fd, fd)

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
        if fds.start > MAX_FD:
            raise ValueError(f"close_fds range {fds} starts above the largest fd {MAX_FD}")
        close = (*self._fds.close, (fds.start, min(fds.stop - 1, MAX_FD)))
        return self._change("_fds", close=close)

    def reset_fds(self) -> Command:
        """Back to the initial fd state with nothing closed: stdio inherited,
        no mappings, and every inheritable parent descriptor left open."""
        return self._change("_fds", fds=(), close=())

    # -- identity -----------------------------------------------------------------
    def uid(self, uid: int) -> Command:
        """Run the child as ``uid`` (setresuid, after groups and gid)."""
        return self._change("_identity", uid=_check_id(uid, "uid"))

    def gid(self, gid: int) -> Command:
        """Run the child with group ``gid`` (setresgid)."""
        return self._change("_identity", gid=_check_id(gid, "gid"))

    def groups(self, groups: Iterable[int]) -> Command:
        """Set the child's supplementary groups (setgroups).

        When unset and the parent is root, a child given :meth:`uid` or
        :meth:`gid` gets an empty list, so it keeps none of root's groups.
        """
        if isinstance(groups, (str, bytes)):
            raise TypeError("groups() takes an iterable of gids")
        return self._change("_identity", groups=tuple(_check_id(g, "groups item") for g in groups))

    def new_session(self, new: bool = True) -> Command:
        """Start the child in a new session (setsid()): it has no
        controlling terminal, so it cannot push input into the caller's
        terminal with TIOCSTI (bubblewrap's ``--new-session``). It also
        leads a new process group."""
        return self._change("_identity", new_session=bool(new))

    def process_group(self, pgid: int | None) -> Command:
        """Put the child in the existing process group ``pgid``
        (``setpgid(0, pgid)``, :mod:`subprocess`'s ``process_group``); 0
        is :meth:`make_group_leader`, None turns this off. The group must
        exist in the caller's session; SetPGid otherwise."""
        if pgid is None:
            return self._change("_identity", process_group=None)
        if isinstance(pgid, bool) or not isinstance(pgid, int):
            raise TypeError(f"process_group must be an int, not {type(pgid).__name__}")
        if not 0 <= pgid < 2**31:
            raise ValueError(f"process_group must be between 0 and {2**31 - 1}, got {pgid}")
        if pgid == 0:
            return self._change("_identity", group_leader=True, process_group=None)
        return self._change("_identity", process_group=pgid)

    def umask(self, mask: int | None) -> Command:
        """Set the child's file mode creation mask (umask(2)) before exec;
        None keeps the parent's."""
        if mask is not None:
            if isinstance(mask, bool) or not isinstance(mask, int):
                raise TypeError(f"umask must be an int, not {type(mask).__name__}")
            if not 0 <= mask <= 0o777:
                raise ValueError(f"umask must be between 0 and 0o777, got {oct(mask)}")
        return self._change("_identity", umask=mask)

    def make_group_leader(self, make: bool = True) -> Command:
        """Put the child in a new process group of its own (setpgid(0, 0)).

        A kill policy aimed at :attr:`KillTarget.AUTO` then signals the
        whole group. Refused (ValueError, at spawn) together with
        :meth:`Stdio.pty`, which makes the child a session leader: that
        leads its own group already.
        """
        return self._change("_identity", group_leader=bool(make))

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
        return self._change("_lifetime", kill_policy=policy)

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
            return self._change("_lifetime", cgroup_parent=None)
        path = to_bytes(parent, "new_cgroup parent")
        if not path.startswith(b"/"):
            raise ValueError(f"new_cgroup parent must be an absolute path, got {parent!r}")
        return self._change("_lifetime", cgroup_parent=path.rstrip(b"/") or b"/")

    def cgroup(self, path: StrOrBytesPath | None) -> Command:
        """Start the child inside the existing cgroup v2 directory ``path``
        (CLONE_INTO_CGROUP: it never runs outside it). None turns this off.
        See :meth:`new_cgroup` for a cgroup of the child's own."""
        if path is None:
            return self._change("_lifetime", cgroup_path=None)
        p = to_bytes(path, "cgroup path")
        if not p.startswith(b"/"):
            raise ValueError(f"cgroup path must be an absolute path, got {path!r}")
        return self._change("_lifetime", cgroup_path=p)

    # -- resource limits --------------------------------------------------------------
    def _limits(self, **changes: Any) -> Command:
        limits = replace(self._lifetime.limits or CgroupLimits(), **changes)
        # Every limit removed: no cgroup is implied any more.
        return self._change("_lifetime", limits=limits if limits.controllers else None)

    def limit_memory(self, max_bytes: int | str | None, *, swap_max: int | str | None = None,
                     oom_group: bool = True) -> Command:
        """Limit the memory of the child and everything it starts to
        ``max_bytes`` (an int, or a size like ``"512M"``, ``"1.5G"``,
        ``"64KiB"``: every suffix is a power of 1024, see
        :func:`aunshare.spec.parse_size`). None removes the limit.

        Implies a cgroup of the child's own (created under ``new_cgroup``'s
        parent, or by default under this process's own cgroup), with the
        limit written before the child runs. ``swap_max``: swap it may use
        on top (default: the kernel's, usually unlimited). ``oom_group``:
        an out-of-memory kill takes every process in the cgroup (cgroup v2
        only; v1 kills the one process it picks). Exceeding the limit gets
        the child killed with SIGKILL: :attr:`ExitStatus.oom_killed` then
        says why, and ``cgroup_usage.memory_peak`` what it reached. See the
        "Resource limits" guide for cgroup v1 and v2.
        """
        if max_bytes is None:
            if swap_max is not None:
                raise ValueError("limit_memory(None, swap_max=...): a swap limit needs the "
                                 "memory limit itself")
            return self._limits(memory_max=None, swap_max=None, oom_group=bool(oom_group))
        size = parse_size(max_bytes, "limit_memory max_bytes")
        swap = None if swap_max is None else parse_size(swap_max, "limit_memory swap_max")
        return self._limits(memory_max=size, swap_max=swap, oom_group=bool(oom_group))

    def limit_pids(self, max_tasks: int | None) -> Command:
        """Let the child's cgroup hold at most ``max_tasks`` tasks (processes
        and threads) at once (``pids.max``): a fork or clone beyond fails
        with EAGAIN, and ``cgroup_usage.pids_limit_hits`` counts the
        failures. None removes the limit. Implies a cgroup of the child's
        own, like :meth:`limit_memory`."""
        if max_tasks is None:
            return self._limits(pids_max=None)
        if isinstance(max_tasks, bool) or not isinstance(max_tasks, int):
            raise TypeError(f"limit_pids max_tasks must be an int, not {type(max_tasks).__name__}")
        if max_tasks < 1:
            raise ValueError(f"limit_pids max_tasks must be at least 1 (the child itself), "
                             f"got {max_tasks}")
        return self._limits(pids_max=max_tasks)

    def limit_cpu(self, cpus: float | None, *, period_us: int = 100_000) -> Command:
        """Let the child's cgroup use at most ``cpus`` CPUs' worth of time
        (0.5: half of one CPU; 2: two CPUs), enforced per period of
        ``period_us`` microseconds (CFS bandwidth: ``cpu.max``, v1
        ``cpu.cfs_quota_us``): a busy child is throttled, not killed. None
        removes the limit. Implies a cgroup of the child's own, like
        :meth:`limit_memory`."""
        if cpus is None:
            return self._limits(cpu_quota_us=None, cpu_period_us=100_000)
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)):
            raise TypeError(f"limit_cpu cpus must be a number, not {type(cpus).__name__}")
        if isinstance(period_us, bool) or not isinstance(period_us, int):
            raise TypeError("limit_cpu period_us must be an int")
        if not 1000 <= period_us <= 1_000_000:
            raise ValueError(f"limit_cpu period_us must be 1000 to 1000000 (the kernel's "
                             f"range), got {period_us}")
        ncpu = os.cpu_count() or 1
        if not cpus > 0 or cpus != cpus:
            raise ValueError(f"limit_cpu cpus must be above 0, got {cpus}")
        if cpus > ncpu:
            raise ValueError(f"limit_cpu cpus={cpus} is more than the {ncpu} CPUs of this "
                             "machine: a quota above that never throttles; give at most "
                             f"{ncpu}, or None for no limit")
        quota = max(1000, round(cpus * period_us))  # the kernel's minimum quota is 1 ms
        return self._limits(cpu_quota_us=quota, cpu_period_us=period_us)

    # -- signals ----------------------------------------------------------------------
    def set_parent_death_signal(self, sig: int) -> Command:
        """Signal sent to the child when the thread that spawned it exits
        (PR_SET_PDEATHSIG). The default is SIGKILL, as in the Rust crate.

        The kernel ties this to the spawning *thread*: spawn from a
        long-lived thread (the event loop's), not a short-lived worker.
        """
        return self._change("_lifetime", death_signal=check_signal(sig, "parent death signal"))

    def allow_daemonize(self) -> Command:
        """Let the child outlive the parent (no parent-death signal)."""
        return self._change("_lifetime", death_signal=None)

    def keep_sigmask(self) -> Command:
        """Keep the parent's signal mask and ignored signals in the child.

        By default the child starts with an empty mask and every signal at
        its default action.
        """
        return self._change("_lifetime", keep_sigmask=True)

    def init_process(self, enabled: bool = True) -> Command:
        """Run a tiny init as pid 1 of the new pid namespace, the program as pid 2.

        Needs ``unshare(Namespace.PID)``. Without it the program itself is
        pid 1 there: it inherits every orphan of the namespace (zombies pile
        up unless it reaps them) and the kernel drops each signal it has no
        handler for, so ``terminate()`` does nothing to most programs. The
        init (machine code, no libc, executed from a memfd) forwards every
        signal it can catch to the program, reaps every orphan, and exits
        with the program's status; the status the parent sees is the
        program's, signals and core dumps included (the init writes the
        program's wait status on a pipe the parent reads when it reaps the
        init; see the namespaces guide).
        """
        if not isinstance(enabled, bool):
            raise TypeError(f"init_process(enabled) takes a bool, got {enabled!r}")
        return self._change("_lifetime", init_process=enabled)

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
        new = to_namespaces(namespaces, "unshare()")
        return self._change("_isolation", unshare=self._isolation.unshare | new)

    def set_namespace(self, file: IO[Any] | int | StrOrBytesPath, ns: Namespace) -> Command:
        """Join an existing namespace of type ``ns`` (setns): ``file`` is an
        open namespace file or its descriptor (e.g. ``/proc/PID/ns/net``
        opened), or a path to one.

        The descriptor is duplicated (close-on-exec) and owned by the
        Command: this opens the file and checks its type at the call. The
        child joins in a fixed order: the user namespace first, the mount
        namespace last (see :mod:`aunshare.plan`). Joining a PID namespace
        places the child's children, not the child, in it. Raises
        ValueError if the file is not a namespace of type ``ns``,
        :class:`~aunshare.SetNs` if the path cannot be opened.
        """
        if not isinstance(ns, Namespace) or ns.value not in _SINGLE_NS:
            raise TypeError(f"set_namespace() takes one Namespace member, got {ns!r}")
        if isinstance(file, (str, bytes, os.PathLike)):
            path = to_bytes(file, "set_namespace path")
            try:
                owned = OwnedFd(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                raise SetNs(exc.errno or errno.ENOENT, path, f"the {ns.name} namespace file "
                            "to join (e.g. /proc/PID/ns/...)", action="open") from None
        else:
            owned = dup_fileobj(file, "set_namespace")
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
        join = dict(self._isolation.join)
        join[ns] = owned
        return self._change("_isolation", join=tuple((n, join[n]) for n in JOIN_ORDER if n in join))

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
        uids = check_maps(uid_maps, UidMap, "set_id_maps uid_maps")
        gids = check_maps(gid_maps, GidMap, "set_id_maps gid_maps")
        return self._change("_isolation", uid_maps=uids, gid_maps=gids,
                            allow_setgroups=allow_setgroups, self_map=None,
                            unshare=self._isolation.unshare | Namespace.USER)

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
        helpers = (to_bytes(newuidmap, "newuidmap"), to_bytes(newgidmap, "newgidmap"))
        return self._change("_isolation", id_map_commands=helpers)

    def map_root_user(self) -> Command:
        """Be root in a new user namespace: uid and gid 0 inside map to the
        caller's effective uid and gid (implies ``unshare(Namespace.USER)``).

        The child writes its own one-line maps, so no handshake is needed
        and the fast spawn path stays in use; setgroups is denied in the
        namespace. Replaces :meth:`set_id_maps` and :meth:`map_current_user`.
        """
        return self._map_self(SelfMap.ROOT)

    def map_current_user(self) -> Command:
        """Keep the caller's uid and gid in a new user namespace (each mapped
        to itself; implies ``unshare(Namespace.USER)``). Like
        :meth:`map_root_user`, done by the child itself."""
        return self._map_self(SelfMap.CURRENT)

    def _map_self(self, how: SelfMap) -> Command:
        return self._change("_isolation", self_map=how, uid_maps=None, gid_maps=None,
                            id_map_commands=None, unshare=self._isolation.unshare | Namespace.USER)

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
        return self._change("_isolation", before_unfreeze=callback)

    def chroot_dir(self, path: StrOrBytesPath) -> Command:
        """chroot to ``path`` before exec; the program and
        :meth:`current_dir` are then looked up inside it (the working
        directory defaults to its "/"). ChangeRoot on failure."""
        root = to_bytes(path, "chroot_dir")
        if not root.startswith(b"/"):
            raise ValueError(f"chroot_dir must be an absolute path, got {path!r}")
        return self._change("_isolation", chroot=root)

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
        root = to_bytes(new_root, "pivot_root new_root")
        if not root.startswith(b"/"):
            raise ValueError(f"pivot_root new_root must be an absolute path, got {new_root!r}")
        old = to_bytes(put_old, "pivot_root put_old").strip(b"/")
        if not old or old == b"." or b".." in old.split(b"/"):
            raise ValueError("pivot_root put_old must name a directory under new_root "
                             f"(like 'oldroot'), got {put_old!r}")
        pivot = PivotRoot(root.rstrip(b"/") or b"/", old, bool(unmount))
        return self._change("_isolation", pivot=pivot)

    def hostname(self, name: StrOrBytesPath) -> Command:
        """Set the host name in the child's UTS namespace (needs
        ``unshare(Namespace.UTS)`` or a joined one)."""
        h = to_bytes(name, "hostname")
        if not 0 < len(h) <= 64:
            raise ValueError(f"hostname must be 1 to 64 bytes, got {len(h)}")
        return self._change("_isolation", hostname=h)

    def user_network(self, *, tcp_ports: Iterable[int | tuple[int, int]] = (),
                     udp_ports: Iterable[int | tuple[int, int]] = ()) -> Command:
        """Give the child's new network namespace outbound network through
        pasta (Debian package ``passt``), unprivileged too.

        The parent starts pasta while the child waits in the handshake,
        attached to the child's user and network namespaces, and stops it
        once the child is reaped. Inside, pasta configures an interface with
        the host's address and default route (and brings ``lo`` up); the
        host's own loopback is reachable at the default gateway address.
        ``tcp_ports`` / ``udp_ports`` are host ports forwarded into the
        sandbox: a port ``P`` forwards host ``P`` to ``P`` inside, a pair
        ``(host, inside)`` maps one to the other. Needs
        ``unshare(Namespace.NET)`` (ValueError otherwise, at spawn time
        when the spec is made). pasta failing to start raises
        :class:`~aunshare.AuxCommandExited` / :class:`~aunshare.AuxCommandKilled`
        with its stderr, or :class:`~aunshare.NetworkError`.
        """
        import shutil

        pasta = shutil.which("pasta")
        if pasta is None:
            raise ValueError("user_network() needs pasta, which is not installed (not found "
                             "in PATH): install the 'passt' package (apt-get install passt)")

        def ports(values: Iterable[int | tuple[int, int]], what: str
                  ) -> tuple[tuple[int, int], ...]:
            if isinstance(values, (int, str, bytes)):
                raise TypeError(f"user_network({what}=...) takes a list of ports")
            out = []
            for value in values:
                pair = value if isinstance(value, tuple) else (value, value)
                if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int)
                                         or not 0 < v < 65536 for v in pair):
                    raise ValueError(f"user_network({what}=...): {value!r} is not a port "
                                     "(1..65535) or a (host port, port inside) pair")
                out.append((pair[0], pair[1]))
            return tuple(out)

        net = UserNetwork(os.fsencode(pasta), ports(tcp_ports, "tcp_ports"),
                          ports(udp_ports, "udp_ports"))
        return self._change("_isolation", user_network=net)

    def mount_proc(self, dest: StrOrBytesPath | bool = "/proc") -> Command:
        """Mount a fresh proc file system in the child, so that ``ps`` shows
        the child's PID namespace. Needs ``unshare(Namespace.MOUNT)``, and
        ``Namespace.PID`` to be useful.

        ``mount_proc()`` (or ``True``) mounts /proc inside the new root, if
        any, after the other operations of the filesystem view; with a
        destination (``mount_proc("/proc")`` after :meth:`new_root`, say) it
        is one operation of the view, in the order given. ``False`` removes
        every proc mount. As root, /proc/sys, sysrq-trigger, irq and bus are
        made read-only in the view's proc mounts (as bubblewrap does).
        """
        iso = self._isolation
        if dest is False or dest is True:
            mounts = tuple(m for m in iso.mounts if m.kind is not MountKind.PROC)
            return self._change("_isolation", mount_proc=dest, mounts=mounts)
        where = _view_path(dest, "mount_proc dest")
        if where == b"/proc" and not iso.fresh_root and not iso.mounts:
            # no view of its own: the plain /proc (also inside a chroot or pivot_root)
            return self._change("_isolation", mount_proc=True)
        return self._add_mount(MountOp(MountKind.PROC, where))

    # -- the filesystem view ------------------------------------------------------
    def _add_mount(self, op: MountOp) -> Command:
        iso = self._isolation
        return self._change("_isolation", mounts=(*iso.mounts, op),
                            unshare=iso.unshare | Namespace.MOUNT)

    def new_root(self, enable: bool = True) -> Command:
        """Build the child's root from nothing: a fresh, empty tmpfs becomes
        its "/", the operations of the filesystem view (:meth:`bind_mount`,
        :meth:`tmpfs`, :meth:`mkdir`, :meth:`symlink`, :meth:`write_file`,
        :meth:`mount_dev`, :meth:`mount_proc`, :meth:`overlay`, ...) are
        carried out inside it in the order given, then the child pivots
        into it and the host's root is detached, as bubblewrap does.
        Implies ``unshare(Namespace.MOUNT)``; works unprivileged with
        ``unshare(Namespace.USER)`` and :meth:`map_root_user`.

        Without it the operations apply to the existing root inside the
        child's private mount namespace. A program without a slash is
        looked up in PATH inside the new root. A failure is
        :class:`~aunshare.Mount`, naming the operation.
        """
        iso = self._isolation
        unshare = iso.unshare | Namespace.MOUNT if enable else iso.unshare
        return self._change("_isolation", fresh_root=bool(enable), unshare=unshare)

    def bind_mount(self, src: StrOrBytesPath, dest: StrOrBytesPath | None = None, *,
                   read_only: bool = False, allow_devices: bool = False,
                   optional: bool = False) -> Command:
        """Bind the host's ``src`` (an absolute path) at ``dest`` (default:
        the same path) in the child's view, recursively (with every mount
        below it).

        Every mount of the bind is nosuid, and nodev unless
        ``allow_devices``; ``read_only`` makes all of them read-only
        (``mount_setattr`` with ``AT_RECURSIVE``). A missing source is an
        error at spawn (:class:`~aunshare.Mount`) unless ``optional``, which
        skips it (bubblewrap's ``--bind-try``). A directory or an empty
        file is created at ``dest`` to mount on, with the directories above
        it, as needed.
        """
        source = _view_path(src, "bind_mount src")
        where = source if dest is None else _view_path(dest, "bind_mount dest")
        return self._add_mount(MountOp(MountKind.BIND, where, source, read_only=bool(read_only),
                                       allow_devices=bool(allow_devices),
                                       optional=bool(optional)))

    def tmpfs(self, dest: StrOrBytesPath, *, size: int | None = None,
              mode: int = 0o755) -> Command:
        """Mount a new tmpfs at ``dest`` (nosuid, nodev), of ``size`` bytes
        at most (default: the kernel's, half the memory), its root
        directory with ``mode``."""
        where = _view_path(dest, "tmpfs dest")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or size <= 0):
            raise ValueError(f"tmpfs size must be a positive number of bytes, got {size!r}")
        return self._add_mount(MountOp(MountKind.TMPFS, where, mode=_mode(mode, "tmpfs mode"),
                                       size=size))

    def mkdir(self, dest: StrOrBytesPath, mode: int = 0o755) -> Command:
        """Create the directory ``dest`` (and those above it) in the view;
        one that exists already is fine. Without :meth:`new_root` only
        under a mount of the view (never on the host's own file system)."""
        where = _view_path(dest, "mkdir dest")
        return self._add_mount(MountOp(MountKind.DIR, where, mode=_mode(mode, "mkdir mode")))

    def symlink(self, target: StrOrBytesPath, dest: StrOrBytesPath) -> Command:
        """Create a symbolic link at ``dest`` pointing to ``target`` (taken
        as is: ``usr/bin`` is relative to the link's directory)."""
        link = to_bytes(target, "symlink target")
        if not link or b"\0" in link:
            raise ValueError(f"symlink target must be a non-empty path, got {target!r}")
        where = _view_path(dest, "symlink dest")
        return self._add_mount(MountOp(MountKind.SYMLINK, where, link))

    def write_file(self, dest: StrOrBytesPath, data: bytes, *, mode: int = 0o644,
                   read_only: bool = True) -> Command:
        """Put a file holding ``data`` at ``dest`` (needs :meth:`new_root`).

        The content is part of what the parent prepares for the child (no
        pipe is read): it is written to a file in the new root's private
        staging tmpfs and bound at ``dest``, read-only unless
        ``read_only=False``.
        """
        where = _view_path(dest, "write_file dest")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"write_file data must be bytes, not {type(data).__name__}")
        return self._add_mount(MountOp(MountKind.FILE, where, mode=_mode(mode, "write_file mode"),
                                       data=bytes(data), read_only=bool(read_only)))

    def remount_read_only(self, dest: StrOrBytesPath) -> Command:
        """Make the mount at ``dest`` and every mount below it read-only
        (``dest`` must be a mount point of the view, "/" with
        :meth:`new_root` being one)."""
        return self._add_mount(MountOp(MountKind.REMOUNT_RO,
                                       _view_path(dest, "remount_read_only dest")))

    def mount_dev(self, dest: StrOrBytesPath = "/dev") -> Command:
        """A minimal /dev at ``dest`` (needs :meth:`new_root`), as
        bubblewrap's ``--dev``: a tmpfs with null, zero, full, random,
        urandom and tty bound from the host, ``shm`` (a tmpfs), ``pts`` (a
        new devpts instance) with ``ptmx``, and the ``fd``, ``stdin``,
        ``stdout``, ``stderr`` and ``core`` symlinks."""
        return self._add_mount(MountOp(MountKind.DEV, _view_path(dest, "mount_dev dest")))

    def overlay(self, dest: StrOrBytesPath, lower_dirs: Iterable[StrOrBytesPath], *,
                upper: StrOrBytesPath | None = None,
                work: StrOrBytesPath | None = None) -> Command:
        """Mount an overlay file system at ``dest``: ``lower_dirs`` (host
        directories, topmost first) below a writable layer, ``upper`` with
        its ``work`` directory (on the same file system) or, without them,
        a layer in the new root's private tmpfs that vanishes with the
        child (bubblewrap's ``--tmp-overlay``; needs :meth:`new_root`).
        In a user namespace it needs Linux 5.11."""
        where = _view_path(dest, "overlay dest")
        if isinstance(lower_dirs, (str, bytes)):
            raise TypeError("overlay lower_dirs takes an iterable of directories, not one path")
        lower = tuple(_view_path(d, "overlay lower_dirs item") for d in lower_dirs)
        if not lower:
            raise ValueError("overlay needs at least one directory in lower_dirs")
        if (upper is None) != (work is None):
            raise ValueError("overlay upper= and work= go together (work is overlayfs's "
                             "scratch directory, on the same file system as upper)")
        up = None if upper is None else _view_path(upper, "overlay upper")
        wk = None if work is None else _view_path(work, "overlay work")
        return self._add_mount(MountOp(MountKind.OVERLAY, where, lower=lower, upper=up, work=wk))

    def loopback(self, up: bool = True) -> Command:
        """Bring the loopback interface ``lo`` up in a new network namespace
        (the default: a server on 127.0.0.1 inside then works); ``False``
        leaves it down, as the kernel creates it."""
        return self._change("_isolation", loopback=bool(up))

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
        return self._change("_isolation", keep_caps=frozenset(out))

    def no_new_privs(self, enable: bool = True) -> Command:
        """Set PR_SET_NO_NEW_PRIVS: exec can no longer grant privileges
        (setuid bits and file capabilities are ignored)."""
        return self._change("_isolation", no_new_privs=bool(enable))

    def seccomp(self, filter: SeccompFilter | bytes) -> Command:
        """Install a seccomp filter in the child just before exec.

        ``filter`` is a :class:`~aunshare.SeccompFilter` (compiled here, in
        pure Python) or raw classic BPF: ``bytes`` holding an array of
        ``struct sock_filter`` (what ``bwrap --seccomp FD`` reads). Called
        again, the filters stack: the kernel runs each and the most
        restrictive answer wins. Unless the child keeps every capability,
        ``no_new_privs`` is set first (the kernel requires one of the two).
        """
        if isinstance(filter, SeccompFilter):
            if filter.arch != ARCH:
                raise ValueError(f"seccomp(): the filter is for {filter.arch}, this machine is "
                                 f"{ARCH}; every call would be killed as a foreign ABI")
            filter.compile()  # refuse a program the kernel would not take, now
        elif isinstance(filter, (bytes, bytearray, memoryview)):
            filter = bytes(filter)
            check_bpf(filter)
        else:
            raise TypeError(f"seccomp() takes a SeccompFilter or raw BPF bytes, not "
                            f"{type(filter).__name__}")
        return self._change("_isolation", seccomp=(*self._isolation.seccomp, filter))

    def supervise_syscalls(self, names: str | Iterable[str]) -> Command:
        """Send these syscalls to the parent, which answers each from the
        event loop (``async for call in child.syscalls()``): seccomp user
        notification. The child is blocked in the call until answered."""
        names = (names,) if isinstance(names, str) else tuple(names)
        SeccompFilter().rule(Action.NOTIFY, names)  # unknown names, with close matches
        merged = tuple(dict.fromkeys((*self._isolation.supervise, *names)))
        return self._change("_isolation", supervise=merged)
    def landlock(self, rules: Landlock | None) -> Command:
        """Confine the child with Landlock ``rules``: only the paths and TCP
        ports they list stay reachable, for the program and everything it
        runs (see :class:`~aunshare.Landlock` and the Landlock guide).

        The parent builds the ruleset at spawn; the child sets
        ``no_new_privs`` and restricts itself just after its identity
        change, before ``execve``. The program and its libraries must be
        allowed (``execute=["/usr"]`` or similar) or exec fails with EACCES.
        :attr:`Child.landlock_report` says what was enforced. ``None``
        removes the rules.
        """
        if rules is not None:
            if not isinstance(rules, Landlock):
                raise TypeError(f"landlock() takes an aunshare.Landlock or None, got "
                                f"{type(rules).__name__}")
            if not (rules.path_rules or rules.tcp_bind or rules.tcp_connect or rules.scoped):
                raise ValueError("landlock(Landlock()) with no rule would restrict nothing: "
                                 "give paths (read_only, read_write, execute), TCP ports "
                                 "(tcp_bind, tcp_connect) or a scope")
        return self._change("_isolation", landlock=rules)

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
        limits = {r.resource: r for r in self._isolation.rlimits}
        limits[resource] = Rlimit(resource, lim, hi)
        return self._change("_isolation", rlimits=tuple(limits[r] for r in sorted(limits)))

    # -- running (the async layer) -----------------------------------------------
    async def spawn(self) -> Child:
        """Start the child; errors before exec are raised here, typed.

        Standard streams not set are inherited from the parent.
        """
        from .spawn import spawn  # the event loop's machinery: loaded on first use

        return await spawn(self.spec())

    async def status(self) -> ExitStatus:
        """Start the child and wait for it. Standard streams not set are
        inherited from the parent (see the table in the spawning guide)."""
        from .spawn import spawn

        async with await spawn(self.spec()) as child:
            return await child.wait()

    async def output(self, *, max_output: int | None = None, keep: str = "head",
                     wait_delay: float | None = None) -> Output:
        """Run the child and collect its output. Standard streams not set:
        stdin is /dev/null, stdout and stderr are piped and captured.

        ``max_output`` (bytes, per stream) keeps the first bytes of each
        stream, or the last ones with ``keep="tail"``; the rest is read and
        dropped (``Output.stdout_truncated`` / ``stderr_truncated``).
        ``wait_delay`` (seconds; default None: until every writer closed
        the pipe) bounds the reading after the child has exited, like Go's
        ``Cmd.WaitDelay``: a grandchild that keeps stdout open cannot make
        this hang (``Output.cut_short``).
        """
        from .spawn import DefaultStdio, spawn
        from .streams import check_capture

        check_capture(max_output, keep, wait_delay, "output()")
        child = await spawn(self.spec(), DefaultStdio.OUTPUT)
        return await child.wait_with_output(max_output=max_output, keep=keep,
                                            wait_delay=wait_delay)

    def copy(self) -> Command:
        """An independent copy: changing one leaves the other as it was
        (:func:`aunshare.run` adjusts a copy of the caller's Command)."""
        new = Command.__new__(Command)
        for name in Command.__slots__:
            setattr(new, name, getattr(self, name))
        return new

    # -- debugging ------------------------------------------------------------------
    def get_argv(self) -> list[bytes]:
        """argv as the child will get it (argv[0] first)."""
        return list(self._program.argv)

    def __repr__(self) -> str:
        prog, iso, ident, life = self._program, self._isolation, self._identity, self._lifetime
        text = "<Command " + " ".join(_quote(a) for a in (prog.program, *prog.args))
        extra = []
        if prog.arg0 is not None:
            extra.append(f"arg0={_quote(prog.arg0)}")
        if prog.cwd is not None:
            extra.append(f"cwd={os.fsdecode(prog.cwd)!r}")
        if ident.uid is not None:
            extra.append(f"uid={ident.uid}")
        if ident.gid is not None:
            extra.append(f"gid={ident.gid}")
        if ident.groups is not None:
            extra.append(f"groups={list(ident.groups)}")
        if ident.group_leader:
            extra.append("group_leader")
        if ident.new_session:
            extra.append("new_session")
        if ident.process_group is not None:
            extra.append(f"process_group={ident.process_group}")
        if ident.umask is not None:
            extra.append(f"umask={ident.umask:#o}")
        if prog.env_clear:
            extra.append("env_clear")
        for key, value in prog.env:
            extra.append(f"env_remove={_quote(key)}" if value is None
                         else f"env={_quote(key)}={_quote(value)}")
        for key in prog.env_pid:
            extra.append(f"env={_quote(key)}=<pid>")
        if iso.unshare:
            extra.append(f"unshare={namespace_names(iso.unshare)}")
        for ns, _ in iso.join:
            extra.append(f"setns={ns.name}")
        if iso.self_map is not None:
            extra.append(f"map_{iso.self_map.value}_user")
        elif iso.uid_maps is not None:
            extra.append(f"id_maps={len(iso.uid_maps)}+{len(iso.gid_maps or ())}")
        if iso.before_unfreeze is not None:
            extra.append("before_unfreeze")
        if iso.chroot is not None:
            extra.append(f"chroot={os.fsdecode(iso.chroot)!r}")
        if iso.pivot is not None:
            extra.append(f"pivot_root={os.fsdecode(iso.pivot.new_root)!r}")
        if iso.hostname is not None:
            extra.append(f"hostname={os.fsdecode(iso.hostname)!r}")
        if iso.mount_proc:
            extra.append("mount_proc")
        if iso.fresh_root:
            extra.append("new_root")
        for op in iso.mounts:
            extra.append(op.describe())
        if not iso.loopback:
            extra.append("loopback=False")
        if iso.keep_caps is not None:
            names = ",".join(cap_name(c) for c in sorted(iso.keep_caps))
            extra.append(f"keep_caps=[{names}]")
        if iso.no_new_privs:
            extra.append("no_new_privs")
        if iso.seccomp:
            extra.append(f"seccomp={len(iso.seccomp)}")
        if iso.supervise:
            extra.append(f"supervise_syscalls={','.join(iso.supervise)}")
        if iso.landlock is not None:
            extra.append(f"landlock=[{iso.landlock.describe()}]")
        for res, soft, hard in iso.rlimits:
            extra.append(f"rlimit[{res}]={_limit_str(soft)}:{_limit_str(hard)}")
        if life.death_signal != _signal.SIGKILL:
            extra.append("allow_daemonize" if life.death_signal is None
                         else f"death_signal={life.death_signal}")
        if life.keep_sigmask:
            extra.append("keep_sigmask")
        if life.kill_policy is not None:
            extra.append(f"kill_policy={life.kill_policy!r}")
        if life.cgroup_parent is not None:
            extra.append(f"new_cgroup={os.fsdecode(life.cgroup_parent)!r}")
        if life.cgroup_path is not None:
            extra.append(f"cgroup={os.fsdecode(life.cgroup_path)!r}")
        if life.limits is not None:
            extra.append(f"limits={life.limits!r}")
        for t, f in self._fds.fds:
            extra.append(f"fd{t}={f!r}")
        if extra:
            text += "; " + ", ".join(extra)
        return text + ">"


if sys.platform != "linux":  # pragma: no cover
    raise ImportError("aunshare runs on Linux only")
