"""The aarch64 executors under user-mode qemu, from an x86_64 (or any) host.

qemu-aarch64 runs a Debian arm64 interpreter that imports this checkout and
spawns: the native aarch64 routine really executes (emulated), and since
user-mode qemu answers clone3 with ENOSYS, rejects CLONE_PIDFD (before 8.0)
and turns CLONE_VM|CLONE_VFORK into a fork, this is also the harshest test
of the clone(2) fallback. Needs qemu-aarch64 and an arm64 userland with
python3.11: the directory in $AUNSHARE_AARCH64_ROOT, or one the VM test
rig left in its cache (a directory with usr/bin/python3.11 and
lib/ld-linux-aarch64.so.1). Skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from aunshare._linux import ARCH

REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(r"""
    import json, sys
    import anyio
    from aunshare import Command, Stdio, errors
    from aunshare._linux import ARCH
    from aunshare.executors import get_executor

    async def main():
        out = {"arch": ARCH}
        out["echo"] = (await Command("/bin/echo").arg("hi").output()).stdout.decode()
        try:
            await Command("/nonexistent/program").status()
        except errors.Exec as exc:
            out["missing"] = exc.errno
        try:
            await Command("/bin/true").current_dir("/nonexistent").status()
        except errors.Chdir as exc:
            out["chdir"] = exc.errno
        child = await (Command("/bin/cat").stdin(Stdio.piped()).stdout(Stdio.piped())
                       .spawn())
        piped, _ = await child.communicate(b"through a pipe")
        out["pipe"] = [piped.decode(), (await child.wait()).code]
        sleeper = await Command("/bin/sleep").arg("0.2").spawn()  # not reaped yet:
        late = await Command("/bin/echo").arg("late").output()    # no vfork path
        out["late"] = late.stdout.decode()
        out["sleeper"] = (await sleeper.wait()).code
        ex = get_executor()
        out["executor"] = [ex.name, ex.clone_syscall, ex.into_cgroup]
        return out

    print(json.dumps(anyio.run(main)))
""")


def _cache_roots() -> list[Path]:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    cache = Path(base) / "aunshare-vm"
    return sorted(cache.glob("*"), key=lambda p: p.stat().st_mtime, reverse=True) \
        if cache.is_dir() else []


def _userland() -> Path | None:
    candidates = [Path(p) for p in [os.environ.get("AUNSHARE_AARCH64_ROOT")] if p]
    for root in [*candidates, *_cache_roots()]:
        if ((root / "usr/bin/python3.11").exists()
                and (root / "lib/ld-linux-aarch64.so.1").exists()):
            return root
    return None


ROOT = _userland()
QEMU = shutil.which("qemu-aarch64")
pytestmark = pytest.mark.skipif(
    ARCH == "aarch64" or QEMU is None or ROOT is None,
    reason="runs on another architecture, with qemu-aarch64 and an arm64 userland "
           "($AUNSHARE_AARCH64_ROOT)")


def _pythonpath(root: Path) -> str:
    paths = [str(REPO)]
    own = list(root.glob("usr/local/lib/python3.11/dist-packages"))
    if own and (own[0] / "anyio").is_dir():
        paths += map(str, own)
    else:  # anyio and its dependencies are pure Python: the host's copy works
        paths.append(str(Path(anyio.__file__).resolve().parent.parent))
    return os.pathsep.join(paths)


@pytest.mark.parametrize("executor", ["native", "portable"])
def test_spawns_under_qemu_user(executor):
    assert ROOT is not None and QEMU is not None
    env = dict(os.environ, AUNSHARE_EXECUTOR=executor, PYTHONPATH=_pythonpath(ROOT),
               PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([QEMU, "-L", str(ROOT), str(ROOT / "usr/bin/python3.11"),
                           "-c", SCRIPT], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout.decode().splitlines()[-1])
    assert out["arch"] == "aarch64"
    assert out["echo"] == "hi\n"
    assert out["missing"] == 2      # ENOENT, reported through the error pipe
    assert out["chdir"] == 2
    assert out["pipe"] == ["through a pipe", 0]
    assert out["late"] == "late\n"
    assert out["sleeper"] == 0
    assert out["executor"] == [executor, "clone", False]


def test_default_executor_is_native_on_aarch64():
    """AUNSHARE_EXECUTOR unset: aarch64 gets the native routine."""
    assert ROOT is not None and QEMU is not None
    env = {k: v for k, v in os.environ.items() if k != "AUNSHARE_EXECUTOR"}
    env.update(PYTHONPATH=_pythonpath(ROOT), PYTHONDONTWRITEBYTECODE="1")
    code = "from aunshare.executors import get_executor; print(get_executor().name)"
    proc = subprocess.run([QEMU, "-L", str(ROOT), str(ROOT / "usr/bin/python3.11"),
                           "-c", code], env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == "native"
    assert sys.platform == "linux"
