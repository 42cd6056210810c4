"""Shared fixtures: the three event loops, leak counters, an unprivileged runner."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import aunshare
from aunshare.executors import get_executor

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534

_ALL_BACKENDS = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}
# AUNSHARE_TEST_BACKENDS=asyncio,trio narrows the loops (the emulated VMs
# test the kernel and the architecture, not the loops again).
_WANTED = os.environ.get("AUNSHARE_TEST_BACKENDS") or ",".join(_ALL_BACKENDS)
BACKENDS = [pytest.param(_ALL_BACKENDS[name], id=name) for name in _WANTED.split(",")]


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
    path, reason = _cgroup_v2_parent()
    where = f"writable cgroup v2 at {path}" if path else f"cgroup tests skip: {reason}"
    return f"aunshare executor: {get_executor().name}; {where}"


def _cgroup_v2_parent() -> tuple[str | None, str]:
    """A cgroup v2 directory this process may create cgroups in, or why not."""
    from aunshare import cgroup

    mount = cgroup.v2_mount()
    if mount is None:
        return None, "no cgroup v2 hierarchy is mounted (see /proc/self/mountinfo)"
    base = cgroup.current() or mount
    if not os.access(base, os.W_OK):
        return None, f"cgroup v2 is mounted at {mount} but {base} is not writable"
    return base, ""


@pytest.fixture(scope="session")
def cgroup_session_parent():
    """A cgroup created for this test session, removed at its end."""
    base, reason = _cgroup_v2_parent()
    if base is None:
        print(f"\nskipping cgroup tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    for stale in Path(base).glob("aunshare-tests-*"):  # of a killed session
        if not Path("/proc", stale.name.rsplit("-", 1)[1]).exists():
            try:
                stale.rmdir()
            except OSError:
                pass
    path = os.path.join(base, f"aunshare-tests-{os.getpid()}")
    try:
        os.mkdir(path)
    except OSError as exc:
        reason = f"cannot create a cgroup under {base}: {exc}"
        print(f"\nskipping cgroup tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    yield path
    os.rmdir(path)


@pytest.fixture
def cgroup_parent(cgroup_session_parent):
    """The session cgroup; the test fails if it leaves a cgroup behind in it."""
    yield cgroup_session_parent
    left = [d for d in os.listdir(cgroup_session_parent)
            if os.path.isdir(os.path.join(cgroup_session_parent, d))]
    for d in left:  # clean up so later tests start clean, then fail
        from aunshare import cgroup

        cgroup.kill(os.path.join(cgroup_session_parent, d).encode())
    assert left == [], f"cgroups left behind: {left}"


def open_fds() -> set[int]:
    """The descriptors this process has open now."""
    return {int(x) for x in os.listdir("/proc/self/fd")}


def _children() -> list[tuple[int, str]]:
    """(pid, state letter) of each of this process's children."""
    me = str(os.getpid())
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[1] == me:
            out.append((int(name), fields[0]))
    return out


def zombie_children() -> list[int]:
    """Pids of this process's children that are zombies."""
    return [pid for pid, state in _children() if state == "Z"]


def live_children() -> list[int]:
    """Pids of this process's children that are still running (not zombies)."""
    return [pid for pid, state in _children() if state not in ("Z", "X")]


def descendants(pid: int) -> set[int]:
    """Live processes below ``pid``, following /proc parent links."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] not in ("Z", "X"):
                parents[int(name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists or is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while read
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def run_unprivileged(code: str, *, check: bool = True,
                           configure: Callable[[aunshare.Command], aunshare.Command] | None = None,
                           ) -> aunshare.Output:
    """Run ``code`` with this interpreter as uid/gid 65534, through aunshare.

    The snippet can import aunshare and anyio. Skips when this machine will
    not let uid 65534 run the interpreter (tests/run.sh arranges that).
    ``configure`` may add to the Command first (what root sets up before
    the uid changes: a mount namespace of its own, say).
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
    if configure is not None:
        cmd = configure(cmd)
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


@pytest.fixture
async def no_leaks():
    """Fail the test if it leaves a descriptor, a zombie or a running child
    behind (measured inside the running event loop, which has descriptors
    of its own)."""
    before = open_fds()
    yield
    assert zombie_children() == []
    assert live_children() == []
    assert open_fds() == before


@pytest.fixture(autouse=True)
def _no_orphans_left():
    """A test must not leave a Child it dropped while running: aunshare
    would keep its pidfd until it exits (to reap it), which the next
    test's descriptor accounting would see."""
    yield
    import gc

    from aunshare.child import _orphans

    gc.collect()
    assert not _orphans, f"children dropped while running: {_orphans}"
