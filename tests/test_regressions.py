"""Defects found by running other projects' subprocess test suites against
aunshare, and by a red-team pass; each test failed before its fix."""

from __future__ import annotations

import gc
import os
import warnings

import anyio
import pytest

import aunshare
from aunshare import Command
from aunshare.child import busy
from conftest import zombie_children

pytestmark = pytest.mark.anyio


async def test_child_reaped_elsewhere_gives_one_clear_answer(no_leaks):
    """After a WaitError (the child was reaped behind aunshare's back, as a
    SIGCHLD set to SIG_IGN or a waitpid(-1) elsewhere does) every method
    gives the same WaitError, and the child no longer counts as running."""
    child = await Command("true").spawn()
    os.waitid(os.P_PID, child.pid, os.WEXITED)  # someone else reaps it
    for _ in range(2):
        with pytest.raises(aunshare.WaitError, match="reaped by someone else") as info:
            await child.wait()
        assert info.value.errno == 10  # ECHILD
    with pytest.raises(aunshare.WaitError, match="reaped by someone else"):
        child.try_wait()
    with pytest.raises(aunshare.WaitError, match="reaped by someone else"):
        child.terminate()
    with pytest.raises(aunshare.WaitError, match="reaped by someone else"):
        await child.shutdown()
    assert not busy() and child.returncode is None and child.pidfd == -1
    with pytest.raises(aunshare.WaitError, match="reaped by someone else"):
        async with child:
            pass
    # The next lone spawn takes the fast path again.
    lone = await Command("true").spawn()
    assert lone.spawn_mode == ("vfork" if lone.executor == "native" else "pipe")
    await lone.wait()


async def test_dropped_child_is_reaped_once_it_exits(no_leaks):
    """A Child dropped without wait() does not stay a zombie: the next
    spawn reaps it (as subprocess does), and nothing else is reaped."""
    child = await Command("sh").args(["-c", "exit 0"]).spawn()
    pid = child.pid
    with anyio.fail_after(5):
        await child.until_exited()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del child
        gc.collect()
    # Exited but unreaped, and no longer referenced: not reaped yet either.
    running = await Command("sleep").arg("10").spawn()
    assert pid not in zombie_children()
    running.kill()
    await running.wait()


async def test_dropped_running_child_is_reaped_later(no_leaks):
    child = await Command("sleep").arg("0.2").spawn()
    pid = child.pid
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        del child
        gc.collect()
    assert any("will be reaped once it exits" in str(w.message) for w in caught)
    await anyio.sleep(0.5)
    assert pid in zombie_children()  # exited; aunshare holds its pidfd
    await (await Command("true").spawn()).wait()
    assert pid not in zombie_children()


async def test_no_clone_after_the_deadline(anyio_backend_name):
    """Spawns queued when a deadline passes are not started: on asyncio
    the deadline is noticed a loop iteration late, and every task's first
    step would otherwise clone in that iteration."""
    started = 0

    async def one() -> None:
        nonlocal started
        async with await Command("true").spawn():
            started += 1

    tasks = 400
    with anyio.move_on_after(0.02):
        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(one)
            await anyio.sleep(30)
    # Spawning all of them takes far longer than the deadline here.
    assert started < tasks // 2, f"{started} of {tasks} children started"
    assert zombie_children() == []
