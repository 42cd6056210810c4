"""Resource limits benchmark: what a cgroup of the child's own costs.

Peers, each timed around one complete ``await aunshare.run(cmd)`` of
``/bin/true`` on asyncio:

* ``run()`` - no cgroup: the reference.
* ``run() + memory+pids`` - ``limit_memory("512M").limit_pids(100)``: a
  cgroup created, its limits written, the child started inside it (cgroup v2
  ``CLONE_INTO_CGROUP``; on a hybrid host one directory per cgroup v1
  hierarchy, joined in the handshake), its usage read and the cgroup removed.
* ``run() + new_cgroup`` - a cgroup v2 of its own without limits, where v2 is
  writable: how much of the cost is the cgroup itself.

Then 64 in flight: ``run_many`` of 64 ``/bin/true`` jobs at once (limit=64),
with and without the memory+pids limits, timed per batch of 64.

Peers run interleaved in rounds, in rotating order, so that machine noise
lands on all alike; medians are over all samples of all rounds.

Usage::

    python bench/limits.py                 # 5 rounds of 200 runs and 4 batches per peer
    python bench/limits.py --rounds 2 --count 50 --batches 2   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run from a checkout without installing: the package is one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

import aunshare
from aunshare import cgroup as _cgroup

TRUE = "/bin/true"
REFERENCE = "run()"
LIMITED = "run() + memory+pids"
FLIGHT = 64


def _plain() -> aunshare.Command:
    return aunshare.Command(TRUE)


def _limited() -> aunshare.Command:
    return aunshare.Command(TRUE).limit_memory("512M").limit_pids(100)


def _v2_parent() -> str | None:
    """A cgroup v2 directory to create plain cgroups in, if any is writable."""
    own = _cgroup.current()
    return own if own is not None and os.access(own, os.W_OK) else None


def _serial(make: Callable[[], aunshare.Command]) -> Callable[[int], list[int]]:
    def batch(n: int) -> list[int]:
        async def main() -> list[int]:
            clock = time.perf_counter_ns
            await aunshare.run(make())  # warm: lazy imports, the plan cache
            out = []
            for _ in range(n):
                t = clock()
                await aunshare.run(make())
                out.append(clock() - t)
            return out
        return anyio.run(main)
    return batch


def _in_flight(make: Callable[[], aunshare.Command]) -> Callable[[int], list[int]]:
    def batch(n: int) -> list[int]:
        async def main() -> list[int]:
            clock = time.perf_counter_ns
            await aunshare.run_many([make() for _ in range(FLIGHT)], limit=FLIGHT)
            out = []
            for _ in range(n):
                t = clock()
                results = await aunshare.run_many([make() for _ in range(FLIGHT)], limit=FLIGHT)
                out.append(clock() - t)
                assert all(r.ok for r in results), [r.error for r in results if not r.ok]
            return out
        return anyio.run(main)
    return batch


def measure(batches: dict[str, Callable[[int], list[int]]], n: int,
            rounds: int) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in batches}
    names = list(batches)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            samples[name] += batches[name](n)
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=200, help="runs per peer per round")
    parser.add_argument("--batches", type=int, default=4,
                        help=f"batches of {FLIGHT} in flight per peer per round")
    args = parser.parse_args()
    try:
        anyio.run(aunshare.run, _limited())
    except aunshare.CgroupError as exc:
        print(f"no cgroup for limits here: {exc}", file=sys.stderr)
        return 1

    serial: dict[str, Callable[[int], list[int]]] = {
        REFERENCE: _serial(_plain), LIMITED: _serial(_limited)}
    v2 = _v2_parent()
    if v2 is not None:
        serial["run() + new_cgroup"] = _serial(lambda: aunshare.Command(TRUE).new_cgroup(v2))
    one = measure(serial, args.count, args.rounds)
    flight = measure({REFERENCE: _in_flight(_plain), LIMITED: _in_flight(_limited)},
                     args.batches, args.rounds)

    spec = _limited().spec()
    path, fd, on_v2 = _cgroup.create_limited(None, spec.lifetime.limits)  # where limits go
    if fd >= 0:
        os.close(fd)
    _cgroup.remove(path)
    place = "cgroup v2" if on_v2 else "cgroup v1 (one directory per hierarchy)"
    print(f"\nlimits go to {place}; {os.cpu_count()} CPUs; Linux {os.uname().release}")
    print()
    print("| peer | median us per run() | p90 us | ratio vs run() |")
    print("|---|---:|---:|---:|")
    ref = statistics.median(one[REFERENCE])
    for name, s in one.items():
        med = statistics.median(s)
        p90 = statistics.quantiles(s, n=10)[-1]
        print(f"| {name} | {med / 1e3:.0f} | {p90 / 1e3:.0f} | {med / ref:.2f}x |")
    print()
    print(f"| peer | median ms per {FLIGHT} in flight | us per job | ratio vs run() |")
    print("|---|---:|---:|---:|")
    ref = statistics.median(flight[REFERENCE])
    for name, s in flight.items():
        med = statistics.median(s)
        print(f"| {name} | {med / 1e6:.1f} | {med / FLIGHT / 1e3:.0f} | {med / ref:.2f}x |")
    ratio = statistics.median(one[LIMITED]) / statistics.median(one[REFERENCE])
    print(f"\n{LIMITED} / {REFERENCE}: {ratio:.2f}x (target <= 1.35x: "
          f"{'met' if ratio <= 1.35 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
