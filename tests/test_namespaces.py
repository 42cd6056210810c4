"""Namespaces, id maps, root changes, capabilities and limits, on the real kernel.

Each behaviour is checked as root and, where it differs for an unprivileged
caller, again as uid 65534 (run_unprivileged).
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import anyio
import pytest

from aunshare import (
    AuxCommandExited, AuxCommandKilled, BeforeUnfreeze, Capability, ChangeRoot,
    Command, Fork, GidMap, Namespace, SetIdMap, SetNs, Stdio, UidMap,
)
from conftest import open_fds, run_unprivileged, zombie_children

pytestmark = pytest.mark.anyio

NOBODY = 65534
SH = "/bin/sh"


def ns_id(pid: int | str, name: str) -> str:
    """The inode link of a namespace, e.g. 'net:[4026531840]'."""
    return os.readlink(f"/proc/{pid}/ns/{name}")


async def out_of(cmd: Command) -> str:
    """Run ``cmd``, require success, return its stdout as text."""
    out = await cmd.output()
    assert out.status.success(), (out.status, out.stderr)
    return out.stdout.decode()


def interfaces() -> str:
    return "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '"


# -- user + net: fake root, only loopback ------------------------------------

async def test_user_net_root_mapped():
    child = await (Command(SH).args(["-c", f"id -u; id -g; {interfaces()}"])
                   .unshare(Namespace.NET).map_root_user().stdout(Stdio.piped()).spawn())
    assert child.handshake is False  # the child mapped itself: no parent step
    out = await child.wait_with_output()
    assert out.status.success(), out
    assert out.stdout.decode().split() == ["0", "0", "lo"]


async def test_user_net_root_mapped_unprivileged():
    out = await run_unprivileged("""
        import anyio, os
        from aunshare import Command, Namespace
        async def main():
            o = await (Command("/bin/sh").args(["-c", "id -u; cat /proc/self/uid_map; "
                       "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '"])
                       .unshare(Namespace.USER | Namespace.NET).map_root_user().output())
            print(os.getuid(), o.status.code, o.stdout.decode().split())
        anyio.run(main)
    """)
    uid, code, rest = out.stdout.decode().split(" ", 2)
    assert (uid, code) == ("65534", "0")
    assert eval(rest) == ["0", "0", "65534", "1", "lo"]


async def test_map_current_user_keeps_uid():
    text = await out_of(Command(SH).args(["-c", "id -u; cat /proc/self/uid_map"])
                        .map_current_user())
    uid = os.geteuid()
    assert text.split() == [str(uid), str(uid), str(uid), "1"]


# -- pid + mount: pid 1, ps sees only the namespace --------------------------

PS_ONLY_SELF = "echo $$; exec ps -e -o pid=,comm="


async def test_pid_namespace_mount_proc():
    text = await out_of(Command(SH).args(["-c", PS_ONLY_SELF])
                        .unshare(Namespace.PID | Namespace.MOUNT).mount_proc())
    lines = [line.split() for line in text.splitlines()]
    assert lines == [["1"], ["1", "ps"]]
    # the parent's /proc is untouched (the mount did not propagate)
    assert Path("/proc/self").resolve().name == str(os.getpid())


async def test_pid_namespace_mount_proc_unprivileged():
    out = await run_unprivileged(f"""
        import anyio
        from aunshare import Command, Namespace
        async def main():
            o = await (Command("/bin/sh").args(["-c", {PS_ONLY_SELF!r}])
                       .unshare(Namespace.USER | Namespace.PID | Namespace.MOUNT)
                       .map_root_user().mount_proc().output())
            print(o.status.code, o.stdout.decode().split(), o.stderr)
        anyio.run(main)
    """)
    assert out.stdout.decode().strip() == "0 ['1', '1', 'ps'] b''"


async def test_pid_namespace_with_death_signal():
    """getppid() is 0 in a new pid namespace: the parent-death check expects that."""
    text = await out_of(Command(SH).args(["-c", "echo ok"]).unshare(Namespace.PID)
                        .set_parent_death_signal(signal.SIGKILL))
    assert text == "ok\n"


# -- UTS --------------------------------------------------------------------

async def test_uts_hostname():
    before = os.uname().nodename
    text = await out_of(Command("hostname").unshare(Namespace.UTS).hostname("sandbox-1"))
    assert text.strip() == "sandbox-1"
    assert os.uname().nodename == before


async def test_hostname_without_uts_is_refused_before_clone():
    fds = open_fds()
    with pytest.raises(ValueError, match="UTS namespace"):
        await Command("hostname").hostname("oops").spawn()
    assert open_fds() == fds and zombie_children() == []


# -- other namespace types ----------------------------------------------------

@pytest.mark.parametrize("ns", [Namespace.IPC, Namespace.CGROUP, Namespace.TIME,
                                Namespace.UTS, Namespace.NET, Namespace.MOUNT])
async def test_each_namespace_is_new(ns):
    if ns is Namespace.TIME and not os.path.exists("/proc/self/ns/time"):
        pytest.skip("this kernel has no time namespaces (Linux 5.6)")
    text = await out_of(Command("readlink").arg(f"/proc/self/ns/{ns.proc_name}")
                        .unshare(ns).map_root_user())
    assert text.startswith(ns.proc_name + ":[")
    assert text.strip() != ns_id("self", ns.proc_name)


# -- joining: setns ------------------------------------------------------------

async def _holder():
    return await (Command("sleep").arg("30").unshare(Namespace.NET | Namespace.UTS)
                  .map_root_user().hostname("holder").spawn())


async def test_setns_into_another_childs_namespaces():
    async with await _holder() as holder:
        pid = holder.pid
        with open(f"/proc/{pid}/ns/net") as net:
            cmd = (Command(SH).args(["-c", f"hostname; {interfaces()}; id -u; "
                                           "readlink /proc/self/ns/net"])
                   .set_namespace(f"/proc/{pid}/ns/uts", Namespace.UTS)
                   .set_namespace(net, Namespace.NET)
                   .set_namespace(f"/proc/{pid}/ns/user", Namespace.USER))
        text = await out_of(cmd)
        assert text.split() == ["holder", "lo", "0", ns_id(pid, "net")]
        holder.kill()


async def test_setns_unprivileged():
    out = await run_unprivileged("""
        import anyio, os
        from aunshare import Command, Namespace
        async def main():
            async with await (Command("sleep").arg("30")
                              .unshare(Namespace.NET | Namespace.UTS).map_root_user()
                              .hostname("holder").spawn()) as holder:
                p = holder.pid
                o = await (Command("/bin/sh").args(["-c", "hostname; id -u"])
                           .set_namespace(f"/proc/{p}/ns/user", Namespace.USER)
                           .set_namespace(f"/proc/{p}/ns/uts", Namespace.UTS).output())
                holder.kill()
            print(o.stdout.decode().split())
        anyio.run(main)
    """)
    assert out.stdout.decode().strip() == "['holder', '0']"


async def test_set_namespace_checks_the_type():
    with pytest.raises(ValueError, match="is a NET namespace, not USER"):
        Command("true").set_namespace("/proc/self/ns/net", Namespace.USER)
    with pytest.raises(ValueError, match="not a namespace file"):
        Command("true").set_namespace("/etc/hostname", Namespace.UTS)
    with pytest.raises(SetNs) as info:
        Command("true").set_namespace("/proc/999999999/ns/net", Namespace.NET)
    assert info.value.errno == errno.ENOENT and "/proc/999999999/ns/net" in str(info.value)
    with pytest.raises(TypeError, match="one Namespace member"):
        Command("true").set_namespace("/proc/self/ns/net", Namespace.NET | Namespace.UTS)


async def test_setns_failure_is_typed_unprivileged():
    """Joining the host's net namespace from a new user namespace: EPERM, SetNs."""
    out = await run_unprivileged("""
        import anyio
        from aunshare import Command, Namespace, SetNs
        async def main():
            try:
                await (Command("true").unshare(Namespace.USER).map_root_user()
                       .set_namespace("/proc/self/ns/net", Namespace.NET).status())
            except SetNs as exc:
                print(exc.errno, exc)
        anyio.run(main)
    """)
    code, msg = out.stdout.decode().split(" ", 1)
    assert int(code) == errno.EPERM and "setns net namespace" in msg, msg


# -- id maps written by the parent ------------------------------------------------

async def test_id_maps_written_by_parent_as_root():
    seen = {}

    async def hook(pid):
        seen["uid_map"] = Path(f"/proc/{pid}/uid_map").read_text().split()
        # the child has not exec'd: it waits on the wake-up pipe
        seen["exe"] = os.readlink(f"/proc/{pid}/exe")
        with anyio.fail_after(5):
            while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "S":
                await anyio.sleep(0.001)

    cmd = (Command(SH).args(["-c", "id -u; id -g; cat /proc/self/setgroups; sleep 0.2"])
           .set_id_maps([UidMap(0, 100000, 65536)], [GidMap(0, 100000, 65536)])
           .uid(0).gid(0).before_unfreeze(hook).stdout(Stdio.piped()))
    child = await cmd.spawn()
    assert child.handshake is True
    status_line = next(line for line in Path(f"/proc/{child.pid}/status").read_text()
                       .splitlines() if line.startswith("Uid:"))
    out = await child.wait_with_output()
    assert out.status.success()
    assert out.stdout.decode().split() == ["0", "0", "allow"]  # root keeps setgroups
    assert seen["uid_map"] == ["0", "100000", "65536"]
    assert seen["exe"] == os.path.realpath(sys.executable)
    assert status_line.split()[1] == "100000"  # uid 0 inside is 100000 outside


async def test_id_maps_written_by_parent_unprivileged():
    out = await run_unprivileged("""
        import anyio
        from aunshare import Command, UidMap, GidMap
        async def main():
            child = await (Command("/bin/sh").args(["-c", "id -u; cat /proc/self/setgroups"])
                           .set_id_maps([UidMap(0, 65534)], [GidMap(0, 65534)])
                           .stdout(__import__("aunshare").Stdio.piped()).spawn())
            o = await child.wait_with_output()
            print(child.handshake, o.stdout.decode().split())
        anyio.run(main)
    """)
    assert out.stdout.decode().strip() == "True ['0', 'deny']"


async def test_unprivileged_cannot_map_foreign_ids():
    out = await run_unprivileged("""
        import anyio, os
        from aunshare import Command, UidMap, SetIdMap
        async def main():
            before = sorted(os.listdir("/proc/self/fd"))
            try:
                await Command("true").set_id_maps([UidMap(0, 0, 1)], []).status()
            except SetIdMap as exc:
                print(exc.errno, before == sorted(os.listdir("/proc/self/fd")), exc)
        anyio.run(main)
    """)
    code, same_fds, msg = out.stdout.decode().split(" ", 2)
    assert int(code) == errno.EPERM and same_fds == "True"
    assert "uid_map" in msg and "newuidmap" in msg, msg


# -- newuidmap / newgidmap ---------------------------------------------------------

NEWUIDMAP = shutil.which("newuidmap")
NEWGIDMAP = shutil.which("newgidmap")
needs_uidmap = pytest.mark.skipif(
    not (NEWUIDMAP and NEWGIDMAP),
    reason="newuidmap/newgidmap not installed (Debian package uidmap)")


@pytest.fixture(scope="module")
def subids():
    """/etc/subuid and /etc/subgid grant ranges to root and to uid 65534."""
    lines = {"root": "root:200000:65536\n", "nobody": "nobody:300000:65536\n"}
    saved = {}
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            saved[path] = Path(path).read_text()
        except FileNotFoundError:
            saved[path] = None
        text = saved[path] or ""
        for user, line in lines.items():
            if not any(x.startswith(user + ":") for x in text.splitlines()):
                text += line
        Path(path).write_text(text)
    yield
    for path, text in saved.items():
        if text is None:
            os.unlink(path)
        else:
            Path(path).write_text(text)


@needs_uidmap
async def test_id_maps_by_newuidmap(subids):
    cmd = (Command(SH).args(["-c", "cat /proc/self/uid_map /proc/self/gid_map"])
           .set_id_maps([UidMap(0, 200000, 1000)], [GidMap(0, 200000, 1000)])
           .set_id_map_commands(NEWUIDMAP, NEWGIDMAP))
    assert (await out_of(cmd)).split() == ["0", "200000", "1000"] * 2


@needs_uidmap
async def test_id_maps_by_newuidmap_unprivileged(subids):
    out = await run_unprivileged(f"""
        import anyio
        from aunshare import Command, UidMap, GidMap
        async def main():
            o = await (Command("/bin/sh").args(["-c", "id -u; cat /proc/self/uid_map"])
                       .set_id_maps([UidMap(0, 65534), UidMap(1, 300000, 100)],
                                    [GidMap(0, 65534), GidMap(1, 300000, 100)])
                       .set_id_map_commands({NEWUIDMAP!r}, {NEWGIDMAP!r}).uid(0).gid(0)
                       .output())
            print(o.status.code, o.stdout.decode().split(), o.stderr)
        anyio.run(main)
    """)
    assert out.stdout.decode().strip() == (
        "0 ['0', '0', '65534', '1', '1', '300000', '100'] b''")


@pytest.fixture
def fake_helpers(tmp_path):
    """Scripts standing in for newuidmap: one exits 1, one kills itself."""
    exits = tmp_path / "exits"
    exits.write_text("#!/bin/sh\necho 'newuidmap: range not allowed' >&2\nexit 1\n")
    killed = tmp_path / "killed"
    killed.write_text("#!/bin/sh\necho 'about to die' >&2\nkill -TERM $$\nsleep 5\n")
    for p in (exits, killed):
        p.chmod(0o755)
    return exits, killed


async def test_aux_command_exit_and_kill(fake_helpers):
    exits, killed = fake_helpers
    maps = ([UidMap(0, 100000, 10)], [GidMap(0, 100000, 10)])
    fds = open_fds()
    with pytest.raises(AuxCommandExited) as info:
        await Command("true").set_id_maps(*maps).set_id_map_commands(exits, exits).status()
    assert info.value.code == 1
    assert "range not allowed" in str(info.value) and "exits" in str(info.value)
    with pytest.raises(AuxCommandKilled) as info2:
        await Command("true").set_id_maps(*maps).set_id_map_commands(killed, killed).status()
    assert info2.value.signal == signal.SIGTERM and "about to die" in str(info2.value)
    with pytest.raises(SetIdMap) as info3:
        await (Command("true").set_id_maps(*maps)
               .set_id_map_commands("/nonexistent/newuidmap", exits).status())
    assert info3.value.errno == errno.ENOENT and "cannot run newuidmap" in str(info3.value)
    await anyio.sleep(0)
    assert open_fds() == fds and zombie_children() == []


# -- before_unfreeze ----------------------------------------------------------------

async def test_before_unfreeze_error_kills_and_reaps():
    started = []

    async def hook(pid):
        started.append(pid)
        # the one-line map of map_root_user() is in place before the hook runs
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", str(os.geteuid()), "1"]
        raise RuntimeError("veth setup failed")

    fds = open_fds()
    with pytest.raises(BeforeUnfreeze) as info:
        await (Command(SH).args(["-c", "touch /tmp/should-not-exist-$$"])
               .unshare(Namespace.NET).map_root_user().before_unfreeze(hook).spawn())
    assert type(info.value.__cause__) is RuntimeError
    assert "veth setup failed" in str(info.value)
    assert not os.path.exists(f"/proc/{started[0]}")
    assert open_fds() == fds and zombie_children() == []


async def test_before_unfreeze_cancelled_kills_and_reaps():
    pids = []

    async def hook(pid):
        pids.append(pid)
        await anyio.sleep(30)

    fds = open_fds()
    with anyio.move_on_after(0.3) as scope:
        await Command("true").map_root_user().before_unfreeze(hook).spawn()
    assert scope.cancelled_caught and pids
    assert not os.path.exists(f"/proc/{pids[0]}")
    assert open_fds() == fds and zombie_children() == []


# -- chroot and pivot_root ------------------------------------------------------------

def _static_busybox() -> str | None:
    path = shutil.which("busybox")
    if path is None:
        return None
    with open(path, "rb") as f:
        head = f.read(4096)
    return None if b"ld-linux" in head else path  # a dynamic one names its loader


BUSYBOX = _static_busybox()
needs_busybox = pytest.mark.skipif(
    BUSYBOX is None, reason="a static busybox is needed for a minimal root (Debian "
                            "busybox-static)")


@pytest.fixture(scope="module")
def minimal_root():
    """A root with only a static busybox: bin/{busybox,sh,ls,cat}, proc, oldroot."""
    root = Path(tempfile.mkdtemp(prefix="aunshare-root-"))
    root.chmod(0o755)  # uid 65534 must reach it
    (root / "bin").mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for tool in ("sh", "ls", "cat", "echo", "ps"):
        (root / "bin" / tool).symlink_to("busybox")
    for d in ("proc", "oldroot", "etc"):
        (root / d).mkdir()
    (root / "etc" / "marker").write_text("inside the new root\n")
    yield str(root)
    shutil.rmtree(root)


LIST_ROOT = "ls /; cat /etc/marker; pwd"


@needs_busybox
async def test_chroot(minimal_root):
    text = await out_of(Command("sh").args(["-c", LIST_ROOT]).env("PATH", "/bin")
                        .chroot_dir(minimal_root))
    assert text.split() == ["bin", "etc", "oldroot", "proc", "inside", "the", "new", "root", "/"]


@needs_busybox
async def test_chroot_missing_is_change_root_error(tmp_path):
    os.mkdir(tmp_path / "bin")
    shutil.copy2("/bin/true", tmp_path / "bin" / "true")
    for program in ("/bin/true", "true"):  # also before the PATH lookup inside it
        with pytest.raises(ChangeRoot) as info:
            await Command(program).chroot_dir(tmp_path / "missing").status()
        assert info.value.errno == errno.ENOENT and "missing" in str(info.value)


@needs_busybox
async def test_pivot_root_old_root_unmounted(minimal_root):
    cmd = (Command("sh").args(["-c", "ls /; ls /oldroot | wc -l; cat /proc/1/comm; "
                                     "cut -d' ' -f2 /proc/mounts"])
           .env_clear().env("PATH", "/bin")
           .unshare(Namespace.MOUNT | Namespace.PID).map_root_user()
           .pivot_root(minimal_root, "oldroot").mount_proc())
    lines = (await out_of(cmd)).split()
    assert lines[:4] == ["bin", "etc", "oldroot", "proc"]
    assert lines[4] == "0"       # nothing left under the old root
    assert lines[5] == "sh"      # pid 1 of the new namespace
    assert set(lines[6:]) == {"/", "/proc"}  # only the new root and its proc


@needs_busybox
async def test_pivot_root_unprivileged(minimal_root):
    out = await run_unprivileged(f"""
        import anyio
        from aunshare import Command, Namespace
        async def main():
            o = await (Command("sh").args(["-c", "ls /; exec ps -o pid=,comm="])
                       .env_clear().env("PATH", "/bin")
                       .unshare(Namespace.USER | Namespace.MOUNT | Namespace.PID)
                       .map_root_user().pivot_root({minimal_root!r}, "oldroot")
                       .mount_proc().output())
            print(o.status.code, o.stdout.decode().split(), o.stderr)
        anyio.run(main)
    """)
    assert out.stdout.decode().strip() == (
        "0 ['bin', 'etc', 'oldroot', 'proc', '1', 'ps'] b''")  # sh exec'd ps as pid 1


async def test_pivot_root_needs_mount_namespace():
    with pytest.raises(ValueError, match="new mount namespace"):
        await Command("true").pivot_root("/tmp", "old").spawn()
    with pytest.raises(ValueError, match="under new_root"):
        Command("true").pivot_root("/tmp", "../x")


# -- EPERM and ENOSPC from clone3 ----------------------------------------------------------

async def test_net_without_user_is_eperm_unprivileged():
    out = await run_unprivileged("""
        import anyio, os
        from aunshare import Command, Namespace, Fork
        async def main():
            before = sorted(os.listdir("/proc/self/fd"))
            try:
                await Command("true").unshare(Namespace.NET).status()
            except Fork as exc:
                print(exc.errno, before == sorted(os.listdir("/proc/self/fd")), exc)
        anyio.run(main)
    """)
    code, same, msg = out.stdout.decode().split(" ", 2)
    assert int(code) == errno.EPERM and same == "True"
    assert "CAP_SYS_ADMIN" in msg and "Namespace.USER" in msg, msg


async def test_user_namespace_limit_enospc_unprivileged():
    """Inside a user namespace, lower max_user_namespaces to 0; a nested one fails."""
    out = await run_unprivileged("""
        import anyio, sys
        from aunshare import Command, Namespace
        async def main():
            code = (
                "import anyio\\n"
                "from aunshare import Command, Namespace, Fork\\n"
                "open('/proc/sys/user/max_user_namespaces', 'w').write('0')\\n"
                "async def main():\\n"
                "    try:\\n"
                "        await Command('true').map_root_user().status()\\n"
                "    except Fork as exc:\\n"
                "        print(exc.errno, exc)\\n"
                "anyio.run(main)\\n"
            )
            o = await (Command(sys.executable).args(["-c", "import sys; sys.path[:0] = "
                       + repr(sys.path) + "; exec(sys.argv[1])", code])
                       .map_root_user().output())
            print(o.stdout.decode().strip(), o.stderr.decode())
        anyio.run(main)
    """)
    code, msg = out.stdout.decode().split(" ", 1)
    assert int(code) == errno.ENOSPC, out
    assert "/proc/sys/user/max_user_namespaces" in msg, msg


# -- capabilities, no_new_privs, rlimits ------------------------------------------------------

def caps_of(text: str) -> dict[str, int]:
    return {line.split(":")[0]: int(line.split()[1], 16)
            for line in text.splitlines() if line.startswith("Cap")}


async def test_keep_caps_across_uid_change():
    cmd = (Command(SH).args(["-c", "grep ^Cap /proc/self/status; id -u"])
           .uid(NOBODY).gid(NOBODY).keep_caps([Capability.CAP_NET_BIND_SERVICE]))
    text = await out_of(cmd)
    caps = caps_of(text)
    bit = 1 << Capability.CAP_NET_BIND_SERVICE
    assert caps == {"CapInh": bit, "CapPrm": bit, "CapEff": bit, "CapBnd": bit, "CapAmb": bit}
    assert text.split()[-1] == str(NOBODY)


async def test_keep_caps_in_user_namespace_unprivileged():
    out = await run_unprivileged("""
        import anyio
        from aunshare import Command, Capability, CapSet
        async def main():
            o = await (Command("/bin/sh").args(["-c", "grep ^CapEff /proc/self/status"])
                       .map_root_user().keep_caps([Capability.CAP_NET_ADMIN]).output())
            print(o.stdout.decode().split()[1])
            try:
                await Command("true").keep_caps([Capability.CAP_NET_ADMIN]).status()
            except CapSet as exc:
                print(exc.errno, exc)
        anyio.run(main)
    """)
    eff, err = out.stdout.decode().splitlines()
    assert int(eff, 16) == 1 << Capability.CAP_NET_ADMIN
    assert err.startswith(f"{errno.EPERM} drop from the bounding set"), err


@pytest.fixture
def setuid_id():
    """A setuid-root copy of id(1) that uid 65534 can run."""
    where = Path(tempfile.mkdtemp(prefix="aunshare-suid-"))
    where.chmod(0o755)
    path = where / "suid-id"
    shutil.copy2(shutil.which("id"), path)
    os.chown(path, 0, 0)
    path.chmod(0o4755)
    yield path
    shutil.rmtree(where)


async def test_no_new_privs_blocks_setuid(setuid_id):
    base = Command(setuid_id).arg("-u").uid(NOBODY).gid(NOBODY)
    assert (await out_of(base)).strip() == "0"      # the setuid bit elevates
    assert (await out_of(base.copy().no_new_privs())).strip() == str(NOBODY)


async def test_rlimit():
    text = await out_of(Command(SH).args(["-c", "ulimit -n; ulimit -Hn; ulimit -c"])
                        .rlimit(resource.RLIMIT_NOFILE, 77, 88)
                        .rlimit(resource.RLIMIT_CORE, None))
    assert text.split() == ["77", "88", "unlimited"]


async def test_rlimit_raise_hard_unprivileged():
    out = await run_unprivileged("""
        import anyio, resource
        from aunshare import Command, SetRlimit
        async def main():
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            try:
                await Command("true").rlimit(resource.RLIMIT_NOFILE, soft, hard + 1).status()
            except SetRlimit as exc:
                print(exc.errno, exc)
        anyio.run(main)
    """)
    assert out.stdout.decode().startswith(f"{errno.EPERM} setrlimit RLIMIT_NOFILE"), out


# -- cgroup(path): start inside an existing cgroup -------------------------------------------

async def test_cgroup_path_places_the_child(cgroup_parent):
    path = os.path.join(cgroup_parent, "existing")
    os.mkdir(path)
    try:
        text = await out_of(Command("cat").arg("/proc/self/cgroup").cgroup(path))
        assert text.strip().endswith("/existing")
    finally:
        os.rmdir(path)


async def test_cgroup_busy_is_explained(cgroup_parent):
    """A cgroup with controllers enabled for its children takes no process: EBUSY."""
    path = os.path.join(cgroup_parent, "busy")
    os.mkdir(path)
    os.mkdir(os.path.join(path, "leaf"))
    enabled = None
    delegated = None
    try:
        controllers = Path(path, "cgroup.controllers").read_text().split()
        if not controllers:
            # Delegate one from the session cgroup where its parent offers one
            # (a pure cgroup v2 machine); a hybrid one has none to give.
            offered = Path(cgroup_parent, "cgroup.controllers").read_text().split()
            if not offered:
                pytest.skip(f"no cgroup v2 controller is delegated to {cgroup_parent} "
                            "(enable one in the cgroup.subtree_control of its ancestors)")
            # a domain controller: threaded ones (pids) allow internal processes
            delegated = next((c for c in ("memory", "io", "cpu") if c in offered), offered[0])
            Path(cgroup_parent, "cgroup.subtree_control").write_text("+" + delegated)
            controllers = Path(path, "cgroup.controllers").read_text().split()
        enabled = next((c for c in ("memory", "io", "cpu") if c in controllers), controllers[0])
        Path(path, "cgroup.subtree_control").write_text("+" + enabled)
        with pytest.raises(Fork) as info:
            await Command("true").cgroup(path).status()
        assert info.value.errno == errno.EBUSY
        assert "subtree_control" in str(info.value)
    finally:
        if enabled is not None:
            Path(path, "cgroup.subtree_control").write_text("-" + enabled)
        os.rmdir(os.path.join(path, "leaf"))
        os.rmdir(path)
        if delegated is not None:
            Path(cgroup_parent, "cgroup.subtree_control").write_text("-" + delegated)


# -- invalid combinations ----------------------------------------------------------------------

@pytest.mark.parametrize("build, message", [
    (lambda c: c.mount_proc(), "mount_proc"),
    (lambda c: c.unshare(Namespace.MOUNT).chroot_dir("/").pivot_root("/tmp", "o"), "choose one"),
    (lambda c: c.set_namespace("/proc/self/ns/user", Namespace.USER).unshare(Namespace.NET),
     "owned by the caller's user namespace"),
    (lambda c: c.set_namespace("/proc/self/ns/net", Namespace.NET).unshare(Namespace.NET),
     "both created"),
    (lambda c: c.set_id_map_commands("a", "b"), "set_id_maps"),
])
async def test_invalid_combinations_refused_before_clone(build, message):
    fds = open_fds()
    with pytest.raises(ValueError, match=message):
        await build(Command("true")).spawn()
    assert open_fds() == fds and zombie_children() == []


def test_builder_argument_errors():
    with pytest.raises(TypeError):
        Command("true").unshare("net")
    with pytest.raises(ValueError, match="not namespaces"):
        Command("true").unshare(0x1)
    with pytest.raises(ValueError, match="overlap"):
        Command("true").set_id_maps([UidMap(0, 1000, 10), UidMap(5, 2000, 10)], [])
    with pytest.raises(TypeError, match="UidMap"):
        Command("true").set_id_maps([GidMap(0, 1000)], [])
    with pytest.raises(ValueError, match="count"):
        UidMap(0, 0, 0)
    with pytest.raises(ValueError, match="above the hard"):
        Command("true").rlimit(resource.RLIMIT_NOFILE, 10, 5)
    with pytest.raises(ValueError, match="64 bytes"):
        Command("true").hostname("x" * 65)
    assert Command("true").unshare([Namespace.NET, Namespace.UTS]).spec().isolation.unshare == (
        Namespace.NET | Namespace.UTS)


async def test_before_unfreeze_with_map_root_user_unprivileged():
    """With a hook, the parent writes the one-line maps of map_root_user()
    (as an unprivileged parent may) and the hook sees them."""
    out = await run_unprivileged("""
        import anyio
        from aunshare import Command, Namespace
        seen = []
        async def hook(pid):
            seen.append(open(f"/proc/{pid}/uid_map").read().split())
        async def main():
            o = await (Command("/bin/sh").args(["-c", "id -u; cat /proc/self/setgroups"])
                       .unshare(Namespace.NET).map_root_user().before_unfreeze(hook)
                       .output())
            print(seen, o.stdout.decode().split())
        anyio.run(main)
    """)
    assert out.stdout.decode().strip() == "[['0', '65534', '1']] ['0', 'deny']"
