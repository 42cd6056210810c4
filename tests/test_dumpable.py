"""The parent stays dumpable after spawning children that change credentials.

A native child shares the parent's memory until its exec (CLONE_VM); its
setresuid/setresgid/setgroups make the kernel mark that memory
non-dumpable (fs.suid_dumpable). The parent puts the value back once no
such child can still run in its memory (see docs/spawn.md). Measured with
prctl(PR_GET_DUMPABLE) on the test process itself. The event loop does not
matter here: asyncio only.
"""

from __future__ import annotations

import ctypes
import os
import select
import threading
from pathlib import Path

import anyio
import pytest

from aunshare import Command, GidMap, SetUser, UidMap
from aunshare._linux import WEXITED, waitid_pidfd
from aunshare.handshake import listener_ready, spawn_blocking, wake
from aunshare.launch import start

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.geteuid() != 0, reason="changing the child's uid needs root"),
]

_libc = ctypes.CDLL(None, use_errno=True)
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4
NOBODY = 65534


@pytest.fixture
def anyio_backend():
    return "asyncio"


def dumpable() -> int:
    return int(_libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


@pytest.fixture
def dumpable_1():
    """The test process starts dumpable; whatever a test does, it ends so."""
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    assert dumpable() == 1
    yield
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


async def test_uid_change_keeps_parent_dumpable(dumpable_1, no_leaks):
    # the vfork path (nothing else spawning); owner of /proc/self follows
    for cmd in (Command("/bin/true").uid(NOBODY), Command("/bin/true").gid(NOBODY),
                Command("/bin/true").uid(NOBODY).gid(NOBODY).groups([NOBODY])):
        assert (await cmd.status()).success()
        assert dumpable() == 1
    assert os.stat(f"/proc/{os.getpid()}/status").st_uid == os.getuid()
    # failure paths: the exec refused after the uid change, and a uid step refused
    with pytest.raises(FileNotFoundError):
        await Command("/nonexistent/program").uid(NOBODY).status()
    assert dumpable() == 1
    with pytest.raises(SetUser):  # uid 5 is not mapped in this user namespace
        await (Command("/bin/true").set_id_maps([UidMap(0, 100000, 1)], [GidMap(0, 100000, 1)])
               .uid(5).status())
    assert dumpable() == 1


async def test_handshake_and_concurrent_spawns_keep_parent_dumpable(dumpable_1, no_leaks):
    # the error-pipe path: a user namespace whose child changes ids inside
    # it (kernel ids change: the memory goes non-dumpable there too), with a hook
    async def hook(pid: int) -> None:
        pass

    maps = ([UidMap(0, 100000, 65536)], [GidMap(0, 100000, 65536)])
    cmd = Command("/bin/true").set_id_maps(*maps).uid(5).gid(5).before_unfreeze(hook)
    child = await cmd.spawn()
    assert child.handshake is True
    assert dumpable() == 1  # the exec is confirmed when spawn() returns
    assert (await child.wait()).success()

    results = []

    async def one(i: int) -> None:
        c = Command("/bin/true").uid(NOBODY + i % 2 - 1)
        if i % 3 == 0:
            c = c.set_id_maps(*maps).uid(i + 1).before_unfreeze(hook)
        results.append((await c.status()).success())

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(one, i)
    assert results == [True] * 8
    assert dumpable() == 1


def test_spawns_from_threads_keep_parent_dumpable(dumpable_1):
    # several threads on the vfork path at once, each child changing its uid
    spec = Command("/bin/true").uid(NOBODY).gid(NOBODY).spec()
    failures: list[BaseException] = []

    def spawn_some() -> None:
        try:
            for _ in range(3):
                pending = spawn_blocking(spec)
                try:
                    waitid_pidfd(pending.pidfd, WEXITED)
                finally:
                    pending.close()
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    threads = [threading.Thread(target=spawn_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert dumpable() == 1


async def test_not_dumpable_while_a_child_is_after_its_uid_change(dumpable_1, no_leaks):
    # A supervised child waits on the wake-up pipe a second time *after*
    # its setresuid (the parent takes its seccomp listener then): held
    # there, it runs as nobody in our memory, which must stay non-dumpable.
    spec = Command("/bin/true").uid(NOBODY).supervise_syscalls(["getcwd"]).spec()
    pending = start(spec, allow_vfork=True)
    try:
        assert pending.vfork is False and pending.wake_fd >= 0
        wake(pending)  # the first wait (before the uid change)
        while listener_ready(pending) is None:
            assert select.select([pending.ready_fd], [], [], 5)[0], "the child never got there"
        uid_line = next(line for line in Path(f"/proc/{pending.pid}/status").read_text()
                        .splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(NOBODY)] * 4
        # A forked copy (the portable executor) never touches our memory.
        held = 0 if pending.executor.shares_memory else 1
        assert dumpable() == held
        # a second spawn finishing meanwhile does not restore it early
        assert (await Command("/bin/true").uid(NOBODY).status()).success()
        assert dumpable() == held
    finally:
        pending.kill()  # a teardown path: killed and reaped before its exec
        pending.close()
    assert dumpable() == 1
