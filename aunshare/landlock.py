"""Landlock rules as data: :class:`Landlock`, what each kind of rule grants,
and how a set of rules is fitted to the kernel's Landlock ABI.

Landlock (Linux 5.13+) lets an unprivileged process restrict itself: once
restricted, it (and everything it executes) may only reach the files and
TCP ports its rules allow. The parent builds the ruleset at spawn
(:mod:`aunshare.rulesets`); the child enforces it with
``landlock_restrict_self`` as one of its last steps before ``execve`` (see
:mod:`aunshare.plan`). Nothing here makes a syscall.

What each kind of path rule grants (rights the ABI lacks are left out):

============== =====================================================================
rule           Landlock access rights (``LANDLOCK_ACCESS_FS_*``)
============== =====================================================================
``read_only``  READ_FILE, READ_DIR
``execute``    EXECUTE, READ_FILE (a program, its interpreter and libraries are
               read to be loaded)
``read_write`` READ_FILE, READ_DIR, WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_CHAR,
               MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM,
               REFER (ABI 2), TRUNCATE (ABI 3), IOCTL_DEV (ABI 5); not EXECUTE
============== =====================================================================

A rule on a file rather than a directory grants only the rights that apply
to files (EXECUTE, WRITE_FILE, READ_FILE, TRUNCATE, IOCTL_DEV).

Each kind of rule restricts only when given: with any path rule every
filesystem right the ABI knows is handled (denied unless a rule grants
it); with ``tcp_bind`` ports, binding any other TCP port is denied; with
``tcp_connect`` ports, connecting to any other TCP port is denied.
"""

from __future__ import annotations

import os
from . import errors
from ._record import field, record

__all__ = [
    "Landlock", "LandlockReport", "Resolved", "FS_RIGHTS", "NET_RIGHTS", "SCOPES",
    "READ_ONLY", "READ_WRITE", "EXECUTE", "FILE_RIGHTS", "LATEST_ABI", "resolve",
    "rights_names", "fs_rights",
]

# LANDLOCK_ACCESS_FS_*: name -> (bit, the ABI that introduced it)
FS_RIGHTS: dict[str, tuple[int, int]] = {
    "EXECUTE": (1 << 0, 1), "WRITE_FILE": (1 << 1, 1), "READ_FILE": (1 << 2, 1),
    "READ_DIR": (1 << 3, 1), "REMOVE_DIR": (1 << 4, 1), "REMOVE_FILE": (1 << 5, 1),
    "MAKE_CHAR": (1 << 6, 1), "MAKE_DIR": (1 << 7, 1), "MAKE_REG": (1 << 8, 1),
    "MAKE_SOCK": (1 << 9, 1), "MAKE_FIFO": (1 << 10, 1), "MAKE_BLOCK": (1 << 11, 1),
    "MAKE_SYM": (1 << 12, 1), "REFER": (1 << 13, 2), "TRUNCATE": (1 << 14, 3),
    "IOCTL_DEV": (1 << 15, 5),
}
# LANDLOCK_ACCESS_NET_*
NET_RIGHTS: dict[str, tuple[int, int]] = {"BIND_TCP": (1 << 0, 4), "CONNECT_TCP": (1 << 1, 4)}
# LANDLOCK_SCOPE_*
SCOPES: dict[str, tuple[int, int]] = {"ABSTRACT_UNIX_SOCKET": (1 << 0, 6), "SIGNAL": (1 << 1, 6)}
# The newest ABI whose rights this module knows (ABI 7 added only logging flags).
LATEST_ABI = 7


def _bits(*names: str) -> int:
    out = 0
    for name in names:
        out |= FS_RIGHTS[name][0]
    return out


READ_ONLY = _bits("READ_FILE", "READ_DIR")
"""What a ``read_only`` path grants."""
EXECUTE = _bits("EXECUTE", "READ_FILE")
"""What an ``execute`` path grants."""
READ_WRITE = _bits(*(n for n in FS_RIGHTS if n != "EXECUTE"))
"""What a ``read_write`` path grants."""
FILE_RIGHTS = _bits("EXECUTE", "WRITE_FILE", "READ_FILE", "TRUNCATE", "IOCTL_DEV")
"""The rights a rule on a non-directory may grant."""


def fs_rights(abi: int) -> int:
    """Every filesystem right Landlock ABI ``abi`` knows."""
    return _bits(*(n for n, (_, since) in FS_RIGHTS.items() if since <= abi))


def rights_names(mask: int, table: dict[str, tuple[int, int]] = FS_RIGHTS) -> tuple[str, ...]:
    """The names of the rights set in ``mask``."""
    return tuple(name for name, (bit, _) in table.items() if mask & bit)


def _paths(value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes, os.PathLike)):
        value = (value,)
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"Landlock({what}=...) takes paths (str, bytes or os.PathLike) "
                        f"or an iterable of them, got {type(value).__name__}") from None
    out: list[str] = []
    for item in items:
        if not isinstance(item, (str, bytes, os.PathLike)):
            raise TypeError(f"Landlock({what}=...): {item!r} is not a path (str, bytes or "
                            "os.PathLike)")
        path = os.fsdecode(item)
        if not path or "\0" in path:
            raise ValueError(f"Landlock({what}=...): {path!r} is not a usable path "
                             "(empty, or contains NUL)")
        out.append(os.path.abspath(path))
    return tuple(sorted(set(out)))


def _ports(value: object, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        value = (value,)
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"Landlock({what}=...) takes TCP port numbers (int) or an "
                        f"iterable of them, got {type(value).__name__}") from None
    for port in items:
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"Landlock({what}=...): port {port!r} is not an int")
        if not 1 <= port <= 65535:
            raise ValueError(f"Landlock({what}=...): port {port} is outside 1-65535")
    return tuple(sorted(set(items)))


@record
class Landlock:
    """Landlock rules for a child: the files and TCP ports it may reach.

    Give to :meth:`Command.landlock`. Paths are made absolute (relative to
    the caller's working directory) and resolved by the parent at spawn, in
    its own view of the filesystem: a rule follows the file, so it still
    applies after the child changes its root or mount namespace. The
    program, its interpreter and shared libraries must be allowed too
    (``execute``, e.g. ``/usr``, and on merged-/usr systems ``/lib*`` and
    ``/bin`` are links into it) or ``execve`` fails with EACCES.

    ``best_effort`` (the default): enforce the strongest subset the kernel
    supports, skip paths that do not exist, and say what was left out in
    :attr:`Child.landlock_report`. ``best_effort=False``: any of those is a
    :class:`~aunshare.LandlockError` before anything starts.

    See :mod:`aunshare.landlock` for exactly what each rule grants.
    """

    read_only: tuple[str, ...] = ()
    """Trees (or files) the child may read: READ_FILE, READ_DIR."""
    read_write: tuple[str, ...] = ()
    """Trees the child may read, write, create in and remove from (not execute)."""
    execute: tuple[str, ...] = ()
    """Trees the child may execute programs from (EXECUTE, READ_FILE)."""
    tcp_bind: tuple[int, ...] = ()
    """The only TCP ports the child may bind (none given: binding is not restricted)."""
    tcp_connect: tuple[int, ...] = ()
    """The only TCP ports the child may connect to (none given: not restricted)."""
    scope_signals: bool = False
    """The child may signal only processes in its own Landlock domain (ABI 6)."""
    scope_abstract_unix: bool = False
    """The child may connect only to abstract unix sockets of its own domain (ABI 6)."""
    best_effort: bool = True
    """Enforce what the kernel supports and report the rest, rather than fail."""
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("read_only", "read_write", "execute"):
            set_(self, name, _paths(getattr(self, name), name))
        for name in ("tcp_bind", "tcp_connect"):
            set_(self, name, _ports(getattr(self, name), name))
        for name in ("scope_signals", "scope_abstract_unix", "best_effort"):
            set_(self, name, bool(getattr(self, name)))
        set_(self, "_hash", hash((self.read_only, self.read_write, self.execute, self.tcp_bind,
                                  self.tcp_connect, self.scope_signals,
                                  self.scope_abstract_unix, self.best_effort)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def path_rules(self) -> tuple[tuple[str, int], ...]:
        """(path, rights before fitting to an ABI), one per path; a path
        given in several lists gets the union."""
        grants: dict[str, int] = {}
        for paths, rights in ((self.read_only, READ_ONLY), (self.execute, EXECUTE),
                              (self.read_write, READ_WRITE)):
            for path in paths:
                grants[path] = grants.get(path, 0) | rights
        return tuple(sorted(grants.items()))

    @property
    def scoped(self) -> int:
        """The LANDLOCK_SCOPE_* bits asked for."""
        return ((SCOPES["SIGNAL"][0] if self.scope_signals else 0)
                | (SCOPES["ABSTRACT_UNIX_SOCKET"][0] if self.scope_abstract_unix else 0))

    def describe(self) -> str:
        """The rules in the command-line's words (for ``Command.__repr__``)."""
        parts = [f"ro={','.join(self.read_only)}" if self.read_only else "",
                 f"rw={','.join(self.read_write)}" if self.read_write else "",
                 f"exec={','.join(self.execute)}" if self.execute else "",
                 f"bind={','.join(map(str, self.tcp_bind))}" if self.tcp_bind else "",
                 f"connect={','.join(map(str, self.tcp_connect))}" if self.tcp_connect else "",
                 "scope=signals" if self.scope_signals else "",
                 "scope=abstract-unix" if self.scope_abstract_unix else "",
                 "" if self.best_effort else "strict"]
        return " ".join(p for p in parts if p)


@record
class LandlockReport:
    """What a child's Landlock rules became on this kernel
    (:attr:`Child.landlock_report`)."""

    abi: int
    """The kernel's Landlock ABI version; 0 when Landlock is unavailable."""
    enforced: bool
    """The child restricted itself (False: nothing was enforced)."""
    dropped_rights: tuple[str, ...] = ()
    """Rights this ABI cannot restrict (``"fs:TRUNCATE"``, ``"net:BIND_TCP"``):
    the child keeps them everywhere."""
    dropped_ports: tuple[tuple[str, int], ...] = ()
    """(``"bind"`` or ``"connect"``, port) rules not enforced (no network rights)."""
    dropped_scopes: tuple[str, ...] = ()
    """Scopes this ABI lacks (``"SIGNAL"``, ``"ABSTRACT_UNIX_SOCKET"``)."""
    skipped_paths: tuple[str, ...] = ()
    """Paths that did not exist at spawn: no rule was added for them."""
    reason: str = ""
    """Why nothing was enforced, when it was not."""

    @property
    def complete(self) -> bool:
        """Everything asked for is enforced."""
        return self.enforced and not (self.dropped_rights or self.dropped_ports
                                      or self.dropped_scopes or self.skipped_paths)


@record
class Resolved:
    """Rules fitted to an ABI: what the ruleset handles, and what was dropped."""

    abi: int
    handled_fs: int
    handled_net: int
    scoped: int
    path_rules: tuple[tuple[str, int], ...]
    """(path, rights) to add, the rights within ``handled_fs``."""
    bind_ports: tuple[int, ...]
    connect_ports: tuple[int, ...]
    report: LandlockReport


def _missing(what: str, since: int, abi: int, fix: str) -> errors.LandlockError:
    import errno

    return errors.LandlockError(
        errno.EOPNOTSUPP, what,
        f"needs Landlock ABI {since}, this kernel has {abi}; {fix}", action="restrict")


def resolve(rules: Landlock, abi: int) -> Resolved:
    """Fit ``rules`` to Landlock ABI ``abi`` (>= 1; an ABI newer than
    :data:`LATEST_ABI` handles every right this module knows). Pure.

    With ``best_effort`` rights, ports and scopes the ABI lacks are dropped
    and listed in the report; without it they raise
    :class:`~aunshare.LandlockError` (EOPNOTSUPP).
    """
    fix = ("use a newer kernel, or enforce what it supports with "
           "Landlock(best_effort=True)")
    strict = not rules.best_effort
    dropped: list[str] = []
    handled_fs = 0
    path_rules = rules.path_rules
    if path_rules:
        handled_fs = fs_rights(abi)
        lost = fs_rights(LATEST_ABI) & ~handled_fs
        if lost and strict:
            name = rights_names(lost)[0]
            raise _missing(f"filesystem right {name}", FS_RIGHTS[name][1], abi, fix)
        dropped += [f"fs:{n}" for n in rights_names(lost)]
        path_rules = tuple((p, r & handled_fs) for p, r in path_rules)
    handled_net = 0
    bind, connect = rules.tcp_bind, rules.tcp_connect
    dropped_ports: list[tuple[str, int]] = []
    for ports, name in ((bind, "BIND_TCP"), (connect, "CONNECT_TCP")):
        if not ports:
            continue
        bit, since = NET_RIGHTS[name]
        if abi >= since:
            handled_net |= bit
        elif strict:
            raise _missing(f"network right {name} (tcp ports)", since, abi, fix)
        else:
            dropped.append(f"net:{name}")
            kind = "bind" if name == "BIND_TCP" else "connect"
            dropped_ports += [(kind, p) for p in ports]
    if not handled_net & NET_RIGHTS["BIND_TCP"][0]:
        bind = ()
    if not handled_net & NET_RIGHTS["CONNECT_TCP"][0]:
        connect = ()
    scoped = 0
    dropped_scopes: list[str] = []
    for name, (bit, since) in SCOPES.items():
        if not rules.scoped & bit:
            continue
        if abi >= since:
            scoped |= bit
        elif strict:
            raise _missing(f"scope {name}", since, abi, fix)
        else:
            dropped_scopes.append(name)
    enforced = bool(handled_fs or handled_net or scoped)
    report = LandlockReport(abi, enforced, tuple(dropped), tuple(dropped_ports),
                            tuple(dropped_scopes),
                            reason="" if enforced else f"Landlock ABI {abi} supports none of "
                                                       "the rules given")
    return Resolved(abi, handled_fs, handled_net, scoped, path_rules, bind, connect, report)

