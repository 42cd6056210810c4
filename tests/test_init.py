"""Command.init_process: a tiny init as pid 1 of a new pid namespace, the
program as pid 2 (orphans reaped, signals forwarded, the program's status)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from aunshare import Command, Exec, Fd, Landlock, Namespace, Stdio
from aunshare._linux import ARCH
from aunshare.executors.init import INIT, init_memfd
from aunshare.plan import Setup, build_plan
from aunshare.rulesets import abi

from conftest import descendants, run_unprivileged

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(ARCH not in INIT, reason=f"no init for {ARCH}"),
]
ONE_LOOP = pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])

# Each iteration's subshell starts `true` in the background and exits at
# once: `true` is orphaned, and the pid namespace's pid 1 inherits it.
ORPHANS = "for i in $(seq 100); do (true &); done"


@pytest.fixture(autouse=True)
def _memfd_made():
    """The init's memfd lives as long as the process: make it before a
    test's descriptor accounting starts."""
    init_memfd()


def _pid_cmd(*argv: str) -> Command:
    return Command(argv[0]).args(argv[1:]).unshare(Namespace.PID)


def _zombies_of(pid: int) -> int:
    """How many zombies have ``pid`` (a host pid) as their parent."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            count += fields[0] == "Z" and fields[1] == str(pid)
    return count


def test_needs_a_new_pid_namespace():
    with pytest.raises(ValueError, match=r"unshare\(Namespace.PID\)"):
        Command("true").init_process().spec()
    with pytest.raises(TypeError, match="bool"):
        Command("true").init_process(1)  # type: ignore[arg-type]
    assert not _pid_cmd("true").init_process().init_process(False).spec().lifetime.init_process


def test_plan_execs_the_init_with_the_program_in_its_argv():
    """The last step: execveat(memfd, "", [init, report fd, code, status fd,
    path, *argv], envp)."""
    spec = _pid_cmd("/bin/echo", "a").arg0("zero").init_process().spec()
    setup = Setup(b"/bin/echo", spec.program.argv, [b"K=v"], [(10, 3), (12, 4)], init_fd=11,
                  report_fd=3, status_fd=4)
    plan = build_plan(spec, setup)
    last = plan.steps[-1]
    assert last.syscall == "execveat" and last.args[0] == 11 and last.args[1].data == b""
    assert last.args[2].items == (b"aunshare-init", b"3", str(len(plan.steps) - 1).encode(),
                                  b"4", b"/bin/echo", b"zero", b"a")
    assert last.args[3].items == (b"K=v",)
    assert last.args[4] == 0x1000  # AT_EMPTY_PATH
    plain = build_plan(_pid_cmd("/bin/echo", "a").spec(), setup)
    assert plain.steps[-1].syscall == "execve"


@ONE_LOOP
async def test_program_is_pid_2_with_its_own_argv_and_no_extra_descriptor(no_leaks):
    script = ('echo "$$ $0 $1"; ls /proc/self/fd; tr "\\0" " " </proc/1/cmdline')
    out = await (_pid_cmd("/bin/sh", "-c", script, "name", "one")
                 .unshare(Namespace.MOUNT).mount_proc().init_process().output())
    assert out.status.success(), out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0] == "2 name one"
    # 0-2 and the directory ls reads: no memfd, no error pipe, no status pipe
    assert lines[1:-1] == ["0", "1", "2", "3"]
    assert lines[-1].startswith("aunshare-init ")


@ONE_LOOP
async def test_with_a_handshake_and_descriptors_above_the_memfd(no_leaks):
    """env_var_with_pid (a handshake) gives the program's own pid, 2; a
    target with the memfd's own number moves the memfd clear of it."""
    high = init_memfd()
    out = await (_pid_cmd("/bin/sh", "-c", 'echo "$MYPID $$"; ls /proc/self/fd')
                 .env_var_with_pid("MYPID").file_descriptor(high, Fd.read_null())
                 .init_process().output())
    assert out.status.success(), out.stderr
    lines = out.stdout.decode().split()
    assert lines[:2] == ["2", "2"]
    assert sorted(map(int, lines[2:])) == sorted({0, 1, 2, high, 3 if high != 3 else 4})


@pytest.mark.skipif(abi() == 0, reason="this kernel has no Landlock (or it is disabled)")
@ONE_LOOP
async def test_under_landlock_rules(no_leaks):
    """The init runs from a memfd, which Landlock's execute rules do not cover
    (an internal file, not in the tree): it starts under rules that allow
    only the program's own trees, and the program is confined by them."""
    rules = Landlock(execute=("/usr", "/bin", "/lib", "/lib64"),
                     read_only=("/usr", "/lib", "/lib64"))
    out = await (_pid_cmd("/bin/sh", "-c", "echo $$; cat /etc/hostname || exit 5")
                 .init_process().landlock(rules).output())
    assert out.status.code == 5 and out.stdout == b"2\n"
    assert b"Permission denied" in out.stderr


@ONE_LOOP
async def test_program_gets_the_plans_signal_mask_and_actions(no_leaks):
    """The init blocks everything for itself; the program starts with the
    empty mask and default actions, as without the init, and the init keeps
    no standard stream of its own open: only its status pipe."""
    # (the init closes its streams right after starting the program: give it
    # the moment it may need on a busy machine)
    script = ("grep -E '^Sig(Blk|Ign)' /proc/self/status; for i in $(seq 100); do "
              "n=$(ls /proc/1/fd | wc -l); [ $n = 1 ] && break; sleep 0.01; done; "
              "readlink /proc/1/fd/* | cut -d: -f1")
    out = await (_pid_cmd("/bin/sh", "-c", script).unshare(Namespace.MOUNT).mount_proc()
                 .init_process().output())
    assert out.stdout.decode().split() == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16, "pipe"]


@ONE_LOOP
async def test_orphans_are_reaped(no_leaks):
    """100 orphaned grandchildren leave no zombie behind in the namespace.
    They are made once the program has become sleep (which reaps nothing):
    the init reaps them; without it they pile up under the program as pid 1."""
    script = (f"(until grep -q sleep /proc/$$/comm; do :; done; {ORPHANS}; echo done) & "
              "exec sleep 30")
    for init in (True, False):
        cmd = (_pid_cmd("/bin/sh", "-c", script).unshare(Namespace.MOUNT).mount_proc()
               .stdout(Stdio.piped()).init_process(init))
        async with await cmd.spawn() as child:
            assert child.stdout is not None
            assert await child.stdout.receive() == b"done\n"
            # Settled: every orphan and the subshell have exited. With the init
            # only sleep is left below it, and nothing is a zombie; without it
            # the 100 orphans and the subshell that made them stay zombies.
            want = (1, 0) if init else (0, 101)
            deadline = time.monotonic() + 5
            while ((found := (len(descendants(child.pid)), _zombies_of(child.pid))) != want
                   and time.monotonic() < deadline):
                await anyio.sleep(0.01)
            assert found == want
            child.kill()
            await child.wait()


async def test_terminate_stops_the_program_at_once(no_leaks):
    """SIGTERM to the init is forwarded: a sleep (no handler) dies of it."""
    child = await _pid_cmd("sleep", "30").init_process().spawn()
    started = time.monotonic()
    child.terminate()
    with anyio.fail_after(5):
        status = await child.wait()
    assert time.monotonic() - started < 2
    assert status.signal == signal.SIGTERM and status.code is None


async def test_exit_status_is_the_programs(no_leaks):
    code = await _pid_cmd("sh", "-c", "exit 7").init_process().status()
    assert code.code == 7
    killed = await _pid_cmd("sh", "-c", "kill -USR1 $$").init_process().status()
    assert killed.signal == signal.SIGUSR1 and killed.code is None
    ok = await _pid_cmd("true").init_process().status()
    assert ok.success()


# Exit codes an init's own exit code would confuse with signals (128+N),
# and signals, among them one the init cannot forward (KILL).
EXACT = [("exit 130", 130, None), ("exit 137", 137, None), ("exit 192", 192, None),
         ("exit 255", 255, None), ("kill -INT $$", None, signal.SIGINT),
         ("kill -KILL $$", None, signal.SIGKILL), ("kill -USR1 $$", None, signal.SIGUSR1)]


@ONE_LOOP
async def test_status_is_exact_codes_above_128_and_signals(no_leaks):
    """The init writes the program's wait status on its status pipe: a code
    of 128+N stays a code, a signal stays a signal, as without the init."""
    for script, code, sig in EXACT:
        bare = await Command("sh").args(["-c", script]).status()
        st = await _pid_cmd("sh", "-c", script).init_process().status()
        assert (st.code, st.signal, st.core_dumped) == (code, sig, False), (script, st)
        assert (bare.code, bare.signal, bare.core_dumped) == (st.code, st.signal, False)
        assert st.rusage is not None


@ONE_LOOP
async def test_try_wait_and_a_child_killed_from_outside(no_leaks):
    """try_wait reads the status pipe too; an init killed from outside (it
    writes nothing) reports its own SIGKILL."""
    child = await _pid_cmd("sh", "-c", "exit 131").init_process().spawn()
    await child.until_exited()
    st = child.try_wait()
    assert st is not None and (st.code, st.signal) == (131, None)
    sleeper = await _pid_cmd("sleep", "30").init_process().spawn()
    sleeper.kill()
    st = await sleeper.wait()
    assert (st.code, st.signal) == (None, signal.SIGKILL)


def _core_pattern() -> str:
    try:
        return Path("/proc/sys/kernel/core_pattern").read_text().strip()
    except OSError:
        return ""


@ONE_LOOP
async def test_core_dump_is_reported(no_leaks, tmp_path):
    """A program that dumps core: the status says so, as without the init.
    Only where the core lands in the dumping process's directory (a
    relative core_pattern): here a temporary one, nothing else is written."""
    pattern = _core_pattern()
    if not pattern or pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"core_pattern {pattern!r} pipes cores to a handler or writes them "
                    "outside the program's directory: no dump without side effects")
    script = "ulimit -c unlimited; kill -SEGV $$"
    bare = await Command("sh").args(["-c", script]).current_dir(tmp_path).status()
    if not bare.core_dumped:
        pytest.skip(f"this host dumps no core here ({bare}; core_pattern {pattern!r})")
    st = await _pid_cmd("sh", "-c", script).current_dir(tmp_path).init_process().status()
    assert (st.code, st.signal, st.core_dumped) == (None, signal.SIGSEGV, True)


def test_cli_exit_code_and_report_as_without_init(tmp_path):
    """``aunshare --init``: the exit code of the shell's convention (128+N
    for a signal N, as without the init) and a JSON status telling a code
    of 130 from SIGINT. The runs go in parallel (each starts an interpreter)."""
    from test_cli import cli_env

    cases = [EXACT[0], EXACT[4], EXACT[6]]
    procs = []
    for i, (script, _, _) in enumerate(cases):
        argv = [sys.executable, "-m", "aunshare", "--init", "--json-status",
                str(tmp_path / f"{i}.json"), "--", "sh", "-c", script]
        procs.append(subprocess.Popen(argv, env=cli_env(), stdin=subprocess.DEVNULL))
    for i, ((script, code, sig), proc) in enumerate(zip(cases, procs)):
        assert proc.wait(20) == (code if sig is None else 128 + sig), script
        st = json.loads((tmp_path / f"{i}.json").read_text())
        assert (st["exit_code"], st["signal"], st["core_dumped"]) == (code, sig, False), script


@ONE_LOOP
async def test_signals_are_forwarded_and_pid_1_cannot_kill_itself(no_leaks):
    """Every catchable signal reaches the program; without the init the
    program as pid 1 ignores SIGTERM (no handler), which is the point."""
    trap = ("trap 'echo got HUP' HUP; trap 'echo got USR2; exit 3' USR2; echo ready; "
            "while :; do sleep 0.01; done")
    child = await _pid_cmd("sh", "-c", trap).stdout(Stdio.piped()).init_process().spawn()
    assert child.stdout is not None
    assert await child.stdout.receive() == b"ready\n"
    child.signal(signal.SIGHUP)
    assert await child.stdout.receive() == b"got HUP\n"
    child.signal(signal.SIGUSR2)
    assert await child.stdout.receive() == b"got USR2\n"
    assert (await child.wait()).code == 3
    await child.aclose()
    bare = await _pid_cmd("sleep", "30").spawn()  # no init: sleep is pid 1
    bare.terminate()
    await anyio.sleep(0.1)
    assert bare.try_wait() is None
    bare.kill()
    assert (await bare.wait()).signal == signal.SIGKILL


@pytest.mark.parametrize("mode", [None, 0o644])
async def test_exec_failure_of_the_program_is_typed(no_leaks, tmp_path, mode):
    """A missing or non-executable program: the typed Exec error, as without
    the init (the init's child reports the failed execve on the error pipe)."""
    program = tmp_path / "program"
    if mode is not None:
        program.write_text("#!/bin/sh\n")
        program.chmod(mode)
    with pytest.raises(Exec) as info:
        await _pid_cmd(str(program)).init_process().status()
    assert info.value.errno == (errno.ENOENT if mode is None else errno.EACCES)
    assert str(program) in str(info.value) and "init" in str(info.value)


@ONE_LOOP
async def test_unprivileged_in_a_user_namespace():
    """As uid 65534: user + pid + mount namespaces, mapped to root inside."""
    out = await run_unprivileged(f"""
        import json, signal, anyio
        from aunshare import Command, Exec, Fd, Landlock, Namespace, Stdio
        def cmd(*argv):
            return (Command(argv[0]).args(argv[1:]).map_root_user().init_process()
                    .unshare(Namespace.USER | Namespace.PID | Namespace.MOUNT).mount_proc())
        async def main():
            res = {{}}
            out = await cmd("sh", "-c", '''{ORPHANS}; sleep 0.2;
                grep -l "^[0-9]* ([^)]*) Z" /proc/[0-9]*/stat | wc -l; echo $$''').output()
            res["orphans"] = [out.status.code, out.stdout.decode().split()]
            res["code"] = (await cmd("sh", "-c", "exit 9").status()).code
            st = await cmd("sh", "-c", "exit 130").status()
            res["exact"] = [st.code, st.signal]
            child = await cmd("sleep", "30").spawn()
            child.terminate()
            res["term"] = (await child.wait()).signal
            try:
                await cmd("/nonexistent").status()
            except Exec as exc:
                res["exec"] = exc.errno
            print(json.dumps(res))
        anyio.run(main)
    """)
    res = json.loads(out.stdout.decode())
    assert res["orphans"] == [0, ["0", "2"]]
    assert res["code"] == 9
    assert res["exact"] == [130, None]
    assert res["term"] == signal.SIGTERM
    assert res["exec"] == errno.ENOENT


QEMU = shutil.which("qemu-aarch64")


@pytest.mark.skipif(ARCH == "aarch64" or QEMU is None,
                    reason="runs the aarch64 init under qemu-aarch64 (not installed)")
@ONE_LOOP
async def test_aarch64_init_under_qemu(no_leaks, tmp_path):
    """The aarch64 init, emulated as pid 1 of a pid namespace (the programs
    it starts are the host's: qemu-user hands execve to the host kernel)."""
    assert QEMU is not None
    elf = tmp_path / "init"
    elf.write_bytes(INIT["aarch64"])
    elf.chmod(0o755)

    def cmd(*argv: str, report: str = "-", status: str = "-") -> Command:
        return (Command(QEMU).args([str(elf), report, "5", status, *argv])
                .unshare(Namespace.PID | Namespace.MOUNT).mount_proc())

    assert (await cmd("/bin/sh", "sh", "-c", "exit 7").status()).code == 7
    killed = await cmd("/bin/sh", "sh", "-c", "kill -USR1 $$").status()
    assert killed.code == 128 + signal.SIGUSR1  # the fallback encoding from_init reads
    # the wait status on the status fd (3 here: the init closes 0-2), which
    # the program does not see
    r, w = os.pipe()
    try:
        for script, raw in (("exit 130", 130 << 8), ("kill -USR1 $$", signal.SIGUSR1),
                            ("[ -e /proc/$$/fd/3 ] && exit 4; exit 0", 0)):
            await (cmd("/bin/sh", "sh", "-c", script, status="3")
                   .file_descriptor(3, Fd.dup_file(w)).status())
            assert struct.unpack("=i", os.read(r, 4))[0] == raw, script
    finally:
        os.close(r)
        os.close(w)
    # a failed exec: the record (code 5, ENOENT) on the report fd (stdout here)
    failed = await cmd("/nonexistent", "x", report="1").output()
    assert failed.status.code == 127 and failed.stdout == struct.pack("=II", 5, errno.ENOENT)
    script = (f"(until grep -q sleep /proc/$$/comm; do :; done; {ORPHANS}; echo done) & "
              "exec sleep 30")
    async with await cmd("/bin/sh", "sh", "-c", script).stdout(Stdio.piped()).spawn() as child:
        assert child.stdout is not None
        assert await child.stdout.receive() == b"done\n"
        deadline = time.monotonic() + 5
        while (zombies := _zombies_of(child.pid)) and time.monotonic() < deadline:
            await anyio.sleep(0.01)
        assert zombies == 0
        child.terminate()  # forwarded to sleep by the emulated init
        with anyio.fail_after(5):
            assert (await child.wait()).code == 128 + signal.SIGTERM


def test_memfd_is_made_again_when_its_number_was_reused():
    fd = init_memfd()
    assert init_memfd() == fd
    os.close(fd)
    other = os.open("/dev/null", os.O_RDONLY)  # takes the lowest number: fd's
    try:
        again = init_memfd()
        assert again != other and os.readlink(f"/proc/self/fd/{again}").startswith("/memfd:")
    finally:
        os.close(other)
