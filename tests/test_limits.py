"""Resource limits (memory, pids, CPU) in the child's own cgroup, and the
verdict and accounting read from it: cgroup v2 where it has the controllers
(the test VM), else the cgroup v1 hierarchies (hybrid hosts)."""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

import anyio
import pytest

import aunshare
from aunshare import cgroup as _cgroup
from aunshare.spec import parse_size

from conftest import run_unprivileged

MiB = 1 << 20


def _hierarchy_reason() -> str | None:
    """Why no limited cgroup can be made here as root, or None."""
    try:
        path, fd, _ = _cgroup.create_limited(None, aunshare.spec.CgroupLimits(pids_max=5))
    except aunshare.CgroupError as exc:
        return str(exc)
    if fd >= 0:
        os.close(fd)
    _cgroup.remove(path)
    return None


_REASON = _hierarchy_reason() if os.geteuid() == 0 else "needs root"
needs_cgroups = pytest.mark.skipif(_REASON is not None, reason=f"no cgroup for limits: {_REASON}")
# What the kernel does to a child does not depend on the event loop: these
# tests run on one (the default backend), the supervision ones on every loop.
one_loop = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def _our_cgroups() -> set[str]:
    """Every cgroup directory this process made for a child (v1 and v2)."""
    bases = set()
    v2 = _cgroup.current()
    if v2 is not None:
        bases.add(v2)
    for c, (mount, root) in _cgroup._v1_mounts().items():
        own = _cgroup._v1_own(c, mount, root)
        if own is not None:
            bases.add(own)
    prefix = f"aunshare-{os.getpid()}-"
    return {str(p) for b in bases if os.path.isdir(b)
            for p in Path(b).iterdir() if p.name.startswith(prefix)}


def _with_marker(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
                state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker.encode() in cmdline and state not in ("Z", "X"):
                found.append(int(name))
    return found


# -- input (pure data: no event loop) --------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("512M", 512 * MiB), ("1.5G", 3 << 29), ("64KiB", 64 << 10), ("64kb", 64 << 10),
    ("64K", 64 << 10), ("100", 100), ("7B", 7), (" 2 g ", 2 << 30), (".5K", 512),
    (4096, 4096), ("1T", 1 << 40),
])
def test_size_grammar(text, value):
    assert parse_size(text, "x") == value


@pytest.mark.parametrize("bad", ["0", "1Q", "-1", "", "1.2.3", "0.0001K", "M", "1 MB B",
                                 0, -5])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match="limit_memory max_bytes"):
        aunshare.Command("true").limit_memory(bad)


def test_bad_limits():
    cmd = aunshare.Command("true")
    with pytest.raises(TypeError):
        cmd.limit_memory(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cmd.limit_memory(True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tasks must be at least 1"):
        cmd.limit_pids(0)
    with pytest.raises(ValueError, match="max_tasks"):
        cmd.limit_pids(-3)
    with pytest.raises(ValueError, match="cpus must be above 0"):
        cmd.limit_cpu(0)
    with pytest.raises(ValueError, match="cpus must be above 0"):
        cmd.limit_cpu(-0.5)
    with pytest.raises(ValueError, match=f"the {os.cpu_count()} CPUs"):
        cmd.limit_cpu((os.cpu_count() or 1) + 0.5)
    with pytest.raises(ValueError, match="period_us"):
        cmd.limit_cpu(0.5, period_us=10)
    with pytest.raises(ValueError, match="swap"):
        cmd.limit_memory(None, swap_max="1G")
    # Limits with an existing cgroup aunshare did not create: refused at spec().
    with pytest.raises(ValueError, match="did not create"):
        aunshare.Command("true").limit_memory("64M").cgroup("/sys/fs/cgroup").spec()
    # Nothing set was changed by the refusals.
    assert cmd.spec().lifetime.limits is None


def test_limits_in_the_spec():
    cmd = aunshare.Command("true").limit_memory("64M", swap_max=0 + 1).limit_pids(20)
    cmd.limit_cpu(1.5, period_us=50_000)
    lim = cmd.spec().lifetime.limits
    assert lim is not None and cmd.spec().own_cgroup
    assert (lim.memory_max, lim.swap_max, lim.pids_max) == (64 * MiB, 1, 20)
    assert (lim.cpu_quota_us, lim.cpu_period_us) == (75_000, 50_000)
    assert lim.controllers == ("memory", "pids", "cpu")
    # Removing every limit removes the implied cgroup.
    cmd.limit_memory(None).limit_pids(None).limit_cpu(None)
    assert cmd.spec().lifetime.limits is None and not cmd.spec().own_cgroup


def test_status_words():
    usage = aunshare.CgroupUsage(memory_peak=64 * MiB, memory_limit=64 * MiB, oom_kills=1)
    st = aunshare.ExitStatus(None, 9, cgroup_usage=usage)
    assert st.oom_killed
    assert str(st) == "killed by signal SIGKILL (out of memory: memory limit 64 MiB)"
    assert not aunshare.ExitStatus(0, None, cgroup_usage=usage).oom_killed
    assert not aunshare.ExitStatus(None, 9).oom_killed
    err = aunshare.CalledProcessError(-9, ["x"], status=st)
    assert "out of memory: memory limit 64 MiB" in str(err)


# -- real children ---------------------------------------------------------------------

ALLOC_256M = "b = bytearray(256 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1"


@needs_cgroups
@one_loop
@pytest.mark.anyio
async def test_memory_limit_oom(no_leaks):
    before = _our_cgroups()
    cmd = aunshare.Command(sys.executable).args(["-c", ALLOC_256M]).limit_memory("64M")
    with pytest.raises(aunshare.CalledProcessError) as info:
        await aunshare.run(cmd, check=True)
    st = info.value.status
    assert st is not None and st.oom_killed and st.signal == 9
    usage = st.cgroup_usage
    assert usage is not None and usage.oom_kills and usage.memory_limit == 64 * MiB
    assert usage.memory_peak is not None and 4 * MiB < usage.memory_peak <= 64 * MiB + 2 * MiB
    assert str(st) == "killed by signal SIGKILL (out of memory: memory limit 64 MiB)"
    assert "out of memory: memory limit 64 MiB" in str(info.value)
    assert _our_cgroups() == before


@needs_cgroups
@pytest.mark.anyio
async def test_fork_bomb_pids_limit(no_leaks):
    marker = f"60.{secrets.randbelow(10**6):06d}"
    before = _our_cgroups()
    script = f"i=0; while [ $i -lt 60 ]; do sleep {marker} & i=$((i+1)); done; wait"
    cmd = aunshare.Command("sh").args(["-c", script]).limit_pids(20)
    cmd.kill_policy(aunshare.KillPolicy(grace=0))
    async with await cmd.spawn() as child:
        with anyio.fail_after(10):
            st = await child.wait()  # the shell gives up on the failed fork
        assert child.cgroup is not None and os.path.isdir(child.cgroup)
    usage = st.cgroup_usage
    assert usage is not None and usage.pids_limit_hits and usage.pids_limit_hits > 0
    if usage.pids_peak is not None:  # cgroup v2, Linux 6.2+
        assert usage.pids_peak <= 20
    assert not st.oom_killed
    assert _with_marker(marker) == []  # the sleepers went with the cgroup
    assert _our_cgroups() == before


@needs_cgroups
@one_loop
@pytest.mark.anyio
async def test_cpu_limit(no_leaks):
    cmd = aunshare.Command("timeout").args(["1", "sh", "-c", "while :; do :; done"])
    cmd.limit_cpu(0.2)
    start = time.monotonic()
    out = await cmd.output()
    wall = time.monotonic() - start
    usage = out.status.cgroup_usage
    assert usage is not None and usage.cpu_user_usec is not None
    assert usage.cpu_system_usec is not None
    cpu = (usage.cpu_user_usec + usage.cpu_system_usec) / 1e6
    assert 0.9 < wall < 10  # throttled, timeout(1) itself runs late (slow VMs: 5 s)
    assert 0.02 < cpu <= 0.3 * wall, (cpu, wall)


@needs_cgroups
@pytest.mark.anyio
async def test_removed_after_cancel_and_kill_policy(no_leaks):
    before = _our_cgroups()
    cmd = aunshare.Command("sh").args(["-c", "sleep 30 & sleep 30"]).limit_pids(10)
    cmd.kill_policy(aunshare.KillPolicy(grace=0.1))
    with anyio.move_on_after(0.2):
        async with await cmd.spawn() as child:
            assert _our_cgroups() - before
            await child.wait()
    assert _our_cgroups() == before
    with pytest.raises(aunshare.TimeoutExpired) as info:
        await aunshare.run(cmd, timeout=0.2)
    assert info.value.status is not None and info.value.status.cgroup_usage is not None
    assert _our_cgroups() == before


@needs_cgroups
@one_loop
@pytest.mark.anyio
async def test_not_a_cgroup_parent(tmp_path, no_leaks):
    cmd = aunshare.Command("true").limit_memory("64M").new_cgroup(tmp_path)
    with pytest.raises(aunshare.CgroupError) as info:
        await cmd.spawn()
    assert str(tmp_path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@one_loop
@pytest.mark.anyio
async def test_unprivileged_says_how_to_delegate():
    if os.geteuid() != 0:
        pytest.skip("runs the unprivileged part as uid 65534 from root")
    out = await run_unprivileged("""
        import os, anyio, aunshare
        async def main():
            try:
                await aunshare.run(aunshare.Command("true").limit_pids(5))
            except aunshare.CgroupError as exc:
                print("CgroupError", os.fsdecode(exc.filename), exc)
            else:
                print("ran")
        anyio.run(main)
    """)
    text = out.stdout.decode()
    if text.startswith("ran"):
        pytest.skip("uid 65534 may create cgroups here (a delegated hierarchy)")
    assert text.startswith("CgroupError /"), text
    assert "Delegate=yes" in text and "new_cgroup(parent)" in text


@needs_cgroups
@pytest.mark.anyio
async def test_run_and_run_many_report_usage(no_leaks):
    before = _our_cgroups()
    cmd = aunshare.Command("sh").args(["-c", "exit 3"]).limit_pids(8).limit_memory("32M")
    done = await aunshare.run(cmd)
    assert done.returncode == 3 and done.status.code == 3 and not done.oom_killed
    assert done.cgroup_usage is not None and done.cgroup_usage.pids_limit_hits == 0
    assert done.cgroup_usage.memory_limit == 32 * MiB
    # At once: on cgroup v1 each waits in its own handshake (no shared plan).
    results = await aunshare.run_many([cmd] * 4 + [aunshare.Command("true")], limit=5)
    assert [r.returncode for r in results] == [3, 3, 3, 3, 0], [r.error for r in results]
    assert results[0].cgroup_usage is not None and not results[0].oom_killed
    assert results[4].cgroup_usage is None  # no cgroup of its own
    assert _our_cgroups() == before


@needs_cgroups
def test_command_line(tmp_path):
    before = _our_cgroups()
    report = tmp_path / "st.json"
    code = ("import sys; from aunshare.cli import main; rc = main(sys.argv[1:]); "
            "assert 'anyio' not in sys.modules, 'the command line imported anyio'; "
            "sys.exit(rc)")
    import json
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", code, "--pids", "4", "--memory", "1G", "--cpus", "0.5",
         "--json-status", str(report), "--", "sh", "-c",
         "for i in 1 2 3 4 5 6; do sleep 0.2 & done; wait"],
        capture_output=True, text=True, timeout=30)
    st = json.loads(report.read_text())
    # The shell fails on the refused fork (dash exits with 2): an exit, not a kill.
    assert st["exit_code"] is not None and proc.returncode == st["exit_code"], proc.stderr
    assert st["oom_killed"] is False
    usage = st["cgroup_usage"]
    assert usage["pids_limit_hits"] > 0 and usage["memory_limit"] == 1 << 30
    assert usage["cpu_user_usec"] is not None
    assert _our_cgroups() == before
    bad = subprocess.run([sys.executable, "-m", "aunshare", "--memory", "12X", "--", "true"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "'12X' is not a size" in bad.stderr


def test_v1_join_is_the_childs_first_steps():
    """On cgroup v1 the child moves itself in (writing 0 to each directory's
    tasks, through the descriptors the parent opened) before any other step,
    and is not created with CLONE_INTO_CGROUP."""
    from aunshare._linux import CLONE_INTO_CGROUP
    from aunshare.plan import Setup, build_plan

    spec = aunshare.Command("true").limit_pids(5).spec()
    dirs = ((b"/sys/fs/cgroup/pids/aunshare-1-0", 40), (b"/sys/fs/cgroup/cpuacct/aunshare-1-0", 41))
    plan = build_plan(spec, Setup(b"/bin/true", (b"true",), None, [], 1, 0, 0,
                                  cgroup_tasks=dirs))
    head = [(s.syscall, s.args[0], s.subject) for s in plan.steps[:2]]
    assert head == [("write", 40, dirs[0][0]), ("write", 41, dirs[1][0])]
    assert all(s.error is aunshare.CgroupError for s in plan.steps[:2])
    assert plan.steps[2].syscall != "write"
    assert not plan.clone_flags & CLONE_INTO_CGROUP
    v2 = build_plan(spec, Setup(b"/bin/true", (b"true",), None, [], 1, 0, 0))
    assert v2.clone_flags & CLONE_INTO_CGROUP
    assert v2.steps[0].syscall != "write"


@needs_cgroups
@one_loop
@pytest.mark.anyio
async def test_concurrent_spawns_reusing_a_plan_land_in_their_own_cgroups(no_leaks):
    """Children of one limited Command alive together (the later ones
    reusing the cached plan, its descriptors patched) are each in the
    cgroup their Child names, in every hierarchy."""
    before = _our_cgroups()
    cmd = (aunshare.Command("sh").args(["-c", "cat /proc/self/cgroup; read x"])
           .stdin(aunshare.Stdio.piped()).stdout(aunshare.Stdio.piped()).limit_pids(8))
    children = [await cmd.spawn() for _ in range(5)]
    try:
        seen = set()
        for child in children:
            assert child.cgroup is not None and child.stdout is not None
            own = os.fsencode(child.cgroup)
            dirs = _cgroup.v1_dirs(own) or (own,)
            text = b""
            with anyio.fail_after(10):  # cat writes the file at once
                while not text.endswith(b"\n"):
                    text += await child.stdout.receive()
            paths = [line.split(b":", 2)[2] for line in text.splitlines() if line.count(b":") >= 2]
            for d in dirs:
                assert any(p != b"/" and d.endswith(p) for p in paths), (d, text)
            seen.add(child.cgroup)
        assert len(seen) == len(children)
    finally:
        for child in children:
            assert child.stdin is not None
            await child.stdin.aclose()
            await child.wait()
            await child.aclose()
    assert _our_cgroups() == before
