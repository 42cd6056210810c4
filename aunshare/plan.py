"""What the child does between clone and exec, in order: the plan.

This module is the one place that answers "what does the child do?". It
turns a frozen :class:`~aunshare.spec.Spec` (plus what the parent prepared
for this spawn: :class:`Setup`) into a tuple of :class:`Step` — plain data,
one syscall each. An executor (:mod:`aunshare.executors`) runs the steps in the child
without Python or libc; the first failing step is reported as
``(step index, errno)`` and turned into the step's typed error.

The order, and why:

Before the first step, clone3 itself creates the namespaces asked for with
:meth:`Command.unshare` (the flags are part of the plan: ``clone_flags``).
A new user namespace owns the other new ones, so the child is privileged
over them whatever the caller's own privileges.

0. with resource limits on a host where only cgroup v1 has the controllers
   (no ``CLONE_INTO_CGROUP`` there): ``write(fd, "0", 1)`` to the ``tasks``
   file of each of the child's own v1 directories, through descriptors the
   parent opened (above every target, close-on-exec): the writer moves
   itself in, before it does anything else.
1. file descriptors: mark every inherited descriptor from 3 up close-on-exec
   (``close_range``), then ``dup3`` each prepared source onto its target.
   Sources are always above every target, so no dup clobbers another's
   source (the parent guarantees it; the same holds for the wake-up pipe
   and the namespace descriptors used below).
2. session and process group: with a pty on a standard stream,
   ``setsid()`` (a new session, without a controlling terminal) then
   ``ioctl(fd, TIOCSCTTY, 0)`` on the first standard fd that is the pty,
   which makes it the controlling terminal with the child in the
   foreground; both need the descriptors in place, so they follow step 1.
   A session leader also leads a new process group. Otherwise
   ``setpgid(0, 0)`` when the child is to lead its own process group
   (:meth:`Command.make_group_leader`, or a kill policy aimed at the group:
   the group must exist before the program can fork into it);
   ``setsid()`` for :meth:`Command.new_session`; ``setpgid(0, pgid)`` to
   join an existing group (:meth:`Command.process_group`). The Command
   refuses a pty with make_group_leader (a session leader cannot change
   its group).
3. the handshake, only when the parent must act before the child goes on
   (write id maps, run newuidmap/newgidmap, a ``before_unfreeze`` hook,
   tell the child its pid for :meth:`Command.env_var_with_pid`): close the
   child's copy of the wake-up pipe's write end, then block in ``read``
   until the parent writes one byte. EOF instead means the parent gave up
   (or died): the child fails and exits. Then one ``read`` per pid
   variable, straight into the environment entry execve will pass (the
   parent writes the digits, NUL-padded to a fixed width).
4. join existing namespaces (``setns``), user namespace first (it grants
   the capabilities the other joins need), mount namespace last (it
   changes the root and working directory): see ``JOIN_ORDER``.
5. with :meth:`Command.map_root_user` / :meth:`Command.map_current_user`,
   the child writes its own one-line maps: ``deny`` to
   /proc/self/setgroups (required before an unprivileged gid map), then
   /proc/self/uid_map and gid_map. No parent step, so no handshake (when
   there is one anyway, for a ``before_unfreeze`` hook, the parent writes
   the same lines before the hook runs).
6. ``sethostname`` in a new UTS namespace; then, in a new network
   namespace, ``lo`` brought up (unless :meth:`Command.loopback` says
   not): a close-on-exec ``socket(AF_INET, SOCK_DGRAM)`` and
   ``ioctl(SIOCSIFFLAGS)`` on it (``USE_PREVIOUS``) with ``{"lo", IFF_UP}``.
7. mounts and root, in a new mount namespace: first every mount made
   private (``mount --make-rprivate /``), so nothing done here propagates
   back to the parent's namespace. With a filesystem view
   (:meth:`Command.new_root`, :meth:`Command.bind_mount`, ...): ``umask(0)``
   so modes are as given; with ``new_root()`` a staging tmpfs over /tmp
   holding ``newroot`` (bound on itself) and ``oldroot``, and
   ``pivot_root`` into it, so the host's root is /oldroot and the
   sandbox's /newroot; then each operation in order (``mkdirat`` of the
   directories above a destination, failures ignored, the mount itself
   saying what is missing; ``mount``, and ``mount_setattr`` with
   ``AT_RECURSIVE`` for a bind's nosuid/nodev/read-only); then /oldroot
   detached, ``pivot_root(".", ".")`` into /newroot and the staging tmpfs
   detached; the caller's umask back. Every such step raises
   :class:`~aunshare.Mount` naming its operation. Otherwise either ``chroot`` or
   ``pivot_root`` (bind-mount the new root on itself so it is a mount
   point, enter it, pivot, enter the new "/", and detach the old root
   unless asked to keep it); ``/proc`` is mounted for
   :meth:`Command.mount_proc` inside the new root, before the old root
   goes (an unprivileged proc mount needs a visible one). Either way the
   child then enters "/" of the new root, so no working directory is left
   outside it.
8. ``chdir`` to :meth:`Command.current_dir` (inside the new root, if any).
   Before dropping privileges, as the crate does, so a root parent can
   enter a directory the target user could not. Then ``umask`` for
   :meth:`Command.umask` (after the filesystem view restored the caller's).
9. resource limits (``prlimit64``), before dropping privileges so a hard
   limit can still be raised.
10. identity: with :meth:`Command.keep_caps`, drop every other capability
   from the bounding set and ask to keep capabilities across the uid
   change (``PR_SET_KEEPCAPS``); then ``setgroups``, ``setresgid``,
   ``setresuid`` (raw syscalls: glibc's wrappers would broadcast to the
   parent's threads through shared memory), groups first, uid last, since
   each needs the privilege the next drops; then ``capset`` and the
   ambient raise of the kept capabilities (they survive exec for a
   non-root uid); then ``PR_SET_NO_NEW_PRIVS`` (also for Landlock rules:
   an unprivileged process may restrict itself only with it set).
   Then, with :meth:`Command.landlock`, ``landlock_restrict_self`` on the
   ruleset the parent built (its descriptor above every target, like the
   prepared sources of step 1). After the identity change, so that the
   uid/gid changes and mounts above are never subject to the rules; before
   the last steps, which touch no file.
11. ``prctl(PR_SET_PDEATHSIG)`` *after* the identity change, because the
   kernel clears the parent-death signal when credentials change; then
   ``getppid()`` must still be the spawning process (0 in a new pid
   namespace, whose parent is outside it), or the parent died before the
   signal was armed and the child gives up.
12. signals: every signal back to its default action (CLONE_CLEAR_SIGHAND
   already reset handlers, but ignored signals such as Python's SIGPIPE stay
   ignored), then the signal mask, which the parent fully blocked around
   the clone, set empty (or restored with :meth:`Command.keep_sigmask`).
13. seccomp (:meth:`Command.seccomp`, :meth:`Command.supervise_syscalls`),
   as late as possible so that the filter judges the program and not the
   plan: ``prctl(PR_SET_NO_NEW_PRIVS)`` first unless the child is
   provably privileged (the kernel installs a filter only for a process
   with CAP_SYS_ADMIN in its user namespace or with no_new_privs: the
   child counts as privileged when it keeps every capability, i.e. no
   uid change and no :meth:`Command.keep_caps`, and is root or in a user
   namespace it created or joined), then one ``seccomp(SECCOMP_SET_MODE_FILTER)``
   per filter, in the order given. A supervision filter is installed last
   with ``SECCOMP_FILTER_FLAG_NEW_LISTENER``; its listener descriptor is
   moved (``dup3``, close-on-exec) to the number the parent reserved for it,
   and the child waits on the wake-up pipe a second time while the parent
   takes it (``pidfd_getfd``). After a filter, a failing ``execve`` is
   still reported: every compiled filter allows ``exit`` and
   ``exit_group``, and the native executor's record is read from shared
   memory when a filter refused the ``write`` to the error pipe (the
   portable executor's child then exits 127 unreported: the parent sees
   an exec that succeeded and a program that exited 127).
14. ``execve``. With :meth:`Command.init_process` instead
   ``execveat(memfd, "", argv, envp, AT_EMPTY_PATH)`` of the init
   (:mod:`aunshare.executors.init`, a static ELF in a close-on-exec memfd
   prepared by the parent above every dup3 target): the process that ran
   the plan becomes the init, pid 1 of the new pid namespace, and execs
   the program (path, argv and environment passed in its argv and envp)
   in a child of its own, pid 2, with the mask the plan set. Everything
   above therefore applies to both; the spawn's error pipe is one of the
   step 1 dup3 targets (without close-on-exec, so it survives the init's
   exec), and the init reports the program's failed exec on it as this
   step's failure, so the parent raises the same typed
   :class:`~aunshare.errors.Exec`. Another dup3 target is the write end
   of the status pipe, on which the init writes the program's exact wait
   status once it has reaped it (its own exit code cannot carry a signal).

Not a step but part of the plan: the clone flags. With
:meth:`Command.new_cgroup` or :meth:`Command.cgroup` the child is created
directly inside its cgroup (``CLONE_INTO_CGROUP``; the parent supplies the
cgroup's directory descriptor at spawn), so it never runs a single
instruction outside it; on cgroup v1, step 0 moves it in before anything else.
"""

from __future__ import annotations

import functools
import os
import signal as _signal
import struct
from collections.abc import Sequence

from . import errors
from ._linux import (
    AT_EMPTY_PATH, AT_FDCWD, AT_RECURSIVE, CLONE_INTO_CGROUP, CLOSE_RANGE_CLOEXEC, IFF_UP,
    LINUX_CAPABILITY_VERSION_3, MNT_DETACH, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC,
    PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, PR_CAPBSET_DROP, PR_SET_KEEPCAPS,
    PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, SECCOMP_FILTER_FLAG_NEW_LISTENER,
    SECCOMP_SET_MODE_FILTER, SIG_SETMASK, SIOCSIFFLAGS, SOCK_CLOEXEC, TIOCSCTTY,
)
from ._names import fd_name, signal_name
from .namespaces import Namespace, cap_name, self_maps
from .seccomp import Action, SeccompFilter
from .spec import MountKind, MountOp, SelfMap, Spec

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from typing import NamedTuple, final
else:
    from ._record import NamedTuple  # (see there)

    def final(cls: type) -> type:
        return cls

__all__ = ["Step", "Plan", "Setup", "CStr", "CStrArray", "U32Array", "Bytes", "Ptr", "Slot",
           "Fprog", "build_plan", "USE_PREVIOUS", "IGNORE_ERROR", "EXPECT_ARG5", "CONSTANT_RUNS",
           "PID_SLOT_SIZE"]

# Step flags, understood by every executor (see spawn_x86_64.S).
USE_PREVIOUS = 1  # the first argument is the previous step's result
IGNORE_ERROR = 2  # a failure of this step is not an error
EXPECT_ARG5 = 4   # fail with ESRCH unless the result equals the sixth argument


# The argument kinds are final: the encoder dispatches on the exact type.
@final
class CStr(NamedTuple):
    """Argument: pointer to a NUL-terminated copy of ``data``."""

    data: bytes


@final
class Slot(NamedTuple):
    """A C string ``prefix`` followed by ``size`` bytes the child fills in.

    As a step argument: a pointer to the ``size`` bytes (where a ``read``
    puts them); as an item of a :class:`CStrArray`: a pointer to the whole
    string. The same slot (by equality) is one buffer, laid out where it
    first appears.
    """

    prefix: bytes
    size: int


@final
class CStrArray(NamedTuple):
    """Argument: pointer to a NULL-terminated array of C strings."""

    items: tuple[bytes | Slot, ...]


@final
class U32Array(NamedTuple):
    """Argument: pointer to an array of 32-bit unsigned ints (gid_t[])."""

    items: tuple[int, ...]


@final
class Bytes(NamedTuple):
    """Argument: pointer to a copy of ``data`` (a struct the syscall reads)."""

    data: bytes


@final
class Ptr(NamedTuple):
    """Argument: a pointer the executor supplies by name.

    ``"environ"`` (the parent's live environment), ``"sigaction_default"``
    (a struct sigaction with SIG_DFL), ``"empty_sigset"``, ``"saved_sigmask"``
    (the parent's mask, saved while signals are blocked for the clone),
    ``"scratch"`` (8 bytes the child may write, e.g. the handshake's read).
    """

    name: str


@final
class Fprog(NamedTuple):
    """Argument: pointer to a ``struct sock_fprog`` (a u16 count, then a
    pointer) for a copy of ``data``, an array of 8-byte ``struct sock_filter``
    (a seccomp filter, which the kernel copies in)."""

    data: bytes


Arg = int | CStr | CStrArray | U32Array | Bytes | Ptr | Slot | Fprog

# Bytes the parent sends for each pid variable: the digits, NUL-padded.
PID_SLOT_SIZE = 12


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
        args = [_fmt_arg(a) for a in self.args]
        if self.flags & USE_PREVIOUS and args:
            args[0] = "<previous result>"
        text = f"{self.syscall}({', '.join(args)})"
        if self.flags & EXPECT_ARG5:
            text += f" == {_fmt_arg(self.args[5])}"
        return text


def _fmt_arg(arg: Arg) -> str:
    if isinstance(arg, CStr):
        return repr(arg.data)
    if isinstance(arg, CStrArray):
        return "[" + ", ".join(repr(i.prefix + b"<pid>") if isinstance(i, Slot) else repr(i)
                               for i in arg.items) + "]"
    if isinstance(arg, Slot):
        return f"&<{arg.prefix.decode(errors='replace')}...>"
    if isinstance(arg, U32Array):
        return repr(list(arg.items))
    if isinstance(arg, Bytes):
        return f"<{len(arg.data)} bytes>"
    if isinstance(arg, Fprog):
        return f"&<sock_fprog of {len(arg.data) // 8} instructions>"
    if isinstance(arg, Ptr):
        return f"&{arg.name}"
    return str(arg)


class Plan(NamedTuple):
    """The child's steps in order, how it is cloned, and what it will be."""

    steps: tuple[Step, ...]
    """The syscalls the child makes, in order; the last one is ``execve``
    (``execveat`` of the init with ``init_process``)."""
    clone_flags: int = 0
    """Extra clone3 flags (namespaces, CLONE_INTO_CGROUP), beyond the executor's own."""
    leads_group: bool = False
    """The child leads a new process group (setpgid, or setsid for a pty)."""
    handshake: bool = False
    """The child waits on the wake-up pipe for the parent (step 3)."""

    def describe(self) -> str:
        """The plan as numbered lines, one syscall each."""
        return "\n".join(f"{i:3d}. {s}" for i, s in enumerate(self.steps))


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
_SETSID = Step("setsid", (), errors.SetPGid, "setsid", "(new_session)")
_NEW_SESSION = Step("setsid", (), errors.StdioError, "setsid", "for the pty",
                    detail="a new session is needed to take a controlling terminal")


@functools.lru_cache(maxsize=4)
def _ctty_step(fd: int) -> Step:
    return Step("ioctl", (fd, TIOCSCTTY, 0), errors.StdioError,
                "make the controlling terminal (TIOCSCTTY)", fd_name(fd))


@functools.lru_cache(maxsize=64)
def _close_step(lo: int, hi: int) -> Step:
    return Step("close_range", (lo, hi, CLOSE_RANGE_CLOEXEC), errors.StdioError,
                "close descriptors", f"{lo}..{hi}")


@functools.lru_cache(maxsize=64)
def _death_signal_step(sig: int) -> Step:
    return Step("prctl", (PR_SET_PDEATHSIG, sig), errors.ParentDeathSignal,
                "prctl(PR_SET_PDEATHSIG)", signal_name(sig))


class Setup(NamedTuple):
    """What the parent prepared for one spawn, beyond the spec itself."""

    program: bytes
    """The resolved path to exec (inside the new root, if any)."""
    argv: Sequence[bytes]
    envp: Sequence[bytes] | None
    """The environment; None: the parent's live ``environ``."""
    fd_moves: Sequence[tuple[int, int]] = ()
    """``(source, target)`` pairs, every source above every target."""
    parent_pid: int = 0
    """The pid the child must see as its parent."""
    euid: int = 0
    """The parent's effective uid (root clears supplementary groups on a
    user change; the child's own uid map maps it)."""
    egid: int = 0
    """The parent's effective gid (the child's own gid map maps it)."""
    wake: tuple[int, int] | None = None
    """(read end, write end) of the handshake's wake-up pipe, when the
    parent acts between clone and exec."""
    join: Sequence[tuple[Namespace, int]] = ()
    """(namespace type, descriptor) to setns, in join order."""
    cap_last: int = 40
    """The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap)."""
    into_cgroup: bool = True
    """The clone can create the child inside its cgroup (CLONE_INTO_CGROUP);
    False where clone3 is refused: the parent then moves it in the handshake."""
    reset_caught: tuple[int, ...] = ()
    """Signals the parent catches, to reset where the clone cannot
    (clone(2) has no CLONE_CLEAR_SIGHAND) and the mask is kept."""
    landlock_fd: int = -1
    """The Landlock ruleset the child restricts itself with (above every
    target), or -1: none (not asked for, or nothing enforceable)."""
    init_fd: int = -1
    """With ``init_process``: the memfd holding the init (above every target)."""
    report_fd: int = -1
    """With ``init_process``: the dup3 target the error pipe's write end gets
    in the child, for the init to report the program's exec on; -1: none."""
    mount_kinds: tuple[str, ...] = ()
    """Per filesystem-view operation, what the parent found at a bind's
    source: ``"dir"``, ``"file"`` or ``"missing"`` (an optional one,
    skipped); ``""`` for other operations."""
    umask: int = 0o022
    """The parent's umask, restored after the filesystem view is built
    (which creates everything with the modes as given)."""
    search: tuple[bytes, ...] = ()
    """Paths to try in order before ``program`` (a PATH search inside a
    new root, which only the child can see)."""
    status_fd: int = -1
    """With ``init_process``: the dup3 target the status pipe's write end gets
    in the child, for the init to write the program's wait status on; -1: none."""
    cgroup_tasks: tuple[tuple[bytes, int], ...] = ()
    """cgroup v1 directories the child moves itself into, first of all, each
    with a descriptor of its ``tasks`` file the parent opened (above every
    target, close-on-exec): the child writes 0 to it (its own cgroup on a
    hybrid host; no CLONE_INTO_CGROUP there). A task moving itself skips
    the kernel's global threadgroup lock, which a write of another pid
    takes (an RCU grace period, milliseconds). The descriptors, like the
    dup3 sources, are patched when a cached plan is reused."""
    listener_fd: int = -1
    """The descriptor number the parent reserved for the seccomp listener
    (:meth:`Command.supervise_syscalls`): the child moves it there."""


def _idmap_steps(path: bytes, data: bytes) -> tuple[Step, Step]:
    return (
        Step("openat", (AT_FDCWD, CStr(path), os.O_WRONLY | os.O_CLOEXEC), errors.SetIdMap,
             "open", path),
        Step("write", (0, CStr(data), len(data), 0, 0, len(data)), errors.SetIdMap,
             "write", path, USE_PREVIOUS | EXPECT_ARG5,
             f"writing {data.decode().strip()!r}"),
    )


def _proc_step(target: bytes) -> Step:
    return Step("mount", (CStr(b"proc"), CStr(target), CStr(b"proc"),
                          MS_NOSUID | MS_NODEV | MS_NOEXEC, 0),
                errors.ChangeRoot, "mount proc on", target,
                detail="a proc mount needs a new pid namespace's owner privileges and, "
                       "unprivileged, an existing fully visible /proc")


# ioctl(SIOCSIFFLAGS) with struct ifreq {"lo", IFF_UP} on a datagram socket;
# the socket is close-on-exec (no step can name its number to close it).
_LOOPBACK: tuple[Step, ...] = (
    Step("socket", (2, 2 | SOCK_CLOEXEC, 0), errors.SetNs,  # AF_INET, SOCK_DGRAM
         "open a socket to configure", "lo in the new network namespace"),
    Step("ioctl", (0, SIOCSIFFLAGS, Bytes(struct.pack("=16sH22x", b"lo", IFF_UP))),
         errors.SetNs, "bring up (SIOCSIFFLAGS)", "lo in the new network namespace",
         USE_PREVIOUS, "needs CAP_NET_ADMIN in the namespace's user namespace; "
                       "loopback(False) leaves lo down"),
)


def _cap_bits(caps: frozenset[int]) -> bytes:
    lo = hi = 0
    for cap in caps:
        if cap < 32:
            lo |= 1 << cap
        else:
            hi |= 1 << (cap - 32)
    # struct __user_cap_data_struct[2]: effective, permitted, inheritable
    return struct.pack("=6I", lo, lo, lo, hi, hi, hi)


def build_plan(spec: Spec, setup: Setup) -> Plan:
    """Turn ``spec`` into the child's steps. Pure: no syscall, no I/O.

    ``setup`` holds what the parent prepared for this spawn (see
    :class:`Setup`); the spec was validated when it was made.
    """
    prog, iso, ident, life = spec.program, spec.isolation, spec.identity, spec.lifetime
    new = iso.unshare
    user_ns = bool((new | iso.joined) & Namespace.USER)
    steps: list[Step] = []

    # 0. into its own cgroup v1 directories, before it does anything else,
    # through their tasks files the parent opened (close-on-exec)
    for directory, fd in setup.cgroup_tasks:
        steps.append(Step("write", (fd, CStr(b"0"), 1, 0, 0, 1), errors.CgroupError,
                          "join cgroup", directory, EXPECT_ARG5,
                          "the child moving itself in through tasks"))

    # 1. descriptors
    for lo, hi in spec.fds.close:
        steps.append(_close_step(lo, hi))
    for source, target in setup.fd_moves:
        steps.append(Step("dup3", (source, target, 0), errors.StdioError, "set up",
                          fd_name(target)))

    # 2. session and process group
    ctty = spec.fds.pty_target
    if ctty is not None:  # setsid also starts a new process group led by the child
        steps.append(_NEW_SESSION)
        steps.append(_ctty_step(ctty))
    elif spec.identity.new_session:  # also leads a new process group
        steps.append(_SETSID)
    elif spec.leads_group:
        steps.append(_GROUP_LEADER)
    elif ident.process_group is not None:
        pgid = ident.process_group
        steps.append(Step("setpgid", (0, pgid), errors.SetPGid, "setpgid", f"(0, {pgid})",
                          detail="the group must exist in the child's session"))

    # 3. handshake
    if setup.wake is not None:
        r, w = setup.wake
        steps.append(Step("close", (w,), errors.PipeError, "close", "the wake-up pipe's "
                          "write end", IGNORE_ERROR))
        steps.append(Step("read", (r, Ptr("scratch"), 1, 0, 0, 1), errors.PipeError,
                          "wait on", "the wake-up pipe", EXPECT_ARG5,
                          "the parent gave up on the child before letting it go on"))
        for key in prog.env_pid:
            steps.append(Step("read", (r, Slot(key + b"=", PID_SLOT_SIZE), PID_SLOT_SIZE,
                                       0, 0, PID_SLOT_SIZE),
                              errors.PipeError, "read its pid from", "the wake-up pipe",
                              EXPECT_ARG5, f"for env_var_with_pid({os.fsdecode(key)!r})"))

    # 4. join namespaces
    for ns, fd in setup.join:
        steps.append(Step("setns", (fd, int(ns)), errors.SetNs, "setns",
                          f"{ns.proc_name} namespace (fd {fd})",
                          detail="joining needs CAP_SYS_ADMIN over the namespace (its "
                                 "owning user namespace), and a user namespace cannot be "
                                 "joined by a process that shares its filesystem info"))

    # 5. the child's own id maps (with a handshake the parent writes them,
    # so that a before_unfreeze hook finds them in place)
    if iso.self_map is not None and setup.wake is None:
        uid_map, gid_map = self_maps(iso.self_map is SelfMap.ROOT, setup.euid, setup.egid)
        steps.extend(_idmap_steps(b"/proc/self/setgroups", b"deny"))
        steps.extend(_idmap_steps(b"/proc/self/uid_map", uid_map.line()))
        steps.extend(_idmap_steps(b"/proc/self/gid_map", gid_map.line()))

    # 6. host name
    if iso.hostname is not None:
        h = iso.hostname
        steps.append(Step("sethostname", (CStr(h), len(h)), errors.ChangeRoot,
                          "sethostname", h))

    # 6b. the loopback interface of a new network namespace
    if new & Namespace.NET and iso.loopback:
        steps.extend(_LOOPBACK)

    # 7. mounts and root
    if new & Namespace.MOUNT:
        steps.append(Step("mount", (0, CStr(b"/"), 0, MS_REC | MS_PRIVATE, 0),
                          errors.ChangeRoot, "make every mount private under", b"/"))
    root_changed = False
    if iso.mounts or iso.fresh_root:
        steps.extend(_view_steps(spec, setup))
        root_changed = iso.fresh_root
    elif iso.chroot is not None:
        root = iso.chroot
        if iso.mount_proc:
            steps.append(_proc_step(root.rstrip(b"/") + b"/proc"))
        steps.append(Step("chroot", (CStr(root),), errors.ChangeRoot, "chroot", root))
        # chroot leaves the working directory outside the new root: enter it
        # (a relative current_dir is then taken from there).
        steps.append(Step("chdir", (CStr(b"/"),), errors.ChangeRoot, "chdir", b"/"))
        root_changed = True
    elif iso.pivot is not None:
        new_root, put_old, unmount = iso.pivot
        steps.append(Step("mount", (CStr(new_root), CStr(new_root), 0, MS_BIND | MS_REC, 0),
                          errors.ChangeRoot, "bind-mount the new root on itself", new_root))
        steps.append(Step("chdir", (CStr(new_root),), errors.ChangeRoot, "chdir", new_root))
        steps.append(Step("pivot_root", (CStr(b"."), CStr(put_old)), errors.ChangeRoot,
                          "pivot_root", new_root,
                          detail=f"the old root goes to {os.fsdecode(put_old)!r} under it, "
                                 "which must be an existing directory"))
        steps.append(Step("chdir", (CStr(b"/"),), errors.ChangeRoot, "chdir", b"/"))
        if iso.mount_proc:
            steps.append(_proc_step(b"/proc"))
        if unmount:
            old = b"/" + put_old
            steps.append(Step("umount2", (CStr(old), MNT_DETACH), errors.ChangeRoot,
                              "unmount the old root", old))
        root_changed = True
    elif iso.mount_proc:
        steps.append(_proc_step(b"/proc"))

    # 8. working directory
    if prog.cwd is not None:
        steps.append(Step("chdir", (CStr(prog.cwd),), errors.Chdir, "chdir", prog.cwd))

    if ident.umask is not None:  # after the view's own umask dance; umask(2) cannot fail
        steps.append(Step("umask", (ident.umask,), errors.NixError, "umask",
                          oct(ident.umask)))

    # 9. resource limits
    for res, soft, hard in iso.rlimits:
        steps.append(Step("prlimit64", (0, res, Bytes(struct.pack("=QQ", soft, hard)), 0),
                          errors.SetRlimit, "setrlimit", _rlimit_name(res)))

    # 10. identity and capabilities
    caps = iso.keep_caps
    changes_uid = ident.uid is not None
    if caps is not None:
        for cap in range(setup.cap_last + 1):
            if cap not in caps:
                steps.append(Step("prctl", (PR_CAPBSET_DROP, cap), errors.CapSet,
                                  "drop from the bounding set", cap_name(cap),
                                  detail="dropping needs CAP_SETPCAP (root, or a new user "
                                         "namespace)"))
        if changes_uid:
            steps.append(Step("prctl", (PR_SET_KEEPCAPS, 1), errors.CapSet,
                              "prctl(PR_SET_KEEPCAPS)", 1))
    groups = ident.groups
    if (groups is None and setup.euid == 0 and not user_ns
            and (ident.uid is not None or ident.gid is not None)):
        groups = ()
    if groups is not None:
        steps.append(Step("setgroups", (len(groups), U32Array(tuple(groups))),
                          errors.SetUser, "setgroups", tuple(groups),
                          detail="in a user namespace, setgroups is refused once "
                                 "/proc/PID/setgroups says deny" if user_ns else ""))
    if ident.gid is not None:
        g = ident.gid
        steps.append(Step("setresgid", (g, g, g), errors.SetUser, "setresgid", g,
                          detail="the gid must be mapped in the user namespace"
                          if user_ns else ""))
    if ident.uid is not None:
        u = ident.uid
        steps.append(Step("setresuid", (u, u, u), errors.SetUser, "setresuid", u,
                          detail="the uid must be mapped in the user namespace"
                          if user_ns else ""))
    if caps is not None:
        header = Bytes(struct.pack("=Ii", LINUX_CAPABILITY_VERSION_3, 0))
        names = ", ".join(cap_name(c) for c in sorted(caps)) or "none"
        steps.append(Step("capset", (header, Bytes(_cap_bits(caps))), errors.CapSet,
                          "capset", names,
                          detail="only capabilities the child holds can be kept"))
        for cap in sorted(caps):
            steps.append(Step("prctl", (PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0),
                              errors.CapSet, "raise the ambient capability", cap_name(cap)))
    if iso.no_new_privs or iso.landlock is not None:
        steps.append(_NO_NEW_PRIVS)
    # 10b. Landlock, once no_new_privs is set
    if setup.landlock_fd >= 0:
        steps.append(Step("landlock_restrict_self", (setup.landlock_fd, 0), errors.LandlockError,
                          "landlock_restrict_self", "the ruleset built by the parent",
                          detail="the kernel refused to enforce the Landlock ruleset "
                                 "(E2BIG: the child is already inside 16 nested Landlock domains)"))

    # 11. parent-death signal, armed after the last credential change
    if life.death_signal is not None:
        # In a new pid namespace the parent is outside it: getppid() is 0.
        ppid = 0 if new & Namespace.PID else setup.parent_pid
        steps.append(_death_signal_step(life.death_signal))
        steps.append(Step("getppid", (0, 0, 0, 0, 0, ppid), errors.ParentDeathSignal,
                          "check parent pid", ppid, EXPECT_ARG5,
                          "the parent exited before the parent-death signal was armed"))

    # 12. signals
    if life.keep_sigmask:
        for sig in setup.reset_caught:
            steps.append(Step("rt_sigaction", (sig, Ptr("sigaction_default"), 0, 8),
                              errors.NixError, "reset signal", sig, IGNORE_ERROR))
        steps.append(_SAVED_MASK)
    else:
        steps.extend(_RESET_SIGNALS)
        steps.append(_EMPTY_MASK)

    # 13. seccomp
    if iso.seccomp or iso.supervise:
        steps.extend(_seccomp_steps(spec, setup, user_ns))

    # 14. exec
    envp: Sequence[bytes | Slot] | None = setup.envp
    if prog.env_pid:
        envp = [*(setup.envp or ()), *(Slot(key + b"=", PID_SLOT_SIZE) for key in prog.env_pid)]
    env_arg: Arg = Ptr("environ") if envp is None else CStrArray(tuple(envp))
    details = ("the program is looked up inside the new root" if root_changed else "",
               "with Landlock rules the program, its interpreter and libraries must be "
               "allowed (execute=, e.g. /usr)" if setup.landlock_fd >= 0 else "")
    if life.init_process:
        report = str(setup.report_fd).encode() if setup.report_fd >= 0 else b"-"
        status = str(setup.status_fd).encode() if setup.status_fd >= 0 else b"-"
        argv = (b"aunshare-init", report, str(len(steps)).encode(), status, setup.program,
                *setup.argv)
        steps.append(Step("execveat", (setup.init_fd, CStr(b""), CStrArray(argv), env_arg,
                                       AT_EMPTY_PATH),
                          errors.Exec, "exec", setup.program,
                          detail="; ".join(d for d in (
                              "run by the init of the new pid namespace", *details) if d)))
    else:
        argv_arg = CStrArray(tuple(setup.argv))
        for path in setup.search:  # the first that execs ends the plan
            steps.append(Step("execve", (CStr(path), argv_arg, env_arg), errors.Exec, "exec",
                              path, IGNORE_ERROR))
        if setup.search:
            searched = ", ".join(os.fsdecode(p) for p in (*setup.search, setup.program))
            details = (f"looked up in PATH inside the new root (tried {searched})", details[1])
        steps.append(Step("execve", (CStr(setup.program), argv_arg, env_arg),
                          errors.Exec, "exec", setup.program,
                          detail="; ".join(d for d in details if d)))
    in_cgroup = spec.own_cgroup or life.cgroup_path is not None
    into = in_cgroup and setup.into_cgroup and not setup.cgroup_tasks
    flags = int(new) | (CLONE_INTO_CGROUP if into else 0)
    return Plan(tuple(steps), flags, spec.leads_group, setup.wake is not None)


def _seccomp_steps(spec: Spec, setup: Setup, user_ns: bool) -> list[Step]:
    iso, ident = spec.isolation, spec.identity
    steps: list[Step] = []
    full_caps = (iso.keep_caps is None and ident.uid in (None, 0)
                 and (user_ns or setup.euid == 0))
    if not full_caps and not iso.no_new_privs and iso.landlock is None:  # else set at step 10
        steps.append(_NO_NEW_PRIVS)
    for flt in iso.seccomp:
        if isinstance(flt, SeccompFilter):
            bpf, what = flt.compile(), f"filter of {len(flt.rules)} rules"
        else:
            bpf, what = flt, f"raw BPF of {len(flt) // 8} instructions"
        steps.append(Step("seccomp", (SECCOMP_SET_MODE_FILTER, 0, Fprog(bpf)),
                          errors.SeccompError, "install seccomp", what, detail=_SECCOMP_HINT))
    if iso.supervise:
        bpf = SeccompFilter().rule(Action.NOTIFY, iso.supervise).compile()
        steps.append(Step("seccomp", (SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                                      Fprog(bpf)),
                          errors.SeccompError, "install seccomp supervision of",
                          ", ".join(iso.supervise), detail=_SECCOMP_HINT))
        steps.append(Step("dup3", (0, setup.listener_fd, os.O_CLOEXEC), errors.SeccompError,
                          "move the seccomp listener to", fd_name(setup.listener_fd),
                          USE_PREVIOUS))
        if setup.wake is not None:
            steps.append(Step("read", (setup.wake[0], Ptr("scratch"), 1, 0, 0, 1),
                              errors.PipeError, "wait on", "the wake-up pipe", EXPECT_ARG5,
                              "the parent gave up on the child before taking its seccomp "
                              "listener"))
    return steps


_NO_NEW_PRIVS = Step("prctl", (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), errors.CapSet,
                     "prctl(PR_SET_NO_NEW_PRIVS)", 1)
_SECCOMP_HINT = ("EACCES: the child has neither CAP_SYS_ADMIN nor no_new_privs (call "
                 "Command.no_new_privs()); EINVAL: the BPF program is not valid for this kernel")


def _rlimit_name(res: int) -> str:
    import resource

    for name in dir(resource):
        if name.startswith("RLIMIT_") and getattr(resource, name) == res:
            return name
    return f"resource {res}"


# -- the filesystem view (step 7) -------------------------------------------------

# With new_root(): the staging tmpfs (mounted over /tmp in the child's private
# namespace, as bubblewrap does) becomes the root for the build; the host's
# root is at /oldroot in it and the sandbox's at /newroot.
_BASE = b"/tmp"
_OLD = b"/oldroot"
_NEW = b"/newroot"
_DEV_NODES = (b"null", b"zero", b"full", b"random", b"urandom", b"tty")
_DEV_LINKS = ((b"/proc/self/fd/0", b"stdin"), (b"/proc/self/fd/1", b"stdout"),
              (b"/proc/self/fd/2", b"stderr"), (b"/proc/self/fd", b"fd"),
              (b"/proc/kcore", b"core"), (b"pts/ptmx", b"ptmx"))
# Parts of /proc that root could write to change the host; covered read-only.
_PROC_COVERS = (b"sys", b"sysrq-trigger", b"irq", b"bus")
_MOUNT_ATTR_SIZE = 32


def _mount_attr(read_only: bool, devices: bool) -> Bytes:
    bits = MOUNT_ATTR_NOSUID | (0 if devices else MOUNT_ATTR_NODEV)
    if read_only:
        bits |= MOUNT_ATTR_RDONLY
    # struct mount_attr: attr_set, attr_clr, propagation, userns_fd
    return Bytes(struct.pack("=4Q", bits, 0, 0, 0))


def _escape_option(path: bytes) -> bytes:
    """A path inside an overlay option string (',' ':' and '\\' escaped)."""
    return path.replace(b"\\", b"\\\\").replace(b",", b"\\,").replace(b":", b"\\:")


class _View:
    """Builds the steps of the filesystem view's operations."""

    def __init__(self, fresh: bool, euid: int, kinds: Sequence[str], own_pid: bool) -> None:
        self.fresh = fresh
        self.own_pid = own_pid
        self.euid = euid
        self.kinds = kinds  # per operation: "dir", "file", "missing" (binds only), or ""
        self.steps: list[Step] = []
        self.made: set[bytes] = set()   # directories this plan created (inside)
        self.owned: list[bytes] = []    # destinations of our mounts, as the child sees them
        self.op: MountOp | None = None
        self.index = -1

    def new(self, path: bytes) -> bytes:
        """Where ``path`` of the sandbox is during the build."""
        if not self.fresh:
            return path
        return _NEW if path == b"/" else _NEW + path

    def old(self, path: bytes) -> bytes:
        """Where the host's ``path`` is during the build."""
        return _OLD + path if self.fresh else path

    def add(self, syscall: str, args: tuple[Arg, ...], what: str, dest: bytes,
            source: bytes | None = None, flags: int = 0, detail: str = "") -> None:
        op = self.op
        described = op.describe() if op is not None else "the filesystem view"
        self.steps.append(Step(syscall, args, errors.Mount, what,
                               errors.MountTarget(described, syscall, source, dest, self.index),
                               flags, detail))

    def mkdir(self, path: bytes, mode: int = 0o755) -> None:
        """mkdir inside the view (``path`` as the child sees it), an
        existing directory being fine."""
        self.add("mkdirat", (AT_FDCWD, CStr(self.new(path)), mode), "mkdir", self.new(path),
                 flags=IGNORE_ERROR)
        self.made.add(path)

    def parents(self, path: bytes) -> None:
        """Create the directories above ``path`` that may be missing: every
        one with new_root(), else those under a mount of ours."""
        parts = path.split(b"/")[1:-1]
        for n in range(1, len(parts) + 1):
            d = b"/" + b"/".join(parts[:n])
            if d in self.made:
                continue
            if self.fresh or any(d != m and (m == b"/" or d.startswith(m + b"/"))
                                 for m in self.owned):
                self.mkdir(d)

    def mounted(self, dest: bytes) -> None:
        """A mount now covers ``dest``: what was made below it is hidden."""
        self.made = {d for d in self.made if not d.startswith(dest + b"/")} | {dest}
        self.owned.append(dest)

    def point(self, dest: bytes, is_dir: bool) -> None:
        """Create the mount point ``dest``: a directory or an empty file."""
        self.parents(dest)
        if not self.fresh and not any(dest != m and (m == b"/" or dest.startswith(m + b"/"))
                                      for m in self.owned):
            return  # the host's own path: it must exist (checked by the parent)
        if is_dir:
            if dest not in self.made:
                self.mkdir(dest)
        else:
            where = self.new(dest)
            self.add("openat", (AT_FDCWD, CStr(where), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC
                                | os.O_NOCTTY, 0o444), "create the mount point", where)
            self.add("close", (0,), "close", where, flags=USE_PREVIOUS)

    def bind(self, src: bytes, dest: bytes, read_only: bool, devices: bool,
             is_dir: bool = True) -> None:
        self.point(dest, is_dir)
        s, d = self.old(src), self.new(dest)
        self.add("mount", (CStr(s), CStr(d), 0, MS_BIND | MS_REC, 0), "bind-mount", d, s)
        self.add("mount_setattr", (AT_FDCWD, CStr(d), AT_RECURSIVE,
                                   _mount_attr(read_only, devices), _MOUNT_ATTR_SIZE),
                 "set the flags (nosuid" + ("" if devices else ", nodev")
                 + (", read-only" if read_only else "") + ") of", d,
                 detail="mount_setattr needs Linux 5.12")
        self.mounted(dest)

    def tmpfs(self, dest: bytes, mode: int, size: int | None) -> None:
        self.point(dest, True)
        d = self.new(dest)
        options = b"mode=%o" % mode + (b",size=%d" % size if size is not None else b"")
        self.add("mount", (CStr(b"tmpfs"), CStr(d), CStr(b"tmpfs"), MS_NOSUID | MS_NODEV,
                           CStr(options)), "mount a tmpfs on", d)
        self.mounted(dest)

    def proc(self, dest: bytes, own: bool = True) -> None:
        if not own:
            # No pid namespace of its own: the host's /proc, bound (a proc
            # of the caller's pid namespace cannot be mounted from a user
            # namespace), as bubblewrap does.
            self.bind(b"/proc", dest, False, False)
            return
        self.point(dest, True)
        d = self.new(dest)
        self.add("mount", (CStr(b"proc"), CStr(d), CStr(b"proc"),
                           MS_NOSUID | MS_NODEV | MS_NOEXEC, 0), "mount proc on", d,
                 detail="a proc mount needs a new pid namespace's owner privileges and, "
                        "unprivileged, an existing fully visible /proc")
        self.mounted(dest)
        if self.euid == 0:  # root could write these and reach the host: read-only
            for name in _PROC_COVERS:
                sub = d + b"/" + name
                # Absent ones (some are not shown in a user namespace's proc)
                # are skipped; mount_setattr only acts on a mount's root, so
                # it does nothing where the bind did not happen.
                self.add("mount", (CStr(sub), CStr(sub), 0, MS_BIND | MS_REC, 0),
                         "bind-mount (to make it read-only)", sub, sub, IGNORE_ERROR)
                self.add("mount_setattr", (AT_FDCWD, CStr(sub), AT_RECURSIVE,
                                           _mount_attr(True, False), _MOUNT_ATTR_SIZE),
                         "make read-only", sub, flags=IGNORE_ERROR)

    def dev(self, dest: bytes) -> None:
        self.tmpfs(dest, 0o755, None)
        for name in _DEV_NODES:
            self.bind(b"/dev/" + name, dest + b"/" + name, False, True, is_dir=False)
        self.tmpfs(dest + b"/shm", 0o1777, None)
        self.mkdir(dest + b"/pts")
        pts = self.new(dest + b"/pts")
        self.add("mount", (CStr(b"devpts"), CStr(pts), CStr(b"devpts"), MS_NOSUID | MS_NOEXEC,
                           CStr(b"newinstance,ptmxmode=0666,mode=620")),
                 "mount a new devpts instance on", pts)
        self.mounted(dest + b"/pts")
        for target, name in _DEV_LINKS:
            self.symlink(target, dest + b"/" + name)

    def symlink(self, target: bytes, dest: bytes) -> None:
        self.parents(dest)
        d = self.new(dest)
        self.add("symlinkat", (CStr(target), AT_FDCWD, CStr(d)), "create a symlink at", d,
                 target)

    def write_file(self, index: int, dest: bytes, data: bytes, mode: int,
                   read_only: bool) -> None:
        # Staged in the private base tmpfs (the child's "/" during the
        # build), then bound in: the content never passes through the
        # destination's file system.
        staged = b"/file-%d" % index
        self.add("openat", (AT_FDCWD, CStr(staged), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                            | os.O_CLOEXEC, mode), "create the staged file", staged)
        self.add("write", (0, Bytes(data), len(data), 0, 0, len(data)), "write the content of",
                 staged, flags=USE_PREVIOUS | EXPECT_ARG5,
                 detail=f"{len(data)} bytes in one write; ESRCH: a short write (tmpfs full?)")
        self.point(dest, False)
        d = self.new(dest)
        self.add("mount", (CStr(staged), CStr(d), 0, MS_BIND, 0), "bind-mount", d, staged)
        self.add("mount_setattr", (AT_FDCWD, CStr(d), 0, _mount_attr(read_only, False),
                                   _MOUNT_ATTR_SIZE), "set the flags of", d)
        self.mounted(dest)

    def overlay(self, index: int, op: MountOp) -> None:
        self.point(op.dest, True)
        d = self.new(op.dest)
        if op.upper is not None and op.work is not None:
            options = (b"upperdir=" + _escape_option(self.old(op.upper)) + b",workdir="
                       + _escape_option(self.old(op.work)) + b",")
        else:  # a writable layer in the private base tmpfs, gone with the child
            upper, work = b"/overlay-upper-%d" % index, b"/overlay-work-%d" % index
            for where in (upper, work):
                self.add("mkdirat", (AT_FDCWD, CStr(where), 0o755), "mkdir", where)
            options = b"upperdir=" + upper + b",workdir=" + work + b","
        options += b"lowerdir=" + b":".join(_escape_option(self.old(p)) for p in op.lower)
        options += b",userxattr"
        self.add("mount", (CStr(b"overlay"), CStr(d), CStr(b"overlay"), 0, CStr(options)),
                 "mount an overlay on", d, detail="options " + options.decode(errors="replace"))
        self.mounted(op.dest)

    def run(self, mounts: Sequence[MountOp]) -> None:
        for i, op in enumerate(mounts):
            self.op, self.index = op, i
            kind = op.kind
            if kind is MountKind.BIND:
                assert op.source is not None
                found = self.kinds[i] if i < len(self.kinds) else "dir"
                if found == "missing":
                    continue  # optional, and missing at spawn
                self.bind(op.source, op.dest, op.read_only, op.allow_devices, found != "file")
            elif kind is MountKind.TMPFS:
                self.tmpfs(op.dest, op.mode, op.size)
            elif kind is MountKind.DIR:
                self.parents(op.dest)
                self.mkdir(op.dest, op.mode)
            elif kind is MountKind.SYMLINK:
                assert op.source is not None
                self.symlink(op.source, op.dest)
            elif kind is MountKind.FILE:
                self.write_file(i, op.dest, op.data, op.mode, op.read_only)
            elif kind is MountKind.REMOUNT_RO:
                d = self.new(op.dest)
                self.add("mount_setattr", (AT_FDCWD, CStr(d), AT_RECURSIVE,
                                           Bytes(struct.pack("=4Q", MOUNT_ATTR_RDONLY, 0, 0, 0)),
                                           _MOUNT_ATTR_SIZE),
                         "make read-only (recursively)", d,
                         detail="the destination must be a mount point")
            elif kind is MountKind.DEV:
                self.dev(op.dest)
            elif kind is MountKind.PROC:
                self.proc(op.dest, self.own_pid)
            elif kind is MountKind.OVERLAY:
                self.overlay(i, op)
        self.op, self.index = None, -1


def _view_steps(spec: Spec, setup: Setup) -> list[Step]:
    """Step 7 with a filesystem view: the operations, inside a new root
    when :meth:`Command.new_root` asked for one."""
    iso = spec.isolation
    fresh = iso.fresh_root
    mounts = iso.mounts
    if iso.mount_proc:  # the plain mount_proc(): after the operations
        mounts = (*mounts, MountOp(MountKind.PROC, b"/proc"))
    view = _View(fresh, setup.euid, setup.mount_kinds,
                 bool((iso.unshare | iso.joined) & Namespace.PID))
    add = view.add
    # Modes as given (as bubblewrap does); the caller's umask is back before exec.
    add("umask", (0,), "set the umask for", b"/")
    if fresh:
        add("mount", (CStr(b"tmpfs"), CStr(_BASE), CStr(b"tmpfs"), MS_NOSUID | MS_NODEV, 0),
            "mount the staging tmpfs on", _BASE,
            detail="new_root() builds the new root in a tmpfs mounted over /tmp in the "
                   "child's mount namespace: /tmp must exist")
        add("chdir", (CStr(_BASE),), "chdir", _BASE)
        add("mkdirat", (AT_FDCWD, CStr(b"newroot"), 0o755), "mkdir", _NEW)
        add("mount", (CStr(b"newroot"), CStr(b"newroot"), 0, MS_BIND | MS_REC, 0),
            "bind-mount the new root on itself", _NEW)
        add("mkdirat", (AT_FDCWD, CStr(b"oldroot"), 0o755), "mkdir", _OLD)
        add("pivot_root", (CStr(b"."), CStr(b"oldroot")), "pivot_root into the staging tmpfs",
            _BASE)
        add("chdir", (CStr(b"/"),), "chdir", b"/")
    view.run(mounts)
    if fresh:
        add("umount2", (CStr(_OLD), MNT_DETACH), "detach the old root", _OLD)
        add("chdir", (CStr(_NEW),), "chdir", _NEW)
        add("pivot_root", (CStr(b"."), CStr(b".")), "pivot_root into the new root", _NEW)
        add("umount2", (CStr(b"."), MNT_DETACH), "detach the staging tmpfs", b"/")
        add("chdir", (CStr(b"/"),), "chdir", b"/")
    add("umask", (setup.umask,), "restore the umask for", b"/")
    return view.steps
