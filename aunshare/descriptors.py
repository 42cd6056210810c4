"""The parent's side of the child's descriptors: open what each target
needs (pipes, /dev/null, files, a pty) and move every source clear of the
targets, so the plan's ``dup3`` steps can be done in any order.

Synchronous. Everything opened is recorded in the caller's
:class:`Opened`, which closes it all on failure (see :mod:`aunshare.launch`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from . import errors
from ._linux import F_SETPIPE_SZ, TIOCGPTPEER, TIOCSPTLCK, TIOCSWINSZ, pipe_above
from ._names import fd_name
from .fds import Fd, FdKind

__all__ = ["Opened", "PIPE_SIZE", "DEFAULT_PTY_SIZE", "prepare_fds", "above", "wake_pipe",
           "error_pipe"]

_O_CLOEXEC = os.O_CLOEXEC

# Pipe capacity asked for with F_SETPIPE_SZ: fewer wake-ups and syscalls per
# byte than the default 64 KiB. Not more: an unprivileged user's pipes
# together may hold pipe-user-pages-soft (64 MiB by default); past that the
# kernel gives every new pipe of that user 2 pages. 256 KiB measured as fast
# as 1 MiB (bench/streams.py), and lets 128 children with two pipes each
# stay under the limit.
PIPE_SIZE = 256 << 10
# The window size of a pty when Stdio.pty() does not give one.
DEFAULT_PTY_SIZE = (24, 80)


class Opened:
    """Descriptors the parent opened for one spawn, by owner.

    ``child_side``: copies only the child needs (closed once it has them);
    ``parent_ends``: child fd number -> the parent's end of its pipe or pty.
    """

    __slots__ = ("child_side", "parent_ends", "writers", "ttys")

    def __init__(self) -> None:
        self.child_side: list[int] = []
        self.parent_ends: dict[int, int] = {}
        self.writers: set[int] = set()  # child fds whose parent end writes
        self.ttys: set[int] = set()     # child fds whose parent end is the pty master

    def close_child_side(self) -> None:
        """Close the child's copies (it has its own once cloned)."""
        fds, self.child_side = self.child_side, []
        for fd in fds:
            os.close(fd)

    def close(self) -> None:
        """Close everything still held."""
        self.close_child_side()
        ends, self.parent_ends = self.parent_ends, {}
        for fd in ends.values():
            os.close(fd)


def above(fd: int, hi: int, opened: Opened, what: str) -> int:
    """``fd``, or a close-on-exec copy of it above every dup3 target."""
    if fd >= hi:
        return fd
    try:
        copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, hi)
    except OSError as exc:
        raise errors.CreatePipe(exc.errno or errno.EMFILE, what,
                                "cannot move it clear of the child's descriptors"
                                + _fd_limit_hint(exc)) from None
    opened.child_side.append(copy)
    return copy


def _fd_limit_hint(exc: OSError) -> str:
    if exc.errno in (errno.EMFILE, errno.EINVAL):
        return ("; the parent's descriptor limit (RLIMIT_NOFILE) is too low for a "
                "descriptor this high: raise it (resource.setrlimit) or use a lower number")
    return ""


def wake_pipe(hi: int, opened: Opened) -> tuple[int, int]:
    """The handshake's pipe, both ends above every dup3 target. The read end
    is the child's (closed with the child side); the write end is returned
    for the caller to own until the child may go on."""
    try:
        r, w = os.pipe2(_O_CLOEXEC)
    except OSError as exc:
        raise errors.CreatePipe(exc.errno or errno.EMFILE, "the wake-up pipe") from None
    opened.child_side.append(r)
    scratch = Opened()
    try:
        moved = above(w, hi, scratch, "the wake-up pipe")
    finally:
        if w < hi:
            os.close(w)
    try:
        return above(r, hi, opened, "the wake-up pipe"), moved
    except BaseException:
        os.close(moved)
        raise


def error_pipe(hi: int) -> tuple[int, int]:
    """The pipe a child running alongside the parent reports a failing step
    on: (read end, non-blocking; write end, above every dup3 target). Both
    close-on-exec, so exec makes the read end see EOF."""
    try:
        return pipe_above(hi, os.O_NONBLOCK)
    except OSError as exc:
        raise errors.CreatePipe(exc.errno or errno.EMFILE, "the error pipe") from None


def status_pipe(hi: int) -> tuple[int, int]:
    """The pipe the init of a pid namespace writes the program's wait
    status on: (read end, non-blocking; write end, above every dup3
    target), both close-on-exec (the child's dup3 copy is not)."""
    try:
        return pipe_above(hi, os.O_NONBLOCK)
    except OSError as exc:
        raise errors.CreatePipe(exc.errno or errno.EMFILE, "the init's status pipe") from None


def prepare_fds(fds: dict[int, Fd], opened: Opened) -> tuple[list[tuple[int, int]], int]:
    """Open what each target needs; return the ``(source, target)`` moves
    (every source above every target) and ``hi``, the lowest descriptor
    number above every target."""
    hi = max(3, max(fds, default=2) + 1)
    moves: list[tuple[int, int]] = []
    pty_targets: list[int] = [t for t in (0, 1, 2) if t in fds and fds[t].kind is FdKind.PTY]
    slave = -1
    if pty_targets:
        slave = _open_pty(fds, pty_targets, opened)
    for target, spec in fds.items():
        if spec.kind is FdKind.PIPE_TO_CHILD:
            opened.writers.add(target)
        if spec.kind is FdKind.MERGE:
            continue  # once fd 1's source is known
        move = _prepare_fd(target, spec, hi, opened, slave)
        if move[0] >= 0:
            moves.append(move)
    merge = fds.get(2)
    if merge is not None and merge.kind is FdKind.MERGE:
        moves.append(_merge_into_stdout(moves, hi, opened))
    return moves, hi


def _open_pty(fds: dict[int, Fd], targets: list[int], opened: Opened) -> int:
    """Open a pty for the standard streams in ``targets``; return the slave.

    The parent's ends go to ``opened.parent_ends``: the master for stdin
    (writing) and a copy for the first of stdout/stderr (reading). Both are
    opened O_NOCTTY, so the parent never acquires the terminal itself.
    """
    what = ", ".join(fd_name(t) for t in targets)
    try:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | _O_CLOEXEC)
    except OSError as exc:
        raise errors.StdioError(exc.errno or errno.EIO, "/dev/ptmx",
                                f"cannot open a pty for {what}", action="open") from None
    opened.child_side.append(master)  # until it moves to parent_ends
    size = list(DEFAULT_PTY_SIZE)
    for t in targets:
        for i, value in enumerate(fds[t].size or (None, None)):
            if value is not None:
                size[i] = value
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt()
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | _O_CLOEXEC)
        opened.child_side.append(slave)
        fcntl.ioctl(master, TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
        ends = [master]
        reader = next((t for t in targets if t != 0), None)
        if 0 in targets and reader is not None:
            ends.append(os.dup(master))  # reader and writer close independently
        opened.child_side.remove(master)
        if 0 in targets:
            opened.parent_ends[0] = ends.pop()
            opened.writers.add(0)
            opened.ttys.add(0)
        if reader is not None:
            opened.parent_ends[reader] = ends.pop()
            opened.ttys.add(reader)
    except OSError as exc:
        raise errors.StdioError(exc.errno or errno.EIO, fd_name(targets[0]),
                                "cannot set up its pty") from None
    return slave


def _merge_into_stdout(moves: list[tuple[int, int]], hi: int,
                       opened: Opened) -> tuple[int, int]:
    """The move that gives fd 2 the same source as fd 1 (2>&1)."""
    source = next((s for s, t in moves if t == 1), -1)
    if source < 0:  # stdout inherited: the parent's own fd 1, moved above the targets
        try:
            source = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, hi)
        except OSError as exc:
            raise errors.StdioError(exc.errno or errno.EBADF, fd_name(2),
                                    "merge_into_stdout: the parent's fd 1 is not open "
                                    "to be inherited as stdout") from None
        opened.child_side.append(source)
    return (source, 2)


_NULL_FLAGS = {FdKind.NULL_READ: os.O_RDONLY, FdKind.NULL_WRITE: os.O_WRONLY}
_PATH_FLAGS = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
               "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND}


def _prepare_fd(target: int, spec: Fd, hi: int, opened: Opened,
                pty_slave: int = -1) -> tuple[int, int]:
    """Open what ``target`` needs and return ``(source, target)`` with the
    source above every target; ``(-1, target)`` for nothing to do."""
    kind = spec.kind
    if kind is FdKind.INHERIT:
        if target < 3:
            return (-1, target)
        source = target
    elif kind is FdKind.PIPE_TO_CHILD or kind is FdKind.PIPE_FROM_CHILD:
        try:
            r, w = os.pipe2(_O_CLOEXEC)
        except OSError as exc:
            raise errors.CreatePipe(exc.errno or errno.EMFILE, fd_name(target)) from None
        try:
            fcntl.fcntl(r, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # EPERM past the user's pipe quota: the default size works too
        if kind is FdKind.PIPE_TO_CHILD:
            source, opened.parent_ends[target] = r, w
        else:
            source, opened.parent_ends[target] = w, r
        opened.child_side.append(source)
    elif kind is FdKind.PTY:
        source = pty_slave
    elif kind is FdKind.PATH:
        path = spec.path or b""
        try:
            source = os.open(path, _PATH_FLAGS[spec.mode or "r"] | os.O_NOCTTY | _O_CLOEXEC,
                             0o666)
        except OSError as exc:
            raise errors.StdioError(exc.errno or errno.EIO, path, f"to give it to the child "
                                    f"as {fd_name(target)}", action="open") from None
        opened.child_side.append(source)
    elif kind in _NULL_FLAGS:
        try:
            source = os.open("/dev/null", _NULL_FLAGS[kind] | _O_CLOEXEC)
        except OSError as exc:
            raise errors.StdioError(exc.errno or errno.EIO, fd_name(target),
                                    "cannot open /dev/null") from None
        opened.child_side.append(source)
    else:  # BORROWED / OWNED
        given = spec.source_fd
        assert given is not None
        source = given
    if source < hi:
        # Move the source above every target so no dup3 clobbers it.
        try:
            source = fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, hi)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.EINVAL):
                detail = (f"the parent's descriptor limit (RLIMIT_NOFILE) is too low to give "
                          f"the child descriptor {target}: raise the limit "
                          "(resource.setrlimit) or use a lower number")
            else:
                detail = f"the parent's fd {source} given for it is not usable"
            raise errors.StdioError(exc.errno or errno.EBADF, fd_name(target),
                                    detail) from None
        opened.child_side.append(source)
    elif kind is FdKind.BORROWED or kind is FdKind.OWNED:
        try:
            os.fstat(source)
        except OSError as exc:
            raise errors.StdioError(exc.errno or errno.EBADF, fd_name(target),
                                    f"the parent's fd {source} given for it is not open") from None
    return (source, target)
