"""The filesystem view and the loopback interface: a bubblewrap-style
sandbox built from plan steps, checked from inside (as root and as uid
65534 through a user namespace) and against ``bwrap`` itself.

The event loop plays no part in building a sandbox (the parent's side is
the same synchronous launch for every loop), so these tests run on asyncio
only.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aunshare import Command, Mount, Namespace
from tests.conftest import REPO, run_unprivileged

pytestmark = [pytest.mark.anyio,
              pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])]

DEV_NODES = ["core", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
             "stdout", "tty", "urandom", "zero"]

# What the sandbox's shell reports, one JSON line per fact, read by _facts().
PROBE = r"""
ps -e -o pid=,comm= > /tmp/ps  # first: no command substitution running yet
probe() { printf '{"%s": "%s"}\n' "$1" "$(echo "$2" | tr '\n' '|' | sed 's/"/\\"/g')"; }
probe usr_write "$(touch /usr/aunshare-probe 2>&1)"
probe tmp_before "$(ls -A /tmp | grep -v '^ps$')"
echo data > /tmp/f && probe tmp_after "$(cat /tmp/f)"
probe dev "$(ls -A /dev)"
probe ps "$(tr -s ' ' < /tmp/ps)"
probe host_file "$(test -e "$1" && echo visible || echo hidden)"
probe root "$(ls -A /)"
probe uid "$(id -u)"
"""


def sandbox(cmd: Command) -> Command:
    """The sandbox of the issue: a new root with /usr read-only, the
    distribution's /bin, /lib... symlinks, a tmpfs /tmp, a /dev and a /proc."""
    cmd.new_root().bind_mount("/usr", read_only=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{name}"):
            cmd.symlink(os.readlink(f"/{name}"), f"/{name}")
        elif os.path.isdir(f"/{name}"):
            cmd.bind_mount(f"/{name}", read_only=True)
    return (cmd.tmpfs("/tmp").mount_dev().mount_proc("/proc")
            .env_clear().env("PATH", "/usr/bin:/bin"))


def _facts(stdout: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stdout.decode().splitlines():
        out.update(json.loads(line))
    return out


def _check(facts: dict[str, str], uid: str) -> None:
    assert "Read-only file system" in facts["usr_write"], facts
    assert facts["tmp_before"] == "|" and facts["tmp_after"] == "data|", facts
    assert facts["dev"].split("|")[:-1] == DEV_NODES, facts
    # only the sandbox's shell (pid 1) and ps itself, in its own pid namespace
    procs = [p.split() for p in facts["ps"].split("|") if p.strip()]
    assert [c for _, c in procs] == ["sh", "ps"] and procs[0][0] == "1", facts
    assert facts["host_file"] == "hidden|", facts
    assert facts["root"].split("|")[:-1] == sorted(
        ["bin", "dev", "lib", "lib64", "proc", "sbin", "tmp", "usr"]), facts
    assert facts["uid"] == uid + "|", facts


async def test_sandbox_as_root(no_leaks, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("host only")
    before = Path("/proc/self/mountinfo").read_text()
    cmd = sandbox(Command("sh").args(["-c", PROBE, "sh", str(secret)])
                  .unshare(Namespace.PID | Namespace.NET | Namespace.IPC | Namespace.UTS))
    out = await cmd.output()
    assert out.status.success(), out.stderr.decode()
    _check(_facts(out.stdout), "0")
    assert Path("/proc/self/mountinfo").read_text() == before
    assert not Path("/usr/aunshare-probe").exists()


async def test_sandbox_unprivileged():
    out = await run_unprivileged(f"""
        import anyio, os, sys, tempfile
        sys.path.insert(0, {str(REPO)!r})
        from aunshare import Command, Namespace
        from tests.test_sandbox import sandbox
        async def main():
            with tempfile.NamedTemporaryFile() as secret:
                before = open("/proc/self/mountinfo").read()
                cmd = sandbox(Command("sh").args(["-c", {PROBE!r}, "sh", secret.name])
                              .unshare(Namespace.USER | Namespace.PID | Namespace.NET)
                              .map_root_user())
                o = await cmd.output()
                assert o.status.success(), o.stderr
                sys.stdout.buffer.write(o.stdout)
                assert open("/proc/self/mountinfo").read() == before
        anyio.run(main)
    """)
    _check(_facts(out.stdout), "0")


async def test_sandbox_keeps_the_callers_ids_unprivileged():
    """map_current_user: uid 65534 inside too; /tmp is its own."""
    out = await run_unprivileged(f"""
        import anyio, sys
        sys.path.insert(0, {str(REPO)!r})
        from aunshare import Command, Namespace
        from tests.test_sandbox import sandbox
        async def main():
            cmd = sandbox(Command("sh").args(["-c", "id -u; touch /tmp/x && stat -c %u /tmp/x"])
                          .unshare(Namespace.USER | Namespace.PID).map_current_user())
            o = await cmd.output()
            assert o.status.success(), o.stderr
            sys.stdout.buffer.write(o.stdout)
        anyio.run(main)
    """)
    assert out.stdout.split() == [b"65534", b"65534"]


# -- networking --------------------------------------------------------------------

LO_PROBE = """
import socket
try:
    with socket.create_server(("127.0.0.1", 0)) as s, \\
            socket.create_connection(s.getsockname(), timeout=2):
        print("up")
except OSError as exc:
    print("down", exc.errno)
"""


async def test_loopback_is_up_in_a_new_network_namespace(no_leaks):
    base = Command(sys.executable).args(["-I", "-c", LO_PROBE]).unshare(Namespace.NET)
    assert (await base.output()).stdout == b"up\n"
    out = await base.loopback(False).output()
    assert out.stdout == f"down {errno.ENETUNREACH}\n".encode(), out


async def test_loopback_unprivileged():
    out = await run_unprivileged(f"""
        import anyio, sys
        from aunshare import Command, Namespace
        async def main():
            cmd = (Command(sys.executable).args(["-I", "-c", {LO_PROBE!r}])
                   .unshare(Namespace.USER | Namespace.NET).map_root_user())
            print((await cmd.output()).stdout.decode().strip())
            print((await cmd.loopback(False).output()).stdout.decode().strip())
        anyio.run(main)
    """)
    assert out.stdout.decode().split("\n")[:2] == ["up", f"down {errno.ENETUNREACH}"]


# -- the operations one by one ---------------------------------------------------------


async def test_write_file_overlay_and_mkdir(no_leaks):
    script = ("cat /etc/motd; stat -c '%a %F' /etc/motd /srv/d; echo x > /etc/motd; "
              "echo new > /usr/aunshare-overlay && cat /usr/aunshare-overlay; "
              "readlink /bin; ls /usr | grep -c .")
    cmd = (sandbox(Command("sh").args(["-c", script]).unshare(Namespace.USER).map_root_user())
           .write_file("/etc/motd", b"hello\n", mode=0o640)
           .mkdir("/srv/d", 0o700)
           .overlay("/usr", ["/usr"]))
    out = await cmd.output()
    lines = out.stdout.decode().splitlines()
    assert lines[:3] == ["hello", "640 regular file", "700 directory"], out
    assert "Read-only file system" in out.stderr.decode()
    assert lines[3:5] == ["new", "usr/bin"], out
    assert int(lines[5]) == len(os.listdir("/usr")) + 1  # the lower layer, and the new file
    assert not os.path.exists("/usr/aunshare-overlay")


async def test_without_new_root_the_view_applies_in_place(no_leaks):
    """A private /tmp over the host's: what the child writes there never
    reaches the host, and the host's mount table is as it was."""
    before = Path("/proc/self/mountinfo").read_text()
    out = await (Command("sh").args(["-c", "ls -A /tmp; echo x > /tmp/d/f; ls /tmp/d"])
                 .unshare(Namespace.USER).map_root_user()
                 .tmpfs("/tmp", size=1 << 20).mkdir("/tmp/d").output())
    assert out.stdout.split() == [b"d", b"f"], out
    assert Path("/proc/self/mountinfo").read_text() == before
    assert not os.path.exists("/tmp/d/f")


async def test_failing_step_names_its_operation(no_leaks):
    # the mount point cannot be created inside the read-only bind of /usr
    before = Path("/proc/self/mountinfo").read_text()
    cmd = (Command("true").new_root().bind_mount("/usr", read_only=True)
           .tmpfs("/usr/aunshare-missing"))
    with pytest.raises(Mount) as info:
        await cmd.status()
    exc = info.value
    assert isinstance(exc, FileNotFoundError)
    assert exc.operation == "tmpfs('/usr/aunshare-missing')"
    assert exc.destination == b"/newroot/usr/aunshare-missing" and exc.syscall == "mount"
    assert "likely causes" in str(exc)
    # remount_read_only needs a mount point
    with pytest.raises(Mount) as info:
        await Command("true").new_root().mkdir("/a").remount_read_only("/a").status()
    assert info.value.errno == errno.EINVAL and "remount_read_only('/a')" in str(info.value)
    assert Path("/proc/self/mountinfo").read_text() == before


async def test_bind_sources_checked_in_the_parent(no_leaks, tmp_path):
    with pytest.raises(Mount) as info:
        await Command("true").new_root().bind_mount(str(tmp_path / "missing"), "/m").status()
    assert isinstance(info.value, FileNotFoundError) and "optional=True" in str(info.value)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        with pytest.raises(Mount, match="is a socket"):
            await Command("true").new_root().bind_mount(str(tmp_path / "sock")).status()
    # optional: skipped, and a file source gets a file to be bound on
    (tmp_path / "f").write_text("content")
    out = await (sandbox(Command("sh").args(["-c", "ls /m; cat /f"]))
                 .unshare(Namespace.USER).map_root_user()
                 .bind_mount(str(tmp_path / "missing"), "/m", optional=True)
                 .bind_mount(str(tmp_path / "f"), "/f").output())
    assert out.stdout == b"content" and b"No such file" in out.stderr, out
    # without new_root a destination on the host must exist: nothing is created there
    with pytest.raises(Mount, match="must exist"):
        await (Command("true").unshare(Namespace.USER).map_root_user()
               .tmpfs(str(tmp_path / "nothere")).status())
    assert not (tmp_path / "nothere").exists()


@pytest.mark.parametrize("build, message", [
    (lambda c: c.tmpfs("tmp"), "tmpfs dest must be an absolute path"),
    (lambda c: c.bind_mount("/usr", "/a/../../etc"), "must not contain '..'"),
    (lambda c: c.symlink("x", "relative"), "symlink dest must be an absolute path"),
    (lambda c: c.tmpfs("/t", size=0), "tmpfs size must be a positive"),
    (lambda c: c.overlay("/o", []), "at least one directory"),
    (lambda c: c.overlay("/o", ["/usr"], upper="/u"), "upper= and work= go together"),
])
def test_bad_arguments_at_the_call(build, message, anyio_backend):
    with pytest.raises(ValueError, match=re.escape(message)):
        build(Command("true"))


@pytest.mark.parametrize("build, message", [
    (lambda c: c.new_root().bind_mount("/usr", "/proc/x"), "needs mount_proc()"),
    (lambda c: c.new_root().bind_mount("/usr", "/dev/x").mount_dev(), "needs mount_dev()"),
    (lambda c: c.write_file("/etc/x", b""), "write_file('/etc/x') needs new_root()"),
    (lambda c: c.mount_dev(), "needs new_root()"),
    (lambda c: c.overlay("/usr", ["/usr"]), "call new_root(), or give upper="),
    (lambda c: c.mkdir("/srv/x"), "would create it on the host"),
    (lambda c: c.new_root().chroot_dir("/srv"), "chroot_dir() changes the root"),
    (lambda c: c.tmpfs("/tmp").unshare(Namespace.USER).pivot_root("/srv", "old"),
     "pivot_root() changes the root"),
])
def test_bad_combinations_when_frozen(build, message, anyio_backend):
    cmd = build(Command("true"))
    with pytest.raises(ValueError, match=re.escape(message)):
        cmd.spec()


def test_the_plan_of_a_new_root(anyio_backend):
    """The view as plan rows: the staging pivot, each operation's rows in
    order (each raising Mount with its operation), the second pivot."""
    from aunshare.errors import MountTarget
    from aunshare.plan import Setup, build_plan

    spec = (Command("/bin/true").unshare(Namespace.USER).map_root_user().new_root()
            .bind_mount("/usr", read_only=True).symlink("usr/bin", "/bin")
            .tmpfs("/tmp", size=4096).spec())
    setup = Setup(b"/bin/true", (b"/bin/true",), None, (), 1, 1000, 1000,
                  mount_kinds=("dir", "", ""), umask=0o022)
    steps = [s for s in build_plan(spec, setup).steps if s.error is Mount]
    calls = [(s.syscall, s.subject.operation) for s in steps]
    assert [c for c, _ in calls] == [
        "umask", "mount", "chdir", "mkdirat", "mount", "mkdirat", "pivot_root", "chdir",
        "mkdirat", "mount", "mount_setattr",          # bind_mount: point, bind, flags
        "symlinkat",                                    # symlink
        "mkdirat", "mount",                             # tmpfs
        "umount2", "chdir", "pivot_root", "umount2", "chdir", "umask"]
    assert calls[9] == ("mount", "bind_mount('/usr', '/usr', read_only=True)")
    assert calls[11] == ("symlinkat", "symlink('usr/bin', '/bin')")
    assert all(isinstance(s.subject, MountTarget) for s in steps)
    bind = steps[9]
    assert bind.subject.source == b"/oldroot/usr" and bind.subject.destination == b"/newroot/usr"
    assert steps[13].args[4].data == b"mode=755,size=4096"
    assert steps[-1].args == (0o022,)  # the caller's umask, back before exec


def test_every_operation_implies_a_mount_namespace(anyio_backend):
    for cmd in (Command("true").new_root(), Command("true").tmpfs("/tmp"),
                Command("true").new_root().mount_proc("/proc")):
        assert cmd.spec().isolation.unshare & Namespace.MOUNT


# -- the same command line as bwrap -------------------------------------------------


def test_cli_sandbox_options(anyio_backend, tmp_path):
    """bwrap's words: -try skips, --file-data and --file (a descriptor read
    by aunshare), --perms, --tmp-overlay over --overlay-src, --new-session."""
    (tmp_path / "lower").mkdir()
    (tmp_path / "lower" / "a").write_text("from below\n")
    r, w = os.pipe()
    os.write(w, b"through a pipe")
    os.close(w)
    script = ("cat /etc/x /etc/y; echo; stat -c %a /etc/y /d; echo over > /o/b; cat /o/a /o/b; "
              "test -e /m || echo no-m; tr '\\0' ' ' < /proc/self/stat | cut -d' ' -f6")
    res = subprocess.run(
        [sys.executable, "-m", "aunshare", "--unshare-all", "--ro-bind", "/usr", "/usr",
         *[w for n in ("bin", "lib", "lib64") if os.path.islink(f"/{n}")
           for w in ("--symlink", os.readlink(f"/{n}"), f"/{n}")],
         "--proc", "/proc", "--new-session",
         "--file-data", "/etc/x", "hello ", "--perms", "0600", "--file", str(r), "/etc/y",
         "--perms", "0700", "--dir", "/d", "--bind-try", str(tmp_path / "missing"), "/m",
         "--overlay-src", str(tmp_path / "lower"), "--tmp-overlay", "/o",
         "--", "sh", "-c", script],
        pass_fds=(r,), capture_output=True, env={"PYTHONPATH": str(REPO),
                                                  "PATH": "/usr/bin:/bin"}, timeout=30)
    os.close(r)
    assert res.returncode == 0, res.stderr.decode()
    lines = res.stdout.decode().splitlines()
    # the session id is the program's own pid (1 in its pid namespace)
    assert lines == ["hello through a pipe", "600", "700", "from below", "over", "no-m", "1"]
    assert not (tmp_path / "lower" / "b").exists()

BWRAP = shutil.which("bwrap")
FLAGS = ["--unshare-all", "--hostname", "box", "--ro-bind", "/usr", "/usr",
         "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
         "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
         "--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc", "--dir", "/var/tmp",
         "--setenv", "PATH", "/usr/bin", "--chdir", "/"]
VIEW = ("cat /proc/self/mountinfo; echo @; ls -la /; echo @; ls -la /dev; echo @; id; "
        "echo @; hostname")


def _normalise(text: str) -> list[list[str]]:
    mounts, root, dev, ids, host = text.split("@\n")
    # mount point, root within its file system, type and the per-mount flags
    table = []
    for line in mounts.splitlines():
        fields = line.split()
        sep = fields.index("-")
        table.append(f"{fields[4]} {fields[3]} {fields[sep + 1]} {fields[5]}")

    def listing(block: str) -> list[str]:
        # mode, owner, group, name (and link target); no counts, sizes or times
        out = []
        for line in block.splitlines()[1:]:
            f = line.split()
            name = " ".join(f[8:]) if f[0][0] != "c" else " ".join(f[9:])
            out.append(f"{f[0]} {f[2]} {f[3]} {name}")
        return out
    return [table, listing(root), listing(dev), ids.split(), host.split()]


# Documented differences (docs/cli.md): aunshare's /dev/shm is a tmpfs of
# its own, and as root /proc/sys is made read-only too.
_OURS_ONLY = re.compile(r"^(/dev/shm|/proc/sys) ")


@pytest.mark.skipif(BWRAP is None, reason="bwrap is not installed (Debian: bubblewrap)")
@pytest.mark.parametrize("ids", [[], ["--uid", "1000", "--gid", "1000"]],
                         ids=["own-ids", "uid-1000"])
@pytest.mark.parametrize("as_user", ["root", "nobody"])
def test_same_view_as_bwrap(as_user, ids, anyio_backend):
    prefix = [] if as_user == "root" else ["setpriv", "--reuid", "65534", "--regid", "65534",
                                            "--clear-groups"]
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run both as uid 65534")
    flags = [*ids, *FLAGS]
    ours_cmd = [*prefix, sys.executable, "-m", "aunshare", *flags, "sh", "-c", VIEW]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    theirs = subprocess.run([*prefix, BWRAP, *flags, "sh", "-c", VIEW], capture_output=True,
                            env=env, cwd="/", timeout=30)
    ours = subprocess.run(ours_cmd, capture_output=True, env=env, cwd="/", timeout=30)
    if as_user == "nobody" and b"Permission denied" in ours.stderr and ours.returncode == 126:
        pytest.skip("uid 65534 may not run this interpreter (tests/run.sh arranges that)")
    assert theirs.returncode == 0, theirs.stderr.decode()
    assert ours.returncode == 0, ours.stderr.decode()
    mine, bw = _normalise(ours.stdout.decode()), _normalise(theirs.stdout.decode())
    assert [m for m in mine[0] if not _OURS_ONLY.match(m)] == bw[0]
    # Documented too: with --uid, bwrap nests a second user namespace, so its
    # devpts root (owned by uid 0 of the namespace that mounted it) shows as
    # that uid; aunshare has one namespace, where uid 0 is not mapped.
    pts = " ".join(["drwxr-xr-x", *(ids[1::2] or ["65534", "65534"]), "pts"])
    assert [m.replace("drwxrwxrwt", "drwxr-xr-x") if m.endswith(" shm") else
            pts if ids and m.endswith(" pts") else m for m in mine[2]] == bw[2]
    assert mine[1] == bw[1] and mine[3:] == bw[3:]


@pytest.fixture
def _init_memfd_made():
    """The init's memfd lives as long as the process: made before no_leaks counts."""
    from aunshare.executors.init import init_memfd

    init_memfd()


async def test_sandbox_with_an_init(_init_memfd_made, no_leaks):
    """With init_process the init execs one path: a program given without a
    slash is found by the parent through the view's binds and symlinks."""
    cmd = sandbox(Command("sh").args(["-c", "echo $$; exit 3"])
                  .unshare(Namespace.USER | Namespace.PID).map_root_user().init_process())
    cmd.env("PATH", "/usr/local/bin:/bin")  # /bin is the view's symlink to usr/bin
    out = await cmd.output()
    assert out.status.code == 3 and out.stdout == b"2\n", out
