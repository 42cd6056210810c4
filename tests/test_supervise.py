"""Supervision: kill policies on cancellation, errors and shutdown(); process
trees in group and cgroup modes; resource usage. Every child is checked gone
and reaped, from /proc, not from aunshare's own bookkeeping."""

from __future__ import annotations

import os
import signal
import sys
import time

import anyio
import pytest

import aunshare
from aunshare import Command, KillPolicy, KillTarget, Stdio
from aunshare.executors import get_executor
from conftest import descendants, live_children, process_gone, zombie_children

pytestmark = pytest.mark.anyio

TREE = ["-c", "sleep 100 & sleep 100"]  # a child with a grandchild in the background


def _proc_stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (the state first)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


async def eventually(predicate, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


async def read_line(stream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        data += await stream.receive()
    return data


async def tree_pids(child: aunshare.Child, count: int) -> set[int]:
    """The child's live descendants, once there are ``count`` of them."""
    found: set[int] = set()

    def enough() -> bool:
        nonlocal found
        found = descendants(child.pid)
        return len(found) >= count

    await eventually(enough)
    return found


# -- cancellation: the child is always gone and reaped --------------------------------

async def test_spawn_in_cancelled_scope_starts_nothing(no_leaks):
    with anyio.CancelScope() as scope:
        scope.cancel()
        await Command("sleep").arg("100").spawn()
        pytest.fail("spawn() returned in a cancelled scope")


async def test_cancel_while_spawning(no_leaks):
    """Cancel a task group while spawns are in flight (on the portable executor
    some are between clone and exec): nothing survives, nothing is leaked."""
    seen: list[aunshare.Child] = []

    async def one(scope: anyio.CancelScope) -> None:
        async with await Command("sleep").arg("100").kill_policy(KillPolicy(grace=0)).spawn() as c:
            seen.append(c)
            if len(seen) == 10:
                scope.cancel()  # the others are queued, or between clone and exec
            await c.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(one, tg.cancel_scope)
    assert len(seen) >= 10
    assert all(c.returncode == -signal.SIGKILL and process_gone(c.pid) for c in seen)


async def _spawn_and_cancel_at_first_wait(cmd: Command) -> aunshare.Child | None:
    """Spawn ``cmd`` in a scope cancelled at the first moment spawn() waits;
    the child if spawn() returned it (and the block then stopped it)."""
    returned = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_now, tg.cancel_scope)  # runs at spawn's first wait, if any
        async with await cmd.spawn() as child:
            returned.append(child)
            await child.wait()
    return returned[0] if returned else None


async def test_cancel_between_clone_and_exec(no_leaks):
    """The portable executor's spawn awaits the exec (error pipe to EOF): a
    cancellation arriving then kills and reaps the half-started child and
    raises from spawn(). Whether it arrives before the exec is a race, so
    this tries until it does (most attempts do). The native executor's lone
    spawn has no such window: the child is returned, then stopped."""
    cmd = Command("sleep").arg("100")
    if get_executor().name == "native":
        child = await _spawn_and_cancel_at_first_wait(cmd)
        assert child is not None and child.spawn_mode == "vfork"
        assert child.returncode == -signal.SIGTERM
        return
    for _ in range(30):
        child = await _spawn_and_cancel_at_first_wait(cmd)
        assert zombie_children() == [] and live_children() == []
        if child is None:
            return  # cancelled between clone and exec, and nothing is left
        assert child.returncode == -signal.SIGTERM
    pytest.fail("the cancellation never arrived between clone and exec")


async def test_cancel_between_clone_and_exec_native_alongside(no_leaks):
    """With another child running, the native executor does not block the
    loop for the exec either: it watches the error pipe, and a cancellation
    there is handled like the portable one's."""
    async with await Command("sleep").arg("100").kill_policy(KillPolicy(grace=0)).spawn() as other:
        for _ in range(30):
            child = await _spawn_and_cancel_at_first_wait(Command("sleep").arg("100"))
            if child is None:
                break
            assert child.spawn_mode == "pipe" and child.returncode == -signal.SIGTERM
        else:
            pytest.fail("the cancellation never arrived between clone and exec")
        assert live_children() == [other.pid]
        other.kill()


async def _cancel_now(scope: anyio.CancelScope) -> None:
    scope.cancel()


async def test_cancel_during_wait(no_leaks):
    with anyio.move_on_after(0.1) as scope:
        async with await Command("sleep").arg("100").spawn() as child:
            await child.wait()
    assert scope.cancelled_caught
    assert child.returncode == -signal.SIGTERM  # the default policy's first signal
    assert child.pidfd == -1 and process_gone(child.pid)


async def test_cancel_during_output_reading(no_leaks):
    cmd = Command("sh").args(["-c", "echo partial; exec sleep 100"]).stdout(Stdio.piped())
    with anyio.move_on_after(0.2) as scope:
        child = await cmd.spawn()
        async with child:
            assert await read_line(child.stdout) == b"partial\n"
            await child.stdout.read_all()  # blocks: sleep holds the pipe open
    assert scope.cancelled_caught
    assert child.returncode == -signal.SIGTERM and process_gone(child.pid)
    assert child.stdout.fileno() == -1


async def test_cancel_during_wait_with_output(no_leaks):
    with anyio.move_on_after(0.2):
        child = await (Command("sh").args(["-c", "echo x; exec sleep 100"])
                       .stdout(Stdio.piped()).spawn())
        await child.wait_with_output()
    assert child.returncode == -signal.SIGTERM and process_gone(child.pid)


# -- the grace period ----------------------------------------------------------------------

TRAP_TERM = "trap 'echo cleaned; exit 7' TERM; echo ready; while :; do sleep 0.02; done"
IGNORE_TERM = "trap '' TERM; echo ready; while :; do sleep 0.02; done"


async def test_term_trapped_exits_cleanly_within_grace(no_leaks):
    cmd = (Command("sh").args(["-c", TRAP_TERM]).stdout(Stdio.piped())
           .kill_policy(KillPolicy(grace=2.0)))
    async with await cmd.spawn() as child:
        assert await read_line(child.stdout) == b"ready\n"
        t0 = time.monotonic()
        status = await child.shutdown()
        elapsed = time.monotonic() - t0
        assert await child.stdout.read_all() == b"cleaned\n"
    assert status.code == 7, status  # its own clean exit, not a signal
    assert elapsed < 1.5, elapsed


async def test_term_ignored_is_killed_after_grace(no_leaks):
    cmd = (Command("sh").args(["-c", IGNORE_TERM]).stdout(Stdio.piped())
           .make_group_leader().kill_policy(KillPolicy(grace=0.3)))
    with pytest.raises(RuntimeError):
        async with await cmd.spawn() as child:
            assert await read_line(child.stdout) == b"ready\n"
            t0 = time.monotonic()
            raise RuntimeError("error in the block")
    elapsed = time.monotonic() - t0
    assert child.returncode == -signal.SIGKILL
    assert 0.3 <= elapsed < 2.0, elapsed


async def test_grace_zero_kills_at_once(no_leaks):
    cmd = Command("sh").args(["-c", IGNORE_TERM]).stdout(Stdio.piped())
    child = await cmd.spawn()
    await read_line(child.stdout)
    t0 = time.monotonic()
    status = await child.shutdown(KillPolicy(grace=0))
    assert status.signal == signal.SIGKILL and time.monotonic() - t0 < 0.25
    await child.aclose()


async def test_grace_survives_a_second_cancellation(no_leaks):
    """shutdown() is shielded: cancelling the caller again does not cut the
    grace short or leave the child unreaped."""
    cmd = (Command("sh").args(["-c", TRAP_TERM.replace("exit 7", "sleep 0.2; exit 7")])
           .stdout(Stdio.piped()).kill_policy(KillPolicy(grace=2.0)))
    async with anyio.create_task_group() as tg:
        child = await cmd.spawn()
        await read_line(child.stdout)

        async def stop() -> None:
            await child.shutdown()

        tg.start_soon(stop)
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert child.returncode == 7
    await child.aclose()


async def test_stopped_child_gets_sigcont(no_leaks):
    """A stopped child cannot act on SIGTERM until continued: the policy sends
    SIGCONT after it, so the TERM takes effect without waiting the grace."""
    child = await Command("sleep").arg("100").kill_policy(KillPolicy(grace=5)).spawn()
    child.signal(signal.SIGSTOP)
    await eventually(lambda: _proc_stat(child.pid)[0] == "T")
    t0 = time.monotonic()
    status = await child.shutdown()
    assert status.signal == signal.SIGTERM and time.monotonic() - t0 < 2


async def test_concurrent_wait_and_shutdown_share_the_result(no_leaks):
    child = await Command("sh").args(TREE).make_group_leader().spawn()
    grandchildren = await tree_pids(child, 2)
    results = []

    async def waiter() -> None:
        results.append(await child.wait())

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        tg.start_soon(waiter)
        await anyio.sleep(0.05)
        results.append(await child.shutdown(KillPolicy(grace=0)))
    assert len(results) == 3 and all(r is results[0] for r in results)
    await eventually(lambda: all(process_gone(p) for p in grandchildren))


async def test_shutdown_after_exit_returns_status(no_leaks):
    child = await Command("sh").args(["-c", "exit 3"]).spawn()
    assert (await child.wait()).code == 3
    assert (await child.shutdown()).code == 3  # nothing to signal


# -- the kill target --------------------------------------------------------------------------

async def test_auto_target_resolution():
    async with await Command("sleep").arg("100").spawn() as plain:
        assert plain.kill_policy.target is KillTarget.CHILD
        with pytest.raises(ValueError, match="needs a child that leads its own process group"):
            plain.kill_policy = KillPolicy(target="group")
        with pytest.raises(ValueError, match=r"needs a child started in its own cgroup"):
            plain.kill_policy = KillPolicy(target=KillTarget.CGROUP)
        with pytest.raises(TypeError, match="must be a KillPolicy"):
            plain.kill_policy = "child"
        plain.kill_policy = KillPolicy(grace=0)
        assert plain.kill_policy == KillPolicy(grace=0, target="child")
        plain.kill()
    async with await Command("sleep").arg("100").make_group_leader().spawn() as leader:
        assert leader.kill_policy.target is KillTarget.GROUP
        leader.kill()


async def test_child_target_leaves_the_grandchild(no_leaks):
    """The reason for the tree targets: killing only the child orphans the
    background grandchild (here found and killed by the test itself)."""
    child = await Command("sh").args(TREE).kill_policy(KillPolicy(grace=0, target="child")).spawn()
    pids = await tree_pids(child, 2)
    await child.shutdown()
    await anyio.sleep(0.05)
    survivors = [p for p in pids if not process_gone(p)]
    for p in survivors:
        os.kill(p, signal.SIGKILL)
    assert survivors, "the background sleep should have outlived its parent"


@pytest.mark.parametrize("how", ["cancel", "shutdown"])
async def test_group_target_kills_the_tree(no_leaks, how):
    cmd = Command("sh").args(TREE).kill_policy(KillPolicy(grace=0.3, target="group"))
    with anyio.move_on_after(5 if how == "shutdown" else 0.5):
        async with await cmd.spawn() as child:
            pids = await tree_pids(child, 2)
            assert {os.getpgid(p) for p in pids} == {child.pid}
            if how == "shutdown":
                await child.shutdown()
            else:
                await child.wait()
    assert child.returncode == -signal.SIGTERM
    await eventually(lambda: all(process_gone(p) for p in pids))


async def test_group_target_kills_a_double_forked_daemon(no_leaks):
    """A grandchild that double-forks (its parent exits, it is reparented) is
    no longer below the child, but still in its group."""
    script = "(sleep 100 &); echo forked; exec sleep 100"
    cmd = (Command("sh").args(["-c", script]).stdout(Stdio.piped())
           .kill_policy(KillPolicy(grace=0, target="group")))
    async with await cmd.spawn() as child:
        assert await read_line(child.stdout) == b"forked\n"
        daemon = await _group_members(child.pid, exclude=child.pid)
        assert daemon and not (daemon & descendants(child.pid))  # not a descendant any more
        await child.shutdown()
    await eventually(lambda: all(process_gone(p) for p in daemon))


async def _group_members(pgid: int, exclude: int) -> set[int]:
    members: set[int] = set()

    def found() -> bool:
        members.clear()
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != exclude:
                try:
                    fields = _proc_stat(name)
                except OSError:
                    continue
                if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                    members.add(int(name))
        return bool(members)

    await eventually(found)
    return members


# -- cgroups ----------------------------------------------------------------------------------

def cgroup_pids(path: str) -> set[int]:
    with open(os.path.join(path, "cgroup.procs")) as f:
        return {int(x) for x in f.read().split()}


@pytest.mark.parametrize("how", ["cancel", "shutdown"])
async def test_cgroup_target_kills_the_tree(no_leaks, cgroup_parent, how):
    cmd = Command("sh").args(TREE).new_cgroup(cgroup_parent).kill_policy(KillPolicy(grace=0.3))
    # Cancelled once the tree is up, however slow the machine (emulated, say).
    with anyio.CancelScope() as scope:
        async with await cmd.spawn() as child:
            assert child.kill_policy.target is KillTarget.CGROUP
            path = child.cgroup
            assert os.path.dirname(path) == cgroup_parent
            pids = await tree_pids(child, 2)
            assert cgroup_pids(path) == pids | {child.pid}
            if how == "shutdown":
                await child.shutdown()
            else:
                scope.cancel()
                await child.wait()
    assert child.returncode == -signal.SIGTERM
    assert all(process_gone(p) for p in pids)  # cgroup.kill finished before the removal
    assert child.cgroup is None and not os.path.exists(path)


async def test_cgroup_catches_what_escapes_the_group(no_leaks, cgroup_parent):
    """setsid leaves the process group, not the cgroup."""
    script = "setsid sleep 100 & echo forked; exec sleep 100"
    cmd = (Command("sh").args(["-c", script]).stdout(Stdio.piped()).new_cgroup(cgroup_parent)
           .make_group_leader().kill_policy(KillPolicy(grace=0)))
    async with await cmd.spawn() as child:
        assert await read_line(child.stdout) == b"forked\n"
        path = child.cgroup
        await eventually(lambda: len(cgroup_pids(path)) == 2)
        escaped = cgroup_pids(path) - {child.pid}
        # once setsid has run, the process is out of the child's group
        await eventually(lambda: all(os.getpgid(p) != child.pid for p in escaped))
        await child.shutdown()
    assert all(process_gone(p) for p in escaped) and not os.path.exists(path)


async def test_cgroup_grace_lasts_until_the_tree_is_gone(no_leaks, cgroup_parent):
    """Every process in the cgroup gets the first signal, and the grace lasts
    until the cgroup is empty: the child exits at once, its worker finishes
    a slow cleanup instead of being killed."""
    worker = ("trap 'sleep 0.3; echo cleaned; exit 0' TERM; echo worker; "
              "while :; do sleep 0.02; done")
    script = f"sh -c \"{worker}\" & trap 'exit 5' TERM; echo ready; while :; do sleep 0.02; done"
    cmd = (Command("sh").args(["-c", script]).stdout(Stdio.piped()).new_cgroup(cgroup_parent)
           .kill_policy(KillPolicy(grace=3)))
    async with await cmd.spawn() as child:
        lines = b""
        while lines.count(b"\n") < 2:
            lines += await child.stdout.receive()
        assert sorted(lines.split()) == [b"ready", b"worker"]
        t0 = time.monotonic()
        status = await child.shutdown()
        elapsed = time.monotonic() - t0
        assert await child.stdout.read_all() == b"cleaned\n"
    assert status.code == 5
    assert 0.3 <= elapsed < 2.5, elapsed


async def test_cgroup_removed_by_plain_wait(no_leaks, cgroup_parent):
    child = await Command("sh").args(["-c", "exit 4"]).new_cgroup(cgroup_parent).spawn()
    path = child.cgroup
    assert os.path.isdir(path)
    assert (await child.wait()).code == 4
    assert child.cgroup is None and not os.path.exists(path)


async def test_cgroup_leftovers_killed_when_the_block_ends(no_leaks, cgroup_parent):
    """The child exits normally but leaves a background process: wait() keeps
    the cgroup; the end of ``async with`` kills the leftover and removes it."""
    cmd = Command("sh").args(["-c", "sleep 100 & echo $!"]).stdout(Stdio.piped())
    async with await cmd.new_cgroup(cgroup_parent).spawn() as child:
        left = int(await read_line(child.stdout))
        assert (await child.wait()).code == 0
        assert child.cgroup is not None and cgroup_pids(child.cgroup) == {left}
        path = child.cgroup
    assert process_gone(left) and not os.path.exists(path)


async def test_cgroup_spawn_failure_removes_it(no_leaks, cgroup_parent):
    with pytest.raises(aunshare.Exec):
        await Command("/no/such/program").new_cgroup(cgroup_parent).spawn()
    with pytest.raises(aunshare.Chdir):
        await Command("true").current_dir("/no/such/dir").new_cgroup(cgroup_parent).spawn()


async def test_cgroup_bad_parent(no_leaks, tmp_path):
    with pytest.raises(aunshare.CgroupError) as info:
        await Command("true").new_cgroup(tmp_path).spawn()
    assert "not a cgroup v2 directory" in str(info.value) and str(tmp_path) in str(info.value)
    assert os.listdir(tmp_path) == []
    with pytest.raises(aunshare.CgroupError) as info:
        await Command("true").new_cgroup(tmp_path / "missing").spawn()
    assert info.value.errno == 2


async def test_cgroup_wait_empty_without_inotify(no_leaks, cgroup_parent):
    """The polling fallback of wait_cgroup_empty sees the cgroup empty too."""
    from aunshare.cgroup import wait_empty as wait_cgroup_empty

    child = await Command("sh").args(["-c", "sleep 0.2 &"]).new_cgroup(cgroup_parent).spawn()
    await child.wait()
    path = os.fsencode(child.cgroup)
    assert path is not None  # the background sleep is still in it
    with anyio.fail_after(3):
        await wait_cgroup_empty(path, use_inotify=False)
    await child.aclose()
    assert child.cgroup is None


# -- resource usage ----------------------------------------------------------------------------

BURN = """
import sys, time
block = bytearray(100 << 20)
block[::4096] = b"x" * len(range(0, len(block), 4096))
start = time.process_time()
while time.process_time() - start < float(sys.argv[1]):
    for _ in range(20000):  # user time; process_time() itself is a syscall
        pass
"""


async def test_rusage_of_a_busy_child(no_leaks):
    """A child that burns 0.4 s of CPU and touches 100 MiB: rusage says so.
    (process_time is the child's own user+system time, so the lower bound is
    exact; the upper bound allows for interpreter start-up.)"""
    t0 = time.monotonic()
    status = await Command(sys.executable).args(["-S", "-c", BURN, "0.4"]).status()
    wall = time.monotonic() - t0
    assert status.success()
    ru = status.rusage
    cpu = ru.user_time + ru.system_time
    assert 0.4 <= cpu < 0.4 + 0.6, ru
    assert cpu <= wall + 0.05, (ru, wall)
    assert ru.user_time > ru.system_time  # a busy loop is user time
    assert ru.max_rss_kib >= 100 * 1024, ru


# -- child_events / reap_zombies ----------------------------------------------------------

async def test_reap_zombies_in_exit_order(no_leaks):
    children = [await Command("sh").args(["-c", f"sleep 0.{3 - i}; exit {i}"]).spawn()
                for i in range(3)]
    got = []
    async with aunshare.reap_zombies(children) as exits:
        async for child, status in exits:
            got.append((children.index(child), status.code))
            assert child.returncode == status.code and process_gone(child.pid)
    assert got == [(2, 2), (1, 1), (0, 0)]


async def test_child_events_leave_other_children_alone(no_leaks):
    """A child that is not watched is not reaped: its owner still can."""
    other = await Command("true").spawn()
    watched = await Command("true").spawn()
    async with aunshare.child_events([watched]) as events:
        kinds = [(e.child, e.kind) async for e in events]
    assert kinds == [(watched, aunshare.ChildEventKind.EXITED)]
    await eventually(lambda: other.pid in zombie_children())  # exited, still unreaped
    assert other.returncode is None
    assert (await other.wait()).success()


@pytest.mark.parametrize("sigchld", [False, True], ids=["poll", "sigchld"])
async def test_child_events_stop_and_continue(no_leaks, sigchld, anyio_backend):
    if sigchld and anyio_backend[1].get("use_uvloop"):
        with pytest.raises(RuntimeError, match=r"cannot handle SIGCHLD on this event loop"):
            async with aunshare.child_events([], stops=True, sigchld=True):
                pass
        return
    a = await Command("sleep").arg("100").spawn()
    b = await Command("sleep").arg("100").spawn()
    seen = []
    async with aunshare.child_events([a], stops=True, sigchld=sigchld,
                                     poll_interval=0.01) as events:
        events.add(b)
        a.signal(signal.SIGSTOP)
        async for event in events:
            seen.append((event.child, event.kind, event.signal))
            if event.kind is aunshare.ChildEventKind.STOPPED:
                a.signal(signal.SIGCONT)
            elif event.kind is aunshare.ChildEventKind.CONTINUED:
                a.kill()
                b.signal(signal.SIGTERM)
    K = aunshare.ChildEventKind
    assert seen[:2] == [(a, K.STOPPED, signal.SIGSTOP), (a, K.CONTINUED, signal.SIGCONT)]
    assert sorted(seen[2:], key=lambda e: e[2]) == [(a, K.EXITED, signal.SIGKILL),
                                                    (b, K.EXITED, signal.SIGTERM)]


async def test_child_events_sigchld_needs_the_main_thread():
    def in_thread() -> str:
        async def body() -> None:
            async with aunshare.child_events([], stops=True, sigchld=True):
                pass

        try:
            anyio.run(body)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    message = await anyio.to_thread.run_sync(in_thread)
    assert message.startswith("child_events(sigchld=True) needs the main thread")


async def test_child_events_bad_input():
    with pytest.raises(ValueError, match="pass stops=True"):
        async with aunshare.child_events([], sigchld=True):
            pass
    with pytest.raises(ValueError, match="poll_interval must be a positive number"):
        async with aunshare.child_events([], stops=True, poll_interval=0):
            pass
    with pytest.raises(TypeError, match="watches aunshare Child objects, not int"):
        async with aunshare.child_events([1234]):
            pass


# -- spawning alongside running children ---------------------------------------------------

async def test_spawn_alongside_other_children_watches_the_pipe(no_leaks):
    """A lone native spawn sleeps in vfork until the exec; with other children
    running it clones without CLONE_VFORK and the loop watches the error pipe,
    so it keeps serving them. Both report errors the same way."""
    native = get_executor().name == "native"
    lone = await Command("true").spawn()
    assert lone.spawn_mode == ("vfork" if native else "pipe")
    await lone.wait()
    async with await Command("sleep").arg("100").kill_policy(KillPolicy(grace=0)).spawn() as other:
        os.environ["AUNSHARE_ALONGSIDE"] = "seen"
        try:
            child = await (Command("printenv").arg("AUNSHARE_ALONGSIDE")
                           .stdout(Stdio.piped()).spawn())
            assert child.spawn_mode == "pipe"
            assert (await child.wait_with_output()).stdout == b"seen\n"
        finally:
            del os.environ["AUNSHARE_ALONGSIDE"]
        with pytest.raises(aunshare.Exec):
            await Command("/no/such/program").spawn()
        with pytest.raises(aunshare.Chdir):
            await Command("true").current_dir("/no/such/dir").spawn()
        other.kill()


async def test_concurrent_spawns_while_the_environment_changes(no_leaks):
    """Children cloned alongside the parent get a copy of the environment, so
    the parent growing (and reallocating) its environ meanwhile is harmless."""
    stop = anyio.Event()

    async def churn() -> None:
        i = 0
        while not stop.is_set():
            os.environ[f"AUNSHARE_CHURN_{i % 200}"] = "x" * (i % 50)
            if i % 3 == 0:
                os.environ.pop(f"AUNSHARE_CHURN_{(i * 7) % 200}", None)
            i += 1
            await anyio.sleep(0)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(churn)
            results = await aunshare.run_many(
                [Command("sh").args(["-c", f"echo {i} $HOME"]) for i in range(150)], limit=16)
            stop.set()
    finally:
        for key in [k for k in os.environ if k.startswith("AUNSHARE_CHURN_")]:
            del os.environ[key]
    home = os.environ.get("HOME", "")
    assert [r.stdout for r in results] == [f"{i} {home}\n".encode() for i in range(150)]


async def test_concurrent_spawns_of_one_command_get_their_own_pipes(no_leaks):
    """Concurrent spawns of one command reuse encoded tables with each spawn's
    own descriptor numbers patched in: every job reads its own child."""
    cmd = Command("sh").args(["-c", "echo $$"])
    results = await aunshare.run_many([cmd] * 200, limit=32)
    lines = [r.stdout for r in results]
    assert all(r.ok and line.count(b"\n") == 1 for r, line in zip(results, lines))
    assert len(set(lines)) == 200
