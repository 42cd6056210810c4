"""Syscall confinement benchmark: supervision from the event loop against a
ptrace tracer, and the cost of a seccomp allow-list.

The program is coreutils' ``cat`` given ``--calls`` (default 100,000)
arguments naming one small file in a scratch directory: it makes one
``openat`` per argument (plus fstat, read and close), a real program
making many calls of one kind.

(a) Supervised ``openat``: the same policy (the path must be under the
    scratch directory; every call here passes) enforced

    * by aunshare, ``Command.supervise_syscalls("openat")`` and an
      ``async for call in child.syscalls()`` loop that reads the path and
      answers, on asyncio, uvloop and trio;
    * by a ptrace tracer built with python-ptrace: PTRACE_SYSCALL stops at
      each syscall's entry and exit, the path of each ``openat`` read with
      ``readCString`` at its entry, as such tracers usually work.

    Reported: supervised ``openat`` calls per second (wall time of the
    whole run). Target: aunshare >= 5x the tracer.

(b) A plain allow-list filter (default ENOSYS, the calls ``cat`` needs
    allowed) against no filter, same program: the ratio of wall times.
    Target <= 1.05x. Also timed: a filter allowing everything, the floor
    of any filter (the kernel's slower syscall entry once one is present).

Peers run interleaved over ``--rounds`` rounds; the tables show medians.
Machines are noisy: compare rows of one run.

Usage::

    python bench/syscalls.py                    # 100,000 calls, 3 rounds
    python bench/syscalls.py --calls 20000 --rounds 2 --quick
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Run from a checkout without installing: the package is one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

from aunshare import Action, Command, SeccompFilter, Stdio
from aunshare._linux import ARCH
from aunshare._syscalls import TABLES

CAT = shutil.which("cat") or "/bin/cat"
# What cat (and the dynamic loader before it) calls on x86_64 and aarch64.
CAT_CALLS = [
    "execve", "brk", "mmap", "munmap", "mprotect", "openat", "read", "write", "close",
    "fstat", "newfstatat", "pread64", "access", "faccessat", "faccessat2", "arch_prctl",
    "set_tid_address", "set_robust_list", "rseq", "prlimit64", "getrandom", "fadvise64",
    "lseek", "ioctl", "sendfile", "copy_file_range", "madvise", "statx", "uname",
    "rt_sigaction", "rt_sigprocmask", "futex", "getpid", "gettid", "readlink", "readlinkat",
]


def _program(root: Path, calls: int) -> list[str]:
    (root / "f").write_bytes(b"x\n")
    return [CAT, *(["f"] * calls)]


def allowed(path: str, prefix: str) -> bool:
    """The policy both peers enforce, written as a user would: a relative
    path is taken relative to the working directory (the scratch
    directory); the scratch directory and the system's files are allowed."""
    if not path.startswith("/"):
        path = prefix + path
    return path.startswith((prefix, "/etc/", "/lib", "/usr/"))


async def _supervised(argv: list[str], root: Path) -> tuple[float, int]:
    prefix = str(root) + "/"
    seen = 0
    start = time.perf_counter()
    cmd = (Command(argv[0]).args(argv[1:]).current_dir(root).stdout(Stdio.null())
           .supervise_syscalls("openat"))
    async with await cmd.spawn() as child:
        async for call in child.syscalls():
            seen += 1
            if allowed(call.path(1), prefix):
                await call.allow()
            else:
                await call.deny(errno.EACCES)
        status = await child.wait()
    assert status.success(), status
    return time.perf_counter() - start, seen


def aunshare_rate(backend: str, options: dict[str, object]) -> Callable[[list[str], Path],
                                                                         tuple[float, int]]:
    def run(argv: list[str], root: Path) -> tuple[float, int]:
        return anyio.run(_supervised, argv, root, backend=backend, backend_options=options)
    return run


def ptrace_rate(argv: list[str], root: Path) -> tuple[float, int]:
    """The same policy from a python-ptrace tracer (PTRACE_SYSCALL)."""
    from ptrace.binding import ptrace_getregs, ptrace_syscall
    from ptrace.debugger import PtraceDebugger
    from ptrace.debugger.child import createChild

    prefix = str(root) + "/"
    nr_openat = {"x86_64": 257, "aarch64": 56}[ARCH]
    nr_reg, path_reg = {"x86_64": ("orig_rax", "rsi"), "aarch64": ("r8", "r1")}[ARCH]
    start = time.perf_counter()
    old = os.getcwd()
    os.chdir(root)
    try:
        pid = createChild(argv, True)
    finally:
        os.chdir(old)
    dbg = PtraceDebugger()
    proc = dbg.addProcess(pid, is_attached=True)
    seen = 0
    entering = True
    ptrace_syscall(pid, 0)
    try:
        while True:
            _, status = os.waitpid(pid, 0)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                break
            sig = os.WSTOPSIG(status)
            deliver = 0
            if sig in (signal.SIGTRAP, signal.SIGTRAP | 0x80):  # a syscall stop
                if entering:
                    regs = ptrace_getregs(pid)
                    if getattr(regs, nr_reg) == nr_openat:
                        seen += 1
                        path = proc.readCString(getattr(regs, path_reg), 4096)[0]
                        # every call of this program passes the policy (denying
                        # would need the syscall rewritten at entry and exit)
                        assert allowed(os.fsdecode(path), prefix), path
                entering = not entering
            else:
                deliver = sig
            ptrace_syscall(pid, deliver)
    finally:
        proc.is_attached = False
        dbg.quit()
    return time.perf_counter() - start, seen


async def _plain(argv: list[str], root: Path, flt: SeccompFilter | None) -> float:
    cmd = Command(argv[0]).args(argv[1:]).current_dir(root).stdout(Stdio.null())
    if flt is not None:
        cmd.seccomp(flt)
    start = time.perf_counter()
    status = await cmd.status()
    assert status.success(), status
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="skip uvloop and trio in part (a)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        argv = _program(root, args.calls)

        peers: dict[str, Callable[[list[str], Path], tuple[float, int]]] = {
            "aunshare, asyncio": aunshare_rate("asyncio", {}),
        }
        if not args.quick:
            try:
                import uvloop  # noqa: F401
                peers["aunshare, uvloop"] = aunshare_rate("asyncio", {"use_uvloop": True})
            except ImportError:
                pass
            peers["aunshare, trio"] = aunshare_rate("trio", {})
        try:
            import ptrace.debugger  # noqa: F401
            peers["ptrace tracer (python-ptrace)"] = ptrace_rate
        except ImportError:
            print("python-ptrace is not installed: pip install python-ptrace", file=sys.stderr)
        rates: dict[str, list[float]] = {name: [] for name in peers}
        for _ in range(args.rounds):
            for name, run in peers.items():
                elapsed, seen = run(argv, root)
                assert seen >= args.calls, (name, seen)
                rates[name].append(seen / elapsed)
        tracer = statistics.median(rates.get("ptrace tracer (python-ptrace)", [0.0]))
        print(f"(a) supervised openat, {args.calls} calls by cat, median of {args.rounds}")
        print(f"{'peer':34} {'calls/s':>10} {'vs tracer':>10}")
        for name, values in rates.items():
            m = statistics.median(values)
            ratio = f"{m / tracer:.2f}x" if tracer else "-"
            print(f"{name:34} {m:10.0f} {ratio:>10}")

        allow = SeccompFilter(Action.ERRNO, errno.ENOSYS).allow(
            [n for n in CAT_CALLS if n in TABLES[ARCH]])
        # The floor: a filter that allows everything. Any filter at all puts
        # every syscall on the kernel's slower entry path; the allow-list's
        # own cost is what it adds above this.
        floor = SeccompFilter(Action.ALLOW)
        plain: list[float] = []
        filtered: list[float] = []
        floored: list[float] = []
        for _ in range(args.rounds * 5):  # short runs: more samples against noise
            plain.append(anyio.run(_plain, argv, root, None))
            filtered.append(anyio.run(_plain, argv, root, allow))
            floored.append(anyio.run(_plain, argv, root, floor))
        mp, mf = statistics.median(plain), statistics.median(filtered)
        mo = statistics.median(floored)
        print(f"\n(b) cat of {args.calls} files, median of {args.rounds * 5}")
        print(f"{'run':34} {'seconds':>10} {'ratio':>10}")
        print(f"{'no filter':34} {mp:10.4f} {'1.00x':>10}")
        print(f"{'allow-all filter (floor)':34} {mo:10.4f} {mo / mp:9.3f}x")
        print(f"{'allow-list filter':34} {mf:10.4f} {mf / mp:9.3f}x")
        print(f"allow-list / floor: {mf / mo:.3f}x (target <= 1.05x vs no filter)")


if __name__ == "__main__":
    main()
