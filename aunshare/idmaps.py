"""Writing a child's uid and gid maps from the parent, while the child
waits in the handshake (step 3 of :mod:`aunshare.plan`). Synchronous; the
handshake itself (and running newuidmap/newgidmap) is in
:mod:`aunshare.spawn`.
"""

from __future__ import annotations

import errno as _errno
import os
from . import errors
from .namespaces import GidMap, UidMap

__all__ = ["write_maps"]

_CAP_SETGID = 6


def _has_cap(cap: int) -> bool:
    """True when this process has ``cap`` in its effective set."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


_MAP_HINTS = {
    _errno.EPERM: "an unprivileged parent may map only its own uid or gid, one line of "
                  "count 1, and its gid map needs setgroups denied; ranges need root or "
                  "set_id_map_commands() with newuidmap/newgidmap and /etc/subuid, "
                  "/etc/subgid entries",
    _errno.EINVAL: "the kernel refused the lines (overlapping ranges, an id outside the "
                   "parent's own namespace's map, or a map already written)",
}


def _write_file(path: str, data: bytes) -> None:
    """One write(2), as /proc/PID/*_map requires."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            n = os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        text = data.decode(errors="replace").strip().replace("\n", "; ")
        hint = _MAP_HINTS.get(exc.errno or 0, "")
        raise errors.SetIdMap(exc.errno or _errno.EIO, path,
                              f"writing {text!r}" + (f"; {hint}" if hint else ""),
                              action="write") from None
    if n != len(data):
        raise errors.SetIdMap(_errno.EIO, path, f"short write ({n} of {len(data)} bytes)",
                              action="write")


def write_maps(pid: int, uid_maps: tuple[UidMap, ...], gid_maps: tuple[GidMap, ...],
               allow_setgroups: bool | None) -> None:
    """Write the maps of the user namespace of ``pid`` directly."""
    base = f"/proc/{pid}/"
    if uid_maps:
        _write_file(base + "uid_map", b"".join(m.line() for m in uid_maps))
    if gid_maps:
        deny = (allow_setgroups is False
                or (allow_setgroups is None and not _has_cap(_CAP_SETGID)))
        if deny:
            _write_file(base + "setgroups", b"deny")
        _write_file(base + "gid_map", b"".join(m.line() for m in gid_maps))

