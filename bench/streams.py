"""Stream benchmark: read a child's stdout to EOF, against peers and a shell pipe.

The child is ``head -c SIZE /dev/zero`` (1 GiB by default); each peer spawns
it with stdout piped, reads everything, discards it, and waits for the exit.
Timed from before the spawn to after the wait:

* ``aunshare (asyncio|uvloop|trio)`` - ``child.stdout.receive_into()`` into
  one reused 1 MiB buffer, under ``anyio.run`` on each backend.
* ``output(max_output=1M ...)`` - aunshare's ``Command.output()`` keeping the
  first (or last) MiB and draining the rest: the bounded capture's cost.
* ``asyncio.create_subprocess_exec`` - ``proc.stdout.read(1 MiB)`` in a loop
  (plain asyncio loop), and the same on uvloop.
* ``trio.lowlevel.open_process`` - ``proc.stdout.receive_some(1 MiB)``.
* ``anyio.open_process`` - ``process.stdout.receive(1 MiB)`` (asyncio backend).
* ``shell pipe`` - ``sh -c 'head -c SIZE /dev/zero | cat > /dev/null'`` run
  with ``subprocess.run``: no Python in the data path at all, the ceiling.

Every peer asks for up to 1 MiB per read, so none is held back by a small
read size. Peers run interleaved in rounds, in rotating order, so machine
noise lands on all of them alike; the table shows the median throughput
(GB/s, 10^9 bytes per second) over the rounds and ratios against the shell
pipe and against aunshare. A peer whose package is missing is reported "not
installed".

Usage::

    python bench/streams.py                  # 1 GiB, 3 rounds
    python bench/streams.py --size 256M      # a quicker run
    python bench/streams.py --pipe-size 64K  # aunshare with another pipe capacity
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run from a checkout without installing: the package is one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

import aunshare
import aunshare.launch

try:
    import trio
except ImportError:
    trio = None
try:
    import uvloop
except ImportError:
    uvloop = None

READ = 1 << 20
AUNSHARE = "aunshare (asyncio)"
SHELL = "shell pipe (head | cat)"
# The bounded capture (output(max_output=...)): measured against the plain
# reads above, not one of the backends the target compares with the peers.
BOUNDED_HEAD = "output(max_output=1M), aunshare asyncio"
BOUNDED_TAIL = "output(max_output=1M, keep=tail), aunshare asyncio"
BOUNDED = (BOUNDED_HEAD, BOUNDED_TAIL)

# A run reads SIZE bytes through one peer and returns the seconds it took.
Run = Callable[[int], float]


def _argv(size: int) -> list[str]:
    return ["head", "-c", str(size), "/dev/zero"]


async def _aunshare(size: int) -> float:
    t0 = time.perf_counter()
    child = await aunshare.Command("head").args(["-c", str(size), "/dev/zero"]).stdout(
        aunshare.Stdio.piped()).spawn()
    buf = bytearray(READ)
    receive_into = child.stdout.receive_into
    total = 0
    while n := await receive_into(buf):
        total += n
    await child.wait()
    dt = time.perf_counter() - t0
    await child.aclose_streams()
    _check(total, size, child.returncode)
    return dt


async def _aunshare_bounded(size: int, keep: str) -> float:
    t0 = time.perf_counter()
    out = await aunshare.Command("head").args(["-c", str(size), "/dev/zero"]).output(
        max_output=READ, keep=keep)
    dt = time.perf_counter() - t0
    _check(size if out.stdout_truncated and len(out.stdout) == READ else -1, size,
           out.status.returncode)
    return dt


def _aunshare_bounded_run(keep: str) -> Run:
    def run(size: int) -> float:
        return anyio.run(_aunshare_bounded, size, keep, backend="asyncio")
    return run


def _aunshare_run(backend: str, options: dict | None = None) -> Run:
    def run(size: int) -> float:
        return anyio.run(_aunshare, size, backend=backend, backend_options=options)
    return run


async def _asyncio(size: int) -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*_argv(size), stdout=asyncio.subprocess.PIPE)
    read = proc.stdout.read
    total = 0
    while data := await read(READ):
        total += len(data)
    await proc.wait()
    dt = time.perf_counter() - t0
    _check(total, size, proc.returncode)
    return dt


def _asyncio_run(size: int) -> float:
    return asyncio.run(_asyncio(size))


def _uvloop_run(size: int) -> float:
    return uvloop.run(_asyncio(size))


async def _trio(size: int) -> float:
    t0 = time.perf_counter()
    proc = await trio.lowlevel.open_process(_argv(size), stdout=subprocess.PIPE)
    receive = proc.stdout.receive_some
    total = 0
    while data := await receive(READ):
        total += len(data)
    await proc.wait()
    dt = time.perf_counter() - t0
    await proc.stdout.aclose()
    _check(total, size, proc.returncode)
    return dt


def _trio_run(size: int) -> float:
    return trio.run(_trio, size)


async def _anyio(size: int) -> float:
    t0 = time.perf_counter()
    async with await anyio.open_process(_argv(size), stdout=subprocess.PIPE,
                                        stderr=None) as proc:
        receive = proc.stdout.receive
        total = 0
        try:
            while True:
                total += len(await receive(READ))
        except anyio.EndOfStream:
            pass
        await proc.wait()
    dt = time.perf_counter() - t0
    _check(total, size, proc.returncode)
    return dt


def _anyio_run(size: int) -> float:
    return anyio.run(_anyio, size, backend="asyncio")


def _shell_run(size: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", f"head -c {size} /dev/zero | cat > /dev/null"], check=True)
    return time.perf_counter() - t0


def _check(total: int, size: int, code: int | None) -> None:
    if total != size or code != 0:
        raise RuntimeError(f"read {total} of {size} bytes, exit code {code}")


def peers() -> dict[str, Run | None]:
    """Every peer in table order; None where its package is missing."""
    return {
        AUNSHARE: _aunshare_run("asyncio"),
        "aunshare (uvloop)": _aunshare_run("asyncio", {"use_uvloop": True}) if uvloop else None,
        "aunshare (trio)": _aunshare_run("trio") if trio else None,
        BOUNDED_HEAD: _aunshare_bounded_run("head"),
        BOUNDED_TAIL: _aunshare_bounded_run("tail"),
        "asyncio.create_subprocess_exec": _asyncio_run,
        "uvloop create_subprocess_exec": _uvloop_run if uvloop else None,
        "trio.lowlevel.open_process": _trio_run if trio else None,
        "anyio.open_process (asyncio)": _anyio_run,
        SHELL: _shell_run,
    }


def measure(runs: dict[str, Run], size: int, rounds: int) -> dict[str, list[float]]:
    """Interleave the peers in ``rounds`` rounds; return seconds per peer."""
    names = list(runs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)  # rotate so no peer always follows the same neighbour
        for name in names[k:] + names[:k]:
            gc.collect()
            samples[name].append(runs[name](size))
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return samples


def parse_size(text: str) -> int:
    """'1G', '256M', '64K' or a byte count (binary units)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if text and text[-1] in units:
            value = int(float(text[:-1]) * units[text[-1]])
        else:
            value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1G, 256M)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the size must be positive")
    return value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=1 << 30,
                   help="bytes through each child: 1G (default), 256M, 64K, ...")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--pipe-size", type=parse_size, default=None,
                   help="pipe capacity aunshare asks for (default: the library's, "
                        f"{aunshare.descriptors.PIPE_SIZE >> 10} KiB)")
    p.add_argument("--json", metavar="FILE", help="also write the medians as JSON")
    args = p.parse_args()
    if args.pipe_size is not None:
        aunshare.descriptors.PIPE_SIZE = args.pipe_size
    rounds = max(1, args.rounds)

    all_peers = peers()
    names = list(all_peers)
    missing = {n for n, r in all_peers.items() if r is None}
    runs = {n: r for n, r in all_peers.items() if r is not None}
    ex = aunshare.executors.get_executor()
    print(f"python {platform.python_version()}, {platform.machine()}, kernel "
          f"{platform.release()}, {os.cpu_count()} cpus; aunshare executor {ex.name}, "
          f"pipe {aunshare.descriptors.PIPE_SIZE >> 10} KiB; {args.size / (1 << 20):g} MiB "
          f"per run, {rounds} rounds", flush=True)
    for run in runs.values():  # warm-up: page in binaries and code paths
        run(min(args.size, 16 << 20))
    samples = measure(runs, args.size, rounds)
    gbps = {n: args.size / statistics.median(s) / 1e9 for n, s in samples.items()}

    shell = gbps.get(SHELL)
    ours = gbps.get(AUNSHARE)
    print()
    print("| peer | median GB/s | min..max GB/s | vs shell pipe | aunshare (asyncio) vs it |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        if name in missing:
            print(f"| {name} | not installed | - | - | - |")
            continue
        rates = sorted(args.size / s / 1e9 for s in samples[name])
        print(f"| {name} | {gbps[name]:.2f} | {rates[0]:.2f}..{rates[-1]:.2f} "
              f"| {gbps[name] / shell:.2f}x | {ours / gbps[name]:.2f}x |")

    print()
    peer_names = [n for n in gbps if not n.startswith("aunshare") and n != SHELL
                  and n not in BOUNDED]
    best_peer = max(peer_names, key=gbps.__getitem__)
    slowest_ours = min((n for n in gbps if n.startswith("aunshare")), key=gbps.__getitem__)
    beat = gbps[slowest_ours] > gbps[best_peer]
    print(f"slowest aunshare backend ({slowest_ours}, {gbps[slowest_ours]:.2f} GB/s) vs "
          f"fastest peer ({best_peer}, {gbps[best_peer]:.2f} GB/s): "
          f"{gbps[slowest_ours] / gbps[best_peer]:.2f}x (target > 1.00x) "
          f"[{'met' if beat else 'MISSED'}]")
    r = ours / shell
    print(f"{AUNSHARE} / {SHELL}: {r:.2f}x (target >= 0.60x) "
          f"[{'met' if r >= 0.6 else 'MISSED'}]")

    if args.json:
        data = {
            "unit": "GB/s (1e9 bytes/s), median over rounds",
            "size": args.size,
            "rounds": rounds,
            "pipe_size": aunshare.descriptors.PIPE_SIZE,
            "python": platform.python_version(),
            "kernel": platform.release(),
            "executor": ex.name,
            "not_installed": sorted(missing),
            "gbps": {n: round(v, 3) for n, v in gbps.items()},
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
