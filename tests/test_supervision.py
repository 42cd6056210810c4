"""Syscalls supervised from the event loop (seccomp user notification)."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

import anyio
import pytest

import aunshare
from aunshare import Command, Stdio
from conftest import process_gone, run_unprivileged

CONNECT = r"""
import socket, sys
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        print(port, "connected")
    except OSError as e:
        print(port, e.errno)
    s.close()
"""


@pytest.mark.anyio
async def test_connect_one_port_denied_another_allowed(anyio_backend, no_leaks):
    with socket.socket() as a, socket.socket() as b:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.listen()
        good, bad = a.getsockname()[1], b.getsockname()[1]
        cmd = (Command(sys.executable).args(["-c", CONNECT, str(good), str(bad)])
               .supervise_syscalls("connect").stdout(Stdio.piped()))
        seen = []
        async with await cmd.spawn() as child:
            async for call in child.syscalls():
                family, (host, port) = call.sockaddr(1)
                seen.append((call.name, host, port))
                if port == bad:
                    await call.deny(errno.ECONNREFUSED)
                else:
                    await call.allow()
                with pytest.raises(RuntimeError, match="already answered"):
                    await call.deny()
            out = (await child.wait_with_output()).stdout.decode().split("\n")
    assert seen == [("connect", "127.0.0.1", good), ("connect", "127.0.0.1", bad)]
    assert out[:2] == [f"{good} connected", f"{bad} {errno.ECONNREFUSED}"]


@pytest.mark.anyio
async def test_every_execve_seen_in_order(anyio_backend, no_leaks):
    cmd = (Command("/bin/sh").args(["-c", "ls / >/dev/null; id"])
           .supervise_syscalls(["execve", "execveat"]).stdout(Stdio.null()))
    async with await cmd.spawn() as child:
        paths = []
        async for call in child.syscalls():
            paths.append(call.path(0))
            await call.allow()
        status = await child.wait()
    assert status.success()
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["ls", "id"], paths


@pytest.mark.anyio
async def test_cancelled_supervisor_leaves_no_hung_child(anyio_backend, no_leaks):
    # The child makes a supervised call nobody answers; the supervising task
    # is cancelled: the listener closes, the call fails with ENOSYS, and the
    # child finishes by itself.
    script = ("import os\n"
              "for i in range(2):\n"
              "    try: os.mkdir('/nonexistent/x')\n"
              "    except OSError as e: print(e.errno, flush=True)\n")
    cmd = (Command(sys.executable).args(["-c", script]).supervise_syscalls(["mkdir", "mkdirat"])
           .stdout(Stdio.piped()))
    child = await cmd.spawn()
    async with child:
        got = []
        with anyio.move_on_after(5) as scope:
            async with anyio.create_task_group() as tg:
                async def supervise():
                    async for call in child.syscalls():
                        got.append(call)
                        tg.cancel_scope.cancel()  # walk away without answering
                        await anyio.sleep_forever()
                tg.start_soon(supervise)
        assert not scope.cancelled_caught and len(got) == 1
        with pytest.raises(RuntimeError, match="ended"):
            await got[0].allow()
        with anyio.fail_after(10):
            out = await child.wait_with_output()
    assert out.stdout.decode().split() == [str(errno.ENOSYS)] * 2
    assert process_gone(child.pid)


@pytest.mark.anyio
async def test_answer_after_death_and_bad_input(anyio_backend, no_leaks):
    cmd = (Command("/bin/sh").args(["-c", "exec ls /"]).supervise_syscalls("execve")
           .stdout(Stdio.null()))
    async with await cmd.spawn() as child:
        calls = []
        async for call in child.syscalls():
            calls.append(call)
            child.kill()
            stat = Path(f"/proc/{child.pid}/stat")
            while not stat.read_text().split(") ")[1].startswith("Z"):
                await anyio.sleep(0.001)
            # dead, not yet reaped: the kernel says ENOENT
            with pytest.raises(aunshare.SyscallGone) as info:
                call.path(0)
            assert info.value.errno == errno.ENOENT
            with pytest.raises(aunshare.SyscallGone) as info:
                await call.allow()
            assert info.value.errno == errno.ENOENT
            await child.wait()
        # reaped: the supervision ended with the child
        with pytest.raises(aunshare.SyscallGone):
            await calls[0].deny()
        with pytest.raises(RuntimeError, match="ended"):
            async for _ in child.syscalls():
                pass
    with pytest.raises(ValueError, match="did you mean"):
        Command("/bin/true").supervise_syscalls("conect")
    plain = await Command("/bin/true").spawn()
    with pytest.raises(ValueError, match="not supervised"):
        plain.syscalls()
    await plain.wait()


@pytest.mark.anyio
async def test_unprivileged_supervision(anyio_backend):
    out = await run_unprivileged("""
        import anyio, errno, os
        from aunshare import Command, Stdio
        async def main():
            cmd = (Command("/bin/sh").args(["-c", "mkdir /tmp/never-made-$$; echo $?"])
                   .supervise_syscalls(["mkdir", "mkdirat"]).stdout(Stdio.piped()))
            async with await cmd.spawn() as child:
                async for call in child.syscalls():
                    print(call.name, call.path(call.args and (1 if call.name == "mkdirat"
                                                              else 0)).startswith("/tmp/"))
                    await call.deny(errno.EROFS)
                print((await child.wait_with_output()).stdout.decode().strip())
        anyio.run(main)
    """)
    lines = out.stdout.decode().split("\n")
    assert lines[0].endswith("True") and lines[0].split()[0] in ("mkdir", "mkdirat")
    assert lines[1] == "1"


OPEN = r"""
import os, sys
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDONLY))
        print("opened")
    except OSError as e:
        print(e.errno)
"""


@pytest.mark.anyio
async def test_paths_read_whole_short_and_long(anyio_backend, no_leaks):
    # A long path may cross a page boundary (read in pieces), a short one
    # is read in one go: both must arrive whole, and each answer be its own.
    long = "/nonexistent-aunshare/" + "d" * 3000
    short = "/nonexistent-aunshare/x"
    cmd = (Command(sys.executable).args(["-I", "-S", "-c", OPEN, long, short, "/"])
           .supervise_syscalls("openat").stdout(Stdio.piped()))
    seen = []
    async with await cmd.spawn() as child:
        async for call in child.syscalls():
            path = call.path(1)
            if path.startswith("/nonexistent-aunshare/"):
                seen.append(path)
                await call.deny(errno.EACCES if path == long else errno.EROFS)
            else:
                await call.allow()
        out = (await child.wait_with_output()).stdout.decode().split()
    assert seen == [long, short]
    assert out == [str(errno.EACCES), str(errno.EROFS), "opened"]


OPEN_READ = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print(fd, os.get_inheritable(fd), os.read(fd, 100).decode(), flush=True)
"""


@pytest.mark.anyio
@pytest.mark.parametrize("respond", [True, False])
async def test_open_answered_with_an_injected_descriptor(anyio_backend, no_leaks, tmp_path,
                                                         respond):
    # The supervisor opens the file itself and hands the descriptor over:
    # the program reads what the parent chose, at the number it was told.
    real = tmp_path / "real"
    real.write_text("from-the-parent")
    wanted = "/nonexistent-aunshare/wanted"
    cmd = (Command(sys.executable).args(["-I", "-S", "-c", OPEN_READ, wanted])
           .supervise_syscalls("openat").stdout(Stdio.piped()))
    numbers = []
    async with await cmd.spawn() as child:
        async for call in child.syscalls():
            if call.path(1) != wanted:
                await call.allow()
                continue
            with pytest.raises(ValueError, match="not an open descriptor"):
                await call.inject_fd(9999)
            with pytest.raises(ValueError, match="an int >= 0"):
                await call.inject_fd(-1)
            fd = os.open(real, os.O_RDONLY)
            try:
                if respond:
                    numbers.append(await call.inject_fd(fd))
                    with pytest.raises(RuntimeError, match="already answered"):
                        await call.allow()
                else:
                    numbers.append(await call.inject_fd(fd, respond=False, target_fd=50,
                                                        cloexec=False))
                    await call.respond(50)
            finally:
                os.close(fd)
        out = (await child.wait_with_output()).stdout.decode().split()
    if respond:
        assert out == [str(numbers[0]), "False", "from-the-parent"]
    else:
        assert numbers == [50]
        assert out == ["50", "True", "from-the-parent"]
