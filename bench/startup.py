"""Start-up time of ``import aunshare`` and of the ``aunshare`` command.

Runs each case as a fresh process, the cases interleaved (one run of each,
then again) so that a burst of load on the machine hits them all alike,
and prints median, min and max wall time in milliseconds, with the ratio
of the median to the target where there is one. Beside them, the floor:
``python -c pass``, and util-linux ``unshare true`` when installed.

    python bench/startup.py [-n RUNS] [--python PY] [--aunshare SCRIPT]

Always exits 0: it measures, it does not judge.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

# Targets in milliseconds (median), by case name.
TARGETS = {
    "import aunshare": 60.0,
    "aunshare -- /bin/true": 80.0,
    "python -m aunshare -- /bin/true": 80.0,
}


def cases(python: str, script: str | None) -> dict[str, list[str]]:
    """Name -> argv of every case this machine can run."""
    found = {
        "python -c pass": [python, "-c", "pass"],
        "import aunshare": [python, "-c", "import aunshare"],
    }
    if script is not None:
        found["aunshare -- /bin/true"] = [script, "--", "/bin/true"]
    found["python -m aunshare -- /bin/true"] = [python, "-m", "aunshare", "--", "/bin/true"]
    unshare = shutil.which("unshare")
    if unshare is not None:
        found["unshare true"] = [unshare, "true"]
    return found


def run_once(argv: list[str]) -> tuple[float, float, int]:
    """Wall time and CPU time (user + system, the process and what it
    waited for) in ms of one run of ``argv`` (output discarded), and its
    wait status. posix_spawn keeps the measuring side's cost small; the
    CPU time is steadier than the wall time on a loaded machine."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1)]
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        elapsed = (time.perf_counter() - start) * 1000
    finally:
        os.close(devnull)
    return elapsed, (usage.ru_utime + usage.ru_stime) * 1000, status


def bytecode_cached(python: str) -> bool:
    """Whether ``python`` finds compiled bytecode for aunshare's modules."""
    probe = ("import importlib.util, os, aunshare.cli as m; "
             "print(os.path.exists(importlib.util.cache_from_source(m.__file__)))")
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    return out.stdout.strip() == "True"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--runs", type=int, default=30, help="runs of each case (default 30)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter with aunshare installed (default: this one)")
    p.add_argument("--aunshare", default=None,
                   help="the aunshare console script (default: next to --python, else PATH)")
    args = p.parse_args()

    script = args.aunshare
    if script is None:
        beside = os.path.join(os.path.dirname(args.python), "aunshare")
        script = beside if os.access(beside, os.X_OK) else shutil.which("aunshare")
    todo = cases(args.python, script)
    if script is None:
        print("no aunshare console script found: skipping that case", file=sys.stderr)

    times: dict[str, list[float]] = {name: [] for name in todo}
    cpu: dict[str, list[float]] = {name: [] for name in todo}
    failed: dict[str, int] = {}
    for argv in todo.values():  # one unmeasured run each: warm the page cache
        run_once(argv)
    for _ in range(args.runs):
        for name, argv in todo.items():
            elapsed, used, status = run_once(argv)
            times[name].append(elapsed)
            cpu[name].append(used)
            if status != 0:
                failed[name] = status

    print(f"{'wall time, ms':34} {'median':>8} {'min':>8} {'max':>8} {'cpu med':>8}   target")
    for name, values in times.items():
        med = statistics.median(values)
        line = (f"{name:34} {med:8.1f} {min(values):8.1f} {max(values):8.1f} "
                f"{statistics.median(cpu[name]):8.1f}")
        target = TARGETS.get(name)
        if target is not None:
            line += f"   {target:.0f}: x{med / target:.2f}"
        if name in failed:
            line += f"   (wait status {failed[name]:#x}: check this case)"
        print(line)
    print(f"{args.runs} runs each, interleaved; {os.cpu_count()} CPUs; "
          f"python {sys.version.split()[0]} at {args.python}")
    if not bytecode_cached(args.python):
        print("note: aunshare's modules have no cached bytecode (PYTHONDONTWRITEBYTECODE?): "
              "every run above compiled them; an installed package would not")
    return 0


if __name__ == "__main__":
    sys.exit(main())
