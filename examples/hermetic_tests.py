"""A tiny hermetic test harness: five "tests" run at once, each in a network
namespace of its own (a new user namespace with root mapped, so no real
privilege is needed), and each binds the same TCP port, 127.0.0.1:8080,
without any conflict. The host holds that port too while they run.
Prints a result table and asserts it.

Run: python examples/hermetic_tests.py [asyncio|uvloop|trio]
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time

import anyio

from aunshare import Command, Namespace

PORT = 8080

# Each test is this Python program. A new network namespace has only "lo",
# which aunshare brings up before the program starts (Command.loopback), so
# the test serves one echo over 127.0.0.1:8080 to itself.
TEST_PROGRAM = r"""
import os, socket, sys, time

name = sys.argv[1]
server = socket.create_server(("127.0.0.1", PORT))
time.sleep(0.3)  # hold the port while the other tests bind theirs
with socket.create_connection(("127.0.0.1", PORT)) as client:
    conn, _ = server.accept()
    client.sendall(name.encode())
    echoed = conn.recv(100)
    conn.close()
print(os.getuid(), os.readlink("/proc/self/ns/net"), echoed.decode())
""".replace("PORT", str(PORT))


async def run_test(name: str, results: dict[str, tuple[str, float, str]]) -> None:
    start = time.monotonic()
    out = await (Command(sys.executable).args(["-I", "-c", TEST_PROGRAM, name])
                 .unshare(Namespace.USER | Namespace.NET)
                 .map_root_user()
                 .output())
    elapsed = time.monotonic() - start
    if out.status.success():
        results[name] = ("pass", elapsed, out.stdout.decode().strip())
    else:
        results[name] = (f"FAIL ({out.status})", elapsed, out.stderr.decode().strip())


async def main() -> None:
    host_ns = os.readlink("/proc/self/ns/net")
    host = socket.socket()
    try:
        host.bind(("127.0.0.1", PORT))
        host.listen()
        holder = "this harness"
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        holder = "another program"
    print(f"host  {host_ns}: 127.0.0.1:{PORT} is held by {holder}")

    results: dict[str, tuple[str, float, str]] = {}
    names = [f"test_{i}" for i in range(1, 6)]
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(run_test, name, results)
    wall = time.monotonic() - started
    host.close()

    print(f"{'test':8} {'result':6} {'time':>6}  {'uid':3}  {'network namespace':20}  echo")
    namespaces = set()
    for name in names:
        verdict, elapsed, detail = results[name]
        if verdict != "pass":
            print(f"{name:8} {verdict}  {detail}")
            continue
        uid, ns, echoed = detail.split()
        namespaces.add(ns)
        print(f"{name:8} {verdict:6} {elapsed:5.2f}s  {uid:3}  {ns:20}  {echoed}")
        assert (uid, echoed) == ("0", name), detail
    print(f"{len(names)} tests bound 127.0.0.1:{PORT} at once in {wall:.2f}s")

    assert all(results[n][0] == "pass" for n in names), results
    assert len(namespaces) == len(names) and host_ns not in namespaces, namespaces
    # they overlapped: together they took far less than one after the other
    assert wall < sum(results[n][1] for n in names), (wall, results)


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    anyio.run(main, backend="asyncio" if backend == "uvloop" else backend, backend_options=options)
