"""Spawning real children: builder methods observed from the child's side."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

import anyio
import pytest

from aunshare import Command, Fd, Stdio

pytestmark = pytest.mark.anyio


async def run_out(cmd: Command) -> bytes:
    out = await cmd.output()
    assert out.status.success(), (out.status, out.stderr)
    return out.stdout


async def test_exit_codes():
    assert (await Command("/bin/true").status()).success()
    st = await Command("/bin/false").status()
    assert st.code == 1 and not st.success() and str(st) == "exited with code 1"
    st = await Command("sh").args(["-c", "exit 255"]).status()
    assert st.code == 255 and st.returncode == 255


async def test_killed_by_signal():
    st = await Command("sh").args(["-c", "kill -KILL $$"]).status()
    assert st.code is None and st.signal == signal.SIGKILL
    assert st.returncode == -9
    assert str(st).startswith("killed by signal SIGKILL")


async def test_args_and_arg0():
    data = await run_out(Command("cat").arg0("renamed").arg("/proc/self/cmdline"))
    assert data == b"renamed\0/proc/self/cmdline\0"
    data = await run_out(Command(b"printf").args([b"%s|", "a b", Path("p/q"), b"\xff"]))
    assert data == b"a b|p/q|\xff|"


async def test_path_lookup():
    data = await run_out(Command("echo").arg("hi"))
    assert data == b"hi\n"
    with tempfile.TemporaryDirectory() as d:
        prog = Path(d, "my-tool")
        prog.write_text("#!/bin/sh\necho from-path\n")
        prog.chmod(0o755)
        data = await run_out(Command("my-tool").env("PATH", d))
        assert data == b"from-path\n"


async def test_env():
    os.environ["AUNSHARE_TEST_INHERITED"] = "yes"
    try:
        data = await run_out(Command("env"))
        assert b"AUNSHARE_TEST_INHERITED=yes\n" in data
        data = await run_out(Command("env").env("NEW", "1").env_remove("AUNSHARE_TEST_INHERITED"))
        assert b"NEW=1\n" in data and b"AUNSHARE_TEST_INHERITED" not in data
        data = await run_out(Command("/usr/bin/env").env_clear().envs({"A": "1", b"B": b"\xfe"}))
        assert sorted(data.splitlines()) == [b"A=1", b"B=\xfe"]
    finally:
        del os.environ["AUNSHARE_TEST_INHERITED"]


async def test_current_dir(tmp_path):
    data = await run_out(Command("pwd").current_dir(tmp_path))
    assert data == f"{tmp_path}\n".encode()


async def test_stdin_piped_and_null():
    child = await Command("cat").stdin(Stdio.piped()).stdout(Stdio.piped()).spawn()
    async with child:
        await child.stdin.send(b"round trip")
        await child.stdin.aclose()
        assert await child.stdout.read_all() == b"round trip"
    assert child.returncode == 0
    out = await Command("cat").output()  # output() gives stdin /dev/null
    assert out.stdout == b"" and out.status.success()


async def test_stdio_from_fd_and_dup_file(tmp_path):
    path = tmp_path / "out.txt"
    with open(path, "wb") as f:
        st = await Command("echo").arg("via from_fd").stdout(Stdio.from_fd(f.fileno())).status()
        assert st.success()
    with open(path, "ab") as f:
        spec = Stdio.dup_file(f)
    # the file object is closed; the Command owns its own copy
    st = await Command("echo").arg("via dup_file").stdout(spec).status()
    assert st.success()
    assert path.read_bytes() == b"via from_fd\nvia dup_file\n"
    with open(path, "rb") as f:
        data = await run_out(Command("cat").stdin(Stdio.dup_file(f)))
    assert data == b"via from_fd\nvia dup_file\n"


async def test_stderr_and_stdout_null():
    out = await Command("sh").args(["-c", "echo out; echo err >&2"]).stdout(Stdio.null()).output()
    assert out.stdout == b"" and out.stderr == b"err\n"


async def test_file_descriptor_kinds(tmp_path):
    path = tmp_path / "fd5.txt"
    with open(path, "wb") as f:
        cmd = (Command("sh").args(["-c", "echo five >&5; readlink /proc/self/fd/6 /proc/self/fd/7"])
               .file_descriptor(5, Fd.dup_file(f))
               .file_descriptor(6, Fd.read_null())
               .file_descriptor(7, Fd.piped_write()))
        data = await run_out(cmd)
    assert path.read_bytes() == b"five\n"
    lines = data.splitlines()
    assert lines[0] == b"/dev/null" and lines[1].startswith(b"pipe:")


async def test_fd_shuffle_swaps_sources_and_targets(tmp_path):
    """Map parent fd 51 to child fd 50 and parent fd 50 to child fd 51."""
    a = os.open(tmp_path / "a", os.O_CREAT | os.O_WRONLY)
    b = os.open(tmp_path / "b", os.O_CREAT | os.O_WRONLY)
    os.dup2(a, 50)
    os.dup2(b, 51)
    try:
        cmd = (Command("readlink").args(["/proc/self/fd/50", "/proc/self/fd/51"])
               .file_descriptor(50, Fd.from_fd(51)).file_descriptor(51, Fd.from_fd(50)))
        data = await run_out(cmd)
        assert data.split() == [str(tmp_path / "b").encode(), str(tmp_path / "a").encode()]
        # inherit keeps the same number
        data = await run_out(Command("readlink").arg("/proc/self/fd/50")
                             .file_descriptor(50, Fd.inherit()))
        assert data.strip() == str(tmp_path / "a").encode()
    finally:
        for fd in (a, b, 50, 51):
            os.close(fd)


async def test_child_sees_only_stdio_and_mapped_fds(tmp_path):
    """Inheritable parent descriptors do not reach the child unless mapped."""
    leaky = [os.open("/dev/null", os.O_RDONLY) for _ in range(20)]
    for fd in leaky:
        os.set_inheritable(fd, True)
    try:
        data = await run_out(Command("ls").arg("/proc/self/fd"))
        # ls itself opens one descriptor for the directory it lists
        assert len(data.split()) == 4, data
        data = await run_out(Command("ls").arg("/proc/self/fd")
                             .file_descriptor(9, Fd.read_null())
                             .file_descriptor(12, Fd.from_fd(leaky[0])))
        fds = sorted(int(x) for x in data.split())
        assert fds[:3] == [0, 1, 2] and 9 in fds and 12 in fds and len(fds) == 6, fds
        # reset_fds: nothing is closed, inheritable descriptors pass through
        data = await run_out(Command("ls").arg("/proc/self/fd").reset_fds()
                             .stdout(Stdio.piped()))
        assert {str(fd).encode() for fd in leaky} <= set(data.split())
        # close_fds after reset closes just that range
        data = await run_out(Command("ls").arg("/proc/self/fd").reset_fds()
                             .stdout(Stdio.piped()).close_fds(range(leaky[0], leaky[-1] + 1)))
        assert not {str(fd).encode() for fd in leaky} & set(data.split())
    finally:
        for fd in leaky:
            os.close(fd)


async def test_identity_as_root():
    if os.geteuid() != 0:
        pytest.skip("needs root to change uid")
    data = await run_out(Command("id").uid(65534).gid(65533).groups([100, 65533]))
    text = data.decode()
    assert "uid=65534" in text and "gid=65533" in text
    assert sorted(int(g.split("(")[0]) for g in text.split("groups=")[1].split(",")) == [100, 65533]
    # uid without groups(): root's supplementary groups are dropped
    data = await run_out(Command("id").arg("-G").uid(65534).gid(65534))
    assert data.split() == [b"65534"]


async def test_make_group_leader():
    child = await Command("sleep").arg("5").make_group_leader(True).spawn()
    async with child:
        assert os.getpgid(child.pid) == child.pid
        child.kill()
    child = await Command("sleep").arg("5").spawn()
    async with child:
        assert os.getpgid(child.pid) == os.getpgrp()
        child.kill()


def _sig_line(status: bytes, name: bytes) -> int:
    for line in status.splitlines():
        if line.startswith(name + b":"):
            return int(line.split()[1], 16)
    raise AssertionError(name)


async def test_signal_mask_and_ignored_signals_reset():
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        status = await run_out(Command("cat").arg("/proc/self/status"))
        assert _sig_line(status, b"SigBlk") == 0
        # Python ignores SIGPIPE; the child gets it back at its default
        assert _sig_line(status, b"SigIgn") == 0
        status = await run_out(Command("cat").arg("/proc/self/status").keep_sigmask())
        assert _sig_line(status, b"SigBlk") & (1 << (signal.SIGUSR1 - 1))
        assert _sig_line(status, b"SigIgn") & (1 << (signal.SIGPIPE - 1))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    # handlers the parent installed are not inherited (CLONE_CLEAR_SIGHAND)
    status = await run_out(Command("cat").arg("/proc/self/status"))
    assert _sig_line(status, b"SigCgt") == 0


async def test_parent_death_signal_kills_child():
    """A child spawned by a process that dies is killed (default SIGKILL)."""
    code = (
        "import anyio, aunshare, sys\n"
        "async def main():\n"
        "    c = await aunshare.Command('sleep').arg('60').spawn()\n"
        "    print(c.pid, flush=True)\n"
        "    await anyio.sleep(60)\n"
        "anyio.run(main)\n"
    )
    env_path = os.pathsep.join([str(Path(__file__).parent.parent),
                                *[p for p in sys.path if "site-packages" in p]])
    parent = await (Command(sys.executable).args(["-c", code]).env("PYTHONPATH", env_path)
                    .stdout(Stdio.piped()).allow_daemonize().spawn())
    async with parent:
        line = b""
        while not line.endswith(b"\n"):
            line += await parent.stdout.receive()
        grandchild = int(line)
        assert not _gone(grandchild)
        parent.kill()
        await parent.wait()
    with anyio.fail_after(10):
        while not _gone(grandchild):
            await anyio.sleep(0.01)


async def test_allow_daemonize_survives_parent():
    code = (
        "import anyio, aunshare\n"
        "async def main():\n"
        "    c = await aunshare.Command('sleep').arg('60').allow_daemonize().spawn()\n"
        "    print(c.pid, flush=True)\n"
        "    await anyio.sleep(60)\n"
        "anyio.run(main)\n"
    )
    env_path = os.pathsep.join([str(Path(__file__).parent.parent),
                                *[p for p in sys.path if "site-packages" in p]])
    parent = await (Command(sys.executable).args(["-c", code]).env("PYTHONPATH", env_path)
                    .stdout(Stdio.piped()).spawn())
    async with parent:
        line = b""
        while not line.endswith(b"\n"):
            line += await parent.stdout.receive()
        grandchild = int(line)
        parent.kill()
        await parent.wait()
    await anyio.sleep(0.2)
    try:
        assert not _gone(grandchild)
    finally:
        os.kill(grandchild, signal.SIGKILL)


def _gone(pid: int) -> bool:
    from conftest import process_gone

    return process_gone(pid)


async def test_reused_command_sees_every_change(tmp_path):
    """A Command spawned again after a builder call, or after the parent's
    environment or PATH changed, runs what it says now (no stale plan)."""
    cmd = Command("printenv").arg("AUNSHARE_REUSE")
    assert (await cmd.output()).status.code == 1  # unset
    os.environ["AUNSHARE_REUSE"] = "first"
    try:
        assert await run_out(cmd) == b"first\n"
        os.environ["AUNSHARE_REUSE"] = "second" * 100  # forces environ to grow
        for i in range(50):
            os.environ[f"AUNSHARE_FILL_{i}"] = "x"
        assert await run_out(cmd) == b"second" * 100 + b"\n"
        cmd.arg0("renamed")
        assert await run_out(cmd) == b"second" * 100 + b"\n"
        cmd.env("AUNSHARE_REUSE", "set-by-env")
        assert await run_out(cmd) == b"set-by-env\n"
    finally:
        for key in [k for k in os.environ if k.startswith(("AUNSHARE_REUSE", "AUNSHARE_FILL_"))]:
            del os.environ[key]
    prog = tmp_path / "printenv"
    prog.write_text("#!/bin/sh\necho shadowed\n")
    prog.chmod(0o755)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{tmp_path}:{old_path}"
    try:
        assert await run_out(cmd) == b"shadowed\n"
    finally:
        os.environ["PATH"] = old_path
    assert await run_out(cmd) == b"set-by-env\n"


async def test_same_command_from_many_threads():
    """Concurrent spawns of one Command from worker threads each get their
    own plan buffer (the cached one is taken by one spawn at a time)."""
    cmd = Command("sh").args(["-c", "echo $$"]).stdout(Stdio.piped())

    def spawn_many() -> list[bytes]:
        async def body():
            return [(await cmd.output()).stdout for _ in range(25)]

        return anyio.run(body)

    async with anyio.create_task_group() as tg:
        results: list[list[bytes]] = []

        async def worker():
            results.append(await anyio.to_thread.run_sync(spawn_many))

        for _ in range(4):
            tg.start_soon(worker)
    pids = [out for batch in results for out in batch]
    assert len(pids) == 100 and len(set(pids)) == 100
