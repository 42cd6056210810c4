"""The parent's side of Landlock: probe the kernel's ABI (once) and build a
child's ruleset at spawn, so that the child only has to call
``landlock_restrict_self`` on it (a step of :mod:`aunshare.plan`).

Synchronous. The ruleset descriptor is recorded in the caller's
:class:`~aunshare.descriptors.Opened` (closed once the child is cloned, or
on failure); every path descriptor opened for a rule is closed before
:func:`prepare` returns, whatever happens.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct

from . import errors
from ._linux import SYSCALLS, libc
from .descriptors import Opened, above
from .landlock import FILE_RIGHTS, Landlock, LandlockReport, Resolved, resolve

__all__ = ["abi", "prepare"]

LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2
_O_PATH = getattr(os, "O_PATH", 0o10000000)

_syscall = libc.syscall
_syscall.restype = ctypes.c_long

# (ABI, errno when unavailable), probed on first use.
_ABI: list[tuple[int, int]] = []


def _call(name: str, *args: int | ctypes.c_char_p | None) -> int:
    conv = [a if isinstance(a, ctypes.c_char_p) or a is None else ctypes.c_long(a)
            for a in args]
    r: int = _syscall(ctypes.c_long(SYSCALLS[name]), *conv)
    if r == -1:
        raise OSError(ctypes.get_errno(), "")
    return r


def _probe() -> tuple[int, int]:
    if not _ABI:
        try:
            found = (_call("landlock_create_ruleset", None, 0,
                           LANDLOCK_CREATE_RULESET_VERSION), 0)
        except OSError as exc:  # ENOSYS: not built in; EOPNOTSUPP: disabled at boot
            found = (0, exc.errno or errno.ENOSYS)
        except KeyError:  # an architecture without the syscall numbers here
            found = (0, errno.ENOSYS)
        _ABI.append(found)
    return _ABI[0]


def abi() -> int:
    """This kernel's Landlock ABI version (1 for Linux 5.13, ... 7 for
    6.15), or 0 when Landlock is unavailable. Probed once per process."""
    return _probe()[0]


def prepare(rules: Landlock, hi: int, opened: Opened) -> tuple[int, LandlockReport]:
    """Build the ruleset for ``rules``: (its descriptor, above every dup3
    target and recorded in ``opened``; or -1 when nothing is enforced, and
    the report). Raises :class:`~aunshare.LandlockError` when a rule cannot
    be honoured and ``rules.best_effort`` is False."""
    version, err = _probe()
    if version == 0:
        why = ("Landlock is not available: "
               + ("the kernel was built without it" if err == errno.ENOSYS else
                  "it is not enabled (add landlock to the kernel's lsm= boot parameter)"))
        if not rules.best_effort:
            raise errors.LandlockError(
                err, None, why + "; or run unconfined with Landlock(best_effort=True)",
                action="create Landlock ruleset")
        return -1, LandlockReport(0, False, reason=why)
    fitted = resolve(rules, version)
    report = fitted.report
    if not report.enforced:
        return -1, report
    ruleset = _create(fitted)
    opened.child_side.append(ruleset)
    skipped: list[str] = []
    for path, rights in fitted.path_rules:
        if not _add_path(ruleset, path, rights, rules.best_effort):
            skipped.append(path)
    for ports, right in ((fitted.bind_ports, 1), (fitted.connect_ports, 2)):
        for port in ports:
            _add_rule(ruleset, LANDLOCK_RULE_NET_PORT, struct.pack("=QQ", right, port),
                      f"tcp port {port}")
    if skipped:
        from ._record import replace

        report = replace(report, skipped_paths=tuple(skipped))
    return above(ruleset, hi, opened, "the Landlock ruleset"), report


def _create(fitted: Resolved) -> int:
    attr = struct.pack("=QQQ", fitted.handled_fs, fitted.handled_net, fitted.scoped)
    # The oldest layout that holds what is asked: a kernel refuses a size it
    # does not know only when the extra bytes are not zero, but stay exact.
    size = 24 if fitted.scoped else 16 if fitted.handled_net else 8
    buf = ctypes.create_string_buffer(attr, len(attr))
    try:
        return _call("landlock_create_ruleset", ctypes.addressof(buf), size, 0)
    except OSError as exc:
        raise errors.LandlockError(exc.errno or errno.EINVAL, None,
                                   "the kernel refused the ruleset",
                                   action="create Landlock ruleset") from None


def _add_rule(ruleset: int, kind: int, attr: bytes, what: str) -> None:
    buf = ctypes.create_string_buffer(attr, len(attr))
    try:
        _call("landlock_add_rule", ruleset, kind, ctypes.addressof(buf), 0)
    except OSError as exc:
        raise errors.LandlockError(exc.errno or errno.EINVAL, what,
                                   "the kernel refused the rule",
                                   action="add Landlock rule for") from None


def _add_path(ruleset: int, path: str, rights: int, best_effort: bool) -> bool:
    """Add the rule for ``path``; False when it was skipped (best effort)."""
    try:
        fd = os.open(path, _O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        if best_effort:
            return False
        raise errors.LandlockError(exc.errno or errno.ENOENT, path,
                                   "a Landlock rule's path must exist when the child is "
                                   "started; create it first, or skip it with "
                                   "Landlock(best_effort=True)",
                                   action="open") from None
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= FILE_RIGHTS  # the rest apply only to directories
        if rights:
            _add_rule(ruleset, LANDLOCK_RULE_PATH_BENEATH, struct.pack("=Qi", rights, fd), path)
    finally:
        os.close(fd)
    return True
