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
   the group must exist before the program can fork into it). The Command
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
6. ``sethostname`` in a new UTS namespace.
7. mounts and root, in a new mount namespace: first every mount made
   private (``mount --make-rprivate /``), so nothing done here propagates
   back to the parent's namespace; then either ``chroot`` or
   ``pivot_root`` (bind-mount the new root on itself so it is a mount
   point, enter it, pivot, enter the new "/", and detach the old root
   unless asked to keep it); ``/proc`` is mounted for
   :meth:`Command.mount_proc` inside the new root, before the old root
   goes (an unprivileged proc mount needs a visible one). Either way the
   child then enters "/" of the new root, so no working directory is left
   outside it.
8. ``chdir`` to :meth:`Command.current_dir` (inside the new root, if any).
   Before dropping privileges, as the crate does, so a root parent can
   enter a directory the target user could not.
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
   :class:`~aunshare.errors.Exec`.

Not a step but part of the plan: the clone flags. With
:meth:`Command.new_cgroup` or :meth:`Command.cgroup` the child is created
directly inside its cgroup (``CLONE_INTO_CGROUP``; the parent supplies the
cgroup's directory descriptor at spawn), so it never runs a single
instruction outside it.
"""

from __future__ import annotations

import functools
import os
import signal as _signal
import struct
from collections.abc import Sequence
from typing import NamedTuple, final

from . import errors
from ._linux import (
    AT_EMPTY_PATH, AT_FDCWD, CLONE_INTO_CGROUP, CLOSE_RANGE_CLOEXEC, LINUX_CAPABILITY_VERSION_3,
    MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC, PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_RAISE, PR_CAPBSET_DROP, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG, SECCOMP_FILTER_FLAG_NEW_LISTENER, SECCOMP_SET_MODE_FILTER, SIG_SETMASK,
    TIOCSCTTY,
)
from ._names import fd_name, signal_name
from .namespaces import Namespace, cap_name, self_maps
from .seccomp import Action, SeccompFilter
from .spec import SelfMap, Spec

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
    elif spec.leads_group:
        steps.append(_GROUP_LEADER)

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

    # 7. mounts and root
    if new & Namespace.MOUNT:
        steps.append(Step("mount", (0, CStr(b"/"), 0, MS_REC | MS_PRIVATE, 0),
                          errors.ChangeRoot, "make every mount private under", b"/"))
    root_changed = False
    if iso.chroot is not None:
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
        argv = (b"aunshare-init", report, str(len(steps)).encode(), setup.program,
                *setup.argv)
        steps.append(Step("execveat", (setup.init_fd, CStr(b""), CStrArray(argv), env_arg,
                                       AT_EMPTY_PATH),
                          errors.Exec, "exec", setup.program,
                          detail="; ".join(d for d in (
                              "run by the init of the new pid namespace", *details) if d)))
    else:
        steps.append(Step("execve", (CStr(setup.program), CStrArray(tuple(setup.argv)),
                                     env_arg),
                          errors.Exec, "exec", setup.program,
                          detail="; ".join(d for d in details if d)))
    in_cgroup = life.cgroup_parent is not None or life.cgroup_path is not None
    flags = int(new) | (CLONE_INTO_CGROUP if in_cgroup and setup.into_cgroup else 0)
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
