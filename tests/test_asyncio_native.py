"""aunshare inside plain asyncio code (pytest-asyncio), on the default loop
and on uvloop (see pytest_asyncio_loop_factories in conftest.py): asyncio's
own timeouts and cancellation work with it."""

from __future__ import annotations

import asyncio
import signal

import pytest

from aunshare import Command, Stdio
from conftest import process_gone


@pytest.mark.asyncio
async def test_wait_for_timeout_kills_the_child():
    child = await Command("sleep").arg("30").spawn()
    async with child:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(child.wait(), 0.1)
        assert child.returncode is None  # a timed-out wait leaves it running
        child.kill()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.asyncio
async def test_task_cancel_inside_context_kills_and_reaps():
    started = asyncio.Event()
    holder = {}

    async def supervised():
        async with await Command("sleep").arg("30").spawn() as child:
            holder["child"] = child
            started.set()
            await child.wait()

    task = asyncio.create_task(supervised())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    child = holder["child"]
    # the default kill policy: SIGTERM first, which sleep does not survive
    assert child.returncode == -signal.SIGTERM and process_gone(child.pid)


@pytest.mark.asyncio
async def test_gather_many_outputs():
    outs = await asyncio.gather(*(
        Command("sh").args(["-c", f"echo {i}"]).stdout(Stdio.piped()).output() for i in range(32)
    ))
    assert [o.stdout for o in outs] == [f"{i}\n".encode() for i in range(32)]
