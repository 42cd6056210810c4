"""The parent's side of a spawn, up to the clone: resolve the program,
prepare descriptors, build and encode the plan, run the executor.

Synchronous and quick; the async layer (:mod:`aunshare.child`) calls it and
awaits the rest. Whatever fails, every descriptor opened here is closed
again and a child that was started is reaped before the error is raised.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from typing import TYPE_CHECKING

from . import cgroup as _cgroup
from . import errors
from ._linux import F_SETPIPE_SZ, TIOCGPTPEER, TIOCSPTLCK, TIOCSWINSZ, WEXITED, waitid_pidfd
from .executors import get_executor
from .executors.table import Table, encode, environ_copy, environ_pointer
from .namespaces import JOIN_ORDER, Namespace
from .plan import Plan, Setup, build_plan, check_isolation

if TYPE_CHECKING:
    from .command import Command, Fd

__all__ = ["Started", "start", "release", "resolve_program"]

_O_CLOEXEC = os.O_CLOEXEC
_STDIO_NAMES = {0: "stdin", 1: "stdout", 2: "stderr"}

# Pipe capacity asked for with F_SETPIPE_SZ: fewer wake-ups and syscalls per
# byte than the default 64 KiB. Not more: an unprivileged user's pipes
# together may hold pipe-user-pages-soft (64 MiB by default); past that the
# kernel gives every new pipe of that user 2 pages. 256 KiB measured as fast
# as 1 MiB (bench/streams.py), and lets 128 children with two pipes each
# stay under the limit.
PIPE_SIZE = 256 << 10
# The window size of a pty when Stdio.pty() does not give one.
DEFAULT_PTY_SIZE = (24, 80)


class Started:
    """A child that clone3 started, and what the parent holds for it."""

    __slots__ = ("pid", "pidfd", "pipes", "writers", "ttys", "plan", "table", "report_fd",
                 "executor", "cgroup", "vfork", "reusable", "wake_fd")

    def __init__(self, pid: int, pidfd: int, pipes: dict[int, int], plan: Plan,
                 table: Table, report_fd: int, executor: str,
                 writers: frozenset[int] = frozenset(), ttys: frozenset[int] = frozenset(),
                 cgroup: bytes | None = None) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.pipes = pipes          # child's fd number -> parent's end of its pipe
        self.writers = writers      # child fd numbers whose parent end is for writing
        self.ttys = ttys            # child fd numbers whose parent end is the pty master
        self.plan = plan
        self.table = table          # must outlive the child's use of it
        self.report_fd = report_fd  # -1, or the error pipe to read until EOF
        self.executor = executor
        self.cgroup = cgroup        # the child's own cgroup directory, if any
        self.vfork = report_fd < 0  # the parent slept until the exec
        self.reusable: tuple[tuple, _Prepared] | None = None  # what release() gives back
        self.wake_fd = -1           # the handshake's wake-up pipe (write end), until used


def resolve_program(program: bytes, path_env: bytes | None, root: bytes = b"") -> bytes:
    """The path to exec: ``program`` itself when it has a slash, else the
    first executable regular file named so in the PATH directories.

    With ``root`` (the child's new root) the directories are searched
    under it and the path returned is the one the child sees.
    """
    if b"/" in program:
        return program
    path = path_env if path_env is not None else os.defpath.encode()
    dirs = list(dict.fromkeys(d or b"." for d in path.split(b":")))
    denied = None
    for d in dirs:
        candidate = d + b"/" + program
        here = root + candidate if root and candidate.startswith(b"/") else candidate
        if os.access(here, os.X_OK) and not os.path.isdir(here):
            return candidate
        if denied is None and os.path.exists(here) and not os.path.isdir(here):
            denied = here
    if denied is not None:
        raise errors.Exec(errno.EACCES, denied, "found in PATH but not executable")
    where = f" under the new root {os.fsdecode(root)!r}" if root else ""
    searched = ", ".join(os.fsdecode(d) for d in dirs) or "(empty PATH)"
    raise errors.Exec(errno.ENOENT, program, f"not found in PATH{where} (searched {searched})")


def _child_env(cmd: Command) -> list[bytes] | None:
    if not cmd._env_clear and not cmd._env:
        return None  # the child gets the parent's live environ as it is
    env: dict[bytes, bytes] = {} if cmd._env_clear else dict(os.environb)
    for k, v in cmd._env.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return [k + b"=" + v for k, v in env.items()]


def _fd_name(fd: int) -> str:
    name = _STDIO_NAMES.get(fd)
    return f"fd {fd} ({name})" if name else f"fd {fd}"


def _default_fds(cmd: Command, default_stdio: str) -> dict[int, Fd]:
    from .command import Fd

    fds = cmd._fds
    if default_stdio == "output":
        fds = dict(fds)
        fds.setdefault(0, Fd("null_r"))
        fds.setdefault(1, Fd("pipe_w"))
        fds.setdefault(2, Fd("pipe_w"))
    return fds


class _Prepared:
    """A plan and its encoded table, reusable for an identical spawn.

    Identical up to the parent's descriptor numbers: those differ between
    concurrent spawns, so the dup3 steps' sources are patched on reuse.
    """

    __slots__ = ("plan", "table", "dups")

    def __init__(self, plan: Plan, table: Table) -> None:
        self.plan = plan
        self.table = table
        self.dups = tuple(i for i, step in enumerate(plan.steps) if step.syscall == "dup3")

    def reuse(self, moves: list[tuple[int, int]]) -> None:
        """Point the dup3 steps at this spawn's sources; forget the last failure."""
        sources = [source for source, _ in moves if source >= 0]
        for index, source in zip(self.dups, sources):
            self.table.set_first_arg(index, source)
        self.table.clear_record()


# Encoded plans of recent spawns, keyed by everything a plan depends on, each
# with the tables not in use right now: a spawn takes one out while its
# child may read it, so concurrent spawns of the same command never share
# one. Bounded in keys and in tables.
_prepared: dict[tuple, list[_Prepared]] = {}
_PREPARED_MAX = 64        # keys
_IDLE_MAX = 256           # tables kept in all (about 24 KiB each with a stack)
_idle = 0


def _take(key: tuple) -> _Prepared | None:
    global _idle
    try:
        prepared = _prepared[key].pop()  # one call: safe against other threads' spawns
    except (KeyError, IndexError):
        return None
    _idle -= 1
    return prepared


def _cache_key(cmd: Command, moves: list[tuple[int, int]], vfork: bool) -> tuple | None:
    """Everything the plan of ``cmd`` depends on, or None when it must be built.

    The Command's contents, the descriptor moves, the parent's pid and euid,
    PATH when the program is looked up there, and the inherited environment:
    the vfork child reads the live ``environ`` (so its pointer is the key),
    a child running alongside the parent gets a copy (so its contents are).
    An environment edited on top of the parent's is copied on every spawn,
    so it is never cached.
    """
    if cmd._env and not cmd._env_clear:
        return None
    if cmd._uid_maps is not None or cmd._before_unfreeze is not None:
        return None  # a handshake: its wake-up pipe differs on every spawn
    if cmd._env_clear:
        env: object = None
    elif vfork:
        env = environ_pointer()
    else:
        env = tuple(environ_copy())
    path = None
    if b"/" not in cmd._program:
        path = cmd._env.get(b"PATH") if cmd._env_clear else os.environb.get(b"PATH")
    return (
        cmd._program, tuple(cmd._args), cmd._arg0, cmd._env_clear, tuple(cmd._env.items()),
        cmd._cwd, tuple([(source >= 0, target) for source, target in moves]), tuple(cmd._close),
        cmd._uid, cmd._gid,
        None if cmd._groups is None else tuple(cmd._groups), cmd._group_leader,
        cmd._pty_target(), cmd._death_signal, cmd._keep_sigmask, cmd._kill_policy,
        cmd._cgroup_parent, env, vfork, path, os.getpid(), os.geteuid(), os.getegid(),
        _isolation_key(cmd),
    )


def _isolation_key(cmd: Command) -> tuple | None:
    if not (cmd._unshare or cmd._setns or cmd._chroot or cmd._pivot or cmd._rlimits
            or cmd._keep_caps is not None or cmd._no_new_privs or cmd._cgroup_path):
        return None
    return (cmd._unshare, tuple((ns, o.fd) for ns, o in cmd._setns.items()), cmd._self_map,
            cmd._chroot, cmd._pivot, cmd._hostname, cmd._mount_proc, cmd._keep_caps,
            cmd._no_new_privs, tuple(cmd._rlimits.items()), cmd._cgroup_path)


def start(cmd: Command, default_stdio: str = "inherit", allow_vfork: bool = True) -> Started:
    """Start ``cmd``'s child. Returns once clone3 did; with the vfork path
    also once exec did. Raises a typed :class:`~aunshare.errors.Error`.

    The native executor takes the vfork path (the calling thread sleeps
    until the child has exec'd; no error pipe) when ``allow_vfork``; else it
    clones with CLONE_VM alone, returns at once, and the caller must watch
    the error pipe until EOF (``Started.report_fd``) while the table lives.
    """
    check_isolation(cmd)  # before anything is opened or looked up
    fds = _default_fds(cmd, default_stdio)
    hi = max(fds, default=2) + 1
    if hi < 3:
        hi = 3
    to_close: list[int] = []   # child-side copies, closed once the child has them
    pipes: dict[int, int] = {}  # parent ends
    writers = frozenset(t for t, spec in fds.items() if spec.kind == "pipe_r")
    ttys: frozenset[int] = frozenset()
    moves: list[tuple[int, int]] = []
    executor = get_executor()
    # The handshake: the parent writes id maps or runs a hook while the
    # child waits, so the spawning thread cannot sleep until the exec.
    handshake = cmd._uid_maps is not None or cmd._before_unfreeze is not None
    vfork = allow_vfork and executor.name == "native" and not handshake
    report_r = report_w = -1
    wake: tuple[int, int] | None = None
    join: list[tuple[Namespace, int]] = []
    cgroup_path: bytes | None = None
    cgroup_fd = -1
    try:
        pty_targets = [t for t in (0, 1, 2) if t in fds and fds[t].kind == "pty"]
        slave = -1
        if pty_targets:
            slave = _open_pty(fds, pty_targets, to_close, pipes)
            ttys = frozenset(pipes)
            if 0 in ttys:
                writers |= {0}
        for target, spec in fds.items():
            if spec.kind == "merge":
                continue  # once fd 1's source is known
            moves.append(_prepare_fd(target, spec, hi, to_close, pipes, slave))
        if 2 in fds and fds[2].kind == "merge":
            moves.append(_merge_into_stdout(moves, hi, to_close))

        # The vfork path is done with the table when start() returns, the
        # other native path once the exec is confirmed (release()): then an
        # identical later spawn can reuse it. (The portable executor's child
        # has its own copy; encoding is the cheap part of its spawn.)
        for ns in JOIN_ORDER:
            owned = cmd._setns.get(ns)
            if owned is not None:
                join.append((ns, _above(owned.fd, hi, to_close, f"the {ns.proc_name} "
                                        "namespace descriptor")))
        if handshake:
            wake = _wake_pipe(hi, to_close)

        native = executor.name == "native"
        key = None
        if native and all(fd == cmd._setns[ns].fd for ns, fd in join):
            key = _cache_key(cmd, moves, vfork)
        prepared = _take(key) if key is not None else None
        if prepared is not None:
            plan, table = prepared.plan, prepared.table
            prepared.reuse(moves)
        else:
            plan = _build(cmd, moves, native and not vfork, wake, join)
            table = encode(plan)
        if not vfork:
            try:
                report_r, report_w = os.pipe2(_O_CLOEXEC | os.O_NONBLOCK)
                if report_w < hi:  # keep it clear of every dup3 target
                    fd = fcntl.fcntl(report_w, fcntl.F_DUPFD_CLOEXEC, hi)
                    os.close(report_w)
                    report_w = fd
            except OSError as exc:
                raise errors.CreatePipe(exc.errno, "the error pipe") from None
        if cmd._cgroup_parent is not None:
            cgroup_path, cgroup_fd = _cgroup.create(cmd._cgroup_parent)
        elif cmd._cgroup_path is not None:
            cgroup_fd = _cgroup.open_dir(cmd._cgroup_path)
        pid = executor.start(table, plan.clone_flags, report_w, vfork, max(cgroup_fd, 0))
    except BaseException:
        for fd in (*to_close, *pipes.values(), report_r, report_w, cgroup_fd):
            if fd >= 0:
                os.close(fd)
        if wake is not None:
            os.close(wake[1])
        if cgroup_path is not None:
            _cgroup.remove(cgroup_path)
        raise
    for fd in (*to_close, report_w, cgroup_fd):
        if fd >= 0:
            os.close(fd)
    if pid < 0:
        for fd in (*pipes.values(), report_r):
            if fd >= 0:
                os.close(fd)
        if wake is not None:
            os.close(wake[1])
        if cgroup_path is not None:
            _cgroup.remove(cgroup_path)
        raise errors.Fork(-pid, cgroup_path or cmd._cgroup_path,
                          errors.fork_causes(-pid, plan.features))
    started = Started(pid, table.pidfd(), pipes, plan, table, report_r, executor.name,
                      writers, ttys, cgroup_path)
    if wake is not None:
        started.wake_fd = wake[1]
    if vfork:
        idx, err = table.record()
        if err:
            raise failed(started, idx, err)
        if key is not None:
            _keep(key, prepared or _Prepared(plan, table))
    elif key is not None:
        started.reusable = (key, prepared or _Prepared(plan, table))
    return started


def _above(fd: int, hi: int, to_close: list[int], what: str) -> int:
    """``fd``, or a close-on-exec copy of it above every dup3 target."""
    if fd >= hi:
        return fd
    try:
        copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, hi)
    except OSError as exc:
        raise errors.CreatePipe(exc.errno, what, "cannot move it clear of the child's "
                                "descriptors") from None
    to_close.append(copy)
    return copy


def _wake_pipe(hi: int, to_close: list[int]) -> tuple[int, int]:
    """The handshake's pipe, both ends above every dup3 target. The read end
    is closed with ``to_close`` once the child has its copy; the write end
    is the caller's to keep until the child may go on."""
    try:
        r, w = os.pipe2(_O_CLOEXEC)
    except OSError as exc:
        raise errors.CreatePipe(exc.errno, "the wake-up pipe") from None
    to_close.append(r)
    try:
        moved = _above(w, hi, [], "the wake-up pipe")
    finally:
        if w < hi:
            os.close(w)
    try:
        return _above(r, hi, to_close, "the wake-up pipe"), moved
    except BaseException:
        os.close(moved)
        raise


def _open_pty(fds: dict[int, Fd], targets: list[int], to_close: list[int],
              pipes: dict[int, int]) -> int:
    """Open a pty for the standard streams in ``targets``; return the slave.

    The parent's ends go to ``pipes``: the master for stdin (writing) and a
    copy for the first of stdout/stderr (reading). Both are opened
    O_NOCTTY, so the parent never acquires the terminal itself.
    """
    what = ", ".join(_fd_name(t) for t in targets)
    try:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | _O_CLOEXEC)
    except OSError as exc:
        raise errors.StdioError(exc.errno, "/dev/ptmx", f"cannot open a pty for {what}",
                                action="open") from None
    to_close.append(master)  # until it is in pipes (both lists are closed on failure)
    size = list(DEFAULT_PTY_SIZE)
    for t in targets:
        for i, value in enumerate(fds[t].arg):
            if value is not None:
                size[i] = value
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt()
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | _O_CLOEXEC)
        to_close.append(slave)
        fcntl.ioctl(master, TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
        ends = [master]
        reader = next((t for t in targets if t != 0), None)
        if 0 in targets and reader is not None:
            ends.append(os.dup(master))  # reader and writer close independently
        to_close.remove(master)
        if 0 in targets:
            pipes[0] = ends.pop()
        if reader is not None:
            pipes[reader] = ends.pop()
    except OSError as exc:
        raise errors.StdioError(exc.errno, _fd_name(targets[0]),
                                "cannot set up its pty") from None
    return slave


def _merge_into_stdout(moves: list[tuple[int, int]], hi: int,
                       to_close: list[int]) -> tuple[int, int]:
    """The move that gives fd 2 the same source as fd 1 (2>&1)."""
    source = next((s for s, t in moves if t == 1), -1)
    if source < 0:  # stdout inherited: the parent's own fd 1, moved above the targets
        try:
            source = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, hi)
        except OSError as exc:
            raise errors.StdioError(exc.errno, _fd_name(2),
                                    "merge_into_stdout: the parent's fd 1 is not open "
                                    "to be inherited as stdout") from None
        to_close.append(source)
    return (source, 2)


def _keep(key: tuple, prepared: _Prepared) -> None:
    global _idle
    free = _prepared.get(key)
    if free is None:
        free = _prepared[key] = []
        if len(_prepared) > _PREPARED_MAX:
            try:  # the oldest key goes (tolerating another thread's spawn meanwhile)
                _idle -= len(_prepared.pop(next(iter(_prepared))))
            except (RuntimeError, KeyError, StopIteration):
                pass
    if _idle < _IDLE_MAX:
        free.append(prepared)
        _idle += 1


def release(started: Started) -> None:
    """The child has exec'd (its error pipe reached EOF): it no longer reads
    its table, which an identical spawn may now reuse."""
    reusable, started.reusable = started.reusable, None
    if reusable is not None:
        _keep(*reusable)


def _prepare_fd(target: int, spec: Fd, hi: int, to_close: list[int],
                pipes: dict[int, int], pty_slave: int = -1) -> tuple[int, int]:
    """Open what ``target`` needs and return ``(source, target)`` with the
    source above every target; returns ``(-1, target)`` for nothing to do."""
    kind = spec.kind
    if kind == "inherit":
        if target < 3:
            return (-1, target)
        source = target
    elif kind == "pipe_r" or kind == "pipe_w":
        try:
            r, w = os.pipe2(_O_CLOEXEC)
        except OSError as exc:
            raise errors.CreatePipe(exc.errno, _fd_name(target)) from None
        try:
            fcntl.fcntl(r, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # EPERM past the user's pipe quota: the default size works too
        if kind == "pipe_r":
            source, pipes[target] = r, w
        else:
            source, pipes[target] = w, r
        to_close.append(source)
    elif kind == "pty":
        source = pty_slave
    elif kind == "path":
        path, mode = spec.arg
        flags = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND}[mode]
        try:
            source = os.open(path, flags | os.O_NOCTTY | _O_CLOEXEC, 0o666)
        except OSError as exc:
            raise errors.StdioError(exc.errno, path, f"to give it to the child as "
                                    f"{_fd_name(target)}", action="open") from None
        to_close.append(source)
    elif kind == "null_r" or kind == "null_w":
        try:
            source = os.open("/dev/null", (os.O_RDONLY if kind == "null_r" else os.O_WRONLY)
                             | _O_CLOEXEC)
        except OSError as exc:
            raise errors.StdioError(exc.errno, _fd_name(target),
                                    "cannot open /dev/null") from None
        to_close.append(source)
    else:  # "fd" / "file"
        source = spec._source_fd()  # type: ignore[assignment]
    if source < hi:
        # Move the source above every target so no dup3 clobbers it.
        try:
            source = fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, hi)
        except OSError as exc:
            raise errors.StdioError(
                exc.errno, _fd_name(target),
                f"the parent's fd {source} given for it is not usable") from None
        to_close.append(source)
    elif kind in ("fd", "file"):
        try:
            os.fstat(source)
        except OSError as exc:
            raise errors.StdioError(
                exc.errno, _fd_name(target),
                f"the parent's fd {source} given for it is not open") from None
    return (source, target)


def _build(cmd: Command, moves: list[tuple[int, int]], shared_memory: bool = False,
           wake: tuple[int, int] | None = None,
           join: list[tuple[Namespace, int]] | None = None) -> Plan:
    if b"PATH" in cmd._env:
        path_env = cmd._env[b"PATH"]  # None when removed: the default path
    else:
        path_env = None if cmd._env_clear else os.environb.get(b"PATH")
    root = cmd._chroot if cmd._chroot is not None else cmd._pivot[0] if cmd._pivot else b""
    if root and not os.path.isdir(root):  # say so, rather than "program not found"
        what = "chroot" if cmd._chroot is not None else "pivot_root"
        err = errno.ENOTDIR if os.path.exists(root) else errno.ENOENT
        raise errors.ChangeRoot(err, root, "the new root must be an existing directory",
                                action=what)
    program = resolve_program(cmd._program, path_env, root.rstrip(b"/"))
    envp = _child_env(cmd)
    if envp is None and shared_memory:
        # A CLONE_VM child running alongside the parent must not read the
        # live environ, which the parent may reallocate meanwhile.
        envp = environ_copy()
    setup = Setup(program, cmd.get_argv(), envp, [m for m in moves if m[0] >= 0],
                  os.getpid(), os.geteuid(), os.getegid(), wake, join or (),
                  _cap_last() if cmd._keep_caps is not None else 40)
    return build_plan(cmd, setup)


_CAP_LAST: list[int] = []


def _cap_last() -> int:
    """The highest capability number this kernel knows."""
    if not _CAP_LAST:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _CAP_LAST.append(int(f.read()))
        except (OSError, ValueError):
            _CAP_LAST.append(40)  # Linux 5.9 and later
    return _CAP_LAST[0]


def failed(started: Started, idx: int, err: int) -> errors.Error:
    """Reap a child that reported a failing step; close what the parent
    holds for it; return the step's typed error."""
    try:
        waitid_pidfd(started.pidfd, WEXITED)  # it has exited (127): reap now
    except OSError:
        pass
    for fd in (started.pidfd, *started.pipes.values(), started.report_fd, started.wake_fd):
        if fd >= 0:
            os.close(fd)
    started.pipes = {}
    started.pidfd = started.report_fd = started.wake_fd = -1
    if started.cgroup is not None:
        # The child never reached exec, so it started nothing: its cgroup is empty.
        _cgroup.remove(started.cgroup)
        started.cgroup = None
    steps = started.plan.steps
    if not 0 <= idx < len(steps):
        return errors.UnknownError(f"the child reported step {idx} failing with "
                                   f"errno {err}, but the plan has {len(steps)} steps")
    step = steps[idx]
    if issubclass(step.error, errors._OSError):
        return step.error(err, step.subject, step.detail, action=step.action)
    return errors.UnknownError(f"{step.action} {step.subject}: errno {err}")
