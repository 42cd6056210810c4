"""Proof that the child makes exactly the plan's syscalls between clone3 and
execve, and nothing else: no allocator, no interpreter, no libc. (The
portable executor's child is a Python copy; it is allowed exactly the two
syscalls its after-fork bookkeeping makes before the plan.)

A small parent program, itself started through aunshare, waits on its stdin
until this test has attached to it with ptrace (python-ptrace's bindings,
following clones), then spawns; every syscall the new child enters up to and
including execve is recorded and compared with the plan the parent printed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from aunshare import Command, Stdio
from aunshare._linux import ARCH, SYSCALLS
from aunshare.rulesets import abi

ptrace = pytest.importorskip("ptrace.binding", reason="python-ptrace is not installed")

REPO = Path(__file__).resolve().parent.parent
_WALL = 0x40000000
_O_TRACESYSGOOD, _O_TRACEFORK, _O_TRACEVFORK, _O_TRACECLONE = 1, 2, 4, 8
_O_TRACEEXEC, _O_EXITKILL = 0x10, 0x100000
# Per architecture: gettid and getpid (the portable child's prologue), and
# where a syscall-entry stop shows the syscall number (x86_64: orig_rax;
# aarch64: x8, which the kernel leaves intact at the stop).
_GETTID, _GETPID = {"x86_64": (186, 39), "aarch64": (178, 172)}.get(ARCH, (-1, -1))
_NR_REGISTER = {"x86_64": "orig_rax", "aarch64": "r8"}.get(ARCH)
# What the init's child does before the program runs: mark the report fd
# close-on-exec (fcntl), close the status fd, restore the plan's signal
# mask, execve.
_INIT_CHILD = [{"x86_64": 72, "aarch64": 25}.get(ARCH, -1), SYSCALLS.get("close"),
               SYSCALLS.get("rt_sigprocmask"), SYSCALLS.get("execve")]

PARENT = textwrap.dedent("""
    import json, sys
    import anyio
    from aunshare import (Capability, Command, Fd, GidMap, Landlock, Namespace, SeccompFilter,
                          Stdio, UidMap)
    from aunshare.launch import start
    from aunshare._linux import WEXITED, waitid_pidfd

    def build(kind):
        if kind == "plain":
            return Command("/bin/true")
        if kind == "namespaces":  # the parent writes the maps: the handshake
            return (Command("/bin/true")
                    .unshare(Namespace.NET | Namespace.UTS | Namespace.PID | Namespace.MOUNT)
                    .set_id_maps([UidMap(0, 100000, 1000)], [GidMap(0, 100000, 1000)])
                    .uid(0).gid(0).hostname("traced").mount_proc().rlimit(7, 64)
                    .no_new_privs())
        if kind == "seccomp":  # no longer root: no_new_privs, then the filters
            return (Command("/bin/true").uid(65534).gid(65534).groups([])
                    .seccomp(SeccompFilter().deny("mount"))
                    .seccomp(SeccompFilter().kill("kexec_load").compile()))
        if kind == "supervised":  # the listener taken while the child waits again
            return Command("/bin/true").supervise_syscalls(["execve", "connect"])
        if kind == "init":  # the last step execs the init, which starts the program
            return Command("/bin/true").unshare(Namespace.PID).init_process()
        if kind == "self-mapped":  # the child maps itself
            return (Command("/bin/true").unshare(Namespace.NET | Namespace.IPC)
                    .map_root_user().keep_caps([Capability.CAP_NET_ADMIN]))
        if kind == "landlock":  # the parent builds the ruleset; the child restricts itself
            return (Command("/bin/true").uid(65534).gid(65534).groups([])
                    .landlock(Landlock(execute=["/usr", "/bin", "/lib", "/lib64"],
                                       read_write=["/tmp"], tcp_bind=[8080],
                                       scope_signals=True)))
        return (Command("/bin/true").current_dir("/tmp").stdout(Stdio.null())
                .file_descriptor(5, Fd.read_null()).make_group_leader(True)
                .uid(65534).gid(65534).groups([65534]))

    async def main():
        # Ready (the interpreter started, what the spawn needs imported):
        # the tracer attaches only now, so it follows the spawn and not the
        # interpreter's start-up, thousands of stops (minutes under emulation).
        import aunshare.launch, aunshare.spawn, aunshare.handshake
        sys.stdout.write("ready\\n")
        sys.stdout.flush()
        sys.stdin.buffer.read(1)  # go: the tracer is attached
        cmd = build(sys.argv[1])
        started = start(cmd.spec())
        if started.wake_fd >= 0:  # maps written while the child waits
            from aunshare.spawn import _handshake
            await _handshake(started)
        if started.report_fd >= 0:  # portable executor or handshake: wait for exec
            from aunshare.spawn import _await_exec
            await _await_exec(started)
        waitid_pidfd(started.pidfd, WEXITED)
        print(json.dumps([s.syscall for s in started.plan.steps]))
        started.close()

    anyio.run(main)
""")


def _trace(kind: str, executor: str) -> tuple[list[str], list[int]]:
    """Run the parent under ptrace; return (plan syscall names, child's syscalls)."""
    env_path = os.pathsep.join([str(REPO), *sys.path])

    async def spawn_parent():
        return await (Command(sys.executable).args(["-c", PARENT, kind])
                      .env("AUNSHARE_EXECUTOR", executor).env("PYTHONPATH", env_path)
                      .stdin(Stdio.piped()).stdout(Stdio.piped()).spawn())

    parent = anyio.run(spawn_parent)
    pid = parent.pid
    os.set_blocking(parent.stdout.fileno(), True)
    ready = b""
    while not ready.endswith(b"\n"):
        chunk = os.read(parent.stdout.fileno(), 64)
        assert chunk, "the traced parent ended before it was ready"
        ready += chunk
    assert ready == b"ready\n", ready
    ptrace.ptrace_attach(pid)
    os.waitpid(pid, _WALL)  # its attach stop
    ptrace.ptrace_setoptions(pid, _O_TRACESYSGOOD | _O_TRACEFORK | _O_TRACEVFORK
                             | _O_TRACECLONE | _O_TRACEEXEC | _O_EXITKILL)
    ptrace.ptrace_syscall(pid, 0)
    os.write(parent.stdin.fileno(), b"x")
    in_syscall: dict[int, bool] = {pid: False}
    recording: dict[int, list[int]] = {}   # new processes -> syscalls until execve
    done: dict[int, list[int]] = {}
    execs = (SYSCALLS["execve"], SYSCALLS["execveat"])
    while True:
        wpid, status = os.waitpid(-1, _WALL)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            in_syscall.pop(wpid, None)
            if wpid == pid:
                break
            continue
        sig = os.WSTOPSIG(status)
        event = status >> 16
        deliver = 0
        if sig == signal.SIGTRAP | 0x80:  # syscall entry or exit
            entering = not in_syscall.get(wpid, False)
            in_syscall[wpid] = entering
            if entering and wpid in recording:
                nr = getattr(ptrace.ptrace_getregs(wpid), _NR_REGISTER)
                recording[wpid].append(nr)
                if nr in execs:
                    done[wpid] = recording.pop(wpid)
        elif sig == signal.SIGTRAP and event in (1, 2, 3):  # fork, vfork, clone
            child = ptrace.ptrace_geteventmsg(wpid)
            in_syscall.setdefault(child, False)
            # Record every new task; only the spawned child reaches execve
            # (a thread the interpreter starts never does).
            recording.setdefault(child, [])
        elif sig == signal.SIGTRAP and event == 4:  # exec
            pass
        elif sig == signal.SIGSTOP and wpid not in in_syscall:
            # A new tracee's first stop, which may come before its parent's
            # fork/vfork/clone event: record it from here, or its first
            # syscalls go unseen.
            in_syscall[wpid] = False
            recording.setdefault(wpid, [])
        elif sig != signal.SIGSTOP:
            deliver = sig
        try:
            ptrace.ptrace_syscall(wpid, deliver)
        except Exception:
            pass
    # The loop above reaped the parent (ptrace reports its exit); what it
    # printed is all in the pipe.
    output = b""
    while chunk := os.read(parent.stdout.fileno(), 65536):
        output += chunk
    plan = json.loads(output.decode().strip().splitlines()[-1])
    spawned = [calls for calls in done.values() if calls]
    if kind == "init":  # the plan's child, then the init's child (the program)
        assert len(spawned) == 2, f"expected two exec'ing children, saw {done}"
        by_last = {calls[-1]: calls for calls in spawned}
        assert set(by_last) == set(execs), done
        assert by_last[SYSCALLS["execve"]] == _INIT_CHILD, by_last
        return plan, by_last[SYSCALLS["execveat"]]
    assert len(spawned) == 1, f"expected one exec'ing child, saw {done}"
    return plan, spawned[0]


@pytest.mark.skipif(_NR_REGISTER is None, reason=f"no syscall-number register known for {ARCH}")
@pytest.mark.parametrize("kind", ["plain", "configured", "namespaces", "self-mapped",
                                  "landlock", "init", "seccomp", "supervised"])
@pytest.mark.parametrize("executor", ["native", "portable"])
def test_child_makes_exactly_the_planned_syscalls(kind, executor):
    plan, calls = _trace(kind, executor)
    assert plan[-1] == ("execveat" if kind == "init" else "execve")
    planned = [SYSCALLS[name] for name in plan]
    if executor == "portable":
        # The portable child first rebuilds the interpreter's thread state
        # (PyOS_AfterFork_Child asks for its thread id), then checks which
        # side of the clone it is on (getpid).
        prologue, calls = calls[:-len(planned)], calls[-len(planned):]
        assert prologue == [_GETTID, _GETPID], f"unexpected syscalls before the plan: {prologue}"
    assert calls == planned, f"child syscalls {calls}\nplanned {planned}"
    if kind == "landlock" and abi():  # the Landlock steps are among them, after the uid change
        at = plan.index("landlock_restrict_self")
        assert plan[at - 1] == "prctl" and plan.index("setresuid") < at
