"""Follow a child's output line by line, as it is written, with timestamps.

The child prints a log line, then waits for the parent to acknowledge it on
its stdin before it writes the next one, and after the last one it waits
for its stdin to close (cat) before it exits. So the program only finishes if
every line reaches the parent while the child is still running: nothing
is buffered until exit. The example asserts that, and the order.

Run: python examples/live_logs.py [asyncio|uvloop|trio]
"""

from __future__ import annotations

import sys
import time

import anyio

from aunshare import Command, Stdio

SCRIPT = r"""
for step in fetch build test package; do
    echo "$(date +%H:%M:%S) starting $step"
    sleep 0.05
    echo "$(date +%H:%M:%S) finished $step"
    read ack
done
echo "all done, waiting for stdin to close" >&2
cat > /dev/null
"""


async def main() -> None:
    cmd = (Command("sh").args(["-c", SCRIPT])
           .stdin(Stdio.piped()).stdout(Stdio.piped()).stderr(Stdio.merge_into_stdout()))
    t0 = time.monotonic()
    received: list[tuple[float, str]] = []
    with anyio.fail_after(30):   # a line held back until exit would hang here
        async with await cmd.spawn() as child:
            async for line in child.stdout.text_lines():
                at = time.monotonic() - t0
                running = child.try_wait() is None
                print(f"+{at:6.3f}s  {'running' if running else 'exited '}  {line}")
                assert running, "a line arrived only after the child exited"
                received.append((at, line))
                if line.endswith(("finished fetch", "finished build", "finished test",
                                  "finished package")):
                    await child.stdin.send(b"ok\n")
                elif line.startswith("all done"):
                    await child.stdin.aclose()
            status = await child.wait()
    print(f"+{time.monotonic() - t0:6.3f}s  {status}")

    assert status.success()
    words = [line.split(" ", 1)[1] for _, line in received[:-1]]
    assert words == [f"{what} {step}" for step in ("fetch", "build", "test", "package")
                     for what in ("starting", "finished")], words
    assert received[-1][1] == "all done, waiting for stdin to close"
    times = [at for at, _ in received]
    assert times == sorted(times)


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    anyio.run(main, backend="asyncio" if backend == "uvloop" else backend, backend_options=options)
