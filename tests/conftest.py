"""Shared fixtures: the three event loops, leak counters, an unprivileged runner."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

import aunshare
from aunshare.executors import get_executor

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534

BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request):
    """Every async test runs on asyncio, uvloop and trio."""
    return request.param


def pytest_asyncio_loop_factories(config, item):
    """pytest-asyncio tests run on the default asyncio loop and on uvloop."""
    import asyncio

    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def pytest_report_header(config):
    return f"aunshare executor: {get_executor().name}"


def open_fds() -> set[int]:
    """The descriptors this process has open now."""
    return {int(x) for x in os.listdir("/proc/self/fd")}


def zombie_children() -> list[int]:
    """Pids of this process's children that are zombies."""
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == me:
            out.append(int(name))
    return out


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists or is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def run_unprivileged(code: str, *, check: bool = True) -> aunshare.Output:
    """Run ``code`` with this interpreter as uid/gid 65534, through aunshare.

    The snippet can import aunshare and anyio. Skips when this machine will
    not let uid 65534 run the interpreter (tests/run.sh arranges that).
    """
    env_path = os.pathsep.join([str(REPO), *[p for p in sys.path if p and "site-packages" in p]])
    cmd = (
        aunshare.Command(sys.executable)
        .args(["-I", "-c", "import sys; sys.path[:0] = sys.argv[1].split(':'); "
               "exec(sys.argv[2])", env_path, textwrap.dedent(code)])
        .uid(NOBODY).gid(NOBODY).groups([])
        .env("HOME", "/tmp")
        .env("AUNSHARE_EXECUTOR", get_executor().name)
        .current_dir("/tmp")
    )
    try:
        out = await cmd.output()
    except aunshare.Exec as exc:
        if exc.errno != 13:
            raise
        pytest.skip(f"uid 65534 may not run this interpreter ({exc}); tests/run.sh "
                    "makes its directory traversable")
    if check and not out.status.success():
        raise AssertionError(f"unprivileged snippet failed: {out.status}\n"
                             f"{out.stderr.decode(errors='replace')}")
    return out
