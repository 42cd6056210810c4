"""The parent's side of a spawn, up to the clone: resolve the program,
prepare descriptors, the cgroup and a Landlock ruleset, build (or reuse) and encode the plan,
run the executor.

Synchronous and quick; :mod:`aunshare.spawn` calls :func:`start` and awaits
the rest. Everything the parent holds for a child being started lives in
one :class:`Pending`, whose teardown is the only one: on any failure, in
:func:`start` or later, the child (if any) is killed and reaped, every
descriptor closed and its own cgroup removed.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import signal as _signal
import stat
import threading

from . import cgroup as _cgroup
from . import errors, rulesets
from ._linux import WEXITED, libc, pidfd_send_signal, pipe_above, waitid_pidfd
from .descriptors import Opened, above, error_pipe, prepare_fds, status_pipe, wake_pipe
from .executors import get_executor
from .executors.init import init_memfd
from .executors.table import Table, encode, environ_copy, environ_pointer
from .fds import Fd, FdKind
from .landlock import LandlockReport
from .namespaces import Namespace
from .plan import Plan, Setup, build_plan
from .spec import MountKind, Spec

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from .executors import Executor

__all__ = ["DefaultStdio", "Pending", "start", "resolve_program", "stop_aux"]


def stop_aux(aux: list[tuple[int, int]]) -> None:
    """SIGKILL and reap helper processes ``(pid, pidfd)`` that lived as long
    as a child (pasta), and close their pidfds. SIGKILL is prompt: the reap
    blocks only while the kernel tears the process down."""
    for _, pidfd in aux:
        try:
            pidfd_send_signal(pidfd, _signal.SIGKILL)
        except OSError:
            pass  # already exited
        # An event loop that polled the pidfd may have made it non-blocking
        # (uvloop does): waitid would then say EAGAIN instead of waiting.
        os.set_blocking(pidfd, True)
        try:
            waitid_pidfd(pidfd, WEXITED)
        except OSError:
            pass
        os.close(pidfd)
    aux.clear()


class DefaultStdio(enum.Enum):
    """What standard streams a spec leaves unset get."""

    INHERIT = "inherit"
    """The parent's own (spawn, status, run)."""
    OUTPUT = "output"
    """stdin /dev/null, stdout and stderr piped (output)."""


_OUTPUT_DEFAULTS = {0: Fd(FdKind.NULL_READ), 1: Fd(FdKind.PIPE_FROM_CHILD),
                    2: Fd(FdKind.PIPE_FROM_CHILD)}


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


def child_env(spec: Spec) -> list[bytes] | None:
    """The child's environment, or None for the parent's live one unchanged."""
    prog = spec.program
    if not prog.env_clear and not prog.env and not prog.env_pid:
        return None
    env: dict[bytes, bytes] = {} if prog.env_clear else dict(os.environb)
    for k, v in prog.env:
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    for k in prog.env_pid:  # the plan appends these, with the pid filled in
        env.pop(k, None)
    return [k + b"=" + v for k, v in env.items()]


class Pending:
    """A child being started, and everything the parent holds for it.

    Owned here until :meth:`hand_over` gives the pipes to a Child; every
    failure path ends in :meth:`close` (nothing started, or the child
    already reaped) or :meth:`abandon` (kill and reap it first).
    """

    # Where a spawn starts, as class attributes: a spawn sets only what
    # differs (each store costs the spawn path, run with cold caches).
    pid = 0
    pidfd = -1
    plan: Plan | None = None
    table: Table | None = None  # must outlive the child's use of it
    vfork = False          # the spawning thread slept until the exec
    report_fd = -1         # the error pipe to read until EOF, if any
    # With an init: the pipe it writes the program's wait status on (read end).
    status_fd = -1
    wake_fd = -1           # the handshake's wake-up pipe (write end)
    cgroup: bytes | None = None  # the child's own cgroup, if any
    cgroup_fd = -1
    # Where clone3 is refused: the cgroup the handshake moves the child into.
    join_cgroup: bytes | None = None
    reusable: tuple[object, _Prepared] | None = None
    # Syscall supervision: the pipe whose EOF says the child has moved
    # its seccomp listener to listener_target (its copy of the pipe's
    # write end), then the parent's copy of the listener.
    ready_fd = -1
    listener_target = -1
    listener_fd = -1
    errfd_child = -1
    landlock_report: LandlockReport | None = None  # with Command.landlock()
    # A credential-changing child may still share our memory (see
    # _dumpable_enter): released once it has exec'd or is gone.
    holds_mm = False

    def __init__(self, spec: Spec, executor: Executor) -> None:
        self.spec = spec
        self.opened = Opened()
        self.executor = executor
        # (pid, pidfd) of helpers that live as long as the child (pasta for
        # user_network): stopped by close(), or handed to the Child.
        self.aux: list[tuple[int, int]] = []
        # supervised calls seen before the exec was confirmed, not the plan's
        self.early: list[tuple[int, int, int, tuple[int, ...]]] = []

    def close(self) -> None:
        """Close every descriptor held, stop the helpers (:attr:`aux`) and
        remove the child's own cgroup. For a child that never existed or
        has been reaped; idempotent."""
        if self.holds_mm:
            self.holds_mm = False
            _dumpable_leave()
        if self.aux:
            stop_aux(self.aux)
        self.opened.close()
        for name in ("pidfd", "report_fd", "status_fd", "wake_fd", "cgroup_fd", "ready_fd",
                     "listener_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)
        if self.cgroup is not None:
            # Nothing it started is left (never exec'd, or killed and waited).
            _cgroup.remove(self.cgroup)
            self.cgroup = None

    def fail(self, idx: int, err: int) -> errors.Error:
        """The child reported step ``idx`` failing with ``err`` and exited:
        reap it, close everything, and return the step's typed error."""
        self._reap()
        dirs = _cgroup.v1_dirs(self.cgroup) if self.cgroup is not None else ()
        self.close()
        steps = self.plan.steps if self.plan is not None else ()
        if not 0 <= idx < len(steps):
            return errors.UnknownError(f"the child reported step {idx} failing with "
                                       f"errno {err}, but the plan has {len(steps)} steps")
        step = steps[idx]
        subject = step.subject
        if idx < len(dirs) and step.syscall == "write":  # a reused plan names another's
            subject = dirs[idx]
        if issubclass(step.error, errors._OSError):
            return step.error(err, subject, step.detail, action=step.action)
        return errors.UnknownError(f"{step.action} {step.subject}: errno {err}")

    def _reap(self) -> None:
        if self.pidfd >= 0:
            try:
                waitid_pidfd(self.pidfd, WEXITED)
            except OSError:
                pass

    async def abandon(self) -> None:
        """Kill and reap a child nobody will see, and anything it may
        already have started; then :meth:`close`."""
        self.kill()
        if self.cgroup is not None:
            await _cgroup.wait_empty(self.cgroup)
        self.close()

    def kill(self) -> None:
        """:meth:`abandon` up to waiting for its cgroup to empty: SIGKILL
        the child and what it may have started, and reap it. For a child
        without a cgroup of its own, ``kill()`` then :meth:`close` is the
        whole of :meth:`abandon`, with no event loop."""
        if self.pidfd >= 0:
            # It may have exec'd and forked before the error pipe's EOF was
            # seen. Unreaped, its pid (the group's id) is still its own.
            if self.plan is not None and self.plan.leads_group:
                try:
                    os.killpg(self.pid, _signal.SIGKILL)
                except OSError:
                    pass
            if self.cgroup is not None:
                _cgroup.kill(self.cgroup)
            try:
                pidfd_send_signal(self.pidfd, _signal.SIGKILL)
            except OSError:
                pass
            self._reap()  # SIGKILL is prompt

    def exec_confirmed(self) -> None:
        """The error pipe reached EOF: the child has exec'd and no longer
        reads its table, which an identical spawn may now reuse."""
        fd, self.report_fd = self.report_fd, -1
        if fd >= 0:
            os.close(fd)
        if self.holds_mm:  # it has its own memory now
            self.holds_mm = False
            _dumpable_leave()
        reusable, self.reusable = self.reusable, None
        if reusable is not None:
            _keep(*reusable)

    def hand_over(self) -> tuple[dict[int, int], frozenset[int], frozenset[int]]:
        """Give the caller the parent's ends ``(fd -> end, writers, ttys)``;
        the pidfd and cgroup are read off this object and cleared by the caller."""
        opened = self.opened
        ends, opened.parent_ends = opened.parent_ends, {}
        return ends, frozenset(opened.writers), frozenset(opened.ttys)


class _Prepared:
    """A plan and its encoded table, reusable for an identical spawn.

    Identical up to the parent's descriptor numbers: those differ between
    concurrent spawns, so the dup3 steps' sources, the cgroup v1 ``tasks``
    descriptors (the first steps) and the Landlock ruleset (built afresh for
    every spawn) are patched on reuse. The steps' subjects still name the
    directories of the spawn that built the plan: :meth:`Pending.fail`
    names this spawn's.
    """

    __slots__ = ("plan", "table", "dups", "landlock", "credentials")

    def __init__(self, plan: Plan, table: Table, credentials: bool | None = None) -> None:
        self.plan = plan
        self.table = table
        # changes_credentials(plan), worked out once (a scan of every step)
        self.credentials = changes_credentials(plan) if credentials is None else credentials
        self.dups = tuple(i for i, step in enumerate(plan.steps) if step.syscall == "dup3")
        self.landlock = next((i for i, step in enumerate(plan.steps)
                              if step.syscall == "landlock_restrict_self"), -1)

    def reuse(self, moves: list[tuple[int, int]], landlock_fd: int = -1,
              cgroup_tasks: tuple[tuple[bytes, int], ...] = ()) -> None:
        """Point the dup3 steps at this spawn's sources, the cgroup v1 steps
        (steps 0 to n-1) at its ``tasks`` descriptors and the Landlock step
        at its ruleset; forget the last failure."""
        for index, (_, fd) in enumerate(cgroup_tasks):
            self.table.set_first_arg(index, fd)
        if moves:
            for index, (source, _) in zip(self.dups, moves):
                self.table.set_first_arg(index, source)
        if self.landlock >= 0:
            self.table.set_first_arg(self.landlock, landlock_fd)
        self.table.clear_record()


# Encoded plans of recent spawns, keyed by the spec and the facts of the
# moment a plan depends on (see _cache_key), each with the tables not in use
# right now: a spawn takes one out while its child may read it, so
# concurrent spawns of the same command never share one. Bounded in keys
# and in tables.
_prepared: dict[object, list[_Prepared]] = {}
_PREPARED_MAX = 64        # keys
_IDLE_MAX = 256           # tables kept in all (about 24 KiB each with a stack)
_idle = 0


def _take(key: object) -> _Prepared | None:
    global _idle
    try:
        prepared = _prepared[key].pop()  # one call: safe against other threads' spawns
    except (KeyError, IndexError):
        return None
    _idle -= 1
    return prepared


def _keep(key: object, prepared: _Prepared) -> None:
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


def _cache_key(spec: Spec, moves: list[tuple[int, int]], default_stdio: DefaultStdio,
               vfork: bool, landlock: bool = False, view: object = None) -> object | None:
    """The spec and the facts of this moment its plan depends on, or None
    when the plan must be built afresh.

    The facts: the descriptor targets (the sources are patched on reuse),
    the default stdio, whether a Landlock ruleset is enforced (its descriptor
    is patched on reuse), what the parent found for the filesystem view
    (``view``: bind sources, umask), the parent's pid, euid and egid, PATH when the
    program is looked up there, and the inherited environment (the vfork
    child reads the live ``environ``, so its pointer is the key; a child
    running alongside the parent gets a copy, so its contents are). An
    environment edited on top of the parent's is copied on every spawn, so
    it is never cached; nor is a handshake (its pipe differs every time),
    nor a spec holding descriptors of its own (the cache would keep them
    open after the caller dropped the Command).
    """
    prog = spec.program
    if (prog.env and not prog.env_clear) or spec.needs_handshake or spec.owns_descriptors:
        return None
    if prog.env_clear:
        env: object = None
    elif vfork:
        env = environ_pointer()
    else:
        env = tuple(environ_copy())
    path = None
    if b"/" not in prog.program:
        path = prog.env_value(b"PATH")[1] if prog.env_clear else os.environb.get(b"PATH")
    # (the default stdio as a bool: an Enum hashes in Python, twice per spawn)
    return (spec, tuple([target for _, target in moves]) if moves else (),
            default_stdio is DefaultStdio.OUTPUT, env, vfork, path,
            os.getpid(), os.geteuid(), os.getegid(), landlock, view)


def start(spec: Spec, default_stdio: DefaultStdio = DefaultStdio.INHERIT,
          allow_vfork: bool = True) -> Pending:
    """Start the child ``spec`` describes. Returns once clone3 did; with the
    vfork path also once exec did. Raises a typed :class:`~aunshare.errors.Error`,
    leaving nothing behind.

    The executor takes the vfork path (the calling thread sleeps until the
    child has exec'd; no error pipe) when ``allow_vfork`` and it can; else
    the child runs alongside, and the caller must watch ``report_fd`` until
    EOF (then :meth:`Pending.exec_confirmed`) while the table lives.
    """
    executor = get_executor()
    pending = Pending(spec, executor)
    life = spec.lifetime
    in_cgroup = spec.own_cgroup or life.cgroup_path is not None
    into_cgroup = executor.into_cgroup
    init = life.init_process
    cgroup_dirs: tuple[bytes, ...] = ()
    try:
        if life.limits is not None:
            # Where only cgroup v1 has the controllers, the child moves
            # itself into each directory, as the first steps of its plan.
            pending.cgroup, pending.cgroup_fd, on_v2 = _cgroup.create_limited(
                life.cgroup_parent, life.limits)
            if not on_v2:
                cgroup_dirs = _cgroup.v1_dirs(pending.cgroup)
        elif life.cgroup_parent is not None:
            pending.cgroup, pending.cgroup_fd = _cgroup.create(life.cgroup_parent)
        elif life.cgroup_path is not None:
            pending.cgroup_fd = _cgroup.open_dir(life.cgroup_path)
        handshake = spec.needs_handshake or (in_cgroup and not into_cgroup and not cgroup_dirs)
        vfork = pending.vfork = allow_vfork and executor.can_vfork and not handshake
        opened = pending.opened
        if spec.fds.fds or default_stdio is DefaultStdio.OUTPUT:
            fds = dict(spec.fds.fds)
            if default_stdio is DefaultStdio.OUTPUT:
                for target, fd in _OUTPUT_DEFAULTS.items():
                    fds.setdefault(target, fd)
            moves, hi = prepare_fds(fds, opened)
        else:  # every descriptor inherited: nothing to open
            moves, hi = [], 3
        errfd = init_fd = report_target = status_target = -1
        if init:
            # The program execs after the child's own exec (of the init): only
            # the error pipe can tell how that went, on the vfork path too.
            # Its write end gets a target of its own, the first above the
            # caller's, for the init to report the program's exec on; the
            # next one is the status pipe's, for the program's wait status.
            report_target, status_target, hi = hi, hi + 1, hi + 2
            pending.report_fd, errfd = error_pipe(hi)
            opened.child_side.append(errfd)
            moves.append((errfd, report_target))
            pending.status_fd, status_w = status_pipe(hi)
            opened.child_side.append(status_w)
            moves.append((status_w, status_target))
            init_fd = above(_init_memfd(), hi, opened, "the init's memfd")
        join = [(ns, above(owned.fd, hi, opened, f"the {ns.proc_name} namespace descriptor"))
                for ns, owned in spec.isolation.join] if spec.isolation.join else []
        wake = None
        if handshake:
            wake = wake_pipe(hi, opened)
            pending.wake_fd = wake[1]
        if spec.isolation.supervise:
            pending.ready_fd, ready_w = pipe_above(hi, os.O_NONBLOCK)
            opened.child_side.append(ready_w)
            pending.listener_target = ready_w
        # The tasks file of each cgroup v1 directory, for the child to write
        # 0 to (its plan's first steps); opened here, so that a cached plan
        # fits every spawn: only these numbers differ, patched on reuse.
        cgroup_tasks = (tuple([(d, _cgroup.open_tasks(d, hi, opened)) for d in cgroup_dirs])
                        if cgroup_dirs else ())
        landlock_fd = -1
        if spec.isolation.landlock is not None:
            landlock_fd, pending.landlock_report = rulesets.prepare(spec.isolation.landlock,
                                                                     hi, opened)

        view = view_facts(spec) if spec.isolation.mounts or spec.isolation.fresh_root else None
        key = None
        shares_memory = executor.shares_memory
        reset_caught = () if into_cgroup or not life.keep_sigmask else caught_signals()
        # No plan reuse with a handshake, also one the spec does not imply (a
        # cgroup joined through cgroup.procs): its wake pipe differs every time.
        # (also: a supervised child's plan names this spawn's listener descriptor)
        if (shares_memory and not reset_caught and not handshake
                and not spec.isolation.supervise
                and (not init or init_fd == _init_memfd())
                and (not join or all(fd == owned.fd for (_, fd), (_, owned)
                                     in zip(join, spec.isolation.join)))):
            key = _cache_key(spec, moves, default_stdio, vfork, landlock_fd >= 0, view)
            if key is not None and cgroup_tasks:  # how many v1 directories it joins
                key = (key, len(cgroup_tasks))
            if key is not None and init:  # the plan names the memfd by number
                key = (key, init_fd)
        prepared = _take(key) if key is not None else None
        if prepared is not None:
            plan, table = prepared.plan, prepared.table
            prepared.reuse(moves, landlock_fd, cgroup_tasks)
        else:
            plan = _build(spec, moves, shares_memory and not vfork, wake, join, into_cgroup,
                          reset_caught, landlock_fd, init_fd, report_target, view,
                          status_target, cgroup_tasks, pending.listener_target)
            table = encode(plan)
        pending.plan, pending.table = plan, table
        if not vfork and errfd < 0:
            pending.report_fd, errfd = error_pipe(hi)
            opened.child_side.append(errfd)
            pending.errfd_child = errfd
        if in_cgroup and not into_cgroup and not cgroup_dirs:
            pending.join_cgroup = pending.cgroup or life.cgroup_path
        credentials = (prepared.credentials if prepared is not None
                       else shares_memory and changes_credentials(plan))
        if shares_memory and credentials:
            _dumpable_enter()
            pending.holds_mm = True
        pid = executor.start(table, plan.clone_flags, errfd, vfork, max(pending.cgroup_fd, 0))
        if vfork and pending.holds_mm:  # exec'd or gone: the memory is ours alone again
            pending.holds_mm = False
            _dumpable_leave()
        if opened.child_side:
            opened.close_child_side()
        if pending.cgroup_fd >= 0:
            os.close(pending.cgroup_fd)
            pending.cgroup_fd = -1
        if pid < 0:
            raise errors.Fork(-pid, pending.cgroup or life.cgroup_parent or life.cgroup_path,
                              errors.fork_causes(-pid, plan.clone_flags, in_cgroup))
        pending.pid, pending.pidfd = pid, table.pidfd()
    except BaseException:
        pending.close()
        raise
    if vfork:
        idx, err = table.record()
        if err:
            raise pending.fail(idx, err)
        if key is not None:
            _keep(key, prepared or _Prepared(plan, table, credentials))
    elif key is not None:
        pending.reusable = (key, prepared or _Prepared(plan, table, credentials))
    return pending


# Credentials and the shared memory. The kernel's commit_creds() makes the
# *mm* non-dumpable (fs.suid_dumpable, usually 0) when a task's euid, egid,
# fsuid or fsgid change or its capabilities grow. A native child shares
# our mm until its exec (CLONE_VM), so its setresuid would leave this
# process non-dumpable for good: /proc/PID owned by root, ptrace and
# /proc/PID/ns/* refused to its own uid, no core dumps. The child must not
# undo it itself (between its setuid and its exec the new, weaker uid could
# then ptrace it and reach our memory), so the parent does, once no child
# that changes credentials can still be running in this mm: a count of
# those in flight, the value saved when it leaves 0, put back when it
# returns to 0 (exec seen, or the child gone).
_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4
# Steps that go through commit_creds() in a way that may change the
# effective ids or raise capabilities (setns into a user namespace
# does): conservative, a step too many costs two prctl calls.
_CREDENTIAL_STEPS = frozenset({"setgroups", "setresgid", "setresuid", "capset", "setns"})
_dumpable_lock = threading.Lock()
_dumpable_inflight = 0
_dumpable_saved = -1


def changes_credentials(plan: Plan) -> bool:
    """Whether the child of ``plan`` may change its credentials before its exec."""
    return not _CREDENTIAL_STEPS.isdisjoint([step.syscall for step in plan.steps])


def _dumpable_enter() -> None:
    """A child that changes credentials is about to share our memory."""
    global _dumpable_inflight, _dumpable_saved
    with _dumpable_lock:
        if _dumpable_inflight == 0:
            _dumpable_saved = libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0)
        _dumpable_inflight += 1


def _dumpable_leave() -> None:
    """One such child no longer shares our memory: when it was the last,
    put back the dumpable value from before the first."""
    global _dumpable_inflight
    with _dumpable_lock:
        _dumpable_inflight -= 1
        # 0 or 1 only: prctl cannot set 2 (suid_dumpable's "suidsafe").
        if (_dumpable_inflight == 0 and _dumpable_saved in (0, 1)
                and libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) != _dumpable_saved):
            libc.prctl(_PR_SET_DUMPABLE, _dumpable_saved, 0, 0, 0)


def _dumpable_after_fork() -> None:
    """In a forked copy no child of ours shares its memory: nothing is in
    flight, and the value from before counts again."""
    global _dumpable_lock, _dumpable_inflight
    _dumpable_lock = threading.Lock()
    if _dumpable_inflight:
        _dumpable_inflight = 0
        if _dumpable_saved in (0, 1):
            libc.prctl(_PR_SET_DUMPABLE, _dumpable_saved, 0, 0, 0)


os.register_at_fork(after_in_child=_dumpable_after_fork)


def _init_memfd() -> int:
    """The memfd holding the init (made once per process), or a typed error."""
    try:
        return init_memfd()
    except (OSError, NotImplementedError) as exc:
        err = exc.errno if isinstance(exc, OSError) and exc.errno else errno.ENOSYS
        raise errors.Exec(err, "the init of the pid namespace",
                          f"cannot place it in a memfd ({exc}); run without "
                          "init_process(True)") from None


def caught_signals() -> tuple[int, ...]:
    """The signals this process has a handler for (not SIG_DFL or SIG_IGN)."""
    out = []
    old = ctypes.create_string_buffer(152)  # struct sigaction; the handler comes first
    for sig in range(1, 65):
        if sig in (_signal.SIGKILL, _signal.SIGSTOP) or _sigaction(sig, None, old) != 0:
            continue
        if ctypes.c_void_p.from_buffer(old).value not in (None, 0, 1):
            out.append(sig)
    return tuple(out)


_sigaction = libc.sigaction
_sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def view_facts(spec: Spec) -> tuple[tuple[str, ...], int]:
    """What the filesystem view's plan depends on in the parent's world:
    per operation, what a bind's source is (``"dir"``, ``"file"``, or
    ``"missing"`` for an optional one), and the umask to restore.

    Raises :class:`~aunshare.Mount` for a bind source that is missing (and
    not optional) or a socket, and, without ``new_root()``, for a
    destination on the host's own file system that does not exist (the
    child creates nothing there).
    """
    iso = spec.isolation
    kinds: list[str] = []
    ours: list[bytes] = []  # destinations of the view's mounts so far
    for i, op in enumerate(iso.mounts):
        kind = ""
        if op.kind is MountKind.BIND:
            assert op.source is not None
            target = errors.MountTarget(op.describe(), "stat", op.source, op.dest, i)
            try:
                mode = os.stat(op.source).st_mode
            except OSError as exc:
                if op.optional and exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    kinds.append("missing")
                    continue
                raise errors.Mount(exc.errno or errno.ENOENT, target,
                                   "the bind's source must exist on the host (optional=True "
                                   "skips a missing one)", action="check the source") from None
            if stat.S_ISSOCK(mode):
                raise errors.Mount(errno.EINVAL, target, "the source is a socket; bind the "
                                   "directory that holds it instead", action="check the source")
            kind = "dir" if stat.S_ISDIR(mode) else "file"
        if not iso.fresh_root and op.kind in _MOUNTING and not any(
                op.dest != m and (m == b"/" or op.dest.startswith(m + b"/")) for m in ours):
            if not os.path.lexists(op.dest):
                raise errors.Mount(errno.ENOENT, errors.MountTarget(op.describe(), "stat", None,
                                                                    op.dest, i),
                                   "without new_root() the destination on the host's file "
                                   "system must exist (the child creates nothing there): "
                                   "create it, mount a tmpfs() above it first, or call "
                                   "new_root()", action="check the destination")
        if op.kind in _MOUNTING and op.kind is not MountKind.REMOUNT_RO:
            ours.append(op.dest)  # the child may create things below these
        kinds.append(kind)
    return tuple(kinds), _umask()


def sandbox_lookup(spec: Spec, candidates: tuple[bytes, ...]) -> bytes:
    """The first of ``candidates`` (paths inside a new root) that names an
    executable file on the host through the view's binds and symlinks; the
    last one when none does (the exec then says it is missing)."""
    mounts = spec.isolation.mounts
    for cand in candidates:
        path = cand
        for _ in range(8):  # symlinks of the view may lead to binds, and on
            for op in reversed(mounts):
                dest = op.dest
                if op.kind in (MountKind.BIND, MountKind.SYMLINK) and (
                        path == dest or path.startswith(dest + b"/")) and op.source:
                    rest = path[len(dest):]
                    target = op.source
                    if op.kind is MountKind.SYMLINK and not target.startswith(b"/"):
                        target = os.path.normpath(os.path.dirname(dest) + b"/" + target)
                    path = target + rest
                    break
            else:
                break
            if op.kind is MountKind.BIND:
                if os.access(path, os.X_OK) and not os.path.isdir(path):
                    return cand
                break
    return candidates[-1]


_MOUNTING = frozenset({MountKind.BIND, MountKind.TMPFS, MountKind.OVERLAY, MountKind.PROC,
                       MountKind.DEV, MountKind.FILE, MountKind.REMOUNT_RO})


def _umask() -> int:
    """This process's umask, read without changing it."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # Linux before 4.7: the racy way
    os.umask(old)
    return old


def _build(spec: Spec, moves: list[tuple[int, int]], shared_memory: bool,
           wake: tuple[int, int] | None, join: list[tuple[Namespace, int]],
           into_cgroup: bool = True, reset_caught: tuple[int, ...] = (),
           landlock_fd: int = -1, init_fd: int = -1, report_target: int = -1,
           view: tuple[tuple[str, ...], int] | None = None,
           status_target: int = -1, cgroup_tasks: tuple[tuple[bytes, int], ...] = (),
           listener_fd: int = -1) -> Plan:
    prog, iso = spec.program, spec.isolation
    found, path_env = prog.env_value(b"PATH")
    if not found:
        path_env = None if prog.env_clear else os.environb.get(b"PATH")
    if iso.fresh_root:
        # Only the child sees the new root: it tries each PATH entry itself.
        if b"/" in prog.program:
            search: tuple[bytes, ...] = ()
            program = prog.program
        else:
            dirs = (path_env if path_env is not None else os.defpath.encode()).split(b":")
            cands = tuple(dict.fromkeys(d.rstrip(b"/") + b"/" + prog.program
                                        for d in dirs if d.startswith(b"/")))
            if not cands:
                raise errors.Exec(errno.ENOENT, prog.program, "no absolute directory in PATH "
                                  "to look it up in inside the new root")
            search, program = cands[:-1], cands[-1]
        kinds, umask = view if view is not None else view_facts(spec)
        if spec.lifetime.init_process and search:
            # The init execs one path: find it here, through the view's binds.
            program, search = sandbox_lookup(spec, (*search, program)), ()
    else:
        if view is None and iso.mounts:
            view = view_facts(spec)
        kinds, umask = view if view is not None else ((), 0o022)
        root = iso.new_root or b""
        if root and not os.path.isdir(root):  # say so, rather than "program not found"
            what = "chroot" if iso.chroot is not None else "pivot_root"
            err = errno.ENOTDIR if os.path.exists(root) else errno.ENOENT
            raise errors.ChangeRoot(err, root, "the new root must be an existing directory",
                                    action=what)
        program = resolve_program(prog.program, path_env, root.rstrip(b"/"))
        search = ()
    envp = child_env(spec)
    if envp is None and shared_memory:
        # A CLONE_VM child running alongside the parent must not read the
        # live environ, which the parent may reallocate meanwhile.
        envp = environ_copy()
    setup = Setup(program, prog.argv, envp, moves, os.getpid(), os.geteuid(), os.getegid(),
                  wake, join, _cap_last() if iso.keep_caps is not None else 40, into_cgroup,
                  reset_caught, landlock_fd, init_fd, report_target, kinds, umask, search,
                  status_fd=status_target, cgroup_tasks=cgroup_tasks,
                  listener_fd=listener_fd)
    return build_plan(spec, setup)


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
