"""Supervision benchmark: many children at once, aunshare against its peers.

Two parts, one table each:

(a) Throughput: ``--spawns`` (default 2,000) x ``/bin/true``, ``--in-flight``
    (default 64) at a time, as that many tasks each running "start, wait"
    in a loop. Spawns per second for aunshare (``Command.status()`` and
    ``run_many``) on asyncio, uvloop and trio, and for
    ``asyncio.create_subprocess_exec`` (plain asyncio and uvloop) and
    ``trio.run_process``. Peers run interleaved over ``--rounds`` rounds;
    the table shows the median rate. Target: aunshare on asyncio at least
    1.3x asyncio's own.

(b) Scale: ``-n`` (default 10,000) ``sleep`` children alive and supervised
    at once, each awaited by its own task. For every peer: how long the
    spawns took, the parent's resident memory per child (VmRSS growth
    while all are alive), the threads of the parent before, at the peak and
    after (they must not grow with the children), and the delay between a
    child's exit and its ``wait()`` returning, p50 and p99. Exit time: the
    children are killed with SIGKILL in bursts of 20 every 5 ms (about
    4,000 exits a second while the rest stay alive), and the moment of each
    kill is taken as its exit, so the delay includes the kernel's
    kill-to-exit time and the queue of its burst. Each peer runs in a fresh
    interpreter. RLIMIT_NOFILE is raised to the hard limit, and ``-n``
    lowered to fit it when it is too low.

Runs from a checkout (``python bench/supervise.py``); peers whose package is
missing are reported as such. Machines are noisy: compare rows of one run.

Usage::

    python bench/supervise.py                   # both parts, n = 10,000
    python bench/supervise.py -n 2000 --quick   # a smaller, faster run
    python bench/supervise.py --part a
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# Run from a checkout without installing: the package is one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

import aunshare

try:
    import trio
except ImportError:
    trio = None
try:
    import uvloop
except ImportError:
    uvloop = None

TRUE = "/bin/true"
ASYNCIO = ("asyncio", {})
UVLOOP = ("asyncio", {"use_uvloop": True})
TRIO = ("trio", {})


# -- part (a): spawns per second with N in flight --------------------------------------

async def _aunshare_true() -> None:
    await aunshare.Command(TRUE).status()


async def _asyncio_true() -> None:
    proc = await asyncio.create_subprocess_exec(TRUE)
    await proc.wait()


async def _trio_true() -> None:
    await trio.run_process([TRUE])


async def _pool(one: Callable[[], Awaitable[None]], count: int, in_flight: int) -> float:
    """Spawns per second of ``count`` calls of ``one``, ``in_flight`` at a time."""
    jobs = iter(range(count))

    async def worker() -> None:
        for _ in jobs:
            await one()

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(in_flight):
            tg.start_soon(worker)
    return count / (time.perf_counter() - t0)


async def _run_many_rate(count: int, in_flight: int) -> float:
    t0 = time.perf_counter()
    results = await aunshare.run_many(([TRUE] for _ in range(count)), limit=in_flight,
                                      capture_output=False)
    assert all(r.ok for r in results)
    return count / (time.perf_counter() - t0)


def throughput_peers() -> dict[str, tuple[Callable[..., Awaitable[float]], tuple] | None]:
    """name -> (coroutine function taking (count, in_flight), backend), None if missing."""
    def pool(one):  # type: ignore[no-untyped-def]
        return lambda count, in_flight: _pool(one, count, in_flight)

    return {
        "aunshare Command.status (asyncio)": (pool(_aunshare_true), ASYNCIO),
        "aunshare Command.status (uvloop)": (pool(_aunshare_true), UVLOOP) if uvloop else None,
        "aunshare Command.status (trio)": (pool(_aunshare_true), TRIO) if trio else None,
        "aunshare run_many (asyncio)": (_run_many_rate, ASYNCIO),
        "asyncio.create_subprocess_exec": (pool(_asyncio_true), ASYNCIO),
        "uvloop create_subprocess_exec": (pool(_asyncio_true), UVLOOP) if uvloop else None,
        "trio.run_process": (pool(_trio_true), TRIO) if trio else None,
    }


def part_a(count: int, in_flight: int, rounds: int) -> None:
    peers = throughput_peers()
    names = [n for n, p in peers.items() if p is not None]
    rates: dict[str, list[float]] = {n: [] for n in names}
    per_round = max(1, count // rounds)
    for name in names:  # warm-up: page in binaries and code paths
        fn, (backend, options) = peers[name]  # type: ignore[misc]
        anyio.run(fn, 50, min(in_flight, 50), backend=backend, backend_options=options)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:  # rotate the order: noise lands on all alike
            fn, (backend, options) = peers[name]  # type: ignore[misc]
            gc.collect()
            rates[name].append(anyio.run(fn, per_round, in_flight, backend=backend,
                                         backend_options=options))
        print(f"  [a] round {r + 1}/{rounds} done", file=sys.stderr, flush=True)

    ref = statistics.median(rates["asyncio.create_subprocess_exec"])
    print(f"\n(a) {per_round * rounds} x {TRUE}, {in_flight} in flight, "
          f"median of {rounds} rounds\n")
    print("| peer | spawns/s (median) | min - max | vs asyncio |")
    print("|---|---:|---:|---:|")
    for name, missing in ((n, peers[n] is None) for n in peers):
        if missing:
            print(f"| {name} | not installed | - | - |")
            continue
        med = statistics.median(rates[name])
        print(f"| {name} | {med:.0f} | {min(rates[name]):.0f} - {max(rates[name]):.0f} "
              f"| {med / ref:.2f}x |")
    ratio = statistics.median(rates["aunshare Command.status (asyncio)"]) / ref
    verdict = "met" if ratio >= 1.3 else "MISSED"
    print(f"\naunshare (asyncio) / asyncio.create_subprocess_exec: {ratio:.2f}x "
          f"(target >= 1.30x) [{verdict}]")


# -- part (b): N children alive at once ---------------------------------------------------

def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


class Peer:
    """How one peer starts a sleeping child, kills it and waits for it."""

    def __init__(self, name: str, backend: tuple, spawn: Callable[[], Awaitable[Any]],
                 kill: Callable[[Any], None], wait: Callable[[Any], Awaitable[Any]]) -> None:
        self.name, self.backend = name, backend
        self.spawn, self.kill, self.wait = spawn, kill, wait


def _aunshare_peer(name: str, backend: tuple) -> Peer:
    cmd = aunshare.Command("sleep").arg("1000")

    async def spawn() -> aunshare.Child:
        return await cmd.spawn()

    return Peer(name, backend, spawn, lambda c: c.kill(), lambda c: c.wait())


def _asyncio_peer(name: str, backend: tuple) -> Peer:
    async def spawn() -> Any:
        return await asyncio.create_subprocess_exec("sleep", "1000")

    return Peer(name, backend, spawn, lambda p: p.kill(), lambda p: p.wait())


def _trio_peer() -> Peer:
    async def spawn() -> Any:
        return await trio.lowlevel.open_process(["sleep", "1000"])

    return Peer("trio open_process", TRIO, spawn, lambda p: p.kill(), lambda p: p.wait())


def scale_peers(with_peers: bool) -> list[Peer | str]:
    out: list[Peer | str] = [_aunshare_peer("aunshare (asyncio)", ASYNCIO)]
    out.append(_aunshare_peer("aunshare (uvloop)", UVLOOP) if uvloop else "aunshare (uvloop)")
    out.append(_aunshare_peer("aunshare (trio)", TRIO) if trio else "aunshare (trio)")
    if with_peers:
        out.append(_asyncio_peer("asyncio create_subprocess_exec", ASYNCIO))
        out.append(_asyncio_peer("uvloop create_subprocess_exec", UVLOOP) if uvloop
                   else "uvloop create_subprocess_exec")
        out.append(_trio_peer() if trio else "trio open_process")
    return out


async def _hold(peer: Peer, n: int) -> dict[str, float]:
    """Start n children, wait for each in its own task, kill them paced."""
    for _ in range(20):  # warm-up: lazy state, loop readers, imports
        handle = await peer.spawn()
        peer.kill(handle)
        await peer.wait(handle)
    gc.collect()
    await anyio.sleep(0.2)
    rss0, threads0 = _rss_kib(), _threads()
    peak = threads0
    killed = [0.0] * n
    returned = [0.0] * n
    handles: list[Any] = []

    async def waiter(i: int, handle: Any) -> None:
        await peer.wait(handle)
        returned[i] = time.perf_counter()

    try:
        async with anyio.create_task_group() as tg:
            t0 = time.perf_counter()
            for i in range(n):
                handle = await peer.spawn()
                handles.append(handle)
                tg.start_soon(waiter, i, handle)
                if i % 500 == 499:
                    peak = max(peak, _threads())
                    await anyio.sleep(0)
            spawn_s = time.perf_counter() - t0
            await anyio.sleep(1.0)  # every waiter is parked on its child
            gc.collect()
            rss1 = _rss_kib()
            peak = max(peak, _threads())
            for i, handle in enumerate(handles):
                killed[i] = time.perf_counter()
                peer.kill(handle)
                if i % 20 == 19:  # ~4000 exits/s: each is reaped while others run on
                    await anyio.sleep(0.005)
                    if i % 1000 == 999:
                        peak = max(peak, _threads())
    finally:
        for handle in handles[len([k for k in killed if k]):]:
            try:
                peer.kill(handle)
            except (ProcessLookupError, OSError):
                pass
    delays = sorted((r - k) * 1e3 for r, k in zip(returned, killed))
    q = statistics.quantiles(delays, n=100)
    await anyio.sleep(0.5)
    return {
        "spawn_s": spawn_s,
        "kib_per_child": (rss1 - rss0) / n,
        "threads": (threads0, peak, _threads()),
        "p50_ms": statistics.median(delays),
        "p99_ms": q[98],
        "max_ms": delays[-1],
    }


def _raise_nofile(n: int) -> int:
    """Raise the soft descriptor limit to the hard one; the n that fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, n * 2 + 1024)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    fits = want - 512  # one pidfd per child (trio and asyncio's watcher too), and slack
    if n > fits:
        print(f"  RLIMIT_NOFILE hard limit is {hard}: running n = {fits} instead of {n}",
              file=sys.stderr)
        return fits
    return n


def _one_scale_run(name: str, n: int) -> None:
    """(In a fresh interpreter) part (b) for one peer; prints JSON."""
    peer = next(p for p in scale_peers(True) if not isinstance(p, str) and p.name == name)
    backend, options = peer.backend
    result = anyio.run(_hold, peer, n, backend=backend, backend_options=options)
    print(json.dumps(result))


def part_b(n: int, with_peers: bool) -> None:
    n = _raise_nofile(n)
    rows: list[tuple[str, dict[str, float] | None]] = []
    for peer in scale_peers(with_peers):
        if isinstance(peer, str):
            rows.append((peer, None))
            continue
        # Each peer in a fresh interpreter: memory and threads left by an
        # earlier peer (or by part (a)) must not count.
        print(f"  [b] {peer.name}: {n} children...", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, __file__, "--scale-peer", peer.name, "-n", str(n)],
                             stdout=subprocess.PIPE, check=True, text=True)
        rows.append((peer.name, json.loads(out.stdout.splitlines()[-1])))
    print(f"\n(b) {n} `sleep` children alive at once, each awaited by its own task; "
          f"then SIGKILLed 20 every 5 ms\n")
    print("| peer | spawn all (s) | parent RSS per child (KiB) | threads before / peak / after "
          "| exit -> wait() p50 (ms) | p99 (ms) | max (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        if r is None:
            print(f"| {name} | not installed | | | | | |")
            continue
        t = r["threads"]
        print(f"| {name} | {r['spawn_s']:.1f} | {r['kib_per_child']:.1f} "
              f"| {t[0]} / {t[1]} / {t[2]} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
              f"| {r['max_ms']:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["a", "b", "both"], default="both")
    p.add_argument("--spawns", type=int, default=2000, help="part (a): spawns per peer")
    p.add_argument("--in-flight", type=int, default=64, help="part (a): concurrent spawns")
    p.add_argument("--rounds", type=int, default=4, help="part (a): interleaved rounds")
    p.add_argument("-n", type=int, default=10_000, help="part (b): children alive at once")
    p.add_argument("--no-peers", action="store_true",
                   help="part (b): aunshare only (the peers are slow to start 10,000)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 400 spawns in (a), 2 rounds")
    p.add_argument("--scale-peer", help=argparse.SUPPRESS)  # internal: one part (b) run
    args = p.parse_args()
    if args.scale_peer:
        _raise_nofile(args.n)
        _one_scale_run(args.scale_peer, args.n)
        return
    if args.quick:
        args.spawns, args.rounds = 400, 2
    ex = aunshare.executors.get_executor()
    print(f"python {platform.python_version()}, {platform.machine()}, kernel {platform.release()}, "
          f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; aunshare executor {ex.name}",
          flush=True)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if args.part in ("a", "both"):
        part_a(args.spawns, args.in_flight, args.rounds)
    if args.part in ("b", "both"):
        part_b(args.n, not args.no_peers)


if __name__ == "__main__":
    main()
