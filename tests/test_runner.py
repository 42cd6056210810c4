"""aunshare.run (subprocess-style) and the job runner (run_many,
run_as_completed): results, errors, timeouts that leave nothing behind, and
the concurrency limit checked from the children's side."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import anyio
import pytest

import aunshare
from aunshare import Command, KillPolicy
from conftest import process_gone

pytestmark = pytest.mark.anyio


async def eventually(predicate, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


# -- run() ----------------------------------------------------------------------------------

async def test_run_like_subprocess(no_leaks):
    res = await aunshare.run(["sh", "-c", "echo out; echo err >&2; exit 3"], capture_output=True)
    assert isinstance(res, subprocess.CompletedProcess)
    assert res.args == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    assert (res.returncode, res.stdout, res.stderr) == (3, b"out\n", b"err\n")
    res = await aunshare.run(["cat"], input=b"fed\0bytes", capture_output=True)
    assert res.stdout == b"fed\0bytes" and res.returncode == 0
    res = await aunshare.run(["true"])
    assert res.stdout is None and res.stderr is None  # not captured
    res = await aunshare.run(["sh", "-c", "kill -USR1 $$"])
    assert res.returncode == -signal.SIGUSR1


async def test_run_cwd_env_and_command(no_leaks, tmp_path):
    res = await aunshare.run(["sh", "-c", "pwd; echo $ONLY; echo ${HOME:-unset}"], cwd=tmp_path,
                             env={"ONLY": "this"}, capture_output=True)
    assert res.stdout.decode().split() == [str(tmp_path), "this", "unset"]
    cmd = Command("sh").args(["-c", "echo $X"]).env("X", "from-command")
    res = await aunshare.run(cmd, capture_output=True)
    assert res.stdout == b"from-command\n" and res.args == ["sh", "-c", "echo $X"]
    # the caller's Command is untouched
    assert cmd.spec().fds.fds == () and not cmd.spec().identity.group_leader


async def test_run_check(no_leaks):
    with pytest.raises(subprocess.CalledProcessError) as info:
        await aunshare.run(["sh", "-c", "echo partial; exit 4"], check=True, capture_output=True)
    exc = info.value
    assert isinstance(exc, aunshare.CalledProcessError) and isinstance(exc, aunshare.Error)
    assert exc.returncode == 4 and exc.stdout == b"partial\n" and exc.status.code == 4
    assert str(exc) == ("Command '['sh', '-c', 'echo partial; exit 4']' "
                        "returned non-zero exit status 4.")
    assert (await aunshare.run(["true"], check=True)).returncode == 0


async def test_run_timeout_kills_the_tree(no_leaks):
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as info:
        await aunshare.run(["sh", "-c", "sleep 100 & echo $!; sleep 100"], timeout=0.3,
                           capture_output=True)
    elapsed = time.monotonic() - t0
    exc = info.value
    assert isinstance(exc, aunshare.TimeoutExpired) and exc.timeout == 0.3
    assert exc.status.signal == signal.SIGTERM  # the default policy's first signal
    grandchild = int(exc.stdout)  # captured before the timeout
    await eventually(lambda: process_gone(grandchild))
    assert 0.3 <= elapsed < 2, elapsed


async def test_run_timeout_after_the_child_exited(no_leaks):
    """The child exits at once but its background process holds stdout open:
    the output never ends, the timeout fires, and the group is still killed
    (the child was kept unreaped, so its group id could not be reused)."""
    with pytest.raises(aunshare.TimeoutExpired) as info:
        await aunshare.run(["sh", "-c", "sleep 100 & echo $!"], timeout=0.3, capture_output=True)
    exc = info.value
    assert exc.status.code == 0  # the child itself exited normally
    grandchild = int(exc.stdout)
    await eventually(lambda: process_gone(grandchild))


async def test_run_timeout_without_process_group_orphans(no_leaks):
    """What the default process group prevents: without it the timeout can
    only reach the child (the test cleans up the orphan itself)."""
    with pytest.raises(aunshare.TimeoutExpired) as info:
        await aunshare.run(["sh", "-c", "sleep 100 & echo $!; sleep 100"], timeout=0.3,
                           capture_output=True, process_group=False,
                           kill_policy=KillPolicy(grace=0))
    orphan = int(info.value.stdout)
    await anyio.sleep(0.05)
    alive = not process_gone(orphan)
    if alive:
        os.kill(orphan, signal.SIGKILL)
    assert alive


async def test_run_timeout_in_cgroup(no_leaks, cgroup_parent):
    cmd = Command("sh").args(["-c", "setsid sleep 100 & sleep 100"]).new_cgroup(cgroup_parent)
    with pytest.raises(aunshare.TimeoutExpired) as info:
        await aunshare.run(cmd, timeout=0.3, kill_policy=KillPolicy(grace=0.2))
    assert info.value.status.signal == signal.SIGTERM
    assert not [d for d in os.scandir(cgroup_parent) if d.is_dir()]  # killed and removed


async def test_run_cancelled_while_reading(no_leaks):
    with anyio.move_on_after(0.2) as scope:
        await aunshare.run(["sh", "-c", "echo x; exec sleep 100"], capture_output=True)
    assert scope.cancelled_caught  # and no_leaks: the child is gone and reaped


async def test_run_bad_input(no_leaks):
    with pytest.raises(TypeError, match=r"aunshare runs no shell \(use \['sh', '-c', 'ls -l'\]"):
        await aunshare.run("ls -l")
    with pytest.raises(TypeError, match="takes an argument list or a Command, not int"):
        await aunshare.run(5)
    with pytest.raises(ValueError, match="empty argument list"):
        await aunshare.run([])
    with pytest.raises(ValueError, match=r"timeout must be > 0 seconds, got 0"):
        await aunshare.run(["true"], timeout=0)
    with pytest.raises(TypeError, match=r"timeout must be a number of seconds"):
        await aunshare.run(["true"], timeout="1")
    with pytest.raises(TypeError, match="input must be bytes, not str"):
        await aunshare.run(["cat"], input="text")
    with pytest.raises(aunshare.Exec):
        await aunshare.run(["/no/such/program"], capture_output=True)


# -- run_many: the limit, checked by the children -----------------------------------------

# Each child appends "S job" to a shared log when it starts and "E job" just
# before it exits: O_APPEND writes of a line are atomic, so the log orders
# them. At any line, the jobs that wrote S and not yet E are all alive (both
# lines are written while the child runs), so the number of such jobs never
# exceeds how many children were alive at that moment. A job given a
# barrier N waits (up to 5 s) until N jobs have started, so the first wave
# is sure to overlap however slow the spawns are.
LOGGED = """
log=$1; job=$2; barrier=$3
echo "S $job" >> "$log"
t=0
while [ "$barrier" -gt 0 ] && [ $t -lt 500 ]; do
    c=0; while read -r what rest; do [ "$what" = S ] && c=$((c+1)); done < "$log"
    [ $c -ge "$barrier" ] && break
    t=$((t+1)); sleep 0.01
done
n=0; while [ $n -lt 300 ]; do n=$((n+1)); done
echo "E $job" >> "$log"
echo "$job"
"""


def logged_jobs(log, count: int, first_wave: int) -> list[list[str]]:
    return [["sh", "-c", LOGGED, "job", str(log), str(i), str(first_wave if i < first_wave else 0)]
            for i in range(count)]


def max_alive(log) -> int:
    alive: set[str] = set()
    peak = 0
    for line in log.read_text().splitlines():
        what, job = line.split()
        if what == "S":
            alive.add(job)
            peak = max(peak, len(alive))
        else:
            alive.remove(job)
    assert not alive
    return peak


async def test_run_many_never_exceeds_the_limit(no_leaks, tmp_path):
    """500 jobs, limit 16, checked from the children's log (see LOGGED). The
    first 16 jobs wait for each other, so the limit is really reached, not
    just respected."""
    log = tmp_path / "log"
    results = await aunshare.run_many(logged_jobs(log, 500, 16), limit=16)
    assert [r.index for r in results] == list(range(500))
    assert all(r.ok and r.stdout == f"{r.index}\n".encode() for r in results)
    assert len(log.read_text().splitlines()) == 1000
    assert max_alive(log) == 16


async def test_limit_check_detects_too_many(no_leaks, tmp_path):
    """The check above can fail: with limit 24 it sees 24 at once."""
    log = tmp_path / "log"
    await aunshare.run_many(logged_jobs(log, 24, 24), limit=24)
    assert max_alive(log) == 24


# -- run_many: results, errors, modes -------------------------------------------------------

async def test_run_many_collects_every_outcome(no_leaks):
    jobs = [
        ["sh", "-c", "echo ok"],
        ["sh", "-c", "echo bad >&2; exit 2"],
        ["/no/such/program"],
        ["sleep", "100"],
        Command("sh").args(["-c", "echo $V"]).env("V", "cmd"),
    ]
    results = await aunshare.run_many(jobs, limit=5, timeout=0.5,
                                      kill_policy=KillPolicy(grace=0))
    ok, bad, missing, slow, cmd = results
    assert ok.ok and ok.stdout == b"ok\n" and ok.error is None
    assert not bad.ok and bad.returncode == 2 and bad.stderr == b"bad\n" and bad.error is None
    assert isinstance(missing.error, aunshare.Exec) and missing.status is None
    assert missing.returncode is None and missing.args == ["/no/such/program"]
    assert isinstance(slow.error, aunshare.TimeoutExpired) and slow.returncode == -signal.SIGKILL
    assert cmd.stdout == b"cmd\n" and cmd.args == ["sh", "-c", "echo $V"]
    checked = await aunshare.run_many(jobs[:2], check=True)
    assert checked[0].error is None
    assert isinstance(checked[1].error, aunshare.CalledProcessError)
    assert checked[1].error.returncode == 2


async def test_run_many_fail_fast(no_leaks, tmp_path):
    """The first failure stops the run: running jobs are killed, the rest
    never start, and that failure is raised."""
    jobs = [["sh", "-c", f"touch {tmp_path}/started.{i}; exec sleep 100"] for i in range(3)]
    jobs.append(["sh", "-c", "exit 9"])
    jobs += [["sh", "-c", f"touch {tmp_path}/started.{i}"] for i in range(4, 50)]
    t0 = time.monotonic()
    with pytest.raises(aunshare.CalledProcessError) as info:
        await aunshare.run_many(jobs, limit=4, check=True, fail_fast=True,
                                kill_policy=KillPolicy(grace=0.2))
    assert info.value.returncode == 9
    assert time.monotonic() - t0 < 3
    assert len(list(tmp_path.iterdir())) < 10  # most jobs never started


async def test_run_many_progress(no_leaks):
    seen = []

    def progress(result, done, total):
        seen.append((result.index, done, total))

    await aunshare.run_many([["true"]] * 5, limit=2, progress=progress)
    assert sorted(i for i, _, _ in seen) == list(range(5))
    assert [d for _, d, _ in seen] == [1, 2, 3, 4, 5] and {t for _, _, t in seen} == {5}

    async def async_progress(result, done, total):
        await anyio.sleep(0)
        seen.append(total)

    seen.clear()
    await aunshare.run_many((["true"] for _ in range(3)), limit=2, progress=async_progress)
    assert seen == [None] * 3  # a generator has no length

    def broken(result, done, total):
        raise KeyError("in the callback")

    with pytest.raises(KeyError, match="in the callback"):
        await aunshare.run_many([["sleep", "100"], ["true"]], limit=2, progress=broken,
                                kill_policy=KillPolicy(grace=0))


async def test_run_many_takes_jobs_lazily(no_leaks):
    taken = 0

    def jobs():
        nonlocal taken
        for _ in range(100):
            taken += 1
            yield ["true"]

    first = None

    def progress(result, done, total):
        nonlocal first
        if first is None:
            first = taken

    results = await aunshare.run_many(jobs(), limit=4, progress=progress)
    assert len(results) == 100 and first <= 5


async def test_run_many_bad_input(no_leaks):
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        await aunshare.run_many([["true"]], limit=0)
    with pytest.raises(TypeError, match="limit must be an int, not str"):
        await aunshare.run_many([["true"]], limit="4")
    with pytest.raises(TypeError, match="progress must be callable"):
        await aunshare.run_many([["true"]], progress=3)
    with pytest.raises(TypeError, match="kill_policy must be a KillPolicy"):
        await aunshare.run_many([["true"]], kill_policy="group")
    with pytest.raises(TypeError, match="aunshare runs no shell"):
        await aunshare.run_many([["true"], "echo hi"], limit=1)
    assert await aunshare.run_many([]) == []


# -- run_as_completed -------------------------------------------------------------------------

async def test_run_as_completed_yields_in_completion_order(no_leaks):
    jobs = [["sh", "-c", f"sleep {0.25 * (2 - i)}; echo {i}"] for i in range(3)]
    order = []
    async with aunshare.run_as_completed(jobs, limit=3) as results:
        async for result in results:
            assert result.stdout == f"{result.index}\n".encode()
            order.append(result.index)
    assert order == [2, 1, 0]


async def test_run_as_completed_stops_jobs_when_left_early(no_leaks):
    jobs = [["true"]] + [["sleep", "100"]] * 5 + [["true"]] * 20
    async with aunshare.run_as_completed(jobs, limit=6, kill_policy=KillPolicy(grace=0)) as results:
        async for result in results:
            assert result.index == 0
            break
    # no_leaks: the sleeps were killed and reaped when the block ended


async def test_run_as_completed_errors(no_leaks):
    with pytest.raises(aunshare.Exec):
        async with aunshare.run_as_completed([["/no/such"], ["sleep", "100"]], limit=2,
                                             fail_fast=True,
                                             kill_policy=KillPolicy(grace=0)) as results:
            async for _ in results:
                pass
    with pytest.raises(LookupError, match="from the block"):  # not an ExceptionGroup
        async with aunshare.run_as_completed([["sleep", "100"]],
                                             kill_policy=KillPolicy(grace=0)):
            raise LookupError("from the block")
