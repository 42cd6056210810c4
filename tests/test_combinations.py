"""Features built apart, used together: every pair of the sandbox's
features, and all of them at once, on one real child.

Each feature adds its configuration and a line of shell whose output shows
it took effect (and shows nothing when the feature is off), so a pair that
spawns but silently drops one side fails here. Written after limits and
a new root, merged from separate work, failed together at clone3.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import pytest

from aunshare import Command, Landlock, Namespace, SeccompFilter
from aunshare._linux import ARCH
from aunshare.executors.init import INIT, init_memfd

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.geteuid() != 0, reason="limits need a writable cgroup: run as root"),
]
ONE_LOOP = pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])


@pytest.fixture(autouse=True)
def _memfd_made():
    """The init's memfd lives as long as the process: make it before the
    descriptor accounting starts."""
    if ARCH in INIT:
        init_memfd()


def _user(cmd: Command) -> Command:
    return cmd.unshare(Namespace.USER).map_root_user()


def _view(cmd: Command) -> Command:
    return (cmd.new_root().bind_mount("/usr", read_only=True)
            .symlink("usr/bin", "/bin").symlink("usr/lib", "/lib")
            .symlink("usr/lib64", "/lib64").tmpfs("/tmp").mount_dev().mount_proc())


def _init(cmd: Command) -> Command:
    return cmd.unshare(Namespace.PID | Namespace.MOUNT).mount_proc().init_process()


def _limits(cmd: Command) -> Command:
    return cmd.limit_memory("256M").limit_pids(64)


def _landlock(cmd: Command) -> Command:
    return cmd.landlock(Landlock(read_only=("/proc",), read_write=("/dev/null",),
                                 execute=("/usr",)))


def _seccomp(cmd: Command) -> Command:
    return cmd.seccomp(SeccompFilter().deny(["uname"]))


# name -> (configure, shell line, the line it prints when on, when off)
FEATURES: dict[str, tuple[Callable[[Command], Command], str, str, str]] = {
    "user": (_user, 'read a b c < /proc/self/uid_map; echo "user $c"', "user 1",
             "user 4294967295"),
    "view": (_view, "[ -e /etc/passwd ] && echo 'view off' || echo 'view on'", "view on",
             "view off"),
    "init": (_init, 'echo "pid $$"', "pid 2", ""),
    "limits": (_limits, "", "", ""),
    "landlock": (_landlock, "ls / >/dev/null 2>&1 && echo 'landlock off' || echo 'landlock on'",
                 "landlock on", "landlock off"),
    "seccomp": (_seccomp, "uname >/dev/null 2>&1 && echo 'seccomp off' || echo 'seccomp on'",
                "seccomp on", "seccomp off"),
}


async def _check(names: tuple[str, ...]) -> None:
    if "init" in names and ARCH not in INIT:
        pytest.skip(f"no init for {ARCH}")
    cmd = Command("/bin/sh")
    lines, want = [], []
    for name, (configure, line, on, off) in FEATURES.items():
        if name in names:
            cmd = configure(cmd)
        if line:
            lines.append(line)
        expected = on if name in names else off
        if name == "init" and name not in names:
            continue  # the pid is whatever it is
        if expected:
            want.append(expected)
    if "init" not in names:
        lines = [x for x in lines if not x.startswith("echo \"pid")]
    if "landlock" in names and ("view" in names or "init" in names):
        # Landlock rules name the parent's inodes: the /proc mounted for the
        # child is another file system, outside them, so uid_map is unreadable.
        lines.pop(0)
        want.pop(0)
    out = await cmd.args(["-c", "; ".join(lines)]).output()
    assert out.status.success(), (names, str(out.status), out.stderr)
    assert out.stdout.decode().split("\n")[:-1] == want, (names, out.stderr)
    usage = out.status.cgroup_usage
    if "limits" in names:
        assert usage is not None and usage.memory_limit == 256 << 20, names
    else:
        assert usage is None, names


@ONE_LOOP
@pytest.mark.parametrize("names", list(itertools.combinations(FEATURES, 2)),
                         ids="+".join)
async def test_every_pair_of_features(names, no_leaks):
    await _check(names)


@ONE_LOOP
async def test_all_features_together(no_leaks):
    await _check(tuple(FEATURES))
