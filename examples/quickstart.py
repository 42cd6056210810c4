"""A tour of aunshare's core: run commands concurrently, capture output,
stream a pipe, change user, and see a typed error. Asserts what it prints.

Run: python examples/quickstart.py [asyncio|uvloop|trio]
"""

from __future__ import annotations

import os
import sys

import anyio

import aunshare
from aunshare import Command, Stdio


async def main() -> None:
    # Several children at once; each result is awaited on its pidfd.
    results: dict[str, aunshare.Output] = {}

    async def run(name: str, cmd: Command) -> None:
        results[name] = await cmd.output()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "uname", Command("uname").arg("-sr"))
        tg.start_soon(run, "count", Command("sh").args(["-c", "seq 1 3; echo done >&2"]))
        tg.start_soon(run, "fail", Command("sh").args(["-c", "exit 3"]))
    for name, out in sorted(results.items()):
        print(f"{name:6} {out.status}: {out.stdout.decode().strip()!r} "
              f"{out.stderr.decode().strip()!r}")
    assert results["count"].stdout == b"1\n2\n3\n" and results["count"].stderr == b"done\n"
    assert results["fail"].status.code == 3

    # Stream a child's stdin and stdout.
    upper = Command("tr").args(["a-z", "A-Z"]).stdin(Stdio.piped()).stdout(Stdio.piped())
    async with await upper.spawn() as child:
        await child.stdin.send(b"shouting through a pipe\n")
        await child.stdin.aclose()
        line = await child.stdout.read_all()
    print(f"tr     {line.decode().strip()}  (pid {child.pid}, {child.executor} executor)")
    assert line == b"SHOUTING THROUGH A PIPE\n"

    # Run as another user (needs root), with a clean environment.
    if os.geteuid() == 0:
        out = await Command("id").uid(65534).gid(65534).env_clear().output()
        print(f"id     {out.stdout.decode().strip()}")
        assert out.stdout.startswith(b"uid=65534")

    # Errors are typed, say what failed on what, and leave nothing behind.
    try:
        await Command("/bin/true").current_dir("/no/such/dir").status()
    except aunshare.Chdir as exc:
        print(f"error  {type(exc).__name__}: {exc}")
        assert exc.errno == 2


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    anyio.run(main, backend="asyncio" if backend == "uvloop" else backend, backend_options=options)
