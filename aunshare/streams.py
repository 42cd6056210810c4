"""Async byte streams over the parent's ends of the child's pipes.

Non-blocking descriptors read and written directly, readiness awaited with
``anyio.wait_readable`` / ``anyio.wait_writable``: no thread, no transport,
the same code on asyncio, uvloop and trio.
"""

from __future__ import annotations

import os

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream

__all__ = ["PipeReader", "PipeWriter"]

_DEFAULT_READ = 65536


class _FdBase:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd

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
    """The reading end of a pipe from the child (its stdout, stderr, ...)."""

    __slots__ = ()

    async def receive(self, max_bytes: int = _DEFAULT_READ) -> bytes:
        """Up to ``max_bytes`` bytes; raises ``anyio.EndOfStream`` at EOF."""
        while True:
            fd = self._fd
            if fd < 0:
                raise anyio.ClosedResourceError
            try:
                data = os.read(fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(fd)
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def read_all(self) -> bytes:
        """Everything until EOF."""
        chunks = []
        try:
            while True:
                chunks.append(await self.receive(1 << 20))
        except anyio.EndOfStream:
            pass
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Close the reading end."""
        self._close()


class PipeWriter(_FdBase, ByteSendStream):
    """The writing end of a pipe to the child (its stdin, ...)."""

    __slots__ = ()

    async def send(self, item: bytes) -> None:
        """Write all of ``item``; raises ``anyio.BrokenResourceError`` when the
        child closed its end."""
        view = memoryview(item)
        while view:
            fd = self._fd
            if fd < 0:
                raise anyio.ClosedResourceError
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                await anyio.wait_writable(fd)
                continue
            except BrokenPipeError as exc:
                raise anyio.BrokenResourceError from exc
            view = view[n:]

    async def aclose(self) -> None:
        """Close the writing end (the child sees EOF)."""
        self._close()
