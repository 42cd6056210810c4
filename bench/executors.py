"""Executor benchmark: the native routine against the portable executor,
with a small parent and with a big one.

The native executor clones with CLONE_VM: its cost should not depend on
the parent's size. The portable one makes a fork-like copy (page tables
copied): its cost grows with the parent. Each (executor, parent size)
runs in a worker process of its own (the executor is chosen per process),
in rounds that rotate the order, and the table gives the median of all
samples of ``await Command("/bin/true").status()``.

Usage::

    python bench/executors.py                      # 300 spawns each, 512 MiB big parent
    python bench/executors.py --big-mib 2048 --count 500 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXECUTORS = ("native", "portable")


def worker(mib: int, count: int) -> None:
    """Allocate and touch ``mib`` MiB, then time ``count`` spawns; print the
    samples (microseconds) as JSON."""
    sys.path.insert(0, str(REPO))
    import anyio

    from aunshare import Command
    from aunshare.executors import get_executor

    big = bytearray(mib << 20)
    page = os.sysconf("SC_PAGE_SIZE")
    big[::page] = b"x" * len(range(0, len(big), page))

    async def main() -> list[float]:
        for _ in range(3):
            await Command("/bin/true").status()
        out = []
        for _ in range(count):
            t0 = time.perf_counter_ns()
            await Command("/bin/true").status()
            out.append((time.perf_counter_ns() - t0) / 1000)
        return out

    samples = anyio.run(main)
    print(json.dumps({"executor": get_executor().name, "samples": samples}))
    del big


def run_worker(executor: str, mib: int, count: int) -> list[float]:
    env = dict(os.environ, AUNSHARE_EXECUTOR=executor)
    proc = subprocess.run([sys.executable, __file__, "--worker", str(mib), str(count)],
                          env=env, capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout.splitlines()[-1])
    assert data["executor"] == executor, data
    return list(data["samples"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=300, help="spawns per cell (default 300)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--big-mib", type=int, default=512, help="the big parent, MiB (default 512)")
    p.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    sizes = {"small": 0, f"{args.big_mib} MiB": args.big_mib}
    cells = [(e, s) for e in EXECUTORS for s in sizes]
    samples: dict[tuple[str, str], list[float]] = {c: [] for c in cells}
    per_round = max(1, args.count // args.rounds)
    print(f"python {platform.python_version()}, {platform.machine()}, kernel "
          f"{platform.release()}, {os.cpu_count()} cpus; {per_round * args.rounds} spawns "
          f"per cell in {args.rounds} rounds", flush=True)
    for r in range(args.rounds):
        k = r % len(cells)
        for cell in cells[k:] + cells[:k]:
            samples[cell] += run_worker(cell[0], sizes[cell[1]], per_round)
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    med = {c: statistics.median(v) for c, v in samples.items()}
    names = list(sizes)
    print()
    print(f"| executor | {names[0]} parent, median us | {names[1]} parent, median us "
          "| big / small |")
    print("|---|---:|---:|---:|")
    for e in EXECUTORS:
        a, b = med[(e, names[0])], med[(e, names[1])]
        print(f"| {e} | {a:.0f} | {b:.0f} | {b / a:.2f}x |")
    for n in names:
        print(f"portable / native, {n} parent: "
              f"{med[('portable', n)] / med[('native', n)]:.2f}x")


if __name__ == "__main__":
    main()
