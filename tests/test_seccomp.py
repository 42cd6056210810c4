"""seccomp filters: the compiler (checked by running its BPF in a small
interpreter here) and real children with filters installed, on both
executors, as root and as uid 65534."""

from __future__ import annotations

import errno
import json
import signal
import socket
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aunshare
from aunshare import Action, Command, SeccompFilter, arg
from aunshare._syscalls import TABLES
from aunshare._linux import ARCH as HOST
from aunshare.executors import get_executor
from aunshare.seccomp import AUDIT_ARCH, Cond

from conftest import run_unprivileged

DATA = Path(__file__).resolve().parent / "data"
ARCH = "x86_64"
NR = TABLES[ARCH]
ALLOW, KILL = Action.ALLOW.value, Action.KILL.value


def run_bpf(prog: bytes, nr: int, args: tuple[int, ...] = (0,) * 6,
            arch: int = AUDIT_ARCH[ARCH]) -> int:
    """Classic BPF as the kernel runs it on struct seccomp_data."""
    data = struct.pack("=IIQ6Q", nr, arch, 0, *args)
    insns = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    a = pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:
            a = struct.unpack_from("=I", data, k)[0]
        elif code == 0x54:
            a &= k
        elif code == 0x05:
            pc += k
        elif code in (0x15, 0x25, 0x35):
            hit = a == k if code == 0x15 else a > k if code == 0x25 else a >= k
            pc += jt if hit else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def errno_ret(err: int) -> int:
    return Action.ERRNO.value | err


# -- the compiler ---------------------------------------------------------------------------


def test_rules_first_match_and_default():
    f = (SeccompFilter(arch=ARCH).deny("mount").kill(["ptrace", "kexec_load"]).log("chdir")
         .deny("mkdir", errno.EACCES).allow("mkdir"))
    prog = f.compile()
    assert run_bpf(prog, NR["mount"]) == errno_ret(errno.EPERM)
    assert run_bpf(prog, NR["ptrace"]) == run_bpf(prog, NR["kexec_load"]) == KILL
    assert run_bpf(prog, NR["chdir"]) == Action.LOG.value
    assert run_bpf(prog, NR["mkdir"]) == errno_ret(errno.EACCES)  # the first rule wins
    assert run_bpf(prog, NR["read"]) == ALLOW
    deny_all = SeccompFilter(Action.ERRNO, errno.ENOSYS, ARCH).allow(["execve", "read"])
    prog = deny_all.compile()
    assert run_bpf(prog, NR["write"]) == errno_ret(errno.ENOSYS)
    assert run_bpf(prog, NR["read"]) == ALLOW
    # exit and exit_group always pass, so a failing exec can be reported
    assert run_bpf(prog, NR["exit_group"]) == run_bpf(prog, NR["exit"]) == ALLOW


def test_foreign_abi_and_x32_are_killed():
    prog = SeccompFilter(arch=ARCH).compile()
    assert run_bpf(prog, NR["read"]) == ALLOW
    assert run_bpf(prog, 3, arch=0x40000003) == KILL  # i386 (AUDIT_ARCH_I386)
    assert run_bpf(prog, NR["read"] | 0x40000000) == KILL  # x32
    assert run_bpf(prog, 0xFFFFFFFF) == ALLOW  # -1: no syscall, left to the default
    arm = SeccompFilter(arch="aarch64").deny("openat").compile()
    assert run_bpf(arm, TABLES["aarch64"]["openat"], arch=AUDIT_ARCH["aarch64"]) == \
        errno_ret(errno.EPERM)
    assert run_bpf(arm, TABLES["aarch64"]["openat"]) == KILL  # an x86_64 call


def test_many_names_in_one_rule():
    names = sorted(NR)[:300]  # more than an 8-bit jump reaches
    names = [n for n in names if n not in ("exit", "exit_group", "execve")]
    prog = SeccompFilter(Action.ERRNO, arch=ARCH).allow(["execve", *names]).compile()
    for name in names:
        assert run_bpf(prog, NR[name]) == ALLOW, name
    others = set(NR) - set(names) - {"exit", "exit_group", "execve"}
    for name in sorted(others)[:50]:
        assert run_bpf(prog, NR[name]) == errno_ret(errno.EPERM), name


OPS = {"==": lambda a, v, m: a == v, "!=": lambda a, v, m: a != v,
       "<": lambda a, v, m: a < v, "<=": lambda a, v, m: a <= v,
       ">": lambda a, v, m: a > v, ">=": lambda a, v, m: a >= v,
       "&==": lambda a, v, m: a & m == v}
U64 = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**32 + 1,
                                                               2**63, 2**64 - 1]))


@settings(max_examples=200, deadline=None)
@given(op=st.sampled_from(sorted(OPS)), value=U64, actual=U64, mask=U64,
       index=st.integers(0, 5))
def test_64bit_conditions(op, value, actual, mask, index):
    """Each operator, on two 32-bit halves, agrees with 64-bit arithmetic."""
    if op == "&==":
        value &= mask
        cond = arg(index).masked(mask, value)
    else:
        cond = Cond(index, op, value)
    prog = SeccompFilter(arch=ARCH).deny("socket", errno.EACCES, when=cond).compile()
    args = [0] * 6
    args[index] = actual
    want = errno_ret(errno.EACCES) if OPS[op](actual, value, mask) else ALLOW
    assert run_bpf(prog, NR["socket"], tuple(args)) == want


def test_conditions_are_anded_and_arg_operators():
    f = SeccompFilter(arch=ARCH).deny("socket", when=(arg(0) == 2, arg(1) != 3))
    prog = f.compile()
    assert run_bpf(prog, NR["socket"], (2, 1, 0, 0, 0, 0)) == errno_ret(errno.EPERM)
    assert run_bpf(prog, NR["socket"], (2, 3, 0, 0, 0, 0)) == ALLOW
    assert run_bpf(prog, NR["socket"], (1, 1, 0, 0, 0, 0)) == ALLOW
    # a failed condition leaves an argument in the accumulator: the next
    # rule must still compare the syscall number
    two = (SeccompFilter(arch=ARCH).deny("socket", when=arg(0) == 2)
           .deny("socket", errno.EACCES, when=arg(0) == 1).deny("bind", errno.EIO)).compile()
    assert run_bpf(two, NR["socket"], (1, 0, 0, 0, 0, 0)) == errno_ret(errno.EACCES)
    assert run_bpf(two, NR["bind"], (1, 0, 0, 0, 0, 0)) == errno_ret(errno.EIO)
    assert run_bpf(two, NR["socket"], (3, 0, 0, 0, 0, 0)) == ALLOW
    assert (arg(1) < 5) == Cond(1, "<", 5) and (arg(2) >= 1) == Cond(2, ">=", 1)
    assert (arg(0) == -1).value == 2**64 - 1


def test_filters_are_immutable_and_hashable():
    base = SeccompFilter()
    more = base.deny("mount")
    assert base.rules == () and len(more.rules) == 1
    assert hash(more) == hash(SeccompFilter().deny("mount")) and more == base.deny("mount")
    with pytest.raises(AttributeError):
        more.default = Action.KILL  # type: ignore[misc]


def test_bad_input():
    with pytest.raises(ValueError, match=r"unknown syscall 'mout'.*did you mean mount"):
        SeccompFilter().deny("mout")
    for bad in (0, 4096, -1):
        with pytest.raises(ValueError, match="1 to 4095"):
            SeccompFilter().deny("mount", errno=bad)
    with pytest.raises(ValueError, match="refuse execve"):
        SeccompFilter().kill("execve").compile()
    with pytest.raises(ValueError, match="refuse execve"):
        SeccompFilter(Action.ERRNO).allow("read").compile()
    with pytest.raises(ValueError, match="refuse execve"):
        Command("/bin/true").seccomp(SeccompFilter().deny("execve"))
    # a conditional denial of execve is the caller's business
    SeccompFilter().deny("execve", when=arg(2) == 1).compile()
    with pytest.raises(ValueError, match="always allowed"):
        SeccompFilter().deny("exit_group")
    with pytest.raises(ValueError, match="8-byte"):
        Command("/bin/true").seccomp(b"\0" * 12)
    with pytest.raises(TypeError):
        Command("/bin/true").seccomp("mount")  # type: ignore[arg-type]
    other = "aarch64" if HOST == "x86_64" else "x86_64"
    with pytest.raises(ValueError, match="foreign ABI"):
        Command("/bin/true").seccomp(SeccompFilter(arch=other))
    with pytest.raises(ValueError, match="arguments 0 to 5"):
        arg(6)
    with pytest.raises(ValueError, match="unknown action"):
        SeccompFilter.from_oci({"defaultAction": "SCMP_ACT_MAYBE"})
    with pytest.raises(ValueError, match="not SCMP_ARCH_X86_64"):
        SeccompFilter.from_oci({"architectures": ["SCMP_ARCH_PPC64LE"]}, arch=ARCH)


def test_oci_profile_loads_like_docker():
    profile = json.loads((DATA / "seccomp-profile.json").read_text())
    f = SeccompFilter.from_oci(profile, arch=ARCH)
    prog = f.compile()
    assert run_bpf(prog, NR["openat"]) == ALLOW
    assert run_bpf(prog, NR["mount"]) == errno_ret(errno.EPERM)  # needs CAP_SYS_ADMIN
    assert run_bpf(prog, NR["mkdir"]) == errno_ret(errno.EACCES)
    assert run_bpf(prog, NR["clone3"]) == errno_ret(errno.ENOSYS)
    assert run_bpf(prog, NR["personality"], (8, 0, 0, 0, 0, 0)) == ALLOW
    assert run_bpf(prog, NR["personality"], (1, 0, 0, 0, 0, 0)) == errno_ret(errno.EPERM)
    flags = socket.SOCK_STREAM  # clone without any namespace flag (mask 0x7E020000) passes
    assert run_bpf(prog, NR["clone"], (flags, 0, 0, 0, 0, 0)) == ALLOW
    assert run_bpf(prog, NR["clone"], (0x10000000, 0, 0, 0, 0, 0)) == errno_ret(errno.EPERM)
    assert run_bpf(prog, NR["landlock_create_ruleset"]) == ALLOW  # minKernel 5.13
    # with the capability: mount allowed, the clone entry excluded
    admin = SeccompFilter.from_oci(profile, arch=ARCH, caps=["CAP_SYS_ADMIN"]).compile()
    assert run_bpf(admin, NR["mount"]) == ALLOW
    assert run_bpf(admin, NR["clone3"]) == errno_ret(errno.EPERM)
    # a whole OCI runtime config works too
    assert SeccompFilter.from_oci({"linux": {"seccomp": profile}}, arch=ARCH) == f
    arm = SeccompFilter.from_oci(profile, arch="aarch64")
    assert any("arm_fadvise64_64" in r.names for r in arm.rules) is False  # not on arm64
    assert not any("arch_prctl" in r.names for r in arm.rules)


def test_plan_places_seccomp_last():
    from aunshare.launch import _build

    flt = SeccompFilter().deny("mount")
    spec = Command("/bin/true").uid(65534).seccomp(flt).spec()
    plan = _build(spec, [], False, None, [])
    names = [s.syscall for s in plan.steps]
    assert names[-3:] == ["prctl", "seccomp", "execve"]
    assert plan.steps[-3].args[:2] == (38, 1)  # PR_SET_NO_NEW_PRIVS: no longer root
    assert plan.steps[-2].args[2].data == flt.compile()
    # a root child keeping its capabilities needs no no_new_privs
    import os
    if os.geteuid() == 0:
        plan = _build(Command("/bin/true").seccomp(flt).spec(), [], False, None, [])
        assert [s.syscall for s in plan.steps][-2:] == ["seccomp", "execve"]
        assert "prctl" not in [s.syscall for s in plan.steps if s.args[:1] == (38,)]


# -- real children ----------------------------------------------------------------------------

PROBE = r"""
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def call(f, *a):
    return 0 if f(*a) == 0 else ctypes.get_errno()
out = {"mount": call(libc.mount, b"none", b"/nonexistent-dir", b"tmpfs", 0, None)}
for fam in ("AF_UNIX", "AF_INET"):
    try:
        socket.socket(getattr(socket, fam)).close()
        out[fam] = 0
    except OSError as e:
        out[fam] = e.errno
try:
    os.mkdir("/nonexistent-dir/x")
except OSError as e:
    out["mkdir"] = e.errno
print(out)
"""


def probe(out: aunshare.Output) -> dict[str, int]:
    assert out.status.success(), out.stderr.decode()
    return eval(out.stdout)  # our own probe's dict of ints


@pytest.mark.anyio
async def test_mount_denied_and_socket_by_family(anyio_backend, no_leaks):
    plain = probe(await Command(sys.executable).args(["-c", PROBE]).output())
    assert plain["mount"] == errno.ENOENT and plain["AF_INET"] == 0  # as root, unfiltered
    flt = (SeccompFilter().deny("mount")
           .deny("socket", errno.EAFNOSUPPORT, when=arg(0) == socket.AF_INET))
    got = probe(await Command(sys.executable).args(["-c", PROBE]).seccomp(flt).output())
    assert got["mount"] == errno.EPERM
    assert got["AF_INET"] == errno.EAFNOSUPPORT and got["AF_UNIX"] == 0


@pytest.mark.anyio
async def test_kill_action_ends_child_with_sigsys(anyio_backend, no_leaks):
    status = await (Command("/bin/sh").args(["-c", "kill -0 $$; echo alive"])
                    .seccomp(SeccompFilter().kill("kill")).stdout(aunshare.Stdio.null()).status())
    assert status.signal == signal.SIGSYS and not status.success()
    assert "SIGSYS" in str(status)


def _raw_deny_mkdir_exdev() -> bytes:
    """Hand-assembled classic BPF, as bwrap users pass it: mkdir/mkdirat -> EXDEV."""
    ins = struct.Struct("=HBBI").pack
    audit = AUDIT_ARCH[HOST]
    table = TABLES[HOST]
    return b"".join([
        ins(0x20, 0, 0, 4), ins(0x15, 1, 0, audit), ins(0x06, 0, 0, KILL),
        ins(0x20, 0, 0, 0), ins(0x15, 0, 1, table["mkdirat"]),
        ins(0x06, 0, 0, errno_ret(errno.EXDEV)),
        *([ins(0x15, 0, 1, table["mkdir"]), ins(0x06, 0, 0, errno_ret(errno.EXDEV))]
          if "mkdir" in table else []),
        ins(0x06, 0, 0, ALLOW),
    ])


@pytest.mark.anyio
async def test_raw_bpf_and_oci_profile_enforced(anyio_backend, no_leaks):
    got = probe(await Command(sys.executable).args(["-c", PROBE])
                .seccomp(_raw_deny_mkdir_exdev()).output())
    assert got["mkdir"] == errno.EXDEV and got["mount"] == errno.ENOENT
    profile = json.loads((DATA / "seccomp-profile.json").read_text())
    # Docker's shape: default deny with EPERM, an allow list, mkdir with EACCES.
    # The interpreter needs a few more calls than this small list.
    extra = {"names": ["getdents", "fadvise64", "ioctl", "epoll_create1", "pipe", "select",
                       "fstatfs", "mremap", "socketpair", "getpeername", "getsockname",
                       "setsockopt", "clock_nanosleep", "nanosleep"],
             "action": "SCMP_ACT_ALLOW"}
    profile["syscalls"].append(extra)
    flt = SeccompFilter.from_oci(profile)
    got = probe(await Command(sys.executable).args(["-c", PROBE]).seccomp(flt).output())
    assert got["mkdir"] == errno.EACCES and got["mount"] == errno.EPERM
    assert got["AF_UNIX"] == 0


@pytest.mark.anyio
async def test_unprivileged_filters(anyio_backend):
    out = await run_unprivileged(f"""
        import anyio, errno, socket, sys
        from aunshare import Command, SeccompFilter, arg
        PROBE = {PROBE!r}
        async def main():
            flt = (SeccompFilter().deny("mount", errno.ENOTSUP)
                   .deny("socket", errno.EAFNOSUPPORT, when=arg(0) == socket.AF_INET))
            out = await Command(sys.executable).args(["-c", PROBE]).seccomp(flt).output()
            print(out.stdout.decode().strip())
            st = await Command("/bin/sh").args(["-c", "kill -0 $$"]).seccomp(
                SeccompFilter().kill("kill")).status()
            print(st.signal)
        anyio.run(main)
    """)
    lines = out.stdout.decode().splitlines()
    got = eval(lines[0])
    assert got["mount"] == errno.ENOTSUP and got["AF_INET"] == errno.EAFNOSUPPORT
    assert got["AF_UNIX"] == 0
    assert int(lines[1]) == signal.SIGSYS


@pytest.mark.anyio
async def test_failed_exec_reported_under_a_filter_refusing_write(anyio_backend, no_leaks):
    flt = SeccompFilter().deny("write", errno.EIO)
    cmd = Command("/nonexistent/program").seccomp(flt)
    if get_executor().shares_memory:
        with pytest.raises(aunshare.Exec) as info:
            await cmd.status()
        assert info.value.errno == errno.ENOENT
    else:
        # the portable child's report is refused: it exits 127 unreported
        status = await cmd.status()
        assert status.code == 127


# -- the command line ----------------------------------------------------------------------


def test_cli_seccomp_options(tmp_path):
    from test_cli import aunshare as cli
    from test_cli import cli_env

    probe = [sys.executable, "-c", PROBE]
    res = cli("--deny-syscalls", "mount,mkdir,mkdirat", "--", *probe)
    assert res.returncode == 0, res.stderr
    got = eval(res.stdout)
    assert got["mount"] == errno.EPERM and got["mkdir"] == errno.EPERM
    profile = json.loads((DATA / "seccomp-profile.json").read_text())
    profile["defaultAction"] = "SCMP_ACT_ALLOW"  # the list as exceptions to allow
    (tmp_path / "p.json").write_text(json.dumps(profile))
    res = cli("--seccomp-profile", str(tmp_path / "p.json"), "--", *probe)
    assert res.returncode == 0, res.stderr
    assert eval(res.stdout)["mkdir"] == errno.EACCES
    # bwrap's --seccomp FD: the program read from an inherited descriptor
    bpf = tmp_path / "f.bpf"
    bpf.write_bytes(_raw_deny_mkdir_exdev())
    import subprocess
    with open(bpf, "rb") as f:
        res = subprocess.run([sys.executable, "-m", "aunshare", "--seccomp", str(f.fileno()),
                              "--", *probe], env=cli_env(), capture_output=True, text=True,
                             pass_fds=(f.fileno(),), timeout=20, check=False)
    assert res.returncode == 0, res.stderr
    assert eval(res.stdout)["mkdir"] == errno.EXDEV
    # bad input: close matches named, nothing started
    res = cli("--deny-syscalls", "mout", "--", "/bin/true")
    assert res.returncode != 0 and "did you mean mount" in res.stderr
    res = cli("--seccomp", "99", "--", "/bin/true")
    assert res.returncode != 0 and "--seccomp 99" in res.stderr


def test_one_no_new_privs_with_landlock():
    from aunshare import Landlock
    from aunshare.launch import _build

    spec = (Command("/bin/true").uid(65534).landlock(Landlock(read_only=["/usr"]))
            .seccomp(SeccompFilter().deny("mount")).spec())
    plan = _build(spec, [], False, None, [], landlock_fd=300)
    names = [s.syscall for s in plan.steps]
    nnp = [i for i, s in enumerate(plan.steps) if s.syscall == "prctl" and s.args[:1] == (38,)]
    assert len(nnp) == 1
    assert nnp[0] < names.index("landlock_restrict_self") < names.index("seccomp")
    assert names[-2:] == ["seccomp", "execve"]


def test_init_process_combinations():
    from aunshare import Namespace

    base = Command("/bin/true").unshare(Namespace.PID).init_process()
    with pytest.raises(ValueError, match="refuses execveat"):
        base.seccomp(SeccompFilter().deny("execveat")).spec()
    with pytest.raises(ValueError, match="supervise_syscalls"):
        Command("/bin/true").unshare(Namespace.PID).init_process().supervise_syscalls(
            "openat").spec()
    Command("/bin/true").unshare(Namespace.PID).init_process().seccomp(
        SeccompFilter().deny("mount")).spec()
