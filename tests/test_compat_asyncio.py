"""aunshare.compat.asyncio against asyncio itself: the same script through
both front ends gives the same results (the peers' own suite is
tests/peers/run.py); plus what only the compat layer has."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from aunshare import KillPolicy, Namespace
from aunshare.compat import asyncio as compat
from conftest import BACKENDS, open_fds

PY = sys.executable


@pytest.fixture(params=[b for b in BACKENDS if b.id != "trio"] or
                [pytest.param(("asyncio", {}), id="asyncio")])
def anyio_backend(request):
    """asyncio's API: asyncio and uvloop only."""
    return request.param


async def _streams(create) -> list[object]:
    """A script of StreamReader/StreamWriter calls; returns what it saw."""
    seen: list[object] = []
    proc = await create(PY, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())",
                        stdin=compat.PIPE, stdout=compat.PIPE, limit=16)
    proc.stdin.write(b"one\ntwo;three" + b"x" * 40 + b"\nend")
    proc.stdin.writelines([b"", b"!"])
    await proc.stdin.drain()
    seen.append(proc.stdin.is_closing())
    proc.stdin.close()
    seen.append(proc.stdin.is_closing())
    await proc.stdin.wait_closed()
    seen.append(await proc.stdout.readline())
    seen.append(await proc.stdout.readuntil(b";"))
    seen.append(await proc.stdout.readexactly(3))
    try:
        await proc.stdout.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        seen.append(("overrun", exc.consumed))
    try:
        await proc.stdout.readline()
    except ValueError as exc:
        seen.append(("readline", str(exc)))
    seen.append(await proc.stdout.read(2))
    try:
        await proc.stdout.readexactly(10)
    except asyncio.IncompleteReadError as exc:
        seen.append(("incomplete", exc.partial))
    seen.append(proc.stdout.at_eof())
    seen.append(await proc.wait())
    seen.append(proc.returncode)
    return seen


@pytest.mark.anyio
async def test_streams_behave_as_asyncio(anyio_backend):
    # asyncio's first (uvloop keeps a descriptor of its own after its first child)
    theirs = await _streams(asyncio.create_subprocess_exec)
    before = open_fds()
    ours = await _streams(compat.create_subprocess_exec)
    assert open_fds() == before
    assert ours == theirs
    assert ours[-1] == 0 and ("incomplete", b"d!") in ours


@pytest.mark.anyio
async def test_drain_reports_a_child_that_stopped_reading(anyio_backend, no_leaks):
    proc = await compat.create_subprocess_exec(PY, "-c", "import os; os.close(0)",
                                               stdin=compat.PIPE)
    proc.stdin.write(b"x" * (4 << 20))  # more than the pipe takes
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        await proc.stdin.drain()
    assert await proc.wait() == 0
    # communicate() ignores it, as asyncio's does
    proc = await compat.create_subprocess_exec(PY, "-c", "pass", stdin=compat.PIPE,
                                               stdout=compat.PIPE)
    assert await proc.communicate(b"y" * (1 << 20)) == (b"", None)


@pytest.mark.anyio
async def test_subprocess_keywords(anyio_backend, no_leaks, tmp_path):
    r, w = os.pipe()
    try:
        code = ("import os, sys; m = os.umask(0); os.write(int(sys.argv[1]), b'fd'); "
                "print(os.getcwd(), os.environ.get('ONLY'), 'PATH' in os.environ, oct(m), "
                "os.getsid(0) == os.getpid(), os.getpgrp() == os.getpid())")
        proc = await compat.create_subprocess_exec(
            PY, "-c", code, str(w), stdout=compat.PIPE, stderr=compat.STDOUT, cwd=tmp_path,
            env={"ONLY": "1"}, umask=0o27, start_new_session=True, pass_fds=(w,))
        out, err = await proc.communicate()
        assert os.read(r, 10) == b"fd"
    finally:
        os.close(r)
        os.close(w)
    assert err is None
    assert out.split() == [str(tmp_path).encode(), b"1", b"False", b"0o27", b"True", b"True"]
    proc = await compat.create_subprocess_shell(
        "exec python3 -c 'import os; print(os.getpgrp() == os.getpid())'", process_group=0,
        stdout=compat.PIPE, stdin=compat.DEVNULL)
    assert await proc.communicate() == (b"True\n", None)


def test_keywords_that_cannot_be_honoured_are_refused():
    cases = {
        "preexec_fn": ({"preexec_fn": os.getpid}, TypeError),
        "creationflags": ({"creationflags": 0x200}, ValueError),
        "startupinfo": ({"startupinfo": object()}, ValueError),
        "restore_signals": ({"restore_signals": False}, ValueError),
        "encoding": ({"encoding": "utf-8"}, ValueError),
        "bufsize": ({"bufsize": 1}, ValueError),
        "no_such_keyword": ({"no_such_keyword": 1}, TypeError),
    }
    for name, (kwargs, exc) in cases.items():
        with pytest.raises(exc, match=name):
            asyncio.run(compat.create_subprocess_exec("true", **kwargs))
    # defaults are no request
    code = asyncio.run(_run_default_keywords())
    assert code == 0


async def _run_default_keywords() -> int:
    proc = await compat.create_subprocess_exec("true", preexec_fn=None, creationflags=0,
                                               startupinfo=None, restore_signals=True)
    return await proc.wait()


@pytest.mark.anyio
async def test_command_hook_adds_isolation(anyio_backend, no_leaks):
    def isolate(cmd):
        cmd.unshare(Namespace.UTS).map_root_user().hostname("compat-box")

    proc = await compat.create_subprocess_exec("hostname", stdout=compat.PIPE, command=isolate)
    assert await proc.communicate() == (b"compat-box\n", None)
    assert proc.returncode == 0


@pytest.mark.anyio
async def test_cancelled_wait_stops_the_child(anyio_backend, no_leaks):
    """Stronger than asyncio: the child is stopped by its kill policy and
    reaped before the cancellation goes on."""
    proc = await compat.create_subprocess_exec(
        "sleep", "60", command=lambda c: c.kill_policy(KillPolicy(grace=1)))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(proc.wait(), 0.05)
    assert proc.returncode == -signal.SIGTERM
    proc.kill()  # no error once reaped, as asyncio


@pytest.mark.anyio
async def test_process_group_joins_an_existing_group(anyio_backend, no_leaks):
    """``process_group=N``: the child joins the group another child leads."""
    leader = await compat.create_subprocess_exec("sleep", "60", process_group=0)
    try:
        proc = await compat.create_subprocess_exec(
            PY, "-c", "import os; print(os.getpgrp())", stdout=compat.PIPE,
            process_group=leader.pid)
        out, _ = await proc.communicate()
        assert int(out) == leader.pid
    finally:
        leader.kill()
        await leader.wait()
