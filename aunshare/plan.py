"""What the child does between clone and exec, in order: the plan.

This module is the one place that answers "what does the child do?". It
turns a :class:`~aunshare.command.Command` (plus the descriptors the parent
prepared for it) into a tuple of :class:`Step` — plain data, one syscall
each. An executor (:mod:`aunshare.executors`) runs the steps in the child
without Python or libc; the first failing step is reported as
``(step index, errno)`` and turned into the step's typed error.

The order, and why:

1. file descriptors: mark every inherited descriptor from 3 up close-on-exec
   (``close_range``), then ``dup3`` each prepared source onto its target.
   Sources are always above every target, so no dup clobbers another's
   source (the parent guarantees it).
2. session and process group: with a pty on a standard stream,
   ``setsid()`` (a new session, without a controlling terminal) then
   ``ioctl(fd, TIOCSCTTY, 0)`` on the first standard fd that is the pty,
   which makes it the controlling terminal with the child in the
   foreground; both need the descriptors in place, so they follow step 1.
   A session leader also leads a new process group. Otherwise
   ``setpgid(0, 0)`` when the child is to lead its own process group
   (:meth:`Command.make_group_leader`, or a kill policy aimed at the group:
   the group must exist before the program can fork into it). The Command
   refuses a pty with make_group_leader (a session leader cannot change
   its group).
3. ``chdir``: before dropping privileges, as the crate does, so a root
   parent can enter a directory the target user could not.
4. ``setgroups``, ``setresgid``, ``setresuid`` (raw syscalls: glibc's
   wrappers would broadcast to the parent's threads through shared memory).
   Groups first, uid last, since each needs the privilege the next drops.
5. ``prctl(PR_SET_PDEATHSIG)`` *after* the identity change, because the
   kernel clears the parent-death signal when credentials change; then
   ``getppid()`` must still be the spawning process, or the parent died
   before the signal was armed and the child gives up.
6. signals: every signal back to its default action (CLONE_CLEAR_SIGHAND
   already reset handlers, but ignored signals such as Python's SIGPIPE stay
   ignored), then the signal mask, which the parent fully blocked around
   the clone, set empty (or restored with :meth:`Command.keep_sigmask`).
7. ``execve``.

Not a step but part of the plan: the clone flags. With
:meth:`Command.new_cgroup` the child is created directly inside its new
cgroup (``CLONE_INTO_CGROUP``; the parent supplies the cgroup's directory
descriptor at spawn), so it never runs a single instruction outside it.
"""

from __future__ import annotations

import functools
import signal as _signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, Union

from . import errors
from ._linux import (
    CLONE_INTO_CGROUP, CLOSE_RANGE_CLOEXEC, PR_SET_PDEATHSIG, SIG_SETMASK, TIOCSCTTY,
)
from .policy import KillTarget

if TYPE_CHECKING:
    from .command import Command

__all__ = ["Step", "Plan", "CStr", "CStrArray", "U32Array", "Ptr", "build_plan",
           "USE_PREVIOUS", "IGNORE_ERROR", "EXPECT_ARG5", "CONSTANT_RUNS"]

# Step flags, understood by every executor (see spawn_x86_64.S).
USE_PREVIOUS = 1  # the first argument is the previous step's result
IGNORE_ERROR = 2  # a failure of this step is not an error
EXPECT_ARG5 = 4   # fail with ESRCH unless the result equals the sixth argument


class CStr(NamedTuple):
    """Argument: pointer to a NUL-terminated copy of ``data``."""

    data: bytes


class CStrArray(NamedTuple):
    """Argument: pointer to a NULL-terminated array of C strings."""

    items: tuple[bytes, ...]


class U32Array(NamedTuple):
    """Argument: pointer to an array of 32-bit unsigned ints (gid_t[])."""

    items: tuple[int, ...]


class Ptr(NamedTuple):
    """Argument: a pointer the executor supplies by name.

    ``"environ"`` (the parent's live environment), ``"sigaction_default"``
    (a struct sigaction with SIG_DFL), ``"empty_sigset"``, ``"saved_sigmask"``
    (the parent's mask, saved while signals are blocked for the clone).
    """

    name: str


Arg = Union[int, CStr, CStrArray, U32Array, Ptr]


class Step(NamedTuple):
    """One syscall the child makes, and how its failure is reported."""

    syscall: str
    """Syscall name; the executor maps it to the architecture's number."""
    args: tuple[Arg, ...]
    """Up to six arguments."""
    error: type[errors.Error]
    """Error class raised in the parent when this step fails."""
    action: str
    """What the step does, for the message ("exec", "chdir", ...)."""
    subject: object = None
    """What it acts on (a path, an fd, an id), for the message."""
    flags: int = 0
    """USE_PREVIOUS / IGNORE_ERROR / EXPECT_ARG5."""
    detail: str = ""
    """Extra explanation added to the error message."""

    def __str__(self) -> str:
        args = ", ".join(_fmt_arg(a) for a in self.args)
        return f"{self.syscall}({args})"


def _fmt_arg(arg: Arg) -> str:
    if isinstance(arg, CStr):
        return repr(arg.data)
    if isinstance(arg, CStrArray):
        return "[" + ", ".join(repr(i) for i in arg.items) + "]"
    if isinstance(arg, U32Array):
        return repr(list(arg.items))
    if isinstance(arg, Ptr):
        return f"&{arg.name}"
    return str(arg)


class Plan(NamedTuple):
    """The child's steps in order, and how it is cloned."""

    steps: tuple[Step, ...]
    """The syscalls the child makes, in order; the last one is ``execve``."""
    clone_flags: int = 0
    """Extra clone3 flags (namespaces), beyond the executor's own."""
    features: frozenset[str] = frozenset()
    """What was asked for: explains a clone3 failure (see errors.fork_causes),
    and tells the parent what the child will be ("group": it leads a new
    process group; "cgroup": it starts in its own cgroup)."""

    def describe(self) -> str:
        """The plan as numbered lines, one syscall each."""
        return "\n".join(f"{i:3d}. {s}" for i, s in enumerate(self.steps))


_STDIO_NAMES = {0: "stdin", 1: "stdout", 2: "stderr"}


def _fd_name(fd: int) -> str:
    name = _STDIO_NAMES.get(fd)
    return f"fd {fd} ({name})" if name else f"fd {fd}"


# Back to SIG_DFL for every signal that can be caught or ignored.
_RESET_SIGNALS: tuple[Step, ...] = tuple(
    Step("rt_sigaction", (sig, Ptr("sigaction_default"), 0, 8), errors.NixError,
         "reset signal", sig, IGNORE_ERROR)
    for sig in range(1, 65)
    if sig not in (_signal.SIGKILL, _signal.SIGSTOP)
)
# Runs of steps that never change; the encoder copies each as one block.
CONSTANT_RUNS: tuple[tuple[Step, ...], ...] = (_RESET_SIGNALS,)

_EMPTY_MASK = Step("rt_sigprocmask", (SIG_SETMASK, Ptr("empty_sigset"), 0, 8),
                   errors.NixError, "set signal mask", None)
_SAVED_MASK = Step("rt_sigprocmask", (SIG_SETMASK, Ptr("saved_sigmask"), 0, 8),
                   errors.NixError, "restore signal mask", None)
_GROUP_LEADER = Step("setpgid", (0, 0), errors.SetPGid, "setpgid", "(0, 0)")
_NEW_SESSION = Step("setsid", (), errors.StdioError, "setsid", "for the pty",
                    detail="a new session is needed to take a controlling terminal")


@functools.lru_cache(maxsize=4)
def _ctty_step(fd: int) -> Step:
    return Step("ioctl", (fd, TIOCSCTTY, 0), errors.StdioError,
                "make the controlling terminal (TIOCSCTTY)", _fd_name(fd))


# (leads a group, has its own cgroup) -> Plan.features
_FEATURES = {
    (False, False): frozenset(), (True, False): frozenset({"group"}),
    (False, True): frozenset({"cgroup"}), (True, True): frozenset({"group", "cgroup"}),
}


@functools.lru_cache(maxsize=64)
def _close_step(lo: int, hi: int) -> Step:
    return Step("close_range", (lo, hi, CLOSE_RANGE_CLOEXEC), errors.StdioError,
                "close descriptors", f"{lo}..{hi}")


@functools.lru_cache(maxsize=64)
def _death_signal_step(sig: int) -> Step:
    try:
        signame = _signal.Signals(sig).name
    except ValueError:
        signame = f"signal {sig}"
    return Step("prctl", (PR_SET_PDEATHSIG, sig), errors.ParentDeathSignal,
                "prctl(PR_SET_PDEATHSIG)", signame)


def build_plan(
    cmd: Command,
    *,
    program: bytes,
    argv: Sequence[bytes],
    envp: Sequence[bytes] | None,
    fd_moves: Sequence[tuple[int, int]],
    parent_pid: int,
    euid: int,
) -> Plan:
    """Turn ``cmd`` into the child's steps. Pure: no syscall, no I/O.

    ``program`` is the resolved path to exec, ``envp`` the environment
    (None: the parent's live ``environ``), ``fd_moves`` the ``(source,
    target)`` pairs the parent prepared (every source above every target),
    ``parent_pid`` the pid the child must see as its parent, ``euid`` the
    parent's effective uid (root clears supplementary groups on a user change).
    Raises ValueError when the kill policy asks for a cgroup the command
    does not create.
    """
    policy = cmd._kill_policy
    kill_target = policy.target if policy is not None else KillTarget.AUTO
    if kill_target is KillTarget.CGROUP and cmd._cgroup_parent is None:
        raise ValueError("a kill policy aimed at the cgroup needs a cgroup for the child: "
                         "call Command.new_cgroup(parent) too")
    steps: list[Step] = []

    # 1. descriptors
    for lo, hi in cmd._close:
        steps.append(_close_step(lo, hi))
    for source, target in fd_moves:
        steps.append(Step("dup3", (source, target, 0), errors.StdioError, "set up",
                          _fd_name(target)))

    # 2. session and process group
    ctty = cmd._pty_target()
    group = cmd._group_leader or kill_target is KillTarget.GROUP
    if ctty is not None:  # setsid also starts a new process group led by the child
        steps.append(_NEW_SESSION)
        steps.append(_ctty_step(ctty))
    elif group:
        steps.append(_GROUP_LEADER)

    # 3. working directory
    if cmd._cwd is not None:
        steps.append(Step("chdir", (CStr(cmd._cwd),), errors.Chdir, "chdir", cmd._cwd))

    # 4. identity
    groups = cmd._groups
    if groups is None and euid == 0 and (cmd._uid is not None or cmd._gid is not None):
        groups = []
    if groups is not None:
        steps.append(Step("setgroups", (len(groups), U32Array(tuple(groups))),
                          errors.SetUser, "setgroups", tuple(groups)))
    if cmd._gid is not None:
        g = cmd._gid
        steps.append(Step("setresgid", (g, g, g), errors.SetUser, "setresgid", g))
    if cmd._uid is not None:
        u = cmd._uid
        steps.append(Step("setresuid", (u, u, u), errors.SetUser, "setresuid", u))

    # 5. parent-death signal, armed after the last credential change
    if cmd._death_signal is not None:
        steps.append(_death_signal_step(cmd._death_signal))
        steps.append(Step("getppid", (0, 0, 0, 0, 0, parent_pid), errors.ParentDeathSignal,
                          "check parent pid", parent_pid, EXPECT_ARG5,
                          "the parent exited before the parent-death signal was armed"))

    # 6. signals
    if cmd._keep_sigmask:
        steps.append(_SAVED_MASK)
    else:
        steps.extend(_RESET_SIGNALS)
        steps.append(_EMPTY_MASK)

    # 7. exec
    env_arg: Arg = Ptr("environ") if envp is None else CStrArray(tuple(envp))
    steps.append(Step("execve", (CStr(program), CStrArray(tuple(argv)), env_arg),
                      errors.Exec, "exec", program))
    features = _FEATURES[(group or ctty is not None, cmd._cgroup_parent is not None)]
    return Plan(tuple(steps), CLONE_INTO_CGROUP if "cgroup" in features else 0, features)
