"""Sandbox benchmark: /bin/true in a bubblewrap-style sandbox, aunshare vs bwrap.

Each sample is one complete "start /bin/true in the sandbox and wait for
it". The sandbox is the same for every peer, in bwrap's words::

    --unshare-all --ro-bind /usr /usr --symlink usr/bin /bin
    --symlink usr/lib /lib --symlink usr/lib64 /lib64 --tmpfs /tmp
    --dev /dev --proc /proc

(new user, mount, pid, network, IPC, UTS and cgroup namespaces, the
caller's ids mapped, a new root built from nothing). Peers:

* ``aunshare (asyncio)``: the library, ``Command(...).new_root()...status()``
  under asyncio (and trio where installed);
* ``bwrap``: the same flags, started from Python with ``os.posix_spawn`` and
  ``os.waitpid`` (the cheapest way), and with ``subprocess.run`` (the usual
  way).

Target: aunshare at most 0.75x bwrap, flat from a small parent to a 2 GiB
one (the parent allocates and touches ~2 GiB, which makes any fork-like
start slow). Peers run interleaved in rounds, in rotating order; medians
over all samples.

Usage::

    python bench/sandbox.py            # 300 samples per peer small, 100 at 2 GiB
    python bench/sandbox.py --quick    # 40 / 20: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

from aunshare import Command, Namespace

try:
    import trio  # noqa: F401
    BACKENDS = ["asyncio", "trio"]
except ImportError:
    BACKENDS = ["asyncio"]

TRUE = "/bin/true"
BWRAP = shutil.which("bwrap")
PAGE = 4096
BIG_BYTES = 2 << 30
Batch = Callable[[int], list[int]]

LINKS = [(os.readlink(f"/{n}"), f"/{n}") for n in ("bin", "lib", "lib64")
         if os.path.islink(f"/{n}")]
FLAGS = ["--unshare-all", "--ro-bind", "/usr", "/usr",
         *[w for target, link in LINKS for w in ("--symlink", target, link)],
         "--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc"]


def sandbox() -> Command:
    """The same sandbox through the library."""
    cmd = (Command(TRUE)
           .unshare(Namespace.USER | Namespace.MOUNT | Namespace.PID | Namespace.NET
                    | Namespace.IPC | Namespace.UTS | Namespace.CGROUP)
           .map_current_user()
           .new_root()
           .bind_mount("/usr", read_only=True))
    for target, link in LINKS:
        cmd.symlink(target, link)
    return cmd.tmpfs("/tmp").mount_dev().mount_proc("/proc")


async def _timed(n: int) -> list[int]:
    clock = time.perf_counter_ns
    cmd = sandbox()
    await cmd.status()  # one untimed: loop set-up, lazy imports
    out = []
    for _ in range(n):
        t0 = clock()
        status = await cmd.status()
        out.append(clock() - t0)
        if not status.success():
            raise SystemExit(f"aunshare child failed: {status}")
    return out


def _aunshare(backend: str) -> Batch:
    return lambda n: anyio.run(_timed, n, backend=backend)


def _bwrap_spawn(n: int) -> list[int]:
    assert BWRAP is not None
    argv = [BWRAP, *FLAGS, TRUE]
    clock = time.perf_counter_ns
    env = os.environ
    out = []
    for i in range(n + 1):
        t0 = clock()
        _, status = os.waitpid(os.posix_spawn(BWRAP, argv, env), 0)
        if status != 0:
            raise SystemExit(f"{' '.join(argv)} failed with status {status}")
        if i:
            out.append(clock() - t0)
    return out


def _bwrap_subprocess(n: int) -> list[int]:
    assert BWRAP is not None
    argv = [BWRAP, *FLAGS, TRUE]
    clock = time.perf_counter_ns
    out = []
    for i in range(n + 1):
        t0 = clock()
        subprocess.run(argv, check=True)
        if i:
            out.append(clock() - t0)
    return out


PEERS: dict[str, Batch] = {
    **{f"aunshare ({b})": _aunshare(b) for b in BACKENDS},
    "bwrap (posix_spawn)": _bwrap_spawn,
    "bwrap (subprocess.run)": _bwrap_subprocess,
}
REFERENCE = "bwrap (posix_spawn)"


def measure(total: int, rounds: int) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in PEERS}
    names = list(PEERS)
    per_round = max(1, total // rounds)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name] += PEERS[name](per_round)
    return samples


def table(title: str, samples: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    ref = statistics.median(samples[REFERENCE])
    print(f"\n## {title}\n")
    print(f"| peer | median us | p90 us | ratio to {REFERENCE} |")
    print("|---|---:|---:|---:|")
    rows = {}
    for name, values in samples.items():
        med = statistics.median(values)
        p90 = statistics.quantiles(values, n=10)[-1]
        rows[name] = {"median_us": med / 1000, "p90_us": p90 / 1000, "ratio": med / ref}
        print(f"| {name} | {med / 1000:.1f} | {p90 / 1000:.1f} | {med / ref:.2f}x |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 samples small, 20 at 2 GiB")
    parser.add_argument("-n", type=int, default=None, help="samples per peer (small parent)")
    parser.add_argument("--no-big", action="store_true", help="skip the 2 GiB parent")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    if BWRAP is None:
        raise SystemExit("bwrap (Debian: bubblewrap) is not installed")
    n = args.n or (40 if args.quick else 300)
    big_n = max(10, n // 3) if not args.quick else 20
    print(f"# sandbox: {TRUE} in a bwrap-style sandbox, {n} per peer (small), {big_n} at "
          f"2 GiB; Python {platform.python_version()}, {os.cpu_count()} cores, Linux "
          f"{platform.release()}, uid {os.geteuid()}")
    print(f"# flags: {' '.join(FLAGS)}")
    report = {"small": table("small parent", measure(n, rounds=10))}
    if not args.no_big:
        t0 = time.monotonic()
        big = bytearray(BIG_BYTES)
        big[::PAGE] = b"x" * len(range(0, len(big), PAGE))
        print(f"\n[2 GiB] allocated and touched {len(big) >> 20} MiB in "
              f"{time.monotonic() - t0:.1f} s")
        report["2 GiB"] = table("2 GiB parent", measure(big_n, rounds=5))
        del big
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
