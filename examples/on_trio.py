"""aunshare in a plain trio program: trio's own nursery, cancel scopes and
memory channels around aunshare's children, no anyio in sight.

aunshare is written against anyio, which runs on top of trio, so a Child
works inside trio primitives directly: a trio cancel scope that expires
stops a child by its kill policy, and a nursery collects several at once.
Asserts what it prints.

Run: python examples/on_trio.py [trio]
This example is trio only; given asyncio or uvloop, it says so and still
runs on trio.
"""

from __future__ import annotations

import signal
import sys

import trio

import aunshare
from aunshare import Command, KillPolicy, Stdio


async def word_count(text: bytes, send: trio.MemorySendChannel[tuple[str, int]]) -> None:
    """Count the words of ``text`` with wc, and send the count."""
    async with send:
        child = await Command("wc").arg("-w").stdin(Stdio.piped()).stdout(Stdio.piped()).spawn()
        stdout, _ = await child.communicate(text)
        await send.send((text.decode().split()[0], int(stdout)))


async def main() -> None:
    print(f"running on trio {trio.__version__}")

    # A nursery of children, results through a trio memory channel.
    texts = [b"alpha beta gamma", b"delta epsilon", b"zeta"]
    send, receive = trio.open_memory_channel[tuple[str, int]](len(texts))
    async with trio.open_nursery() as nursery, send:
        for text in texts:
            nursery.start_soon(word_count, text, send.clone())
    counts = dict([item async for item in receive])
    print("word counts", sorted(counts.items()))
    assert counts == {"alpha": 3, "delta": 2, "zeta": 1}

    # A trio cancel scope expires: the child is stopped by its kill policy
    # (SIGTERM, then SIGKILL after the grace) and reaped before the scope exits.
    cmd = Command("sleep").arg("30").kill_policy(KillPolicy(grace=0.5))
    with trio.move_on_after(0.3) as scope:
        async with await cmd.spawn() as child:
            await child.wait()
    status = child.try_wait()    # already reaped: the cached status
    print(f"cancelled {scope.cancelled_caught}: sleep {status}")
    assert scope.cancelled_caught
    assert status is not None and status.signal == signal.SIGTERM

    # Streaming lines while the nursery does something else.
    lines: list[str] = []

    async def follow(child: aunshare.Child) -> None:
        async for line in child.stdout.text_lines():
            lines.append(line)

    cmd = Command("sh").args(["-c", "for i in 1 2 3; do echo line $i; sleep 0.02; done"])
    async with await cmd.stdout(Stdio.piped()).spawn() as child, trio.open_nursery() as nursery:
        nursery.start_soon(follow, child)
        status = await child.wait()
    print(f"followed {lines} then {status}")
    assert lines == ["line 1", "line 2", "line 3"] and status.success()

    # The job runner under trio, with trio's fail_after around it.
    with trio.fail_after(30):
        results = await aunshare.run_many([["true"], ["false"], ["sh", "-c", "exit 7"]], limit=2)
    print("job runner", [r.returncode for r in results])
    assert [r.returncode for r in results] == [0, 1, 7]


if __name__ == "__main__":
    asked = sys.argv[1] if len(sys.argv) > 1 else "trio"
    if asked != "trio":
        print(f"asked for {asked}: this example uses trio's own API, so it runs on trio")
    trio.run(main)
