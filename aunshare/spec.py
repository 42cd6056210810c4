"""The frozen spec: everything a :class:`~aunshare.Command` says, as one
immutable, hashable record made of small records by concern.

``Command.spec()`` makes one; the plan (:mod:`aunshare.plan`), the parent's
preparation (:mod:`aunshare.launch`) and the handshake read only these
public fields, and the plan cache is keyed by the spec itself, so a field
added here can never be forgotten by the cache. Combinations that cannot
run are refused here, in one place, when the spec is made (:func:`Spec`'s
constructor raises ValueError naming both sides and what to do).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable

from ._names import STDIO_NAMES
from ._record import field, record
from .fds import Fd, FdKind, OwnedFd
from .landlock import Landlock
from .namespaces import GidMap, Namespace, UidMap, namespace_names
from .policy import KillPolicy, KillTarget
from .seccomp import SeccompFilter

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from ._record import NamedTuple  # (see there)

__all__ = [
    "Spec", "ProgramSpec", "DescriptorSpec", "IdentitySpec", "IsolationSpec", "LifetimeSpec",
    "SelfMap", "PivotRoot", "Rlimit", "MountOp", "MountKind", "CgroupLimits", "parse_size",
    "UserNetwork",
]


def _hashed(record: object, *values: object) -> None:
    """Store the hash of a record's values: specs are hashed on every spawn
    (the plan cache key), records are immutable, so hash them once."""
    object.__setattr__(record, "_hash", hash(values))


class SelfMap(enum.Enum):
    """Which one-line id maps the child writes for itself."""

    ROOT = "root"
    """uid/gid 0 inside map to the caller's effective ids."""
    CURRENT = "current"
    """The caller's ids map to themselves."""


class PivotRoot(NamedTuple):
    """:meth:`Command.pivot_root`'s arguments, normalised."""

    new_root: bytes
    put_old: bytes
    """Relative to ``new_root``."""
    unmount: bool


class MountKind(enum.Enum):
    """What one operation of the child's filesystem view does."""

    BIND = "bind_mount"
    TMPFS = "tmpfs"
    DIR = "mkdir"
    SYMLINK = "symlink"
    FILE = "write_file"
    REMOUNT_RO = "remount_read_only"
    DEV = "mount_dev"
    PROC = "mount_proc"
    OVERLAY = "overlay"


class MountOp(NamedTuple):
    """One operation of the filesystem view (:meth:`Command.bind_mount`,
    :meth:`Command.tmpfs`, ...), normalised: absolute paths without ``.``,
    ``..`` or repeated slashes."""

    kind: MountKind
    dest: bytes
    """Where, as the child sees it."""
    source: bytes | None = None
    """A bind's source on the host, or a symlink's target."""
    read_only: bool = False
    allow_devices: bool = False
    optional: bool = False
    """A bind whose source may be missing (then skipped)."""
    mode: int = 0o755
    size: int | None = None
    """A tmpfs's size in bytes (None: the kernel's default)."""
    data: bytes = b""
    """A file's content (write_file)."""
    lower: tuple[bytes, ...] = ()
    """An overlay's lower directories, topmost first."""
    upper: bytes | None = None
    work: bytes | None = None

    def describe(self) -> str:
        """The call that made it, e.g. ``bind_mount('/usr', '/usr', read_only=True)``."""
        dest = repr(self.dest.decode(errors="replace"))
        kind = self.kind
        if kind is MountKind.BIND:
            assert self.source is not None
            extra = "".join(f", {name}=True" for name in ("read_only", "allow_devices", "optional")
                            if getattr(self, name))
            return f"bind_mount({self.source.decode(errors='replace')!r}, {dest}{extra})"
        if kind is MountKind.SYMLINK:
            assert self.source is not None
            return f"symlink({self.source.decode(errors='replace')!r}, {dest})"
        if kind is MountKind.OVERLAY:
            lower = [d.decode(errors="replace") for d in self.lower]
            return f"overlay({dest}, {lower!r})"
        return f"{kind.value}({dest})"


class Rlimit(NamedTuple):
    """One :meth:`Command.rlimit`: resource, soft and hard limit (2**64-1 is unlimited)."""

    resource: int
    soft: int
    hard: int


class UserNetwork(NamedTuple):
    """:meth:`Command.user_network`'s arguments, normalised."""

    pasta: bytes
    """The pasta program found at the builder call."""
    tcp_ports: tuple[tuple[int, int], ...] = ()
    """(host port, port inside) pairs forwarded into the sandbox."""
    udp_ports: tuple[tuple[int, int], ...] = ()


@record
class ProgramSpec:
    """What is executed, with which arguments and environment, where."""

    program: bytes
    """As given: looked up in PATH at spawn when it has no slash."""
    args: tuple[bytes, ...] = ()
    """Arguments after argv[0]."""
    arg0: bytes | None = None
    """argv[0]; None: the program as given."""
    env_clear: bool = False
    """Start from an empty environment rather than the parent's."""
    env: tuple[tuple[bytes, bytes | None], ...] = ()
    """Edits in order: (key, value), value None removes the key."""
    env_pid: tuple[bytes, ...] = ()
    """Variables set to the child's own pid (as it sees it)."""
    cwd: bytes | None = None
    """Working directory (inside the new root, if any)."""
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _hashed(self, self.program, self.args, self.arg0, self.env_clear, self.env, self.env_pid,
                self.cwd)

    def __hash__(self) -> int:
        return self._hash

    @property
    def argv(self) -> tuple[bytes, ...]:
        """argv as the child gets it."""
        return (self.program if self.arg0 is None else self.arg0, *self.args)

    def env_value(self, key: bytes) -> tuple[bool, bytes | None]:
        """(whether the edits set or remove ``key``, the last value given)."""
        found, value = False, None
        for k, v in self.env:
            if k == key:
                found, value = True, v
        return found, value


@record
class DescriptorSpec:
    """The child's descriptors: what each number gets, and what is closed."""

    fds: tuple[tuple[int, Fd], ...] = ()
    """(target, what it gets), sorted by target; absent stdio is inherited."""
    close: tuple[tuple[int, int], ...] = ((3, 2**31 - 1),)
    """Inclusive ranges marked close-on-exec before the targets are set."""
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _hashed(self, self.fds, self.close)

    def __hash__(self) -> int:
        return self._hash

    def get(self, target: int) -> Fd | None:
        """What ``target`` gets, or None when not set."""
        for t, fd in self.fds:
            if t == target:
                return fd
        return None

    @property
    def pty_target(self) -> int | None:
        """The first standard stream that is a pty, or None."""
        for t, fd in self.fds:
            if t < 3 and fd.kind is FdKind.PTY:
                return t
        return None


@record
class IdentitySpec:
    """Who the child is: ids, groups, process group."""

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None
    group_leader: bool = False
    """:meth:`Command.make_group_leader`."""
    new_session: bool = False
    """:meth:`Command.new_session`: setsid() (no controlling terminal)."""
    process_group: int | None = None
    """:meth:`Command.process_group`: join this existing process group."""
    umask: int | None = None
    """:meth:`Command.umask`: the child's file mode creation mask."""
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _hashed(self, self.uid, self.gid, self.groups, self.group_leader, self.new_session,
                self.process_group, self.umask)

    def __hash__(self) -> int:
        return self._hash


@record
class IsolationSpec:
    """Namespaces, id maps, root, capabilities and limits."""

    unshare: Namespace = Namespace(0)
    join: tuple[tuple[Namespace, OwnedFd], ...] = ()
    """Namespaces to join, in join order (user first, mount last)."""
    uid_maps: tuple[UidMap, ...] | None = None
    gid_maps: tuple[GidMap, ...] | None = None
    allow_setgroups: bool | None = None
    id_map_commands: tuple[bytes, bytes] | None = None
    """(newuidmap, newgidmap) to write ``uid_maps``/``gid_maps`` with."""
    self_map: SelfMap | None = None
    before_unfreeze: Callable[[int], Awaitable[object]] | None = None
    chroot: bytes | None = None
    pivot: PivotRoot | None = None
    hostname: bytes | None = None
    mount_proc: bool = False
    """A fresh /proc (inside the new root, if any; after the mounts)."""
    mounts: tuple[MountOp, ...] = ()
    """The filesystem view, in order."""
    fresh_root: bool = False
    """:meth:`Command.new_root`: the view is built in an empty tmpfs."""
    loopback: bool = True
    """Bring ``lo`` up in a new network namespace."""
    keep_caps: frozenset[int] | None = None
    no_new_privs: bool = False
    rlimits: tuple[Rlimit, ...] = ()
    """Sorted by resource."""
    seccomp: tuple[SeccompFilter | bytes, ...] = ()
    """seccomp filters installed in order just before exec (raw BPF as bytes)."""
    supervise: tuple[str, ...] = ()
    """Syscalls sent to the parent (:meth:`Command.supervise_syscalls`)."""
    landlock: Landlock | None = None
    """:meth:`Command.landlock`: the rules the child restricts itself with."""
    user_network: UserNetwork | None = None
    """:meth:`Command.user_network`: pasta, started in the handshake."""
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _hashed(self, self.unshare, self.join, self.uid_maps, self.gid_maps, self.allow_setgroups,
                self.id_map_commands, self.self_map, self.before_unfreeze, self.chroot, self.pivot,
                self.hostname, self.mount_proc, self.mounts, self.fresh_root, self.loopback,
                self.keep_caps, self.no_new_privs, self.rlimits, self.landlock,
                self.user_network, self.seccomp, self.supervise)

    def __hash__(self) -> int:
        return self._hash

    @property
    def joined(self) -> Namespace:
        """The namespace types joined."""
        out = Namespace(0)
        for ns, _ in self.join:
            out |= ns
        return out

    @property
    def new_root(self) -> bytes | None:
        """The directory that becomes the child's root, if any."""
        if self.chroot is not None:
            return self.chroot
        return self.pivot.new_root if self.pivot is not None else None


_SIZE = r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?:([kmgtpe])(i?b?)|(b?))\s*\Z"
_SIZE_SHIFT = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}


def parse_size(value: object, what: str) -> int:
    """A byte count from an int or a string; ValueError naming ``what``.

    The grammar: a decimal number (a fraction allowed, ``1.5G``), optional
    blanks, then an optional suffix ``K``, ``M``, ``G``, ``T``, ``P`` or ``E``
    (any case), each optionally followed by ``i`` and/or ``B``, or a lone
    ``B``. Every suffix is a power of 1024, as in the kernel's own parser
    of ``memory.max`` and in systemd: ``64K``, ``64KB`` and ``64KiB`` are all
    65536 bytes. Fractions are rounded down to a whole byte. The result
    must be at least 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{what} takes an int or a size string like '512M', "
                        f"not {type(value).__name__}")
    if isinstance(value, int):
        size = value
    else:
        import re  # here: the command line does not import re unless it parses a size

        m = re.match(_SIZE, value, re.IGNORECASE)
        if m is None:
            raise ValueError(f"{what}: {value!r} is not a size: give bytes as an int, or a "
                             "number with a suffix K, M, G, T, P or E (powers of 1024, "
                             "optionally followed by 'iB' or 'B'), like '512M' or '1.5GiB'")
        number, unit = m.group(1), (m.group(2) or "").lower()
        shift = _SIZE_SHIFT.get(unit, 0)
        whole, _, frac = number.partition(".")
        size = int(whole or "0") << shift
        if frac:
            size += (int(frac) << shift) // 10 ** len(frac)
    if size < 1:
        raise ValueError(f"{what} must be at least 1 byte, got {value!r}")
    return size


@record
class CgroupLimits:
    """:meth:`Command.limit_memory`, :meth:`~Command.limit_pids` and
    :meth:`~Command.limit_cpu`: what is written into the child's own cgroup
    before it runs. None: that limit is not set."""

    memory_max: int | None = None
    """Bytes (v2 ``memory.max``, v1 ``memory.limit_in_bytes``)."""
    swap_max: int | None = None
    """Bytes of swap on top of ``memory_max`` (v2 ``memory.swap.max``, v1
    ``memory.memsw.limit_in_bytes`` = memory + swap); None: the kernel's default."""
    oom_group: bool = True
    """v2 ``memory.oom.group``: an out-of-memory kill takes the whole cgroup."""
    pids_max: int | None = None
    """Tasks (processes and threads; ``pids.max``)."""
    cpu_quota_us: int | None = None
    """Microseconds of CPU time per period (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``)."""
    cpu_period_us: int = 100_000
    """The period of ``cpu_quota_us``."""

    @property
    def controllers(self) -> tuple[str, ...]:
        """The cgroup controllers these limits need."""
        return tuple(name for name, used in (
            ("memory", self.memory_max is not None or self.swap_max is not None),
            ("pids", self.pids_max is not None),
            ("cpu", self.cpu_quota_us is not None)) if used)


@record
class LifetimeSpec:
    """How the child is tied to the parent and stopped."""

    death_signal: int | None = 9
    """Parent-death signal (SIGKILL by default); None: may outlive the parent."""
    keep_sigmask: bool = False
    kill_policy: KillPolicy | None = None
    cgroup_parent: bytes | None = None
    """:meth:`Command.new_cgroup`: a cgroup of its own is made under this."""
    cgroup_path: bytes | None = None
    """:meth:`Command.cgroup`: start inside this existing cgroup."""
    init_process: bool = False
    """:meth:`Command.init_process`: pid 1 of the new pid namespace is an init
    that starts the program as pid 2, forwards signals to it and reaps orphans."""
    limits: CgroupLimits | None = None
    """Resource limits of the child's own cgroup (they imply one)."""
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _hashed(self, self.death_signal, self.keep_sigmask, self.kill_policy, self.cgroup_parent,
                self.cgroup_path, self.init_process, self.limits)

    def __hash__(self) -> int:
        return self._hash


@record
class Spec:
    """A frozen Command. Constructing one validates the combination."""

    program: ProgramSpec
    fds: DescriptorSpec = field(default_factory=lambda: DEFAULT_FDS)
    identity: IdentitySpec = field(default_factory=lambda: DEFAULT_IDENTITY)
    isolation: IsolationSpec = field(default_factory=lambda: DEFAULT_ISOLATION)
    lifetime: LifetimeSpec = field(default_factory=lambda: DEFAULT_LIFETIME)
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self)
        _hashed(self, self.program, self.fds, self.identity, self.isolation, self.lifetime)

    def __hash__(self) -> int:
        return self._hash

    @property
    def kill_target(self) -> KillTarget:
        """The target of the Command's kill policy (AUTO when none was set)."""
        policy = self.lifetime.kill_policy
        return policy.target if policy is not None else KillTarget.AUTO

    @property
    def leads_group(self) -> bool:
        """The child leads a process group of its own (setpgid or setsid)."""
        return (self.identity.group_leader or self.identity.new_session
                or self.kill_target is KillTarget.GROUP
                or self.fds.pty_target is not None)

    @property
    def own_cgroup(self) -> bool:
        """The child is created in a cgroup made for it (:meth:`Command.new_cgroup`,
        or resource limits, which imply one)."""
        life = self.lifetime
        return life.cgroup_parent is not None or life.limits is not None

    @property
    def parent_maps(self) -> bool:
        """The parent writes id maps (or runs newuidmap) while the child waits."""
        return self.isolation.uid_maps is not None

    @property
    def owns_descriptors(self) -> bool:
        """The spec holds descriptors of its own (``dup_file``,
        ``set_namespace``): they are closed when the last holder is gone."""
        return bool(self.isolation.join) or (bool(self.fds.fds) and any(
            fd.owned is not None for _, fd in self.fds.fds))

    @property
    def needs_handshake(self) -> bool:
        """The parent must act between clone and exec: the child waits for it."""
        iso = self.isolation
        return (iso.uid_maps is not None or iso.before_unfreeze is not None
                or iso.user_network is not None or bool(self.program.env_pid)
                or bool(iso.supervise))


# SECCOMP_RET_* of actions that stop a call (errno, kill, trap, trace)
_REFUSING = frozenset({0x00050000, 0x80000000, 0x00000000, 0x00030000, 0x7FF00000})

# The records of a Command that sets nothing: shared (they are immutable),
# so a plain Command costs one record of its own.
DEFAULT_FDS: DescriptorSpec = DescriptorSpec()
DEFAULT_IDENTITY: IdentitySpec = IdentitySpec()
DEFAULT_ISOLATION: IsolationSpec = IsolationSpec()
DEFAULT_LIFETIME: LifetimeSpec = LifetimeSpec()


def _validate(spec: Spec) -> None:
    if (spec.isolation is DEFAULT_ISOLATION and spec.lifetime is DEFAULT_LIFETIME
            and spec.fds is DEFAULT_FDS and spec.identity is DEFAULT_IDENTITY):
        return  # nothing to combine (the common case, on every spawn)
    iso, life = spec.isolation, spec.lifetime
    pty = spec.fds.pty_target
    if pty is not None:
        if spec.identity.group_leader:
            raise ValueError(f"make_group_leader() conflicts with {STDIO_NAMES[pty]}"
                             "(Stdio.pty()): a pty makes the child a session leader "
                             "(setsid), which already leads its own process group "
                             "and cannot be moved to another; drop make_group_leader()")
        sizes = {fd.size for t, fd in spec.fds.fds if t < 3 and fd.kind is FdKind.PTY}
        for i, what in enumerate(("rows", "cols")):
            given = {v for s in sizes if s is not None and (v := s[i]) is not None}
            if len(given) > 1:
                raise ValueError(f"Stdio.pty({what}=...) is given different values "
                                 f"({', '.join(map(str, sorted(given)))}) on different "
                                 "standard streams: they share one terminal, which has "
                                 "one window size")
    pgid = spec.identity.process_group
    if pgid is not None and spec.leads_group:
        why = ("Stdio.pty() makes it a session leader" if pty is not None
               else "new_session() makes it a session leader" if spec.identity.new_session
               else "make_group_leader() or a kill policy aimed at the group makes it lead "
                    "a group of its own")
        raise ValueError(f"process_group({pgid}) puts the child in an existing process group, "
                         f"but {why}; choose one")
    if spec.kill_target is KillTarget.CGROUP and not spec.own_cgroup:
        raise ValueError("a kill policy aimed at the cgroup needs a cgroup for the child: "
                         "call Command.new_cgroup(parent) too")
    if life.cgroup_path is not None and life.cgroup_parent is not None:
        raise ValueError("cgroup() places the child in an existing cgroup and new_cgroup() "
                         "creates one for it; choose one")
    if life.limits is not None and life.cgroup_path is not None:
        raise ValueError(
            f"limit_{life.limits.controllers[0] if life.limits.controllers else 'memory'}() "
            "writes limits into a cgroup aunshare creates for the child, but cgroup("
            f"{life.cgroup_path.decode(errors='replace')!r}) puts it in an existing one, "
            "which aunshare did not create and will not change: use new_cgroup(parent) "
            "to have the limited cgroup made under that directory")
    lim = life.limits
    if lim is not None and lim.swap_max is not None and lim.memory_max is None:
        raise ValueError("limit_memory(swap_max=...) needs the memory limit itself")
    new, joined = iso.unshare, iso.joined
    both = new & joined
    if both:
        raise ValueError(f"{namespace_names(both)} namespace is both created (unshare) and "
                         "joined (set_namespace); choose one")
    if joined & Namespace.USER and new:
        raise ValueError(
            f"set_namespace(USER) with unshare({namespace_names(new)}): the new namespaces "
            "would be created before the join, owned by the caller's user namespace, not "
            "the joined one; create them from a child already in that user namespace")
    if iso.self_map is not None and joined & Namespace.USER:
        raise ValueError(f"map_{iso.self_map.value}_user() maps a new user namespace, but "
                         "the user namespace is joined (set_namespace), not created")
    if iso.id_map_commands is not None and iso.uid_maps is None:
        raise ValueError("set_id_map_commands() runs newuidmap/newgidmap for the maps of "
                         "set_id_maps(); call set_id_maps() too")
    if iso.hostname is not None and not (new | joined) & Namespace.UTS:
        raise ValueError("hostname() would rename the host: it needs a UTS namespace, "
                         "add unshare(Namespace.UTS)")
    if iso.chroot is not None and iso.pivot is not None:
        raise ValueError("chroot_dir() and pivot_root() both change the root; choose one")
    if iso.pivot is not None and not new & Namespace.MOUNT:
        raise ValueError("pivot_root() needs a new mount namespace, or it would change the "
                         "root of every process in the caller's: add unshare(Namespace.MOUNT)")
    if life.init_process and not new & Namespace.PID:
        raise ValueError("init_process(True) starts an init as pid 1 of a new pid namespace, "
                         "but there is none: add unshare(Namespace.PID)")
    if iso.user_network is not None and not new & Namespace.NET:
        raise ValueError("user_network() connects the child's own network namespace to the "
                         "outside: add unshare(Namespace.NET) (with Namespace.USER when "
                         "unprivileged)")
    if life.init_process and iso.supervise:
        raise ValueError("supervise_syscalls() with init_process(True): the init (under the "
                         "same filter) would wait for answers before the program starts; "
                         "choose one")
    if life.init_process:
        for flt in iso.seccomp:
            if isinstance(flt, SeccompFilter) and flt.action_for("execveat").value in _REFUSING:
                raise ValueError("seccomp(): the filter refuses execveat, which starts the init "
                                 "of init_process(True); allow execveat or drop init_process()")
    if iso.mount_proc and not new & Namespace.MOUNT:
        raise ValueError("mount_proc() needs a new mount namespace, or it would mount over "
                         "the caller's /proc: add unshare(Namespace.MOUNT) (and Namespace.PID "
                         "to see only the child's processes)")
    if iso.mounts or iso.fresh_root:
        _validate_mounts(iso)


def _under(path: bytes, top: bytes) -> bool:
    """``path`` is ``top`` or below it (both normalised)."""
    return top == b"/" or path == top or path.startswith(top + b"/")


def _validate_mounts(iso: IsolationSpec) -> None:
    mounts = iso.mounts
    if not mounts and not iso.fresh_root:
        return
    if not iso.unshare & Namespace.MOUNT:
        raise ValueError("the filesystem view (new_root(), bind_mount(), tmpfs(), ...) needs a "
                         "new mount namespace, or it would change the caller's: add "
                         "unshare(Namespace.MOUNT)")
    if iso.chroot is not None or iso.pivot is not None:
        what = "chroot_dir()" if iso.chroot is not None else "pivot_root()"
        raise ValueError(f"{what} changes the root to a prepared directory, and new_root()/"
                         "bind_mount()/tmpfs()/... build the view themselves; choose one "
                         "(new_root() with bind_mount() replaces a prepared root)")
    for i, op in enumerate(mounts):
        if not iso.fresh_root:
            if op.kind is MountKind.FILE:
                raise ValueError(f"{op.describe()} needs new_root(): the file is staged in the "
                                 "new root's private tmpfs and bound in, which an existing root "
                                 "does not have")
            if op.kind is MountKind.DEV:
                raise ValueError(f"{op.describe()} needs new_root(): it binds the host's device "
                                 "nodes from /dev, which the new /dev would hide")
            if op.kind is MountKind.OVERLAY and op.upper is None:
                raise ValueError(f"{op.describe()} without upper= keeps its writable layer in "
                                 "the new root's private tmpfs: call new_root(), or give "
                                 "upper= and work= directories")
            if op.kind in (MountKind.DIR, MountKind.SYMLINK) and not any(
                    _under(op.dest, m.dest) and m.dest != op.dest
                    for m in mounts[:i] if m.kind in _MOUNTS):
                raise ValueError(f"{op.describe()} without new_root() would create it on the "
                                 "host's own file system: mount a tmpfs() above it first, or "
                                 "call new_root()")
            continue
        for top, needs in ((b"/proc", "mount_proc()"), (b"/dev", "mount_dev()")):
            if op.dest.startswith(top + b"/") and not any(
                    _under(op.dest, m.dest) and m.kind in _MOUNTS for m in mounts[:i]):
                raise ValueError(f"{op.describe()}: a destination under {top.decode()} in a "
                                 f"new_root() needs {needs} (or a mount at {top.decode()}) "
                                 "before it; in the new root that directory starts empty")


# Operations that put a mount at their destination.
_MOUNTS = frozenset({MountKind.BIND, MountKind.TMPFS, MountKind.DEV, MountKind.PROC,
                     MountKind.OVERLAY})
