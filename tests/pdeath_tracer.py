"""Helper for test_pdeath.py (not a test module): make the spawning parent
die exactly between the child's PR_SET_PDEATHSIG and its exec, and report
what the child did.

Run as ``python pdeath_tracer.py check|nocheck``. This process becomes a
child subreaper, starts a parent P (Python + aunshare) and ptraces it with
fork/vfork/clone tracing, so the child C that P spawns is traced from its
first instruction. C is stepped syscall by syscall; at the entry of
``prctl(PR_SET_PDEATHSIG)`` P is SIGKILLed and reaped, and only then is C
let go. The death signal is armed after its parent is gone, so the kernel
never sends it; C is reparented to this process. With ``check`` (the real
plan) C's next step, ``getppid() == P``, fails and C exits 127 before exec;
with ``nocheck`` P runs the same plan minus that step, and C execs ``sleep``
and lives on. Prints one JSON line: {"outcome": "exited", "code": N},
{"outcome": "survived", "comm": ...} or {"outcome": "skip", "reason": ...}.
x86_64 only (register layout, syscall numbers).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
SYS_PRCTL = 157
PTRACE_CONT, PTRACE_DETACH, PTRACE_GETREGS, PTRACE_SYSCALL = 7, 17, 12, 24
PTRACE_SEIZE, PTRACE_GETEVENTMSG = 0x4206, 0x4201
PTRACE_O_TRACESYSGOOD, PTRACE_O_TRACEFORK, PTRACE_O_TRACEVFORK, PTRACE_O_TRACECLONE = 1, 2, 4, 8
EVENT_FORK, EVENT_VFORK, EVENT_CLONE, EVENT_STOP = 1, 2, 3, 128
WALL = 0x40000000
ORIG_RAX, RDI = 15, 14  # indexes in struct user_regs_struct

PARENT = """
import sys
sys.stdin.readline()  # wait until the tracer holds us
import anyio, aunshare, aunshare.launch as launch
if sys.argv[1] == "nocheck":
    build = launch.build_plan
    def without_check(*args, **kwargs):
        plan = build(*args, **kwargs)
        return plan._replace(steps=tuple(s for s in plan.steps if s.syscall != "getppid"))
    launch.build_plan = without_check
async def main():
    await aunshare.Command("sleep").arg("100").spawn()
anyio.run(main)
"""

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> int:
    r = libc.ptrace(request, pid, addr, data)
    if r == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return r


def event_msg(pid: int) -> int:
    value = ctypes.c_ulong()
    ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(value))
    return value.value


def regs(pid: int) -> list[int]:
    buf = (ctypes.c_ulong * 27)()
    ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(buf))
    return list(buf)


def is_process(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Tgid:"):
                return int(line.split()[1]) == pid
    return False


def main() -> dict:
    mode = sys.argv[1]
    if os.uname().machine != "x86_64":
        return {"outcome": "skip", "reason": "the tracer knows x86_64 registers only"}
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        return {"outcome": "skip", "reason": "cannot become a child subreaper"}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdin=subprocess.PIPE,
                              env=dict(os.environ))
    try:
        ptrace(PTRACE_SEIZE, parent.pid, 0, PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEFORK
               | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE)
    except OSError as exc:
        parent.kill()
        parent.wait()
        return {"outcome": "skip", "reason": f"ptrace refused: {exc}"}
    parent.stdin.write(b"go\n")
    parent.stdin.close()

    child = 0
    in_syscall = False
    parent_dead = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid, status = os.waitpid(-1, WALL)
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            if pid == parent.pid:
                parent_dead = True
                parent.returncode = -1  # reaped here; keep Popen from waiting again
                if child:
                    ptrace(PTRACE_DETACH, child)  # let it run its next step, untraced
                    break
                return {"outcome": "skip", "reason": f"the parent ended first: {status:#x}"}
            if pid == child:
                return {"outcome": "skip", "reason": "the child ended while traced"}
            continue
        sig, event = os.WSTOPSIG(status), status >> 16
        if pid != child:
            if event in (EVENT_FORK, EVENT_VFORK, EVENT_CLONE):
                new = event_msg(pid)
                if not child and is_process(new):
                    child = new
            inject = 0 if event or sig in (signal.SIGTRAP, signal.SIGSTOP) else sig
            try:
                ptrace(PTRACE_CONT, pid, 0, inject)
            except ProcessLookupError:
                pass
            continue
        if sig == signal.SIGTRAP | 0x80:  # syscall stop, entry and exit alternating
            in_syscall = not in_syscall
            r = regs(child)
            if in_syscall and r[ORIG_RAX] == SYS_PRCTL and r[RDI] == PR_SET_PDEATHSIG:
                os.kill(parent.pid, signal.SIGKILL)  # the child stays stopped meanwhile
                continue
            ptrace(PTRACE_SYSCALL, child)
        else:  # the initial stop, or a signal for the child
            inject = 0 if event or sig in (signal.SIGTRAP, signal.SIGSTOP) else sig
            ptrace(PTRACE_SYSCALL, child, 0, inject)
    if not parent_dead:
        return {"outcome": "skip", "reason": "timed out"}

    # Now the child's parent is this process (its subreaper).
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
            return {"outcome": "exited", "code": code}
        time.sleep(0.01)
    # Alive: give a loaded machine time to finish the exec before looking.
    end = time.monotonic() + 5
    while True:
        with open(f"/proc/{child}/comm") as f:
            comm = f.read().strip()
        if comm == "sleep" or time.monotonic() > end:
            break
        time.sleep(0.01)
    with open(f"/proc/{child}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    return {"outcome": "survived", "comm": comm, "reparented_to_tracer": ppid == os.getpid()}


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
