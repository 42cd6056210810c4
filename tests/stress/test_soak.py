"""Thousands of spawns in one process: nothing grows, nothing breaks.

Sizes: SOAK_SPAWNS (default 10,000) for fd/zombie/thread/RSS growth,
RECURSION_SPAWNS (default 30,000, ten times the count at which the failure
it guards against appeared) for the interpreter-state check.
"""

from __future__ import annotations

import os
import resource
import sys
import threading

import pytest

from aunshare import Command, Stdio
from aunshare.executors import get_executor
from conftest import open_fds, zombie_children

SOAK = int(os.environ.get("SOAK_SPAWNS", "10000"))
RECURSION = int(os.environ.get("RECURSION_SPAWNS", "30000"))
pytestmark = [pytest.mark.stress, pytest.mark.slow]


def _threads() -> int:
    """Threads of this process, not counting trio's guest-mode I/O worker:
    anyio's pytest plugin runs trio tests as a trio guest run, which waits
    for I/O in a worker thread ("Trio thread N") whenever it would block, so
    such a thread can appear in the middle of a test that starts none."""
    harness = {t.native_id for t in threading.enumerate() if t.name.startswith("Trio thread")}
    return sum(1 for tid in os.listdir("/proc/self/task") if int(tid) not in harness)


def _thread_names() -> list[str]:
    """Each thread's name, to tell which one appeared."""
    return [t.name for t in threading.enumerate()] + [
        open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]


def _soak_size(backend: tuple[str, dict]) -> int:
    """SOAK for plain asyncio, a fifth of it for uvloop and trio: the spawn
    path is the same on every loop (only the waiting differs), and a leak
    of one anything per spawn still shows as thousands; CI runs the suite
    on several interpreters and needs the minutes."""
    name, options = backend
    return SOAK if name == "asyncio" and not options.get("use_uvloop") else max(SOAK // 5, 100)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


@pytest.mark.anyio
async def test_no_fd_zombie_thread_or_memory_growth(capsys, anyio_backend):
    soak = _soak_size(anyio_backend)
    ok = Command("/bin/true")
    piped = Command("sh").args(["-c", "echo x"]).stdout(Stdio.piped())
    bad = Command("/bin/true").current_dir("/no/such/dir")

    async def one(i: int) -> bool:
        which = i % 10
        if which == 0:
            try:
                await bad.status()
            except Exception:
                return False
            raise AssertionError("chdir into a missing directory succeeded")
        if which == 1:
            assert (await piped.output()).stdout == b"x\n"
        else:
            assert (await ok.status()).success()
        return True

    for i in range(200):  # warm up: executor, caches, loop readers, allocator
        await one(i)
    fds, threads, rss = open_fds(), _threads(), _rss_kib()
    failures = 0
    for i in range(soak):
        failures += not await one(i)
    after_rss = _rss_kib()
    with capsys.disabled():
        print(f"\n  soak {soak} spawns ({failures} failing by design): fds {len(fds)} -> "
              f"{len(open_fds())}, threads {threads} -> {_threads()}, zombies "
              f"{len(zombie_children())}, RSS {rss} -> {after_rss} KiB")
    assert failures == (soak + 9) // 10
    assert open_fds() == fds
    assert zombie_children() == []
    assert _threads() <= threads, _thread_names()
    assert after_rss - rss < 4096, "RSS grew by more than 4 MiB"


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
async def test_concurrent_spawns_leave_nothing(anyio_backend):
    """The same with 32 children at a time, through the job runner: the
    native executor then clones without CLONE_VFORK and reuses tables after
    each exec; nothing may grow, and no thread is started."""
    import aunshare

    jobs = [["/bin/true"], ["sh", "-c", "echo x"], ["/no/such/program"]]
    await aunshare.run_many(jobs * 4, limit=8)  # warm up
    fds, threads = open_fds(), _threads()
    soak = _soak_size(anyio_backend)
    results = await aunshare.run_many((jobs[i % 3] for i in range(soak)), limit=32)
    assert [r.ok for r in results[:3]] == [True, True, False]
    # job i fails when i % 3 == 2: that is soak // 3 of them
    assert sum(r.error is not None for r in results) == soak // 3
    assert open_fds() == fds
    assert zombie_children() == []
    assert _threads() <= threads, _thread_names()
