"""Compat benchmark: spawn + exec + wait of /bin/true through the compat
front ends against the APIs they copy, per spawn.

Pairs, each peer called as a user of that API would write it:

* ``aunshare.compat.asyncio`` vs ``asyncio.create_subprocess_exec``:
  ``proc = await create_subprocess_exec("/bin/true"); await proc.wait()`` on
  a plain asyncio loop (and again on uvloop, when installed).
* ``aunshare.compat.trio`` vs ``trio.run_process``:
  ``await run_process(["/bin/true"])`` under ``trio.run``.

Plus plain ``await aunshare.Command("/bin/true").status()`` on asyncio and
trio, the reference that shows what the compat layer itself adds.

The compat layer must not eat aunshare's advantage: each ratio
(compat / its peer) is judged against <= 0.95x. Peers run interleaved in
rounds, in rotating order, so machine noise lands on all alike; medians
are over all samples of all rounds.

Usage::

    python bench/compat.py            # 2000 spawns per peer
    python bench/compat.py --quick    # 200: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run from a checkout without installing: the package is one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aunshare
import aunshare.executors
from aunshare.compat import asyncio as compat_asyncio
from aunshare.compat import trio as compat_trio

try:
    import trio
except ImportError:
    trio = None
try:
    import uvloop
except ImportError:
    uvloop = None

TRUE = "/bin/true"
TARGET = 0.95
Batch = Callable[[int, int], list[int]]
# (compat peer, the peer it copies)
OVERHEAD = [
    ("aunshare.compat.asyncio", "aunshare Command.status (asyncio)"),
    ("aunshare.compat.trio", "aunshare Command.status (trio)"),
]
PAIRS = [
    ("aunshare.compat.asyncio", "asyncio.create_subprocess_exec"),
    ("aunshare.compat.asyncio (uvloop)", "asyncio.create_subprocess_exec (uvloop)"),
    ("aunshare.compat.trio", "trio.run_process"),
]


async def _timed(spawn_and_wait: Callable[[], object], n: int, skip: int) -> list[int]:
    clock = time.perf_counter_ns
    for _ in range(skip):
        await spawn_and_wait()
    out = []
    for _ in range(n):
        t0 = clock()
        await spawn_and_wait()
        out.append(clock() - t0)
    return out


def _plain_once() -> object:
    return aunshare.Command(TRUE).status()


async def _compat_asyncio_once() -> None:
    proc = await compat_asyncio.create_subprocess_exec(TRUE)
    await proc.wait()


async def _asyncio_once() -> None:
    proc = await asyncio.create_subprocess_exec(TRUE)
    await proc.wait()


def _compat_trio_once() -> object:
    return compat_trio.run_process([TRUE])


def _trio_once() -> object:
    return trio.run_process([TRUE])


def _asyncio_batch(once: Callable[[], object], use_uvloop: bool = False) -> Batch:
    def run(n: int, skip: int) -> list[int]:
        if use_uvloop:
            return uvloop.run(_timed(once, n, skip))
        return asyncio.run(_timed(once, n, skip))
    return run


def _trio_batch(once: Callable[[], object]) -> Batch:
    def run(n: int, skip: int) -> list[int]:
        return trio.run(_timed, once, n, skip)
    return run


def peers() -> dict[str, Batch | None]:
    """Every peer in table order; None where its package is missing."""
    return {
        "aunshare.compat.asyncio": _asyncio_batch(_compat_asyncio_once),
        "asyncio.create_subprocess_exec": _asyncio_batch(_asyncio_once),
        "aunshare.compat.asyncio (uvloop)":
            _asyncio_batch(_compat_asyncio_once, True) if uvloop else None,
        "asyncio.create_subprocess_exec (uvloop)":
            _asyncio_batch(_asyncio_once, True) if uvloop else None,
        "aunshare.compat.trio": _trio_batch(_compat_trio_once) if trio else None,
        "trio.run_process": _trio_batch(_trio_once) if trio else None,
        "aunshare Command.status (asyncio)": _asyncio_batch(_plain_once),
        "aunshare Command.status (trio)": _trio_batch(_plain_once) if trio else None,
    }


def measure(batches: dict[str, Batch], count: int, rounds: int,
            warmup: int) -> dict[str, list[int]]:
    """Interleave the peers in `rounds` rounds; return all samples per peer."""
    names = list(batches)
    for name in names:  # page in the binaries and code paths first
        batches[name](0, warmup)
    samples: dict[str, list[int]] = {name: [] for name in names}
    per_round = [count // rounds + (1 if r < count % rounds else 0) for r in range(rounds)]
    for r, n in enumerate(per_round):
        k = r % len(names)  # rotate: no peer always runs after the same neighbour
        for name in names[k:] + names[:k]:
            gc.collect()
            samples[name] += batches[name](n, 2)
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=None, help="spawns per peer (default 2000)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 200 spawns per peer")
    args = p.parse_args()
    count = args.count if args.count is not None else (200 if args.quick else 2000)
    rounds = max(1, min(args.rounds, count))
    all_peers = peers()
    batches = {n: b for n, b in all_peers.items() if b is not None}
    ex = aunshare.executors.get_executor()
    print(f"python {platform.python_version()}, {platform.machine()}, kernel "
          f"{platform.release()}, {os.cpu_count()} cpus; aunshare executor {ex.name}; "
          f"{count} spawns/peer, {rounds} rounds", flush=True)
    samples = measure(batches, count, rounds, 5 if args.quick else 20)
    median = {n: statistics.median(s) / 1000 for n, s in samples.items()}
    p90 = {n: statistics.quantiles(s, n=10)[-1] / 1000 for n, s in samples.items()}
    print()
    print("| peer | median us | p90 us | samples |")
    print("|---|---:|---:|---:|")
    for name in all_peers:
        if name not in median:
            print(f"| {name} | not installed | - | - |")
            continue
        print(f"| {name} | {median[name]:.1f} | {p90[name]:.1f} | {len(samples[name])} |")
    print()
    for mine, peer in PAIRS:
        if mine in median and peer in median:
            r = median[mine] / median[peer]
            verdict = "[met]" if r <= TARGET else f"[MISSED: {r:.3f}x]"
            print(f"{mine} / {peer}: {r:.3f}x (target <= {TARGET:.2f}x) {verdict}")
    for mine, plain in OVERHEAD:
        if mine in median and plain in median:
            print(f"{mine} / {plain}: {median[mine] / median[plain]:.3f}x "
                  "(what the front end adds)")


if __name__ == "__main__":
    main()
