"""Hermetic services with the aunshare pytest plugin: every test starts its
own redis-server on redis' fixed port 6379, in a sandbox of its own, so the
tests run in parallel without clashing (``pytest -n 8`` with pytest-xdist).

Run: pytest -n 8 examples/pytest_services
"""

from __future__ import annotations

import asyncio
import os
import shutil

import anyio
import pytest

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (package redis-server)")

REDIS = ["redis-server", "--port", "6379", "--save", "", "--appendonly", "no"]


def command(*args: str) -> bytes:
    """A redis command in its wire format (RESP)."""
    out = f"*{len(args)}\r\n".encode()
    for arg in args:
        out += f"${len(arg.encode())}\r\n{arg}\r\n".encode()
    return out


def ask(sock, *args: str) -> bytes:
    sock.sendall(command(*args))
    return sock.recv(4096)


@pytest.mark.parametrize("worker", range(8))
def test_each_test_has_its_own_redis(aunshare_service, worker):
    redis = aunshare_service(REDIS, port=6379)
    with redis.connect() as sock:
        assert ask(sock, "PING") == b"+PONG\r\n"
        assert ask(sock, "GET", "owner") == b"$-1\r\n"  # a fresh server: nobody wrote here
        me = f"test {worker} in process {os.getpid()}"
        assert ask(sock, "SET", "owner", me) == b"+OK\r\n"
        assert ask(sock, "GET", "owner") == f"${len(me)}\r\n{me}\r\n".encode()
    assert "Ready to accept connections" in redis.logs


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_from_an_async_test(aunshare_service, anyio_backend):
    redis = await aunshare_service(REDIS, port=6379)
    stream = await redis.open_tcp_stream()
    async with stream:
        await stream.send(command("INCR", "hits"))
        with anyio.fail_after(5):
            assert await stream.receive() == b":1\r\n"


@pytest.mark.asyncio
async def test_from_a_pytest_asyncio_test(aunshare_service):
    redis = await aunshare_service(REDIS, port=6379)
    reader, writer = await asyncio.open_connection(*redis.address)
    writer.write(command("PING"))
    assert await reader.readline() == b"+PONG\r\n"
    writer.close()
    await writer.wait_closed()
