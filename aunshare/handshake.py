"""The parent's part of the handshake: what it does while the child waits.

A child that needs the parent between clone and exec (see step 3 of
:mod:`aunshare.plan`) blocks on a wake-up pipe. Meanwhile the parent, on
the event loop: writes the child's uid and gid maps (directly to
/proc/PID/*, or by running newuidmap/newgidmap), awaits the
``before_unfreeze`` hook, then writes one byte to let the child go on.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import TYPE_CHECKING

from . import errors
from .namespaces import GidMap, UidMap

if TYPE_CHECKING:
    from .command import Command

__all__ = ["run_handshake"]

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


async def _run_helper(program: bytes, pid: int, maps: tuple[UidMap, ...] | tuple[GidMap, ...]) -> None:
    from .command import Command, Stdio

    name = os.path.basename(os.fsdecode(program))
    cmd = Command(program).arg(str(pid)).stdin(Stdio.null()).stdout(Stdio.null())
    for m in maps:
        cmd.args([str(m[0]), str(m[1]), str(m[2])])
    try:
        out = await cmd.stderr(Stdio.piped()).output()
    except errors._OSError as exc:
        raise errors.SetIdMap(exc.errno, program, f"cannot run {name}: {exc}",
                              action="run") from exc
    status = out.status
    if status.signal is not None:
        raise errors.AuxCommandKilled(status.signal, name, out.stderr)
    if status.code:
        raise errors.AuxCommandExited(status.code, name, out.stderr)


async def run_handshake(cmd: Command, pid: int, wake_fd: int) -> None:
    """Do the parent's part for ``cmd``'s child ``pid``, then let it go on.

    The caller closes ``wake_fd`` and, if this raises, kills the child.
    """
    if cmd._self_map is not None:  # the child's one-line maps, written for it
        uid, gid = os.geteuid(), os.getegid()
        inside = (0, 0) if cmd._self_map == "root" else (uid, gid)
        write_maps(pid, (UidMap(inside[0], uid),), (GidMap(inside[1], gid),), False)
    elif cmd._uid_maps is not None:
        uid_maps, gid_maps = cmd._uid_maps, cmd._gid_maps or ()
        if cmd._id_map_commands is not None:
            newuidmap, newgidmap = cmd._id_map_commands
            if uid_maps:
                await _run_helper(newuidmap, pid, uid_maps)
            if gid_maps:
                await _run_helper(newgidmap, pid, gid_maps)
        else:
            write_maps(pid, uid_maps, gid_maps, cmd._allow_setgroups)
    hook = cmd._before_unfreeze
    if hook is not None:
        try:
            await hook(pid)
        except Exception as exc:
            raise errors.BeforeUnfreeze(
                f"the before_unfreeze callback {getattr(hook, '__qualname__', hook)!s} "
                f"raised {type(exc).__name__}: {exc}") from exc
    try:
        os.write(wake_fd, b"\1")
    except OSError as exc:
        raise errors.PipeError(exc.errno or _errno.EPIPE, "the wake-up pipe",
                               "the child was gone before it could go on",
                               action="write") from None
