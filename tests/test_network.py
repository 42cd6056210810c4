"""Networking for sandboxes: Child.open_tcp_stream, Child.forward_tcp and
Command.user_network (pasta), against real servers in real namespaces.

Traffic stays on this machine: servers run inside the child's namespace or
on the host's loopback (reached from inside at the default gateway address).
"""

from __future__ import annotations

import errno
import http.server
import os
import shutil
import socket
import subprocess
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc
import pytest

import aunshare
from aunshare import Command, Namespace, Stdio
from conftest import descendants, run_unprivileged

# One loop for tests where the loop does not matter.
ONE_LOOP = pytest.mark.parametrize("anyio_backend", [pytest.param(("asyncio", {}), id="asyncio")])
needs_pasta = pytest.mark.skipif(shutil.which("pasta") is None,
                                 reason="pasta is not installed (Debian package passt)")

# A server inside the sandbox: brings lo up itself (a new network namespace
# has it down), says "ready" once it listens, answers each connection with
# what it reads, upper-cased, until EOF.
SERVER = r"""
import fcntl, socket, struct, sys
s = socket.socket()
fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", 1))  # SIOCSIFFLAGS lo IFF_UP
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", int(sys.argv[1])))
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    while (d := c.recv(65536)):
        c.sendall(d.upper())
    c.close()
"""

# Inside a user_network sandbox: GET / from the host's loopback server at
# the default gateway address.
FETCH = r"""
import socket, sys
routes = [line.split() for line in open("/proc/net/route").read().splitlines()[1:]]
gw = next(int(r[2], 16) for r in routes if r[1] == "00000000")
gw = socket.inet_ntoa(gw.to_bytes(4, "little"))
s = socket.create_connection((gw, int(sys.argv[1])), timeout=10)
s.sendall(b"GET /probe HTTP/1.0\r\n\r\n")
data = b""
while (chunk := s.recv(4096)):
    data += chunk
print(gw, data.split(b"\r\n\r\n", 1)[1].decode())
"""

# For snippets run unprivileged: how many children the process has left.
CHILDREN = ("def children():\n"
            "    n = 0\n"
            "    for p in os.listdir('/proc'):\n"
            "        try:\n"
            "            n += p.isdigit() and open(f'/proc/{p}/stat').read().rsplit(')', 1)[1]"
            ".split()[1] == str(os.getpid())\n"
            "        except OSError:\n"
            "            pass\n"
            "    return n\n")


def server(port: int, *more: str) -> Command:
    return (Command(sys.executable).args(["-I", "-c", SERVER, str(port), *more])
            .stdout(Stdio.piped()))


async def ready(child: aunshare.Child) -> None:
    assert child.stdout is not None
    with anyio.fail_after(10):
        assert (await child.stdout.receive()).startswith(b"ready")


async def roundtrip(stream: anyio.abc.SocketStream, data: bytes) -> bytes:
    await stream.send(data)
    await stream.send_eof()
    out = b""
    async for chunk in stream:
        out += chunk
    await stream.aclose()
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def pasta_left() -> list[int]:
    """pasta processes below this one (they are our own children)."""
    return [pid for pid in descendants(os.getpid())
            if _comm(pid).startswith("pas")]  # pasta may re-exec as passt.avx2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello from the host " + self.path.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
async def warm_loop():
    """uvloop opens a descriptor of its own (/dev/null, kept until the loop
    closes) the first time a loop wraps an existing socket: let it happen
    before no_leaks counts."""
    a, b = socket.socketpair()
    stream = await anyio.abc.SocketStream.from_socket(a)
    await stream.aclose()
    b.close()


@pytest.fixture
def host_http():
    """An HTTP server on the host's loopback; yields its port."""
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    thread.join()


# -- open_tcp_stream ------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("ns", [Namespace.NET, Namespace.USER | Namespace.NET], ids=["net", "user"])
async def test_open_tcp_stream_reaches_a_server_inside(anyio_backend, warm_loop, no_leaks, ns):
    cmd = server(7000).unshare(ns)
    if ns & Namespace.USER:
        cmd.map_root_user()
    async with await cmd.spawn() as child:
        await ready(child)
        # The port is the namespace's own: nothing listens on it out here.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", 7000), timeout=1).close()
        s1 = await child.open_tcp_stream(7000)
        s2 = await child.open_tcp_stream(7000, "localhost")
        assert await roundtrip(s1, b"hello") == b"HELLO"
        assert await roundtrip(s2, b"x" * 200_000) == b"X" * 200_000
        child.kill()


@pytest.mark.anyio
@ONE_LOOP
async def test_open_tcp_stream_errors(anyio_backend, warm_loop, no_leaks):
    async with await server(7001).unshare(Namespace.NET).spawn() as child:
        await ready(child)
        with pytest.raises(ConnectionRefusedError):
            await child.open_tcp_stream(7002)  # nothing listens on it inside
        with pytest.raises(ValueError, match="port must be an int"):
            await child.open_tcp_stream(0)
        child.kill()
        await child.wait()
        with pytest.raises(ProcessLookupError, match="has exited"):
            await child.open_tcp_stream(7001)
    # A child in the caller's own network namespace: a plain connection.
    port = free_port()
    async with await server(port).spawn() as child:
        await ready(child)
        assert await roundtrip(await child.open_tcp_stream(port), b"same") == b"SAME"
        child.kill()


@pytest.mark.anyio
@ONE_LOOP
async def test_open_tcp_stream_unprivileged(anyio_backend):
    """Unprivileged, the parent may not join the namespace itself: a helper
    process (kept for the child's lifetime) makes the sockets."""
    out = await run_unprivileged(f"""
        import anyio, os, sys
        from aunshare import Command, Namespace, Stdio
        SERVER = {SERVER!r}
        exec({CHILDREN!r})
        async def main():
            cmd = (Command(sys.executable).args(["-I", "-c", SERVER, "7000"])
                   .unshare(Namespace.USER | Namespace.NET).map_root_user()
                   .stdout(Stdio.piped()))
            async with await cmd.spawn() as child:
                assert (await child.stdout.receive()).startswith(b"ready")
                for word in (b"one", b"two"):
                    s = await child.open_tcp_stream(7000)
                    await s.send(word)
                    await s.send_eof()
                    print((await s.receive()).decode())
                    await s.aclose()
                child.kill()
            # The socket helper is stopped with the child.
            print(children())
        anyio.run(main)
    """)
    assert out.stdout.decode().split() == ["ONE", "TWO", "0"]


# -- forward_tcp ------------------------------------------------------------------------
def _client(address: tuple[str, int], data: bytes) -> bytes:
    """An ordinary blocking client: sends ``data`` while reading the answer."""
    with socket.create_connection(address, timeout=10) as c:
        def send() -> None:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
        sender = threading.Thread(target=send)
        sender.start()
        out = b""
        while chunk := c.recv(65536):
            out += chunk
        sender.join()
    return out


@pytest.mark.anyio
async def test_forward_tcp(anyio_backend, warm_loop, no_leaks):
    cmd = server(6379).unshare(Namespace.USER | Namespace.NET).map_root_user()
    async with await cmd.spawn() as child:
        await ready(child)
        async with child.forward_tcp(6379) as fwd:
            host, port = fwd.address
            assert host == "127.0.0.1" and port != 6379
            big = os.urandom(1 << 20).hex().encode()  # 2 MiB, both ways at once
            results = await anyio.to_thread.run_sync(
                lambda: [_client(fwd.address, b"abc"), _client(fwd.address, big)])
            assert results == [b"ABC", big.upper()]
            assert fwd.connections == 2
            # The host port is taken while the forwarder runs.
            with pytest.raises(aunshare.NetworkError, match="already listens") as info:
                async with child.forward_tcp(6379, host_port=port):
                    pass
            assert info.value.errno == errno.EADDRINUSE
            assert isinstance(info.value, OSError)
        # Gone with the block: the listener, and every task and descriptor.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(fwd.address, timeout=1).close()
        child.kill()


@pytest.mark.anyio
@ONE_LOOP
async def test_forward_tcp_to_a_closed_port_closes_the_client(anyio_backend, warm_loop, no_leaks):
    async with await server(7003).unshare(Namespace.NET).spawn() as child:
        await ready(child)
        async with child.forward_tcp(7004) as fwd:  # nothing listens on 7004 inside
            assert await anyio.to_thread.run_sync(_client, fwd.address, b"x") == b""
        child.kill()


# -- user_network -----------------------------------------------------------------------
@needs_pasta
@pytest.mark.anyio
async def test_user_network(anyio_backend, no_leaks, host_http):
    # Out: the sandbox fetches from a server on the host's loopback.
    cmd = (Command(sys.executable).args(["-I", "-c", FETCH, str(host_http)])
           .unshare(Namespace.USER | Namespace.NET).map_root_user().user_network())
    out = await cmd.output()
    assert out.status.success(), out.stderr
    gateway, text = out.stdout.decode().split(" ", 1)
    assert text == "hello from the host /probe\n"
    assert pasta_left() == []
    # In: the host reaches a server in the sandbox through a forwarded port.
    port = free_port()
    cmd = (server(8000, "0.0.0.0").unshare(Namespace.USER | Namespace.NET).map_root_user()
           .user_network(tcp_ports=[(port, 8000)]))
    async with await cmd.spawn() as child:
        await ready(child)
        assert len(pasta_left()) == 1
        got = await anyio.to_thread.run_sync(_client, ("127.0.0.1", port), b"through pasta")
        assert got == b"THROUGH PASTA"
        child.kill()
    assert pasta_left() == []


def _tun_for_all() -> bool:
    try:
        return os.stat("/dev/net/tun").st_mode & 0o006 == 0o006
    except OSError:
        return False


def _tun_node(directory: Path) -> Callable[[Command], Command] | None:
    """Where /dev/net/tun is not open to other users (mode 0600; the
    distributions make it 0666), root can give the unprivileged run a mount
    namespace of its own with a 0666 node of the same device bound over it:
    the host's node stays as it is. None when nothing is needed."""
    if _tun_for_all():
        return None
    if os.geteuid() != 0:
        pytest.skip("pasta needs /dev/net/tun, which this machine does not let other "
                    "users open (distributions make it mode 0666), and only root could "
                    "give this test a node of its own")
    dev = os.stat("/dev/net/tun").st_rdev
    node = directory / "tun"
    os.mknod(node, stat.S_IFCHR | 0o666, dev)
    os.chmod(node, 0o666)  # whatever the umask took
    return lambda cmd: (cmd.unshare(Namespace.MOUNT)
                        .bind_mount(node, "/dev/net/tun", allow_devices=True))


@needs_pasta
@pytest.mark.anyio
@ONE_LOOP
async def test_user_network_unprivileged(anyio_backend, host_http, tmp_path):
    tun = _tun_node(tmp_path)
    out = await run_unprivileged(configure=tun, code=f"""
        import anyio, os, sys
        from aunshare import Command, Namespace, Stdio
        FETCH, SERVER = {FETCH!r}, {SERVER!r}
        exec({CHILDREN!r})
        async def main():
            cmd = (Command(sys.executable).args(["-I", "-c", FETCH, "{host_http}"])
                   .unshare(Namespace.USER | Namespace.NET).map_root_user().user_network())
            out = await cmd.output()
            sys.stderr.write(out.stderr.decode())
            print(out.stdout.decode().split(" ", 1)[-1].strip())
            cmd = (Command(sys.executable).args(["-I", "-c", SERVER, "7000"])
                   .unshare(Namespace.USER | Namespace.NET).map_root_user()
                   .user_network().stdout(Stdio.piped()))
            async with await cmd.spawn() as child:
                assert (await child.stdout.receive()).startswith(b"ready")
                s = await child.open_tcp_stream(7000)
                await s.send(b"inside")
                print((await s.receive()).decode())
                await s.aclose()
                child.kill()
            print("children left:", children())
        anyio.run(main)
    """)
    assert out.stdout.decode().splitlines() == [
        "hello from the host /probe", "INSIDE", "children left: 0"], out.stderr


@needs_pasta
@pytest.mark.anyio
@ONE_LOOP
async def test_user_network_failures_leave_nothing(anyio_backend, no_leaks, monkeypatch):
    with pytest.raises(ValueError, match=r"add unshare\(Namespace.NET\)"):
        Command("true").unshare(Namespace.USER).user_network().spec()
    with pytest.raises(ValueError, match="ports"):
        Command("true").user_network(tcp_ports=[70000])
    # A host port pasta cannot bind (taken for IPv4 and IPv6): pasta exits.
    taken = socket.socket(socket.AF_INET6)
    taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    taken.bind(("::", 0))
    taken.listen()
    port = taken.getsockname()[1]
    before = set(os.listdir("/tmp"))
    cmd = (Command("true").unshare(Namespace.USER | Namespace.NET).map_root_user()
           .user_network(tcp_ports=[port]))
    try:
        with pytest.raises(aunshare.AuxCommandExited, match=f"Failed to bind.*{port}") as info:
            await cmd.status()
    finally:
        taken.close()
    assert info.value.command == "pasta" and info.value.code != 0
    assert pasta_left() == [] and set(os.listdir("/tmp")) <= before
    # Cancelled while pasta starts: pasta and the child are stopped.
    cmd = Command("true").unshare(Namespace.USER | Namespace.NET).map_root_user().user_network()
    with anyio.move_on_after(0.01):
        await cmd.status()
    assert pasta_left() == []
    # Not installed.
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ValueError, match="install the 'passt' package"):
        Command("true").user_network()


@needs_pasta
def test_cli_user_network(host_http):
    port = free_port()
    res = subprocess.run(
        [sys.executable, "-m", "aunshare", "-U", "-r", "--user-network", "--tcp-port",
         f"{port}:9000", sys.executable, "-I", "-c",
         FETCH, str(host_http)],
        capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.endswith(" hello from the host /probe\n")
    res = subprocess.run([sys.executable, "-m", "aunshare", "--tcp-port", "80", "true"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 2 and "add --user-network" in res.stderr
