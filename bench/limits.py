"""Resource limits benchmark: what a cgroup of the child's own costs.

Peers, each timed around one complete ``await aunshare.run(cmd)`` of
``/bin/true`` on asyncio:

* ``run()`` - no cgroup: the reference.
* ``run() + memory+pids`` - ``limit_memory("512M").limit_pids(100)``: a
  cgroup created, its limits written, the child started inside it (cgroup v2
  ``CLONE_INTO_CGROUP``; on a hybrid host one directory per cgroup v1
  hierarchy, which the child joins as its first steps), its usage read and
  the cgroup removed.
* ``run() + new_cgroup`` - a cgroup v2 of its own without limits, where v2 is
  writable: how much of the cost is the cgroup itself.
* ``floor: run() + bare cgroup`` - the physical floor of "creating, filling
  and removing a cgroup per child": ``run()`` without limits, around which
  plain Python makes a directory in each hierarchy the limits use (the same
  ones aunshare makes: on cgroup v1 memory, pids and cpuacct), writes the
  same limits into them, and removes them after the exit. The child is not
  moved in and no usage is read: what is left between this row and the
  limited one is aunshare's own overhead, which the last line gives as a
  ratio next to the one against ``run()``.

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
FLOOR = "floor: run() + bare cgroup"
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


def _floor_plan() -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
    """Per directory aunshare makes for the limited peer: (its parent, the
    limit files written in it and their values)."""
    limits = _limited().spec().lifetime.limits
    assert limits is not None
    path, fd, _ = _cgroup.create_limited(None, limits)
    if fd >= 0:
        os.close(fd)
    values = {b"memory.limit_in_bytes": limits.memory_max, b"memory.max": limits.memory_max,
              b"pids.max": limits.pids_max}
    if limits.oom_group:
        values[b"memory.oom.group"] = 1  # cgroup v2 only
    try:
        return [(os.path.dirname(d), [(name, str(v).encode()) for name, v in values.items()
                                      if v is not None and os.path.exists(d + b"/" + name)])
                for d in _cgroup.v1_dirs(path) or (path,)]
    finally:
        _cgroup.remove(path)


def _floor() -> Callable[[int], list[int]]:
    plan = _floor_plan()
    flags = os.O_WRONLY | os.O_CLOEXEC

    def batch(n: int) -> list[int]:
        async def main() -> list[int]:
            clock = time.perf_counter_ns
            await aunshare.run(_plain())
            out = []
            for i in range(n):
                t = clock()
                leaf = b"/bench-floor-%d-%d" % (os.getpid(), i)
                made = []
                for parent, writes in plan:
                    d = parent + leaf
                    os.mkdir(d)
                    made.append(d)
                    for name, value in writes:
                        fd = os.open(d + b"/" + name, flags)
                        os.write(fd, value)
                        os.close(fd)
                await aunshare.run(_plain())
                for d in reversed(made):
                    os.rmdir(d)
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


# The plot's jobs: (MiB allocated and touched, memory limit).
PLOT_JOBS = ((40, "64M"), (100, "64M"), (100, "128M"), (200, "256M"), (400, "256M"))


async def _peaks() -> dict[str, dict[str, float]]:
    """memory_peak against the limit for a few jobs, in MiB."""
    groups: dict[str, dict[str, float]] = {}
    for mib, limit in PLOT_JOBS:
        code = f"b = bytearray({mib} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1"
        done = await aunshare.run(aunshare.Command(sys.executable).args(["-c", code])
                                  .limit_memory(limit))
        usage = done.cgroup_usage
        assert usage is not None and usage.memory_peak is not None
        verdict = "OOM-killed" if done.oom_killed else f"exit {done.returncode}"
        groups[f"allocates {mib} MiB: {verdict}"] = {
            "limit": (usage.memory_limit or 0) / (1 << 20),
            "memory_peak": usage.memory_peak / (1 << 20)}
    return groups


def _plot_peaks(path: str, groups: dict[str, dict[str, float]]) -> None:
    """One row per job: its limit (light) and its memory_peak (dark), in the
    colours of bench/_plot.py."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(names) + 1.4))
    ys = range(len(names))
    limit = ax.barh([y - 0.2 for y in ys], [groups[n]["limit"] for n in names], height=0.4,
                    color="#9bb7d4", label="memory limit")
    peak = ax.barh([y + 0.2 for y in ys], [groups[n]["memory_peak"] for n in names],
                   height=0.4, color="#1f5f99", label="cgroup_usage.memory_peak")
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("MiB")
    for bars in (limit, peak):
        ax.bar_label(bars, fmt="%.0f", padding=3, fontsize=8)
    ax.margins(x=0.12)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.suptitle("memory_peak against the memory limit, one job per row", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plot", metavar="PNG",
                        help="only draw memory_peak against the limit for a few jobs "
                             "(needs matplotlib)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=200, help="runs per peer per round")
    parser.add_argument("--batches", type=int, default=4,
                        help=f"batches of {FLIGHT} in flight per peer per round")
    args = parser.parse_args()
    if args.plot:
        _plot_peaks(args.plot, anyio.run(_peaks))
        return 0
    try:
        anyio.run(aunshare.run, _limited())
    except aunshare.CgroupError as exc:
        print(f"no cgroup for limits here: {exc}", file=sys.stderr)
        return 1

    serial: dict[str, Callable[[int], list[int]]] = {
        REFERENCE: _serial(_plain), LIMITED: _serial(_limited), FLOOR: _floor()}
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
    floor = statistics.median(one[LIMITED]) / statistics.median(one[FLOOR])
    print(f"\n{LIMITED} / {REFERENCE}: {ratio:.2f}x (target <= 1.35x: "
          f"{'met' if ratio <= 1.35 else 'NOT met'}); {LIMITED} / {FLOOR}: {floor:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
