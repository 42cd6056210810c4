"""What the child gets on its descriptors: :class:`Stdio` and :class:`Fd`.

Pure data, immutable and hashable (they are part of a
:class:`~aunshare.spec.Spec`). The one exception to "opens nothing":
:meth:`Fd.dup_file` / :meth:`Stdio.dup_file` duplicate the file's
descriptor at the call, so the spec owns a copy that stays valid however
long the caller keeps the file.
"""

from __future__ import annotations

import enum
import os

from ._names import STDIO_NAMES

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from typing import IO, Any

__all__ = ["Fd", "FdKind", "OwnedFd", "Stdio", "StrOrBytesPath", "dup_fileobj", "to_bytes"]

StrOrBytesPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

MAX_FD = 2**31 - 1


def to_bytes(value: object, what: str) -> bytes:
    """str/bytes/PathLike to bytes, refusing NUL bytes and other types."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, (str, os.PathLike)):
        data = os.fsencode(value)
    else:
        raise TypeError(f"{what} must be str, bytes or os.PathLike, not {type(value).__name__}")
    if b"\0" in data:
        raise ValueError(f"{what} contains a NUL byte: {value!r}")
    return data


class FdKind(enum.Enum):
    """What one descriptor of the child is to be."""

    PIPE_TO_CHILD = "piped_read"
    """A pipe the child reads; the parent writes (stdin)."""
    PIPE_FROM_CHILD = "piped_write"
    """A pipe the child writes; the parent reads (stdout)."""
    PIPED = "piped"
    """Stdio only: a pipe whose direction follows the descriptor."""
    INHERIT = "inherit"
    """The parent's descriptor of the same number."""
    NULL_READ = "read_null"
    """/dev/null for reading."""
    NULL_WRITE = "write_null"
    """/dev/null for writing."""
    NULL = "null"
    """Stdio only: /dev/null, its mode following the descriptor."""
    BORROWED = "from_fd"
    """A copy of a parent descriptor the caller keeps owning."""
    OWNED = "dup_file"
    """A copy of a descriptor duplicated at the builder call, owned by the spec."""
    PATH = "to_file"
    """A file the parent opens at each spawn."""
    PTY = "pty"
    """The slave side of a new pseudo-terminal."""
    MERGE = "merge_into_stdout"
    """fd 2 gets whatever fd 1 gets (``2>&1``)."""


class OwnedFd:
    """A descriptor a spec owns (a dup of a user's file), closed when the
    last spec, Command or plan holding it is gone."""

    __slots__ = ("fd", "__weakref__")

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"<owned fd {self.fd}>"


def dup_fileobj(file: Any, what: str) -> OwnedFd:
    """An owned, close-on-exec copy of ``file``'s descriptor (or an int fd)."""
    if isinstance(file, int) and not isinstance(file, bool):
        fd = file
    elif hasattr(file, "fileno"):
        fd = file.fileno()
    else:
        raise TypeError(f"{what} needs an object with fileno() or an int fd, "
                        f"not {type(file).__name__}")
    try:
        return OwnedFd(os.dup(fd))  # os.dup makes the copy non-inheritable
    except OSError as exc:
        raise ValueError(f"{what}: cannot duplicate fd {fd}: {exc.strerror}") from None


def _check_size(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Stdio.pty() {what} must be an int or None, not {type(value).__name__}")
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"Stdio.pty() {what} must be between 0 and 65535, got {value}")
    return value


class _Desc:
    """Shared body of Fd and Stdio: an immutable (kind, data) pair."""

    __slots__ = ("kind", "fd", "owned", "path", "mode", "size")

    kind: FdKind
    fd: int | None
    owned: OwnedFd | None
    path: bytes | None
    mode: str | None
    size: tuple[int | None, int | None] | None

    def __init__(self, kind: FdKind, *, fd: int | None = None, owned: OwnedFd | None = None,
                 path: bytes | None = None, mode: str | None = None,
                 size: tuple[int | None, int | None] | None = None) -> None:
        for name, value in (("kind", kind), ("fd", fd), ("owned", owned), ("path", path),
                            ("mode", mode), ("size", size)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _key(self) -> tuple[object, ...]:
        return (type(self), self.kind, self.fd, self.owned, self.path, self.mode, self.size)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def source_fd(self) -> int | None:
        """The parent descriptor a BORROWED or OWNED entry gives, else None."""
        return self.owned.fd if self.owned is not None else self.fd

    def _common_repr(self, cls: str) -> str | None:
        if self.kind is FdKind.PATH:
            extra = ", append=True" if self.mode == "a" else ""
            return f"Stdio.to_file({os.fsdecode(self.path or b'')!r}{extra})"
        if self.kind is FdKind.PTY:
            rows, cols = self.size or (None, None)
            size = ", ".join(f"{k}={v}" for k, v in (("rows", rows), ("cols", cols))
                             if v is not None)
            return f"Stdio.pty({size})"
        if self.kind is FdKind.MERGE:
            return "Stdio.merge_into_stdout()"
        if self.kind in (FdKind.BORROWED, FdKind.OWNED):
            return f"{cls}.{self.kind.value}({self.source_fd})"
        return None


class Fd(_Desc):
    """What the child gets on one file descriptor number.

    Use the constructors: :meth:`piped_read`, :meth:`piped_write`,
    :meth:`inherit`, :meth:`read_null`, :meth:`write_null`,
    :meth:`from_fd`, :meth:`dup_file`.
    """

    __slots__ = ()

    @classmethod
    def piped_read(cls) -> Fd:
        """A pipe the child reads from; the parent gets the writing end."""
        return cls(FdKind.PIPE_TO_CHILD)

    @classmethod
    def piped_write(cls) -> Fd:
        """A pipe the child writes to; the parent gets the reading end."""
        return cls(FdKind.PIPE_FROM_CHILD)

    @classmethod
    def inherit(cls) -> Fd:
        """The child gets the parent's descriptor of the same number."""
        return cls(FdKind.INHERIT)

    @classmethod
    def read_null(cls) -> Fd:
        """/dev/null opened for reading."""
        return cls(FdKind.NULL_READ)

    @classmethod
    def write_null(cls) -> Fd:
        """/dev/null opened for writing."""
        return cls(FdKind.NULL_WRITE)

    @classmethod
    def from_fd(cls, fd: int) -> Fd:
        """A copy of the parent's descriptor ``fd`` (still owned by the caller,
        who must keep it open until the child is spawned)."""
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise TypeError(f"fd must be an int, not {type(fd).__name__}")
        if not 0 <= fd <= MAX_FD:
            raise ValueError(f"fd must be between 0 and {MAX_FD}, got {fd}")
        return cls(FdKind.BORROWED, fd=fd)

    @classmethod
    def dup_file(cls, file: IO[Any] | int) -> Fd:
        """A copy of ``file``'s descriptor, duplicated now and owned by the spec."""
        return cls(FdKind.OWNED, owned=dup_fileobj(file, "dup_file"))

    def __repr__(self) -> str:
        return self._common_repr("Fd") or f"Fd.{self.kind.value}()"


class Stdio(_Desc):
    """What the child gets as stdin, stdout or stderr."""

    __slots__ = ()

    @classmethod
    def piped(cls) -> Stdio:
        """A pipe to the parent; the Child gets an async stream for it."""
        return cls(FdKind.PIPED)

    @classmethod
    def null(cls) -> Stdio:
        """/dev/null."""
        return cls(FdKind.NULL)

    @classmethod
    def inherit(cls) -> Stdio:
        """The parent's own descriptor (the default)."""
        return cls(FdKind.INHERIT)

    @classmethod
    def from_fd(cls, fd: int) -> Stdio:
        """A copy of the parent's descriptor ``fd`` (the caller keeps owning it)."""
        return cls(FdKind.BORROWED, fd=Fd.from_fd(fd).fd)

    @classmethod
    def dup_file(cls, file: IO[Any] | int) -> Stdio:
        """A copy of ``file``'s descriptor, duplicated now."""
        return cls(FdKind.OWNED, owned=dup_fileobj(file, "Stdio.dup_file"))

    @classmethod
    def to_file(cls, path: StrOrBytesPath, append: bool = False) -> Stdio:
        """The file at ``path``, opened by the parent at each spawn.

        For stdout and stderr it is opened for writing, created (mode 0666
        less the umask) when missing, and truncated, or appended to with
        ``append=True``; for stdin it is opened read-only. A relative path
        is relative to the parent's working directory (not
        :meth:`Command.current_dir`). A failure to open raises
        :class:`~aunshare.StdioError` naming the path from ``spawn()``.
        """
        data = to_bytes(path, "Stdio.to_file path")
        if not data:
            raise ValueError("Stdio.to_file path must not be empty")
        return cls(FdKind.PATH, path=data, mode="a" if append else "w")

    @classmethod
    def merge_into_stdout(cls) -> Stdio:
        """For :meth:`Command.stderr` only: the child's stderr is the same
        descriptor as its stdout (the shell's ``2>&1``), so both streams
        arrive interleaved in the order written, wherever stdout goes (a
        pipe read from ``child.stdout``, a file, a pty)."""
        return cls(FdKind.MERGE)

    @classmethod
    def pty(cls, rows: int | None = None, cols: int | None = None) -> Stdio:
        """A pseudo-terminal: the child gets its slave side as its
        controlling terminal, the parent a stream on the master.

        Every standard stream given ``Stdio.pty()`` gets the same terminal.
        The parent writes the child's input to ``child.stdin`` and reads
        its output from ``child.stdout`` (or ``child.stderr`` when only
        stderr is a pty). ``rows`` and ``cols`` set the window size
        (default 24 x 80); :meth:`Child.set_pty_size` changes it later.

        The child becomes a session leader (setsid), so this cannot be
        combined with :meth:`Command.make_group_leader`. The terminal is in
        its default (cooked) mode: it echoes input, and turns "\\n" in the
        output into "\\r\\n".
        """
        return cls(FdKind.PTY, size=(_check_size(rows, "rows"), _check_size(cols, "cols")))

    def for_target(self, target: int) -> Fd:
        """The :class:`Fd` this gives descriptor ``target`` (0, 1 or 2)."""
        kind = self.kind
        if kind is FdKind.PIPED:
            return Fd(FdKind.PIPE_TO_CHILD if target == 0 else FdKind.PIPE_FROM_CHILD)
        if kind is FdKind.NULL:
            return Fd(FdKind.NULL_READ if target == 0 else FdKind.NULL_WRITE)
        if kind is FdKind.MERGE and target != 2:
            raise ValueError("Stdio.merge_into_stdout() is for stderr() only (it makes "
                             f"fd 2 a copy of fd 1); {STDIO_NAMES[target]}() cannot take it")
        mode = self.mode
        if kind is FdKind.PATH and target == 0:
            if mode == "a":
                raise ValueError("stdin(Stdio.to_file(..., append=True)): append is "
                                 "for stdout() and stderr(); stdin reads the file")
            mode = "r"
        return Fd(kind, fd=self.fd, owned=self.owned, path=self.path, mode=mode,
                  size=self.size)

    def __repr__(self) -> str:
        return self._common_repr("Stdio") or f"Stdio.{self.kind.value}()"
