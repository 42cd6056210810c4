"""Async byte streams over the parent's ends of the child's pipes and ptys.

Non-blocking descriptors read and written directly, readiness awaited with
``anyio.wait_readable`` / ``anyio.wait_writable``: no thread, no transport,
the same code on asyncio, uvloop and trio.

Every read and write checks for cancellation *before* touching the
descriptor, so a cancelled read never loses data already taken out of the
pipe. A read that has to wait yields to the event loop there; one that
finds data yields too, after every few such reads in a row (a full
checkpoint per read costs a loop iteration, measurable at GB/s), so a fast
producer cannot starve the other tasks.
"""

from __future__ import annotations

import codecs
from collections import deque
import errno
import fcntl
import mmap
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from .errors import LineTooLong

__all__ = ["PipeReader", "PipeWriter", "DEFAULT_MAX_LINE", "Capture", "check_capture"]

_DEFAULT_READ = 65536
_LINE_READ = 65536
# read_all() fills chunks that double from here up to _LAST_CHUNK: few
# allocations for large outputs, little waste for small ones.
_FIRST_CHUNK = 65536
_LAST_CHUNK = 16 << 20

DEFAULT_MAX_LINE = 16 << 20
"""The default ``max_line`` of :meth:`PipeReader.lines` (16 MiB): far above
any sane line, low enough that a stream without newlines cannot eat all memory."""

_readv = os.readv
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# Reads that found data at once in a row before one yields to the event loop.
_YIELD_EVERY = 8


def _check_max_line(max_line: object) -> int:
    if isinstance(max_line, bool) or not isinstance(max_line, int):
        raise TypeError(f"max_line must be an int, not {type(max_line).__name__}")
    if max_line < 1:
        raise ValueError(f"max_line must be at least 1, got {max_line}")
    return max_line


class _FdBase:
    __slots__ = ("_fd", "_tty", "_streak")

    def __init__(self, fd: int, *, tty: bool = False) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._tty = tty
        self._streak = 0  # operations done without yielding to the event loop

    async def _after_ready(self) -> None:
        """Yield once every _YIELD_EVERY operations that did not wait."""
        self._streak += 1
        if self._streak >= _YIELD_EVERY:
            self._streak = 0
            await cancel_shielded_checkpoint()  # the data is ours: no cancelling here

    @property
    def is_tty(self) -> bool:
        """True when this is the master side of the child's pty."""
        return self._tty

    def fileno(self) -> int:
        """The underlying descriptor (-1 once closed)."""
        return self._fd

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                anyio.notify_closing(fd)
            except RuntimeError:  # no event loop running: nobody can be waiting
                pass
            os.close(fd)

    def __del__(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            os.close(fd)


class PipeReader(_FdBase, ByteReceiveStream):
    """The reading end of a pipe from the child (its stdout, stderr, ...),
    or the master of its pty.

    ``async for chunk in reader`` yields chunks until EOF; :meth:`lines`,
    :meth:`text_lines`, :meth:`receive_into` and :meth:`read_all` are the
    other ways to read. One task should read a given stream at a time.

    ``tty=True`` marks a pty master: reading it fails with EIO once every
    process holding the terminal has closed it, which is its EOF.
    """

    __slots__ = ()

    async def receive(self, max_bytes: int = _DEFAULT_READ) -> bytes:
        """Up to ``max_bytes`` bytes; raises ``anyio.EndOfStream`` at EOF."""
        data = await self._read(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    async def _read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes, or b"" at EOF."""
        await checkpoint_if_cancelled()
        waited = False
        while True:
            fd = self._fd
            if fd < 0:
                raise anyio.ClosedResourceError
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(fd)
                waited = True
                continue
            except OSError as exc:
                if exc.errno != errno.EIO or not self._tty:
                    raise
                data = b""
            if waited:
                self._streak = 0
            else:
                await self._after_ready()
            return data

    async def receive_into(self, buffer: Any) -> int:
        """Read into ``buffer`` (any writable buffer: bytearray, memoryview,
        array, mmap) without an intermediate copy.

        Returns the number of bytes read, at least 1, or 0 at EOF. Waits
        until some data is available, then returns what is there, up to
        ``len(buffer)`` bytes.
        """
        view = memoryview(buffer)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if view.readonly:
            raise TypeError("receive_into() needs a writable buffer, "
                            f"not a read-only {type(buffer).__name__}")
        if not view.nbytes:
            raise ValueError("receive_into() needs a non-empty buffer "
                             "(0 bytes read would look like EOF)")
        return await self._readinto(view)

    async def _readinto(self, view: memoryview) -> int:
        await checkpoint_if_cancelled()
        waited = False
        while True:
            fd = self._fd
            if fd < 0:
                raise anyio.ClosedResourceError
            try:
                n = _readv(fd, (view,))
            except BlockingIOError:
                await anyio.wait_readable(fd)
                waited = True
                continue
            except OSError as exc:
                if exc.errno != errno.EIO or not self._tty:
                    raise
                n = 0
            if waited:
                self._streak = 0
            else:
                await self._after_ready()
            return n

    async def read_all(self) -> bytes:
        """Everything until EOF, as one bytes object.

        Reads with :meth:`receive_into` straight into chunks that double in
        size, and joins them once at the end. Chunks after the first are
        anonymous memory maps: the kernel hands them out zeroed on first
        touch, where a bytearray would be zero-filled before the read
        overwrites it (measured 10-20% slower on large outputs).
        """
        readinto = self._readinto
        chunks: list[memoryview] = []
        maps: list[mmap.mmap] = []
        size = _FIRST_CHUNK
        view = memoryview(bytearray(size))
        try:
            while True:
                filled = 0
                while filled < size:
                    n = await readinto(view[filled:])
                    if not n:
                        if not chunks:
                            return view[:filled].tobytes()
                        chunks.append(view[:filled])
                        return b"".join(chunks)
                    filled += n
                chunks.append(view)
                if size < _LAST_CHUNK:
                    size *= 2
                maps.append(mmap.mmap(-1, size))
                view = memoryview(maps[-1])
        finally:
            for chunk in chunks:
                chunk.release()
            view.release()
            for m in maps:
                try:
                    m.close()
                except BufferError:  # a view is still alive somewhere: unmapped when freed
                    pass

    def lines(self, *, keepends: bool = False,
              max_line: int = DEFAULT_MAX_LINE) -> AsyncIterator[bytes]:
        """The stream split into lines, as bytes: ``async for line in
        child.stdout.lines(): ...``.

        A line ends with ``b"\\n"`` or ``b"\\r\\n"``; ``keepends=True`` keeps
        the ending, else it is stripped. A last line without an ending is
        delivered too. A line longer than ``max_line`` bytes (not counting
        its ending) raises :class:`~aunshare.LineTooLong` as soon as that
        many bytes have arrived, so memory stays bounded.
        """
        return self._lines(bool(keepends), _check_max_line(max_line))

    async def _lines(self, keepends: bool, max_line: int) -> AsyncIterator[bytes]:
        pending = bytearray()  # the start of a line not yet terminated
        read = self._read
        while True:
            chunk = await read(_LINE_READ)
            if not chunk:
                break
            find = chunk.find
            start = 0
            while True:
                nl = find(b"\n", start)
                if nl < 0:
                    break
                end = nl + 1
                if pending:
                    cr = (chunk[nl - 1] if nl > start else pending[-1]) == 13
                    length = len(pending) + nl - start - cr
                    if length > max_line:
                        raise LineTooLong(max_line, length)
                    pending += memoryview(chunk)[start:end]
                    if not keepends:
                        del pending[-1 - cr:]
                    line = bytes(pending)
                    pending.clear()
                else:
                    cr = nl > start and chunk[nl - 1] == 13
                    length = nl - start - cr
                    if length > max_line:
                        raise LineTooLong(max_line, length)
                    line = chunk[start:end if keepends else nl - cr]
                yield line
                start = end
            if start < len(chunk):
                pending += memoryview(chunk)[start:]
                over = len(pending) - max_line
                # one byte over is allowed when it is the \r of a \r\n to come
                if over > 0 and not (over == 1 and pending[-1] == 13):
                    raise LineTooLong(max_line, len(pending))
        if pending:
            if len(pending) > max_line:
                raise LineTooLong(max_line, len(pending))
            yield bytes(pending)

    def text_lines(self, encoding: str = "utf-8", errors: str = "strict", *,
                   keepends: bool = False,
                   max_line: int = DEFAULT_MAX_LINE) -> AsyncIterator[str]:
        """The stream decoded and split into lines, as str.

        Decoding is incremental, so a multi-byte character split between two
        reads is decoded whole; ``errors`` is the codec's error handler
        ("strict" raises UnicodeDecodeError, "replace", ...). Line endings,
        the last line and ``keepends`` work as in :meth:`lines`;
        ``max_line`` counts characters.
        """
        codecs.lookup(encoding)  # unknown names fail here, not at the first read
        codecs.lookup_error(errors)
        return self._text_lines(encoding, errors, bool(keepends), _check_max_line(max_line))

    async def _text_lines(self, encoding: str, errors: str, keepends: bool,
                          max_line: int) -> AsyncIterator[str]:
        decode = codecs.getincrementaldecoder(encoding)(errors).decode
        parts: list[str] = []  # the start of a line not yet terminated
        plen = 0
        read = self._read
        eof = False
        while not eof:
            chunk = await read(_LINE_READ)
            if chunk:
                text = decode(chunk)
            else:
                text = decode(b"", True)
                eof = True
            find = text.find
            start = 0
            while True:
                nl = find("\n", start)
                if nl < 0:
                    break
                end = nl + 1
                if nl > start:
                    cr = text[nl - 1] == "\r"
                else:
                    cr = bool(parts) and parts[-1][-1] == "\r"
                length = plen + nl - start - cr
                if length > max_line:
                    raise LineTooLong(max_line, length, "characters", "text_lines")
                if parts:
                    parts.append(text[start:end])
                    line = "".join(parts)
                    parts.clear()
                    plen = 0
                    if not keepends:
                        line = line[:-1 - cr]
                else:
                    line = text[start:end if keepends else nl - cr]
                yield line
                start = end
            if start < len(text):
                rest = text[start:]
                parts.append(rest)
                plen += len(rest)
                over = plen - max_line
                if over > 0 and not (over == 1 and rest[-1] == "\r"):
                    raise LineTooLong(max_line, plen, "characters", "text_lines")
        if parts:
            if plen > max_line:
                raise LineTooLong(max_line, plen, "characters", "text_lines")
            yield "".join(parts)

    async def aclose(self) -> None:
        """Close the reading end."""
        self._close()


class PipeWriter(_FdBase, ByteSendStream):
    """The writing end of a pipe to the child (its stdin, ...), or the
    master of its pty (``tty=True``).

    On a pty, closing this end is no end of input for the child (a
    terminal has none; send its EOF character, ``b"\x04"``, at the start
    of a line), and closing the last descriptor of the master hangs the
    terminal up, which sends SIGHUP to the child.
    """

    __slots__ = ()

    async def send(self, item: bytes | memoryview) -> None:
        """Write all of ``item`` (any bytes-like object); raises
        ``anyio.BrokenResourceError`` when the child closed its end."""
        view = memoryview(item)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        await checkpoint_if_cancelled()
        waited = False
        while True:
            fd = self._fd
            if fd < 0:
                raise anyio.ClosedResourceError
            if not view:
                break
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                await anyio.wait_writable(fd)
                waited = True
                continue
            except BrokenPipeError as exc:
                raise anyio.BrokenResourceError from exc
            except OSError as exc:
                if exc.errno == errno.EIO and self._tty:  # the terminal hung up
                    raise anyio.BrokenResourceError from exc
                raise
            view = view[n:]
        if waited:
            self._streak = 0
        else:
            await self._after_ready()

    async def aclose(self) -> None:
        """Close the writing end (the child sees EOF; on a pty, see the class doc)."""
        self._close()


# Capture reads at most this much at once; a tail keeper holds at most
# max_output plus one such read.
_CAPTURE_READ = 1 << 20
_KEEP = ("head", "tail")


def check_capture(max_output: object, keep: object, wait_delay: object,
                  what: str) -> None:
    """Validate the capture options of ``what`` (a method name, for the message)."""
    if max_output is not None:
        if isinstance(max_output, bool) or not isinstance(max_output, int):
            raise TypeError(f"{what}: max_output must be a number of bytes (int) or None, "
                            f"not {type(max_output).__name__}")
        if max_output < 1:
            raise ValueError(f"{what}: max_output must be a positive number of bytes, "
                             f"got {max_output} (use None to keep everything)")
    if keep not in _KEEP:
        raise ValueError(f"{what}: keep must be 'head' or 'tail', got {keep!r}")
    if wait_delay is not None:
        if isinstance(wait_delay, bool) or not isinstance(wait_delay, (int, float)):
            raise TypeError(f"{what}: wait_delay must be a number of seconds or None, "
                            f"not {type(wait_delay).__name__}")
        if not 0 <= wait_delay < float("inf"):
            raise ValueError(f"{what}: wait_delay must be a finite number of seconds >= 0, "
                             f"got {wait_delay} (use None to wait for the end of output)")


class Capture:
    """The bytes of one output stream, collected by :meth:`drain` while it
    runs, so that what was read survives a cancellation (``wait_delay``).

    With ``max_output`` it keeps at most that many bytes: the first ones
    (``keep="head"``) or the last ones (``keep="tail"``); the rest is still
    read, so the child never blocks on a full pipe, and dropped.
    :attr:`truncated` tells that something was dropped. Memory is bounded
    by ``max_output`` plus one read (1 MiB).
    """

    __slots__ = ("_limit", "_tail", "_chunks", "_size", "_scratch", "truncated", "eof")

    def __init__(self, max_output: int | None = None, keep: str = "head") -> None:
        self._limit = max_output
        self._tail = keep == "tail"
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._scratch: memoryview | None = None  # reads that are dropped or tail-kept
        self.truncated = False
        """True once bytes beyond ``max_output`` were dropped."""
        self.eof = False
        """True once the stream reached its end (False when cut short)."""

    def add(self, data: bytes) -> None:
        """Take ``data`` (read from the stream), keeping what the limit allows."""
        limit = self._limit
        if limit is None:
            self._chunks.append(data)
            return
        if self._tail:
            # Whole reads are kept and the oldest dropped once the others
            # cover the limit: at most ``limit`` plus one read, no copying.
            chunks = self._chunks
            chunks.append(data)
            self._size += len(data)
            while self._size - len(chunks[0]) >= limit:
                self._size -= len(chunks.popleft())
                self.truncated = True
            if self._size > limit:
                self.truncated = True
            return
        room = limit - self._size
        if room > 0:
            part = data[:room]
            self._chunks.append(part)
            self._size += len(part)
        if len(data) > room:
            self.truncated = True

    def _want(self) -> int:
        """How much the next read may take into a new bytes object (0: read
        into the scratch buffer and drop it)."""
        limit = self._limit
        if limit is None or self._tail:
            return _CAPTURE_READ
        return min(_CAPTURE_READ, limit - self._size)

    async def drain(self, stream: PipeReader) -> None:
        """Read ``stream`` to its end into this capture (sets :attr:`eof`)."""
        grown = False
        while True:
            if self.truncated and not grown:
                # More output than is kept: a pipe as large as one read takes
                # 16 times fewer wake-ups to drain (best effort: an unprivileged
                # user may be over its pipe quota, and a pty has no such size).
                grown = True
                try:
                    fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, _CAPTURE_READ)
                except OSError:
                    pass
            want = self._want()
            if want > 0:
                data = await stream._read(want)
                if not data:
                    break
                self.add(data)
                continue
            view = self._scratch
            if view is None:
                view = self._scratch = memoryview(bytearray(_CAPTURE_READ))
            n = await stream._readinto(view)
            if not n:
                break
            self.truncated = True  # past the head: read and dropped
        self.eof = True
        self._scratch = None

    def read_ready(self, stream: PipeReader | None, max_reads: int | None = None) -> None:
        """Take whatever the pipe already holds, without waiting (at most
        ``max_reads`` reads: a writer still running could go on forever)."""
        if stream is None or stream.fileno() < 0:
            return
        reads = 0
        while max_reads is None or reads < max_reads:
            reads += 1
            try:
                data = os.read(stream.fileno(), _CAPTURE_READ)
            except OSError:  # EAGAIN: nothing more now; EIO: a hung-up pty
                return
            if not data:
                self.eof = True
                return
            self.add(data)

    def value(self) -> bytes:
        """The bytes kept."""
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self._tail and self._limit is not None and len(data) > self._limit:
            data = data[len(data) - self._limit:]
        return data


async def send_then_close(stream: PipeWriter, data: bytes | memoryview | None) -> None:
    """Write ``data`` to a child's stdin, then close it, as
    :meth:`Child.communicate <aunshare.Child.communicate>` and
    :func:`aunshare.run` feed input while they drain the output.

    A child that stops reading early is not an error (its exit status tells
    the story). A pty is left open: closing the master would hang up the
    terminal and SIGHUP the child; its owner closes it once the child is
    reaped.
    """
    try:
        if data:
            await stream.send(data)
    except anyio.BrokenResourceError:
        pass
    finally:
        if not stream.is_tty:
            await stream.aclose()
