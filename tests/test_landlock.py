"""Landlock: the rules record and how it fits an ABI (pure data), then real
children confined by it: files outside the rules unreadable, read-only
trees unwritable, TCP ports not listed refused, signals scoped; the report
of what was enforced; as root and as uid 65534; nothing leaked.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from aunshare import Command, Landlock, LandlockError, LandlockReport, Stdio
from aunshare._record import FrozenInstanceError
from aunshare.landlock import EXECUTE, FS_RIGHTS, READ_ONLY, READ_WRITE, fs_rights, resolve
from aunshare.plan import Setup, build_plan
from aunshare.rulesets import abi
from conftest import BACKENDS, NOBODY, run_unprivileged

# Landlock is enforced by the kernel whatever the loop: one loop, but for
# the first test (the spawn path is the same on every loop).
one_loop = pytest.mark.parametrize("anyio_backend", BACKENDS[:1])

ABI = abi()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="this kernel has no Landlock "
                                    "(not built in, or not in the lsm= boot parameter)")

# What a Python child needs to start: its installation, the system libraries.
PYTHON = os.path.realpath(sys.executable)
_BASE = os.path.realpath(sys.base_prefix)
SYSTEM = [p for p in ("/usr", "/bin", "/lib", "/lib64", "/lib32") if os.path.exists(p)]
RUNTIME = dict(execute=[*SYSTEM, _BASE], read_only=[_BASE, "/etc/ld.so.cache"])

# The child: each argument is "op:arg"; prints {arg: errno or 0}.
PROBE = """
import errno, json, os, socket, sys
out = {}
for item in sys.argv[1:]:
    op, _, arg = item.partition(":")
    try:
        if op == "read":
            os.close(os.open(arg, os.O_RDONLY))
        elif op == "write":
            os.close(os.open(arg, os.O_WRONLY | os.O_CREAT, 0o644))
        elif op in ("bind", "connect"):
            with socket.socket() as s:
                getattr(s, op)(("127.0.0.1", int(arg)))
        elif op == "kill":
            os.kill(int(arg), 0)
        out[item] = 0
    except OSError as exc:
        out[item] = exc.errno
print(json.dumps(out))
"""


def probe(rules: Landlock, *ops: str) -> Command:
    return (Command(PYTHON).args(["-I", "-S", "-c", PROBE, *ops]).landlock(rules)
            .stdout(Stdio.piped()).stderr(Stdio.piped()))


async def results(cmd: Command) -> dict[str, int]:
    out = await cmd.output()
    assert out.status.success(), (out.status, out.stderr.decode(errors="replace"))
    return json.loads(out.stdout)


@pytest.fixture
def tree():
    """allowed/ (read-write), ro/ (read-only, with a file), secret/ (not listed)."""
    with tempfile.TemporaryDirectory() as top:
        root = Path(top)
        for name in ("rw", "ro", "secret"):
            (root / name).mkdir()
            (root / name / "file").write_text(name)
        os.chmod(top, 0o755)
        for name in ("rw", "ro", "secret"):
            os.chmod(root / name, 0o777)
            os.chmod(root / name / "file", 0o666)
        yield root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the record, pure data ---------------------------------------------------------


def test_record_normalises_and_is_frozen(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rules = Landlock(read_only=["b", b"/etc", Path("/etc")], read_write="x",
                     tcp_bind=[443, 80, 443], tcp_connect=5432)
    assert rules.read_only == ("/etc", str(tmp_path / "b"))
    assert rules.read_write == (str(tmp_path / "x"),)
    assert rules.tcp_bind == (80, 443) and rules.tcp_connect == (5432,)
    same = Landlock(read_only=[str(tmp_path / "b"), "/etc/"], read_write=[str(tmp_path / "x")],
                    tcp_bind=(80, 443), tcp_connect=[5432])
    assert same == rules and hash(same) == hash(rules)
    assert Landlock(read_only=["/etc"], best_effort=False) != Landlock(read_only=["/etc"])
    with pytest.raises(FrozenInstanceError):
        rules.tcp_bind = ()  # type: ignore[misc]
    # a path in several lists gets the union of their rights
    both = Landlock(read_only=["/srv"], execute=["/srv"])
    assert both.path_rules == (("/srv", READ_ONLY | EXECUTE),)


def test_record_refuses_bad_input():
    for port in (0, 65536, -1):
        with pytest.raises(ValueError, match="outside 1-65535"):
            Landlock(tcp_bind=[port])
    for port in (True, "80", 8.0):
        with pytest.raises(TypeError, match="tcp_connect"):
            Landlock(tcp_connect=[port])
    with pytest.raises(ValueError, match="read_only"):
        Landlock(read_only=["/a\0b"])
    with pytest.raises(ValueError, match="read_write"):
        Landlock(read_write=[""])
    with pytest.raises(TypeError, match="execute"):
        Landlock(execute=[3])
    with pytest.raises(TypeError, match="execute"):
        Landlock(execute=3)
    with pytest.raises(ValueError, match="restrict nothing"):
        Command("/bin/true").landlock(Landlock())
    with pytest.raises(TypeError, match="Landlock"):
        Command("/bin/true").landlock({"read_only": ["/"]})  # type: ignore[arg-type]
    # None removes the rules again
    cmd = Command("/bin/true").landlock(Landlock(read_only=["/"])).landlock(None)
    assert cmd.spec() == Command("/bin/true").spec()


def test_rights_by_rule_and_abi():
    names = {n: bit for n, (bit, _) in FS_RIGHTS.items()}
    assert names["READ_FILE"] | names["READ_DIR"] == READ_ONLY
    assert names["EXECUTE"] | names["READ_FILE"] == EXECUTE
    assert not READ_WRITE & names["EXECUTE"]
    assert READ_WRITE | names["EXECUTE"] == fs_rights(7) == (1 << 16) - 1
    assert fs_rights(1) == (1 << 13) - 1  # REFER (2), TRUNCATE (3), IOCTL_DEV (5) later
    assert fs_rights(3) == (1 << 15) - 1 and fs_rights(4) == fs_rights(3)


def test_rights_match_the_installed_kernel_headers():
    header = Path("/usr/include/linux/landlock.h")
    if not header.exists():
        pytest.skip("no <linux/landlock.h> (linux-libc-dev) installed")
    import re

    from aunshare.landlock import NET_RIGHTS, SCOPES

    text = header.read_text()
    found = {f"{kind}_{name}": 1 << int(shift) for kind, name, shift in re.findall(
        r"#define LANDLOCK_(ACCESS_FS|ACCESS_NET|SCOPE)_(\w+)\s+\(1ULL << (\d+)\)", text)}
    ours = {**{f"ACCESS_FS_{n}": b for n, (b, _) in FS_RIGHTS.items()},
            **{f"ACCESS_NET_{n}": b for n, (b, _) in NET_RIGHTS.items()},
            **{f"SCOPE_{n}": b for n, (b, _) in SCOPES.items()}}
    assert found and all(ours[name] == bit for name, bit in found.items()), found
    assert "LANDLOCK_RULE_PATH_BENEATH = 1" in text


def test_resolve_best_effort_drops_what_the_abi_lacks():
    rules = Landlock(read_write=["/srv"], tcp_bind=[80], tcp_connect=[443],
                     scope_signals=True, scope_abstract_unix=True)
    old = resolve(rules, 1)
    assert old.handled_fs == fs_rights(1) and old.handled_net == 0 and old.scoped == 0
    assert old.path_rules == (("/srv", READ_WRITE & fs_rights(1)),)
    assert old.report == LandlockReport(
        1, True, ("fs:REFER", "fs:TRUNCATE", "fs:IOCTL_DEV", "net:BIND_TCP", "net:CONNECT_TCP"),
        (("bind", 80), ("connect", 443)), ("ABSTRACT_UNIX_SOCKET", "SIGNAL"))
    assert not old.report.complete
    mid = resolve(rules, 4)
    assert mid.handled_net == 3 and mid.bind_ports == (80,) and mid.connect_ports == (443,)
    assert mid.report.dropped_rights == ("fs:IOCTL_DEV",)
    assert mid.report.dropped_scopes == ("ABSTRACT_UNIX_SOCKET", "SIGNAL")
    new = resolve(rules, 7)
    assert new.scoped == 3 and new.report.complete
    assert resolve(rules, 9).handled_fs == new.handled_fs and resolve(rules, 9).report.abi == 9
    # only network rules on an ABI without them: nothing to enforce, and why
    none = resolve(Landlock(tcp_bind=[80]), 3)
    assert not none.report.enforced and "ABI 3" in none.report.reason
    # a rule kind not given is not restricted
    only_bind = resolve(Landlock(tcp_bind=[80]), 7)
    assert (only_bind.handled_fs, only_bind.handled_net, only_bind.scoped) == (0, 1, 0)


def test_resolve_strict_refuses_what_the_abi_lacks():
    with pytest.raises(LandlockError, match=r"TRUNCATE.*ABI 3.*has 2") as info:
        resolve(Landlock(read_only=["/"], best_effort=False), 2)
    assert info.value.errno == errno.EOPNOTSUPP and isinstance(info.value, OSError)
    with pytest.raises(LandlockError, match="CONNECT_TCP"):
        resolve(Landlock(tcp_connect=[1], best_effort=False), 3)
    with pytest.raises(LandlockError, match=r"SIGNAL.*ABI 6"):
        resolve(Landlock(scope_signals=True, best_effort=False), 5)
    assert resolve(Landlock(read_only=["/"], best_effort=False), 5).report.complete


def test_plan_restricts_after_the_identity_change():
    spec = (Command("/bin/true").uid(1000).gid(1000).no_new_privs()
            .landlock(Landlock(read_only=["/"])).spec())
    setup = Setup(b"/bin/true", [b"true"], None, landlock_fd=57)
    names = [s.syscall for s in build_plan(spec, setup).steps]
    at = names.index("landlock_restrict_self")
    assert names[at - 1] == "prctl" and names.count("prctl") == 2  # no_new_privs once; pdeathsig
    assert names.index("setresuid") < at < names.index("execve")
    step = build_plan(spec, setup).steps[at]
    assert step.args == (57, 0) and step.error is LandlockError
    # nothing enforceable (no ruleset): no_new_privs all the same, no restrict step
    names = [s.syscall for s in build_plan(spec, setup._replace(landlock_fd=-1)).steps]
    assert "landlock_restrict_self" not in names and names.count("prctl") == 2


def test_abi_probe_matches_the_kernel():
    release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    if ABI == 0:
        pytest.skip("no Landlock on this kernel")
    # ABI 1 came with 5.13, 4 with 6.7, 6 with 6.12, 7 with 6.15
    floor = max(a for since, a in (((5, 13), 1), ((6, 7), 4), ((6, 12), 6), ((6, 15), 7))
                if release >= since)
    assert floor <= ABI <= 99


# -- real children ----------------------------------------------------------------


@needs_landlock
@pytest.mark.anyio
async def test_files_outside_the_rules(tree, no_leaks):
    rules = Landlock(read_write=[tree / "rw"], read_only=[tree / "ro", *RUNTIME["read_only"]],
                     execute=RUNTIME["execute"])
    got = await results(probe(rules, f"read:{tree}/secret/file", f"read:{tree}/ro/file",
                              f"write:{tree}/ro/file", f"write:{tree}/ro/new",
                              f"read:{tree}/rw/file", f"write:{tree}/rw/new"))
    assert list(got.values()) == [errno.EACCES, 0, errno.EACCES, errno.EACCES, 0, 0]
    assert (tree / "rw" / "new").exists() and not (tree / "ro" / "new").exists()


@needs_landlock
@one_loop
@pytest.mark.anyio
async def test_program_must_be_allowed(tree, no_leaks):
    from aunshare import Exec

    with pytest.raises(Exec) as info:
        await Command("/bin/true").landlock(Landlock(read_only=["/usr"])).status()
    assert info.value.errno == errno.EACCES and "execute=" in str(info.value)
    # a failure in the parent after the ruleset was built leaves nothing open either
    with pytest.raises(Exec) as info:
        await Command("no-such-program-here").landlock(Landlock(**RUNTIME)).status()
    assert info.value.errno == errno.ENOENT


@needs_landlock
@one_loop
@pytest.mark.anyio
async def test_reused_plan_gets_each_spawns_ruleset(tree, no_leaks):
    """The plan of a repeated Command is reused with the new ruleset's
    descriptor patched in: shift the descriptor numbers between spawns,
    and run some at once, and every child is still confined."""
    import anyio

    cmd = Command("/bin/cat").arg(f"{tree}/secret/file").landlock(Landlock(execute=SYSTEM))
    cmd.stderr(Stdio.null())
    held: list[int] = []
    try:
        for _ in range(3):
            assert (await cmd.status()).code == 1
            held.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        codes: list[int | None] = []

        async def one() -> None:
            codes.append((await cmd.status()).code)

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)
        assert codes == [1, 1, 1, 1]
    finally:
        for fd in held:
            os.close(fd)


@pytest.mark.skipif(ABI < 4, reason=f"TCP rules need Landlock ABI 4, this kernel has {ABI}")
@one_loop
@pytest.mark.anyio
async def test_tcp_ports(no_leaks):
    allowed, other, target = free_port(), free_port(), free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", target))
        listener.listen()
        closed = free_port()
        rules = Landlock(tcp_bind=[allowed], tcp_connect=[target], **RUNTIME)
        got = await results(probe(rules, f"bind:{allowed}", f"bind:{other}",
                                  f"connect:{target}", f"connect:{closed}"))
    assert list(got.values()) == [0, errno.EACCES, 0, errno.EACCES]


@pytest.mark.skipif(ABI < 6, reason=f"signal scoping needs Landlock ABI 6, this kernel has {ABI}")
@one_loop
@pytest.mark.anyio
async def test_scope_signals(no_leaks):
    async with await Command("/bin/sleep").arg("10").spawn() as outside:
        scoped = Landlock(scope_signals=True, **RUNTIME)
        got = await results(probe(scoped, f"kill:{outside.pid}", f"kill:{os.getpid()}"))
        assert list(got.values()) == [errno.EPERM, errno.EPERM]
        got = await results(probe(Landlock(**RUNTIME), f"kill:{outside.pid}"))
        assert list(got.values()) == [0]
        outside.kill()


@needs_landlock
@one_loop
@pytest.mark.anyio
async def test_best_effort_report(tree, no_leaks):
    missing = tree / "missing"
    rules = Landlock(read_only=[missing, tree / "ro"], **{"execute": ["/usr", "/bin"]})
    async with await Command("/bin/true").landlock(rules).spawn() as child:
        report = child.landlock_report
        assert child.landlock_abi == ABI and report is not None
        assert report.enforced and report.skipped_paths == (str(missing),)
        assert report.dropped_rights == tuple(
            f"fs:{n}" for n, (_, since) in FS_RIGHTS.items() if since > ABI)
        assert not report.complete
        assert (await child.wait()).success()
    async with await Command("/bin/true").spawn() as plain:
        assert plain.landlock_report is None and plain.landlock_abi is None


@needs_landlock
@one_loop
@pytest.mark.anyio
async def test_strict_missing_path_is_an_error(tree, no_leaks):
    missing = tree / "missing"
    rules = Landlock(read_only=[missing], execute=SYSTEM, best_effort=False)
    with pytest.raises(LandlockError) as info:
        await Command("/bin/true").landlock(rules).status()
    assert info.value.errno == errno.ENOENT and isinstance(info.value, FileNotFoundError)
    assert info.value.filename == str(missing) and "best_effort" in str(info.value)
    # the same rules enforce once the path exists
    missing.mkdir()
    assert (await Command("/bin/true").landlock(rules).status()).success()


@needs_landlock
@one_loop
@pytest.mark.anyio
async def test_unprivileged(tree, no_leaks):
    os.chmod(tree / "secret" / "file", 0o644)  # readable to uid 65534 but for Landlock
    port, other = free_port(), free_port()
    tcp = {"tcp_bind": [port]} if ABI >= 4 else {}
    out = await run_unprivileged(f"""
        import anyio, json, os
        from aunshare import Command, Landlock, Stdio
        async def main():
            rules = Landlock(read_only=[{str(tree / "ro")!r}, *{RUNTIME["read_only"]!r}],
                             execute={RUNTIME["execute"]!r}, **{tcp!r})
            o = await (Command({PYTHON!r}).args(["-I", "-S", "-c", {PROBE!r},
                       "read:{tree}/ro/file", "read:{tree}/secret/file",
                       "write:{tree}/ro/new", "bind:{port}", "bind:{other}"])
                       .landlock(rules).stdout(Stdio.piped()).output())
            c = await Command("/bin/true").landlock(rules).spawn()
            await c.wait()
            print(json.dumps([os.getuid(), o.status.code, json.loads(o.stdout),
                              c.landlock_report.enforced]))
        anyio.run(main)
    """)
    uid, code, got, enforced = json.loads(out.stdout)
    assert (uid, code, enforced) == (NOBODY, 0, True)
    bind_other = errno.EACCES if ABI >= 4 else 0
    assert list(got.values()) == [0, errno.EACCES, errno.EACCES, 0, bind_other]


def test_signal_scope_does_not_stop_the_parent_death_signal():
    """The parent-death signal comes from the parent, outside the domain:
    scoping the child's own signals leaves it armed."""
    import subprocess

    if ABI < 6:
        pytest.skip(f"signal scoping needs Landlock ABI 6, this kernel has {ABI}")
    code = (f"import anyio, sys; from aunshare import Command, Landlock\n"
            f"async def main():\n"
            f"    c = await Command('/bin/sleep').arg('30').landlock(Landlock(scope_signals=True,"
            f" execute={SYSTEM!r})).spawn()\n"
            f"    print(c.pid, flush=True); sys.stdout.close(); import os; os._exit(0)\n"
            f"anyio.run(main)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True)
    pid = int(out.stdout)
    for _ in range(500):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":  # killed, waiting for its new parent to reap it
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the confined child outlived its parent")


# -- the command line ---------------------------------------------------------------


@needs_landlock
def test_cli(tree):
    from test_cli import aunshare

    system = [a for p in SYSTEM for a in ("--landlock-exec", p)]
    res = aunshare("-v", *system, "--landlock-ro", str(tree / "ro"), "--landlock-rw",
                   str(tree / "rw"), "--landlock-ro", str(tree / "missing"), "--",
                   "sh", "-c", f"cat {tree}/ro/file; echo x > {tree}/rw/new; "
                   f"cat {tree}/secret/file || exit 7")
    assert res.returncode == 7 and res.stdout == "ro", res.stderr
    assert f"landlock: ABI {ABI}, enforced" in res.stderr
    assert f"missing paths skipped: {tree / 'missing'}" in res.stderr
    assert (tree / "rw" / "new").read_text() == "x\n"
    # the program itself not allowed: exec fails (126), saying which option helps
    res = aunshare("--landlock-ro", "/etc", "--", "true")
    assert res.returncode == 126 and "--landlock-exec" in res.stderr
    # strict: a missing path is a setup failure (125); nothing runs
    res = aunshare("--landlock-strict", *system, "--landlock-ro", str(tree / "missing"), "--",
                   "touch", str(tree / "rw" / "ran"))
    assert res.returncode == 125 and "without --landlock-strict" in res.stderr
    assert not (tree / "rw" / "ran").exists()
    for bad in ("0", "65536", "http"):
        res = aunshare("--landlock-tcp-bind", bad, "--", "true")
        assert res.returncode == 2 and "--landlock-tcp-bind" in res.stderr
    res = aunshare("--landlock-strict", "--", "true")
    assert res.returncode == 2 and "--landlock-strict needs" in res.stderr
