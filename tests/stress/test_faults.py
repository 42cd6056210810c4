"""Faults provoked with real limits: each gives a typed error and leaves
nothing behind."""

from __future__ import annotations

import errno
import os
import resource
import signal

import anyio
import pytest

import aunshare
from aunshare import Command, Stdio
from conftest import open_fds, zombie_children

pytestmark = [pytest.mark.stress, pytest.mark.anyio]


async def test_descriptor_limit_gives_create_pipe():
    """RLIMIT_NOFILE reached: the stdio pipe cannot be made -> CreatePipe."""
    assert (await Command("/bin/true").status()).success()  # load everything first
    fds = open_fds()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = max(fds) + 8
    fillers: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        try:
            while True:
                fillers.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
        with pytest.raises(aunshare.CreatePipe) as info:
            await Command("/bin/true").stdout(Stdio.piped()).spawn()
        assert info.value.errno == errno.EMFILE
        assert "create pipe fd 1 (stdout)" in str(info.value)
        # One free slot: the first pipe opens, the second cannot; the first
        # must be closed again.
        os.close(fillers.pop())
        os.close(fillers.pop())
        with pytest.raises(aunshare.CreatePipe):
            await Command("/bin/true").stdout(Stdio.piped()).stderr(Stdio.piped()).spawn()
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert open_fds() == fds and zombie_children() == []


async def test_full_stdout_pipe_then_cancel():
    """A child blocked on a full pipe is killed and reaped on cancellation."""
    fds = open_fds()
    with anyio.move_on_after(0.3):
        async with await Command("sh").args(["-c", "yes"]).stdout(Stdio.piped()).spawn() as child:
            await child.wait()  # never: nobody reads, the pipe fills
    assert child.returncode == -signal.SIGTERM  # the default kill policy
    assert open_fds() == fds and zombie_children() == []


async def test_full_stdin_pipe_then_cancel():
    """A parent blocked writing to a child that never reads can be cancelled."""
    fds = open_fds()
    with anyio.move_on_after(0.3):
        async with await Command("sleep").arg("30").stdin(Stdio.piped()).spawn() as child:
            await child.stdin.send(b"x" * (64 << 20))
    assert child.returncode == -signal.SIGTERM  # the default kill policy
    assert open_fds() == fds and zombie_children() == []


async def test_child_killed_while_parent_reads_and_writes():
    """The child dies mid-stream: the writer gets BrokenResourceError, the
    reader sees EOF, wait() reports the signal."""
    child = await (Command("sh").args(["-c", "head -c 1000 >/dev/null; echo partial; kill -9 $$"])
                   .stdin(Stdio.piped()).stdout(Stdio.piped()).spawn())
    async with child:
        with pytest.raises(anyio.BrokenResourceError):
            for _ in range(1000):
                await child.stdin.send(b"y" * 65536)
        assert await child.stdout.read_all() == b"partial\n"
        assert (await child.wait()).signal == signal.SIGKILL


PARENT_IN_HANDSHAKE = """
import sys, anyio
from aunshare import Command, Namespace, Stdio
async def hold(pid):
    print(pid, flush=True)   # the child waits on its wake-up pipe now
    await anyio.sleep(60)
async def main():
    await (Command("/bin/sh").args(["-c", "echo escaped > " + sys.argv[1]])
           .unshare(Namespace.NET).map_root_user().allow_daemonize()
           .before_unfreeze(hold).spawn())
anyio.run(main)
"""


async def test_parent_killed_during_handshake(tmp_path):
    """The parent dies while its child waits between clone and exec: the
    child reads end-of-file instead of the wake-up byte and exits without
    running the program (even with no parent-death signal)."""
    import sys

    marker = tmp_path / "escaped"
    env_path = os.pathsep.join(p for p in sys.path if p)
    parent = await (Command(sys.executable).args(["-c", PARENT_IN_HANDSHAKE, str(marker)])
                    .env("PYTHONPATH", env_path).stdout(Stdio.piped()).spawn())
    async with parent:
        line = b""
        with anyio.fail_after(20):
            async for line in parent.stdout.lines():  # noqa: B007 (the first line, used below)
                break
        child_pid = int(line)
        parent.kill()
        await parent.wait()
    with anyio.fail_after(10):  # init reaps the orphan once it exits
        while True:
            try:
                with open(f"/proc/{child_pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                break
            if state == "Z":
                break
            await anyio.sleep(0.01)
    assert not marker.exists()
