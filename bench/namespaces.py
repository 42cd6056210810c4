"""Namespace spawn benchmark: /bin/true in new namespaces, aunshare vs unshare(1).

Each sample is one complete "start /bin/true in new namespaces and wait for
it". Scenarios, each against the util-linux command a user would otherwise
start from Python, with ``os.posix_spawn`` + ``os.waitpid`` (the cheapest
way to run it from Python; the first scenario also shows ``subprocess.run``
of the same command, the way most Python code would start it):

* ``user+net, root mapped``: ``Command(...).unshare(NET).map_root_user()``
  vs ``unshare -Urn /bin/true``. The target: at most 0.6x of unshare(1).
* ``user+pid+mount, /proc``: ``.unshare(PID | MOUNT).map_root_user().mount_proc()``
  vs ``unshare -Urpfm --mount-proc /bin/true``.
* ``user+net, maps by the parent``: the handshake path
  (``set_id_maps`` written by the parent while the child waits), against
  the same ``unshare -Urn``.

The first scenario also times an "event-loop floor": the same clone and
plan, the pidfd awaited with ``anyio.wait_readable`` and reaped, none of
aunshare's async layer around it; no event-loop waiter can beat it.

aunshare runs under asyncio (and trio where installed). Peers run
interleaved in rounds, in rotating order, so noise lands on all alike;
medians are over all samples. Run as any user that may create user
namespaces.

Usage::

    python bench/namespaces.py            # 400 samples per peer
    python bench/namespaces.py --quick    # 60: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

from aunshare import Command, GidMap, Namespace, UidMap

try:
    import trio  # noqa: F401
    BACKENDS = ["asyncio", "trio"]
except ImportError:
    BACKENDS = ["asyncio"]

TRUE = "/bin/true"
UNSHARE = shutil.which("unshare")
Batch = Callable[[int], list[int]]


def _net_root() -> Command:
    return Command(TRUE).unshare(Namespace.NET).map_root_user()


def _pid_mount_proc() -> Command:
    return (Command(TRUE).unshare(Namespace.PID | Namespace.MOUNT).map_root_user()
            .mount_proc())


def _net_parent_maps() -> Command:
    uid, gid = os.geteuid(), os.getegid()
    return Command(TRUE).unshare(Namespace.NET).set_id_maps([UidMap(0, uid)], [GidMap(0, gid)])


async def _timed(build: Callable[[], Command], n: int) -> list[int]:
    clock = time.perf_counter_ns
    await build().status()  # one untimed: loop set-up, lazy imports
    out = []
    for _ in range(n):
        t0 = clock()
        status = await build().status()
        out.append(clock() - t0)
        if not status.success():
            raise SystemExit(f"aunshare child failed: {status}")
    return out


async def _floor_timed(build: Callable[[], Command], n: int) -> list[int]:
    """The same child, with none of aunshare's async layer: the parent side
    of the clone (launch.start), then the pidfd awaited on the event loop
    and reaped. What any event-loop waiter pays at least."""
    from aunshare._linux import WEXITED, waitid_pidfd
    from aunshare.launch import start

    cmd = build()
    clock = time.perf_counter_ns
    out = []
    for i in range(n + 1):
        t0 = clock()
        started = start(cmd)
        await anyio.wait_readable(started.pidfd)
        waitid_pidfd(started.pidfd, WEXITED)
        os.close(started.pidfd)
        if i:
            out.append(clock() - t0)
    return out


def _floor(build: Callable[[], Command]) -> Batch:
    return lambda n: anyio.run(_floor_timed, build, n)


def _aunshare(build: Callable[[], Command], backend: str) -> Batch:
    return lambda n: anyio.run(_timed, build, n, backend=backend)


def _unshare_subprocess(args: list[str]) -> Batch:
    """The same, the way most Python code starts a command: subprocess.run."""
    import subprocess

    argv = [UNSHARE, *args, TRUE]

    def run(n: int) -> list[int]:
        clock = time.perf_counter_ns
        out = []
        for i in range(n + 1):
            t0 = clock()
            subprocess.run(argv, check=True)
            if i:
                out.append(clock() - t0)
        return out
    return run


def _unshare(args: list[str]) -> Batch:
    argv = [UNSHARE, *args, TRUE]

    def run(n: int) -> list[int]:
        clock = time.perf_counter_ns
        env = os.environ
        out = []
        for i in range(n + 1):
            t0 = clock()
            _, status = os.waitpid(os.posix_spawn(UNSHARE, argv, env), 0)
            if status != 0:
                raise SystemExit(f"{' '.join(argv)} failed with status {status}")
            if i:
                out.append(clock() - t0)
        return out
    return run


SCENARIOS: dict[str, tuple[dict[str, Batch], str]] = {
    "user+net, root mapped": ({
        **{f"aunshare ({b})": _aunshare(_net_root, b) for b in BACKENDS},
        "event-loop floor (no aunshare async layer)": _floor(_net_root),
        "unshare -Urn": _unshare(["-Urn"]),
        "unshare -Urn (subprocess.run)": _unshare_subprocess(["-Urn"]),
    }, "unshare -Urn"),
    "user+pid+mount, /proc": ({
        **{f"aunshare ({b})": _aunshare(_pid_mount_proc, b) for b in BACKENDS},
        "unshare -Urpfm --mount-proc": _unshare(["-Urpfm", "--mount-proc"]),
    }, "unshare -Urpfm --mount-proc"),
    "user+net, maps by the parent": ({
        **{f"aunshare ({b})": _aunshare(_net_parent_maps, b) for b in BACKENDS},
        "unshare -Urn": _unshare(["-Urn"]),
    }, "unshare -Urn"),
}


def measure(peers: dict[str, Batch], total: int, rounds: int) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in peers}
    names = list(peers)
    per_round = max(1, total // rounds)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name] += peers[name](per_round)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 samples per peer")
    parser.add_argument("-n", type=int, default=None, help="samples per peer")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--plot", metavar="PNG", help="draw the medians (needs matplotlib)")
    args = parser.parse_args()
    if UNSHARE is None:
        raise SystemExit("unshare(1) (util-linux) is not installed")
    n = args.n or (60 if args.quick else 400)
    print(f"# namespaces: {n} spawns of {TRUE} per peer; Python "
          f"{platform.python_version()}, {os.cpu_count()} cores, Linux {platform.release()}, "
          f"uid {os.geteuid()}")
    report = {}
    for title, (peers, reference) in SCENARIOS.items():
        samples = measure(peers, n, rounds=10)
        ref = statistics.median(samples[reference])
        print(f"\n## {title}\n")
        print("| peer | median us | p90 us | ratio to " + reference + " |")
        print("|---|---:|---:|---:|")
        rows = {}
        for name, values in samples.items():
            med = statistics.median(values)
            p90 = statistics.quantiles(values, n=10)[-1]
            rows[name] = {"median_us": med / 1000, "p90_us": p90 / 1000, "ratio": med / ref}
            print(f"| {name} | {med / 1000:.1f} | {p90 / 1000:.1f} | {med / ref:.2f}x |")
        report[title] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.plot:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _plot import bar_chart

        bar_chart(args.plot, f"/bin/true in new namespaces: median us per spawn+wait "
                  f"({platform.python_version()}, {os.cpu_count()} cores)",
                  {t: {p: v["median_us"] for p, v in rows.items()} for t, rows in report.items()},
                  "microseconds (lower is better)")


if __name__ == "__main__":
    main()
