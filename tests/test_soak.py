"""Thousands of spawns in one process: nothing grows, nothing breaks.

Sizes: SOAK_SPAWNS (default 10,000) for fd/zombie growth, RECURSION_SPAWNS
(default 100,000) for the interpreter-state check; set the environment
variables to change them.
"""

from __future__ import annotations

import os
import sys

import pytest

from aunshare import Command, Stdio
from aunshare.executors import get_executor
from conftest import open_fds, zombie_children

SOAK = int(os.environ.get("SOAK_SPAWNS", "10000"))
RECURSION = int(os.environ.get("RECURSION_SPAWNS", "100000"))


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.slow
@pytest.mark.anyio
async def test_no_fd_or_zombie_growth():
    ok = Command("/bin/true")
    piped = Command("sh").args(["-c", "echo x"]).stdout(Stdio.piped())
    bad = Command("/bin/true").current_dir("/no/such/dir")
    for cmd in (ok, piped, bad):  # warm up lazy state (executor, loop readers)
        try:
            await cmd.output()
        except Exception:
            pass
    fds, threads = open_fds(), _threads()
    errors = 0
    n = SOAK
    for i in range(n):
        which = i % 10
        if which == 0:
            try:
                await bad.status()
            except Exception:
                errors += 1
        elif which == 1:
            assert (await piped.output()).stdout == b"x\n"
        else:
            assert (await ok.status()).success()
    assert errors == (n + 9) // 10
    assert open_fds() == fds
    assert zombie_children() == []
    assert _threads() <= threads


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
@pytest.mark.anyio
async def test_no_recursion_budget_lost_over_many_spawns():
    """The DESIGN's failure mode: a CLONE_VM child that ran interpreter code
    left the parent's recursion counters changed; after thousands of spawns
    RecursionError. The native child runs no Python, so the budget is intact."""

    def depth(n: int) -> int:
        return 0 if n == 0 else 1 + depth(n - 1)

    limit = sys.getrecursionlimit()
    cmd = Command("/bin/true")
    # The portable child is a separate copy and cannot touch the parent's
    # interpreter; a tenth of the count keeps its run short.
    n = RECURSION if get_executor().name == "native" else RECURSION // 10
    for _ in range(n):
        st = await cmd.status()
        assert st.code == 0
    assert depth(limit - 100) == limit - 100


@pytest.mark.slow
@pytest.mark.anyio
async def test_concurrent_spawns_leave_nothing():
    """The same with 32 children at a time, through the job runner: the
    native executor then clones without CLONE_VFORK and reuses tables after
    each exec; nothing may grow, and no thread is started."""
    import aunshare

    jobs = [["/bin/true"], ["sh", "-c", "echo x"], ["/no/such/program"]]
    await aunshare.run_many(jobs * 4, limit=8)  # warm up
    fds, threads = open_fds(), _threads()
    results = await aunshare.run_many((jobs[i % 3] for i in range(SOAK)), limit=32)
    assert [r.ok for r in results[:3]] == [True, True, False]
    assert sum(r.error is not None for r in results) == (SOAK + 1) // 3
    assert open_fds() == fds
    assert zombie_children() == []
    assert _threads() <= threads
