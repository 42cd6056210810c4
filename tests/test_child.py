"""The Child handle: waiting, signalling, the context manager, cancellation."""

from __future__ import annotations

import signal

import anyio
import pytest

from aunshare import Command, KillPolicy, Stdio
from conftest import process_gone

pytestmark = pytest.mark.anyio


async def test_try_wait_and_wait():
    child = await Command("sleep").arg("0.2").spawn()
    assert child.try_wait() is None and child.returncode is None
    assert child.pidfd >= 0
    st = await child.wait()
    assert st.success() and child.returncode == 0
    assert await child.wait() is st  # cached
    assert child.try_wait() is st
    assert child.pidfd == -1  # closed once reaped


async def test_terminate_and_signal():
    child = await Command("sleep").arg("30").spawn()
    child.terminate()
    st = await child.wait()
    assert st.signal == signal.SIGTERM and st.returncode == -15
    assert "SIGTERM" in str(st)
    with pytest.raises(ProcessLookupError, match="already been reaped"):
        child.signal(signal.SIGTERM)
    child = await Command("sleep").arg("30").spawn()
    child.signal(signal.SIGUSR1)
    assert (await child.wait()).signal == signal.SIGUSR1


async def test_concurrent_waiters_share_the_result():
    child = await Command("sleep").arg("0.1").spawn()
    results = []

    async def waiter():
        results.append(await child.wait())

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(waiter)
    assert len(results) == 3 and all(r is results[0] for r in results)


async def test_context_manager_waits_on_success():
    cmd = Command("sh").args(["-c", "read x; exit 4"]).stdin(Stdio.piped())
    async with await cmd.spawn() as child:
        pass  # leaving closes stdin, so `read` sees EOF and the shell exits
    assert child.returncode == 4


async def test_context_manager_kills_on_error():
    """The default kill policy's first signal, SIGTERM, is enough for sleep."""
    with pytest.raises(RuntimeError):
        async with await Command("sleep").arg("30").spawn() as child:
            raise RuntimeError("boom")
    assert child.returncode == -signal.SIGTERM
    assert process_gone(child.pid)


async def test_cancellation_kills_and_reaps():
    cmd = Command("sleep").arg("30").kill_policy(KillPolicy(grace=0))
    with anyio.move_on_after(0.2) as scope:
        async with await cmd.spawn() as child:
            await child.wait()
    assert scope.cancelled_caught
    assert child.returncode == -signal.SIGKILL


async def test_cancel_while_reading_output():
    cmd = (Command("sh").args(["-c", "echo start; sleep 30"]).stdout(Stdio.piped())
           .make_group_leader().kill_policy(KillPolicy(grace=0)))
    with anyio.move_on_after(0.2):
        child = await cmd.spawn()
        await child.wait_with_output()
    assert child.returncode == -signal.SIGKILL
    assert child.stdout.fileno() == -1


async def test_output_collects_both_streams():
    out = await Command("sh").args(["-c", "head -c 300000 /dev/zero; echo e >&2; exit 2"]).output()
    assert out.status.code == 2
    assert out.stdout == b"\0" * 300000 and out.stderr == b"e\n"


async def test_rusage_reports_cpu_time():
    st = await Command("sh").args(
        ["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"]).status()
    assert st.rusage is not None
    assert st.rusage.user_time + st.rusage.system_time > 0.05
    assert st.rusage.max_rss_kib > 0


async def test_many_concurrent_children():
    statuses = []

    async def one(i):
        statuses.append((i, (await Command("sh").args(["-c", f"exit {i % 7}"]).status()).code))

    async with anyio.create_task_group() as tg:
        for i in range(64):
            tg.start_soon(one, i)
    assert sorted(statuses) == [(i, i % 7) for i in range(64)]


async def test_repr():
    child = await Command("sleep").arg("30").spawn()
    assert repr(child) == f"<Child pid={child.pid} running>"
    child.kill()
    await child.wait()
    assert repr(child) == f"<Child pid={child.pid} killed by signal SIGKILL>"
