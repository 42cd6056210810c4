"""Pure data for isolation: namespaces, id maps, capabilities.

Nothing here touches the system; :class:`~aunshare.command.Command` stores
these values and :mod:`aunshare.plan` turns them into child steps.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from itertools import pairwise

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from ._record import NamedTuple  # (see there)

__all__ = ["Namespace", "UidMap", "GidMap", "Capability", "JOIN_ORDER", "self_maps"]


class Namespace(enum.IntFlag):
    """A Linux namespace type; the values are the ``CLONE_NEW*`` flags.

    Combine with ``|`` (``Namespace.USER | Namespace.NET``) or pass an
    iterable of members where a set of namespaces is expected.
    """

    MOUNT = 0x00020000
    """Mount points (``CLONE_NEWNS``)."""
    UTS = 0x04000000
    """Host and domain name."""
    IPC = 0x08000000
    """System V IPC and POSIX message queues."""
    USER = 0x10000000
    """User and group ids, capabilities."""
    PID = 0x20000000
    """Process ids: the child is pid 1 of the new namespace."""
    NET = 0x40000000
    """Network devices, addresses, ports, routes, firewall."""
    CGROUP = 0x02000000
    """The cgroup root the child sees."""
    TIME = 0x00000080
    """Boot and monotonic clock offsets (clone3 only, Linux 5.6)."""

    @property
    def proc_name(self) -> str:
        """The name of this namespace under ``/proc/PID/ns/``."""
        return _PROC_NAMES[self]


_PROC_NAMES = {
    Namespace.MOUNT: "mnt", Namespace.UTS: "uts", Namespace.IPC: "ipc",
    Namespace.USER: "user", Namespace.PID: "pid", Namespace.NET: "net",
    Namespace.CGROUP: "cgroup", Namespace.TIME: "time",
}
ALL_NAMESPACES = Namespace(sum(_PROC_NAMES))

# The order the child joins existing namespaces (setns): the user namespace
# first, because joining it grants the capabilities the other joins need;
# the mount namespace last, because joining it changes the root and working
# directory under the later steps' feet.
JOIN_ORDER: tuple[Namespace, ...] = (
    Namespace.USER, Namespace.CGROUP, Namespace.IPC, Namespace.UTS, Namespace.NET,
    Namespace.PID, Namespace.TIME, Namespace.MOUNT,
)


def to_namespaces(value: Namespace | int | Iterable[Namespace], what: str) -> Namespace:
    """A combination of :class:`Namespace` flags from a flag or an iterable of them."""
    if isinstance(value, bool):
        raise TypeError(f"{what} takes Namespace flags, not a bool")
    if isinstance(value, int):
        if value & ~ALL_NAMESPACES:
            raise ValueError(f"{what}: {value:#x} has bits that are not namespaces "
                             f"(known: {', '.join(n.name or '' for n in Namespace)})")
        return Namespace(value)
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{what} takes Namespace flags, not {type(value).__name__}; "
                        f"use e.g. Namespace.NET")
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{what} takes Namespace flags or an iterable of them, "
                        f"not {type(value).__name__}") from None
    out = Namespace(0)
    for item in items:
        if not isinstance(item, Namespace):
            raise TypeError(f"{what}: {item!r} is not a Namespace member")
        out |= item
    return out


def namespace_names(flags: int) -> str:
    """``"USER|NET"`` for a combination, in a fixed order."""
    return "|".join(n.name or "" for n in JOIN_ORDER if flags & n) or "none"


class _IdMap(NamedTuple):
    inside: int
    outside: int
    # The field shadows tuple.count() on purpose (the public name of a map's
    # size); mypy sees an incompatible override of the method.
    count: int  # type: ignore[assignment]


def _check_map(cls: type, args: tuple[object, object, object]) -> None:
    ids: list[int] = []
    for name, value in zip(("inside", "outside", "count"), args):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{cls.__name__} {name} must be an int, got {type(value).__name__}")
        if not 0 <= value < 2**32 - 1:
            raise ValueError(f"{cls.__name__} {name} must be in 0..4294967294, got {value}")
        ids.append(value)
    count = ids[2]
    if count == 0:
        raise ValueError(f"{cls.__name__} count must be at least 1")
    for name, start in zip(("inside", "outside"), ids[:2]):
        if start + count > 2**32 - 1:
            raise ValueError(f"{cls.__name__}: {name} range {start}..{start + count - 1} "
                             f"runs past the largest id 4294967294")


class UidMap(_IdMap):
    """One line of a uid map: ``count`` uids from ``inside_uid`` in the new
    user namespace are ``outside_uid``... in the parent's."""

    def __new__(cls, inside_uid: int, outside_uid: int, count: int = 1) -> UidMap:
        """Validate and build one uid map line."""
        _check_map(cls, (inside_uid, outside_uid, count))
        return super().__new__(cls, inside_uid, outside_uid, count)

    def line(self) -> bytes:
        """The line as /proc/PID/uid_map takes it."""
        return b"%d %d %d\n" % self


class GidMap(_IdMap):
    """One line of a gid map: ``count`` gids from ``inside_gid`` in the new
    user namespace are ``outside_gid``... in the parent's."""

    def __new__(cls, inside_gid: int, outside_gid: int, count: int = 1) -> GidMap:
        """Validate and build one gid map line."""
        _check_map(cls, (inside_gid, outside_gid, count))
        return super().__new__(cls, inside_gid, outside_gid, count)

    def line(self) -> bytes:
        """The line as /proc/PID/gid_map takes it."""
        return b"%d %d %d\n" % self


def check_maps(maps: Iterable[_IdMap], cls: type, what: str) -> tuple[_IdMap, ...]:
    """Validate a list of map lines: type, at most 340 lines, no overlap."""
    if isinstance(maps, (str, bytes, _IdMap)):
        raise TypeError(f"{what} takes a list of {cls.__name__}, not a single "
                        f"{type(maps).__name__}")
    out = tuple(maps)
    for m in out:
        if type(m) is not cls:
            raise TypeError(f"{what}: {m!r} is not a {cls.__name__}")
    if len(out) > 340:
        raise ValueError(f"{what}: the kernel takes at most 340 lines, got {len(out)}")
    for side in (0, 1):
        ranges = sorted((m[side], m[side] + m.count) for m in out)
        for (a0, a1), (b0, _) in pairwise(ranges):
            if b0 < a1:
                where = "inside" if side == 0 else "outside"
                raise ValueError(f"{what}: the {where} ranges starting at {a0} and {b0} "
                                 "overlap; the kernel refuses overlapping lines")
    return out


class Capability(enum.IntEnum):
    """Linux capabilities, numbered as in ``<linux/capability.h>``."""

    CAP_CHOWN = 0
    CAP_DAC_OVERRIDE = 1
    CAP_DAC_READ_SEARCH = 2
    CAP_FOWNER = 3
    CAP_FSETID = 4
    CAP_KILL = 5
    CAP_SETGID = 6
    CAP_SETUID = 7
    CAP_SETPCAP = 8
    CAP_LINUX_IMMUTABLE = 9
    CAP_NET_BIND_SERVICE = 10
    CAP_NET_BROADCAST = 11
    CAP_NET_ADMIN = 12
    CAP_NET_RAW = 13
    CAP_IPC_LOCK = 14
    CAP_IPC_OWNER = 15
    CAP_SYS_MODULE = 16
    CAP_SYS_RAWIO = 17
    CAP_SYS_CHROOT = 18
    CAP_SYS_PTRACE = 19
    CAP_SYS_PACCT = 20
    CAP_SYS_ADMIN = 21
    CAP_SYS_BOOT = 22
    CAP_SYS_NICE = 23
    CAP_SYS_RESOURCE = 24
    CAP_SYS_TIME = 25
    CAP_SYS_TTY_CONFIG = 26
    CAP_MKNOD = 27
    CAP_LEASE = 28
    CAP_AUDIT_WRITE = 29
    CAP_AUDIT_CONTROL = 30
    CAP_SETFCAP = 31
    CAP_MAC_OVERRIDE = 32
    CAP_MAC_ADMIN = 33
    CAP_SYSLOG = 34
    CAP_WAKE_ALARM = 35
    CAP_BLOCK_SUSPEND = 36
    CAP_AUDIT_READ = 37
    CAP_PERFMON = 38
    CAP_BPF = 39
    CAP_CHECKPOINT_RESTORE = 40


def cap_name(cap: int) -> str:
    """``"CAP_NET_ADMIN"`` for 12; the number for one this list does not know."""
    try:
        return Capability(cap).name
    except ValueError:
        return f"capability {cap}"


def self_maps(root: bool, uid: int, gid: int) -> tuple[UidMap, GidMap]:
    """The one-line maps of :meth:`Command.map_root_user` (``root``) or
    :meth:`Command.map_current_user` for a caller with effective ids
    ``uid``/``gid``: the child writes them itself, or the parent does in a
    handshake."""
    return (UidMap(0 if root else uid, uid), GidMap(0 if root else gid, gid))
