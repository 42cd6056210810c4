"""The pytest plugin: the ``aunshare_service`` fixture, hermetic services
for tests.

Installed with the package (entry point ``pytest11``) and opt-in: nothing
happens unless a test asks for the fixture; importing this module imports
neither anyio nor the rest of aunshare.

Each service runs in a sandbox of its own (new user, network, mount, pid,
IPC and UTS namespaces, root mapped to the caller), so every test, and
every pytest-xdist worker, can start the same server on its usual fixed
port with no clash. The service's port is forwarded to an ephemeral port
on the host's loopback (:meth:`aunshare.Child.forward_tcp`), so ordinary
client libraries connect to :attr:`Service.address`.

Services run on an event loop of their own, in a thread the fixture
starts: the same fixture serves sync tests (``svc = aunshare_service(...)``)
and async ones (``svc = await aunshare_service(...)``, any loop).
"""

from __future__ import annotations

import inspect
import os
import socket
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Generator

    import anyio.abc
    from anyio.from_thread import BlockingPortal

    from .child import Child
    from .status import ExitStatus

__all__ = ["Service", "ServiceFailed", "ServiceFactory", "aunshare_service"]

_LOG_LIMIT = 64 * 1024  # bytes of output kept per service
_TAIL = 4096            # bytes of it shown in a failure
_GRACE = 2.0            # seconds from SIGTERM to SIGKILL at the end of a test


class ServiceFailed(Exception):
    """A service did not start (its port never accepted a connection
    within the timeout, or it exited), or it crashed during the test; the
    message ends with the tail of its output."""


class Service:
    """A running service started by the ``aunshare_service`` fixture."""

    def __init__(self, argv: Sequence[str], port: int) -> None:
        self.argv: tuple[str, ...] = tuple(argv)
        """The service's command line."""
        self.port: int = port
        """The service's port inside its sandbox."""
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        """``(host, port)`` on the host's loopback, forwarded to :attr:`port`:
        give it to any client library."""
        self.pid: int = 0
        """The service's pid (as the host sees it)."""
        self._log: deque[bytes] = deque()
        self._log_size = 0
        self._lock = threading.Lock()
        self._stop: Any = None          # anyio.Event, set to stop the service
        self._crash: ExitStatus | None = None  # set when it exited on its own
        self._done: Any = None          # the Future of the task that runs it

    @property
    def logs(self) -> str:
        """Everything the service wrote to stdout and stderr so far (the
        last 64 KiB), decoded."""
        with self._lock:
            return b"".join(self._log).decode(errors="replace")

    def _append(self, data: bytes) -> None:
        with self._lock:
            self._log.append(data)
            self._log_size += len(data)
            while self._log_size > _LOG_LIMIT and len(self._log) > 1:
                self._log_size -= len(self._log.popleft())

    def _tail(self) -> str:
        text = self.logs[-_TAIL:].rstrip()
        return f"\n--- output of {' '.join(self.argv)} (tail) ---\n{text or '(none)'}"

    @property
    def url(self) -> str:
        """``host:port`` of :attr:`address`."""
        return f"{self.address[0]}:{self.address[1]}"

    def connect(self, timeout: float | None = 10.0) -> socket.socket:
        """A blocking socket connected to the service (through :attr:`address`)."""
        return socket.create_connection(self.address, timeout=timeout)

    async def open_tcp_stream(self) -> anyio.abc.SocketStream:
        """An anyio byte stream connected to the service, on the caller's
        event loop (through :attr:`address`)."""
        import anyio

        return await anyio.connect_tcp(*self.address)

    def __repr__(self) -> str:
        return f"<Service {self.argv[0]!r} port {self.port} at {self.url}>"


async def _run(service: Service, cmd: Any, timeout: float, host_port: int,
               task_status: anyio.abc.TaskStatus[Service]) -> None:
    """Start the service, wait for its port, forward it, and keep it until
    asked to stop; runs in the fixture's event loop thread."""
    import anyio

    from .policy import KillPolicy

    child: Child = await cmd.spawn()
    service.pid = child.pid
    try:
        await _serve(service, child, timeout, host_port, task_status)
    except BaseExceptionGroup as group:  # the task group's: give the failure itself
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        # Started and stopped already, or failed to start: no grace needed.
        with anyio.CancelScope(shield=True):
            await child.shutdown(KillPolicy(grace=0))
            await child.aclose()


async def _serve(service: Service, child: Child, timeout: float, host_port: int,
                 task_status: anyio.abc.TaskStatus[Service]) -> None:
    import anyio

    from .policy import KillPolicy

    stopping = False

    async def collect(stream: Any) -> None:
        async for chunk in stream:
            service._append(chunk)

    async def watch() -> None:
        status = await child.wait()
        if not stopping:
            service._crash = status
            service._stop.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, child.stdout)
            tg.start_soon(watch)
            with anyio.move_on_after(timeout) as scope:
                while True:
                    if child.returncode is not None or service._crash is not None:
                        await anyio.sleep(0.05)  # let the last output arrive
                        raise ServiceFailed(
                            f"{service.argv[0]} exited before its port {service.port} "
                            f"accepted a connection ({child.status}){service._tail()}")
                    try:
                        stream = await child.open_tcp_stream(service.port)
                    except OSError:
                        await anyio.sleep(0.01)
                        continue
                    await stream.aclose()
                    break
            if scope.cancelled_caught:
                raise ServiceFailed(
                    f"{service.argv[0]}: port {service.port} did not accept a connection "
                    f"within {timeout:g} s{service._tail()}")
            async with child.forward_tcp(service.port, host_port=host_port) as fwd:
                service.address = fwd.address
                task_status.started(service)
                await service._stop.wait()
                stopping = True
                await child.shutdown(KillPolicy(grace=_GRACE))
            tg.cancel_scope.cancel()
    finally:
        stopping = True


def _check_free(port: int) -> None:
    from . import errors

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise errors.NetworkError(
                exc.errno or 98, f"127.0.0.1:{port}",
                "another process (or another service) already listens there; choose "
                "another host_port, or 0 for an ephemeral one",
                action="aunshare_service: host_port") from None


class ServiceFactory:
    """What the ``aunshare_service`` fixture gives a test: call it to start
    a service (``await`` it in an async test)."""

    def __init__(self, is_async: bool) -> None:
        self._is_async = is_async
        self._portal: BlockingPortal | None = None
        self._portal_cm: Any = None
        self._services: list[Service] = []
        self._lock = threading.Lock()

    def __call__(self, argv: Sequence[str], *, port: int, timeout: float = 10.0,
                 host_port: int = 0, env: dict[str, str] | None = None
                 ) -> Service | Awaitable[Service]:
        """Start ``argv`` in its own sandbox and wait until ``port`` (inside
        it) accepts connections, at most ``timeout`` seconds
        (:class:`ServiceFailed` with the tail of its output otherwise, and
        nothing left running). The port is forwarded to ``host_port`` on
        127.0.0.1 (0: an ephemeral one; one in use raises
        :class:`~aunshare.NetworkError`). ``env``: variables to add.

        Returns the :class:`Service` in a sync test, an awaitable of it in
        an async test."""
        if isinstance(argv, (str, bytes)) or not argv:
            raise TypeError("aunshare_service() takes the command as a non-empty list of "
                            "arguments, e.g. ['redis-server', '--port', '6379']")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"aunshare_service(): port must be an int in 1..65535, "
                             f"got {port!r}")
        argv = [os.fspath(a) for a in argv]
        if host_port:
            _check_free(host_port)  # fail before the service is started
        if self._is_async:
            return self._start_async(argv, port, timeout, host_port, env)
        return self._start(argv, port, timeout, host_port, env)

    async def _start_async(self, argv: list[str], port: int, timeout: float, host_port: int,
                           env: dict[str, str] | None) -> Service:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self._start, argv, port, timeout, host_port, env)

    def _start(self, argv: list[str], port: int, timeout: float, host_port: int,
               env: dict[str, str] | None) -> Service:
        import anyio
        from anyio.from_thread import start_blocking_portal

        from .command import Command
        from .fds import Stdio
        from .namespaces import Namespace

        with self._lock:
            if self._portal is None:
                self._portal_cm = start_blocking_portal("asyncio")
                self._portal = self._portal_cm.__enter__()
            portal = self._portal
        program, *args = argv
        cmd = (Command(program).args(args)
               .unshare(Namespace.USER | Namespace.NET | Namespace.MOUNT | Namespace.PID
                        | Namespace.IPC | Namespace.UTS)
               .map_root_user().mount_proc().hostname("aunshare-service")  # lo is up
               .stdin(Stdio.null()).stdout(Stdio.piped()).stderr(Stdio.merge_into_stdout()))
        for key, value in (env or {}).items():
            cmd.env(key, value)
        service = Service(argv, port)
        service._stop = portal.call(anyio.Event)
        future, _ = portal.start_task(_run, service, cmd, timeout, host_port)
        service._done = future
        self._services.append(service)
        return service

    def _close(self) -> list[str]:
        """Stop every service; return the failures to report."""
        failures: list[str] = []
        portal = self._portal
        for service in self._services:
            if portal is not None and service._stop is not None:
                try:
                    portal.call(service._stop.set)
                except RuntimeError:
                    pass  # the loop is gone
            if service._done is not None:
                try:
                    service._done.result()
                except BaseException as exc:
                    failures.append(f"{service!r}: stopping it failed: {exc!r}")
            if service._crash is not None:
                failures.append(f"{service.argv[0]} (port {service.port}) exited during the "
                                f"test: {service._crash}{service._tail()}")
        self._services.clear()
        if self._portal_cm is not None:
            cm, self._portal_cm, self._portal = self._portal_cm, None, None
            cm.__exit__(None, None, None)
        return failures


@pytest.fixture
def aunshare_service(request: pytest.FixtureRequest) -> Generator[ServiceFactory, None, None]:
    """Start hermetic services: ``svc = aunshare_service(["redis-server",
    "--port", "6379"], port=6379)`` (``await`` it in an async test) runs
    the command in its own user+network+mount+pid sandbox, waits for its
    port, and gives a :class:`Service` (``address``, ``open_tcp_stream()``,
    ``logs``). At the end of the test every service is stopped; one that
    crashed during the test fails it."""
    factory = ServiceFactory(inspect.iscoroutinefunction(getattr(request, "function", None)))
    yield factory
    failures = factory._close()
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
