"""A host-side TCP listener whose connections reach a port inside a
child's network namespace: :meth:`Child.forward_tcp
<aunshare.Child.forward_tcp>`.

Everything runs on the caller's event loop, in a task group the forwarder
owns: one task accepts, two tasks per connection copy bytes, one chunk
at a time (a chunk is sent before the next one is read, so a slow reader
on either side slows the writer: back-pressure, no unbounded buffer).
An end of input on one side is passed on as a half-close of the other.
"""

from __future__ import annotations

import errno as _errno
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from . import errors

__all__ = ["TcpForward"]

_CHUNK = 65536


async def _pump(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream) -> None:
    """Copy ``source`` to ``sink`` until EOF, then half-close ``sink``."""
    try:
        while True:
            try:
                data = await source.receive(_CHUNK)
            except anyio.EndOfStream:
                break
            await sink.send(data)
        await sink.send_eof()
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        # One side reset or closed: the other gets no more, in either direction.
        await source.aclose()
        await sink.aclose()


class TcpForward:
    """Forwards connections accepted on a host address to a port inside a
    child's network namespace, while ``async with`` lasts.

    ``async with child.forward_tcp(6379) as fwd:`` binds the listener
    (:class:`~aunshare.NetworkError`, also :class:`OSError` EADDRINUSE,
    when the host port is taken), then serves in the background; each
    accepted connection opens a stream into the namespace
    (:meth:`Child.open_tcp_stream <aunshare.Child.open_tcp_stream>`); a
    connection whose target refuses is closed. Leaving the block closes
    the listener and every forwarded connection, and waits for their tasks.
    """

    def __init__(self, connect: Callable[[], Awaitable[anyio.abc.SocketStream]], port: int,
                 host_port: int, host: str) -> None:
        """Made by :meth:`Child.forward_tcp`."""
        self._connect = connect
        self.target_port: int = port
        """The port inside the child's namespace."""
        self._host_port = host_port
        self._host = host
        self._listener: anyio.abc.SocketListener | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._port = 0  # once bound
        self.connections: int = 0
        """How many connections were accepted so far."""

    @property
    def port(self) -> int:
        """The host port listened on (the ephemeral one chosen for
        ``host_port=0``); kept after the forwarder has stopped."""
        if not self._port:
            raise RuntimeError("TcpForward.port: the forwarder was not started "
                               "(use 'async with child.forward_tcp(...)')")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """The host address ``(host, port)`` to connect to."""
        return (self._host, self.port)

    async def __aenter__(self) -> TcpForward:
        if self._listener is not None:
            raise RuntimeError("TcpForward: already running")
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET,
                             socket.SOCK_STREAM)
        try:
            # SO_REUSEADDR: a fixed host port stays usable while closed
            # connections of a previous forwarder linger in TIME_WAIT; a
            # port with a listener is still refused (EADDRINUSE).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._host_port))
            sock.listen(128)
            self._port = sock.getsockname()[1]
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            detail = ("another process (or another forward_tcp) already listens there; "
                      "choose another host_port, or 0 for an ephemeral one"
                      if exc.errno == _errno.EADDRINUSE else "")
            raise errors.NetworkError(exc.errno or _errno.EINVAL,
                                      f"{self._host}:{self._host_port}", detail,
                                      action="forward_tcp: bind") from None
        self._listener = await anyio.abc.SocketListener.from_socket(sock)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._serve, self._listener)
        return self

    async def _serve(self, listener: anyio.abc.SocketListener) -> None:
        assert self._tg is not None
        tg = self._tg
        while True:
            try:
                client = await listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            self.connections += 1
            tg.start_soon(self._handle, client)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        try:
            try:
                upstream = await self._connect()
            except OSError:
                return  # nothing listens inside (yet): the client sees a close
            async with upstream, anyio.create_task_group() as tg:
                tg.start_soon(_pump, client, upstream)
                tg.start_soon(_pump, upstream, client)
        finally:
            await client.aclose()

    async def __aexit__(self, *exc_info: Any) -> None:
        tg, self._tg = self._tg, None
        listener = self._listener
        if tg is None:
            return
        try:
            tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                if listener is not None:
                    await listener.aclose()
        finally:
            await tg.__aexit__(None, None, None)
            self._listener = None

    def __repr__(self) -> str:
        where = f"{self._host}:{self.port}" if self._listener is not None else "not running"
        return f"<TcpForward {where} -> port {self.target_port}>"
