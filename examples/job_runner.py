"""The job runner: 50 short shell jobs, at most 8 at a time, with failures,
a program that does not exist and two jobs that overrun their timeout.
Prints a summary table; asserts the counts and that the results come back
in submission order.

Run: python examples/job_runner.py [asyncio|uvloop|trio]
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import anyio

import aunshare
from aunshare import Command, KillPolicy

TIMEOUT = 1.0


def jobs() -> list[aunshare.runner.CommandLike]:
    """50 jobs: most echo their number; every 7th exits 1, every 12th exits 2;
    job 20 names a program that does not exist; jobs 30 and 40 sleep past
    the timeout (and ignore SIGTERM, so the policy's SIGKILL is what ends them)."""
    out: list[aunshare.runner.CommandLike] = []
    for n in range(50):
        if n == 20:
            out.append(["no-such-program-for-aunshare", str(n)])
        elif n in (30, 40):
            out.append(Command("sh").args(["-c", f"trap '' TERM; echo job {n}; sleep 30"]))
        elif n % 7 == 6:
            out.append(["sh", "-c", f"echo job {n} failing >&2; exit 1"])
        elif n % 12 == 11:
            out.append(["sh", "-c", f"echo job {n}; exit 2"])
        else:
            out.append(["sh", "-c", f"echo job {n}"])
    return out


def outcome(r: aunshare.JobResult) -> str:
    if isinstance(r.error, aunshare.TimeoutExpired):
        return "timeout"
    if r.status is None:
        return "not started"
    return "ok" if r.ok else f"exit {r.returncode}"


async def main() -> None:
    done_order: list[int] = []

    def progress(result: aunshare.JobResult, done: int, total: int | None) -> None:
        done_order.append(result.index)

    t0 = time.monotonic()
    results = await aunshare.run_many(
        jobs(), limit=8, timeout=TIMEOUT, progress=progress,
        kill_policy=KillPolicy(grace=0.2))
    wall = time.monotonic() - t0

    print(f"{'job':>4}  {'outcome':<12} {'elapsed':>8}  output")
    for r in results:
        text = (r.stdout or r.stderr or b"").decode().strip()
        if r.status is None:
            text = type(r.error).__name__
        if r.index < 8 or r.status is None or not r.ok:
            print(f"{r.index:>4}  {outcome(r):<12} {r.elapsed:>7.3f}s  {text}")
    counts = Counter(outcome(r) for r in results)
    print("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"; {len(results)} jobs in {wall:.2f}s")

    # One result per job, in submission order, whatever order they finished in.
    assert [r.index for r in results] == list(range(50))
    assert sorted(done_order) == list(range(50))
    assert counts == {"ok": 37, "exit 1": 6, "exit 2": 4, "timeout": 2, "not started": 1}, counts
    assert results[5].stdout == b"job 5\n" and results[6].stderr == b"job 6 failing\n"
    assert isinstance(results[20].error, aunshare.Exec)
    for n in (30, 40):
        r = results[n]
        # Stopped by the policy: SIGTERM was ignored, SIGKILL 0.2 s later.
        assert r.status is not None and r.status.signal == 9, r.status
        assert r.stdout == f"job {n}\n".encode()          # output captured before the timeout
        assert TIMEOUT <= r.elapsed < TIMEOUT + 5
    # The two overruns ran concurrently with everything else.
    assert wall < 2 * TIMEOUT + 5, wall


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    anyio.run(main, backend="asyncio" if backend == "uvloop" else backend, backend_options=options)
