"""Unit tests of aunshare.plan.build_plan and aunshare.executors.table.encode.

Pure data: plans are built and encoded, never run.
"""

from __future__ import annotations

import errno

import ctypes
import signal
import struct

import pytest

from aunshare import Capability, Command, GidMap, Namespace, Stdio, UidMap, errors
from aunshare._linux import CLONE_ARGS_SIZE, SYSCALLS, libc
from aunshare.executors.table import HEADER_SIZE, STEP_SIZE, encode
from aunshare.plan import (
    EXPECT_ARG5, IGNORE_ERROR, USE_PREVIOUS, Bytes, CStr, CStrArray, Plan, Ptr, Step, U32Array,
    Setup, build_plan,
)

MAX_FD = 2**31 - 1
PARENT = 1234
RESET_SIGNALS = [s for s in range(1, 65) if s not in (signal.SIGKILL, signal.SIGSTOP)]


def plan_for(cmd: Command, *, euid: int = 1000, fd_moves=(), envp=None, **setup) -> Plan:
    """build_plan with fixed program, argv and parent pid."""
    return build_plan(cmd.spec(), Setup(b"/bin/true", [b"true"], envp, list(fd_moves), PARENT, euid,
                                 setup.pop("egid", 1000), **setup))


def names(plan: Plan) -> list[str]:
    """The plan's syscall names, in order."""
    return [s.syscall for s in plan.steps]


def only(plan: Plan, syscall: str) -> Step:
    """The single step making ``syscall``."""
    found = [s for s in plan.steps if s.syscall == syscall]
    assert len(found) == 1, f"{syscall}: {found}"
    return found[0]


def index(plan: Plan, syscall: str) -> int:
    """Position of the first step making ``syscall``."""
    return names(plan).index(syscall)


# -- the default plan -----------------------------------------------------------

def test_flag_values_are_distinct_bits():
    """The step flags are the bits the executors test."""
    assert (USE_PREVIOUS, IGNORE_ERROR, EXPECT_ARG5) == (1, 2, 4)


def test_default_plan_exact():
    """Default: close_range(CLOEXEC), pdeathsig SIGKILL + parent check, 62
    signal resets, empty mask, execve."""
    plan = plan_for(Command("/bin/true"))
    steps = plan.steps
    assert len(steps) == 1 + 2 + 62 + 1 + 1

    assert steps[0].syscall == "close_range"
    assert steps[0].args == (3, MAX_FD, 4)
    assert steps[0].flags == 0

    assert steps[1].syscall == "prctl"
    assert steps[1].args == (1, signal.SIGKILL)
    assert steps[1].subject == "SIGKILL"

    assert steps[2].syscall == "getppid"
    assert steps[2].args == (0, 0, 0, 0, 0, PARENT)
    assert steps[2].flags == EXPECT_ARG5
    assert "parent exited" in steps[2].detail

    resets = steps[3:65]
    assert all(s.syscall == "rt_sigaction" for s in resets)
    assert [s.args[0] for s in resets] == RESET_SIGNALS
    assert len(resets) == 62
    assert all(s.args[1:] == (Ptr("sigaction_default"), 0, 8) for s in resets)
    assert all(s.flags == IGNORE_ERROR for s in resets)

    assert steps[65].syscall == "rt_sigprocmask"
    assert steps[65].args == (2, Ptr("empty_sigset"), 0, 8)
    assert steps[65].flags == 0

    last = steps[-1]
    assert last.syscall == "execve"
    assert last.args == (CStr(b"/bin/true"), CStrArray((b"true",)), Ptr("environ"))
    assert last.flags == 0


def test_default_plan_has_no_optional_steps():
    """Nothing asked, nothing done: no dup3, setpgid, chdir or identity change."""
    got = set(names(plan_for(Command("/bin/true"))))
    assert got == {"close_range", "prctl", "getppid", "rt_sigaction", "rt_sigprocmask", "execve"}


def test_only_signal_resets_ignore_errors():
    """Every step except the signal resets reports its failure."""
    cmd = (Command("p").current_dir("/d").uid(1).gid(2).groups([3]).make_group_leader())
    plan = plan_for(cmd, fd_moves=[(10, 3)])
    for step in plan.steps:
        assert bool(step.flags & IGNORE_ERROR) == (step.syscall == "rt_sigaction"), step


def test_program_argv_passed_through():
    """execve gets exactly the program and argv given to build_plan."""
    cmd = Command("ignored")
    plan = build_plan(cmd.spec(), Setup(b"/usr/bin/env", [b"env", b"-i", b""], None, [], 1, 0))
    assert plan.steps[-1].args[:2] == (CStr(b"/usr/bin/env"), CStrArray((b"env", b"-i", b"")))
    assert plan.steps[-1].subject == b"/usr/bin/env"


def test_build_plan_is_pure():
    """Building twice gives equal plans and leaves the Command as it was."""
    cmd = Command("p").arg("a").uid(3).current_dir("/x")
    before = repr(cmd)
    assert plan_for(cmd) == plan_for(cmd)
    assert repr(cmd) == before


def test_default_clone_flags_and_features():
    """A plain command asks for no extra clone flags or features."""
    plan = plan_for(Command("p"))
    assert plan.clone_flags == 0
    assert not plan.leads_group and not plan.handshake


# -- parent death signal ------------------------------------------------------------

def test_custom_parent_death_signal():
    """set_parent_death_signal changes the prctl argument and its name."""
    plan = plan_for(Command("p").set_parent_death_signal(signal.SIGTERM))
    prctl = only(plan, "prctl")
    assert prctl.args == (1, signal.SIGTERM)
    assert prctl.subject == "SIGTERM"
    assert names(plan)[index(plan, "prctl") + 1] == "getppid"


def test_realtime_parent_death_signal_named_by_number():
    """A signal without a Python name (40, between SIGRTMIN and SIGRTMAX) is
    shown by number."""
    prctl = only(plan_for(Command("p").set_parent_death_signal(40)), "prctl")
    assert prctl.args == (1, 40)
    assert prctl.subject == "signal 40"


def test_allow_daemonize_removes_pdeathsig():
    """allow_daemonize drops prctl and the parent check, nothing else."""
    default = plan_for(Command("p"))
    plan = plan_for(Command("p").allow_daemonize())
    assert "prctl" not in names(plan) and "getppid" not in names(plan)
    assert [s for s in default.steps if s.syscall not in ("prctl", "getppid")] == list(plan.steps)


def test_death_signal_after_allow_daemonize_restores_it():
    """A later set_parent_death_signal re-arms it."""
    plan = plan_for(Command("p").allow_daemonize().set_parent_death_signal(signal.SIGHUP))
    assert only(plan, "prctl").args == (1, signal.SIGHUP)
    assert only(plan, "getppid").args[5] == PARENT


# -- signals ------------------------------------------------------------------------

def test_keep_sigmask():
    """keep_sigmask: no resets, one rt_sigprocmask restoring the saved mask."""
    plan = plan_for(Command("p").keep_sigmask())
    assert "rt_sigaction" not in names(plan)
    mask = only(plan, "rt_sigprocmask")
    assert mask.args == (2, Ptr("saved_sigmask"), 0, 8)
    assert names(plan)[-2:] == ["rt_sigprocmask", "execve"]
    assert len(plan.steps) == 5


# -- descriptors ----------------------------------------------------------------------

def test_fd_moves_become_dup3_after_close_range():
    """Each (source, target) gives dup3(source, target, 0), in order, right
    after close_range, with a StdioError naming the target."""
    plan = plan_for(Command("p"), fd_moves=[(20, 0), (21, 1), (22, 7)])
    assert names(plan)[:4] == ["close_range", "dup3", "dup3", "dup3"]
    dups = plan.steps[1:4]
    assert [s.args for s in dups] == [(20, 0, 0), (21, 1, 0), (22, 7, 0)]
    assert [s.subject for s in dups] == ["fd 0 (stdin)", "fd 1 (stdout)", "fd 7"]
    assert all(s.error is errors.StdioError for s in dups)


def test_reset_fds_removes_close_range():
    """reset_fds: nothing is closed, the plan starts with the dup3s."""
    plan = plan_for(Command("p").reset_fds(), fd_moves=[(9, 4)])
    assert "close_range" not in names(plan)
    assert plan.steps[0].syscall == "dup3"


def test_close_fds_adds_ranges():
    """close_fds ranges become extra close_range steps (inclusive upper bound)."""
    plan = plan_for(Command("p").close_fds(range(100, 200)))
    assert [s.args for s in plan.steps if s.syscall == "close_range"] == [
        (3, MAX_FD, 4), (100, 199, 4)]
    plan = plan_for(Command("p").reset_fds().close_fds(range(5, 10)).close_fds(range(3, 2**40)),
                    fd_moves=[(50, 6)])
    assert names(plan)[:3] == ["close_range", "close_range", "dup3"]
    assert plan.steps[0].args == (5, 9, 4)
    assert plan.steps[1].args == (3, MAX_FD, 4)
    assert plan.steps[0].subject == "5..9"


# -- process group and working directory ---------------------------------------------

def test_group_leader_before_chdir():
    """make_group_leader: setpgid(0, 0), after the fds and before chdir."""
    plan = plan_for(Command("p").make_group_leader().current_dir("/tmp"), fd_moves=[(10, 3)])
    assert names(plan)[:4] == ["close_range", "dup3", "setpgid", "chdir"]
    assert only(plan, "setpgid").args == (0, 0)


def test_make_group_leader_false():
    """make_group_leader(False) undoes it."""
    cmd = Command("p").make_group_leader().make_group_leader(False)
    assert "setpgid" not in names(plan_for(cmd))


def test_pty_gives_setsid_then_tiocsctty_after_the_fds():
    """A pty: setsid(), then ioctl(TIOCSCTTY) on the first standard fd that
    is the pty, after its dup3 and before chdir; no setpgid."""
    cmd = Command("p").stdout(Stdio.pty()).stderr(Stdio.pty()).current_dir("/tmp")
    plan = plan_for(cmd, fd_moves=[(7, 1), (7, 2)])
    assert names(plan)[:6] == ["close_range", "dup3", "dup3", "setsid", "ioctl", "chdir"]
    assert only(plan, "setsid").args == ()
    ioctl = only(plan, "ioctl")
    assert ioctl.args == (1, 0x540E, 0) and ioctl.error is errors.StdioError
    assert ioctl.subject == "fd 1 (stdout)" and "TIOCSCTTY" in ioctl.action
    plan = plan_for(Command("p").stdin(Stdio.pty()).stdout(Stdio.pty()), fd_moves=[(7, 0)])
    assert only(plan, "ioctl").args[0] == 0
    assert "setpgid" not in names(plan)
    assert "setsid" not in names(plan_for(Command("p").stdout(Stdio.piped())))


def test_pty_step_error_message():
    plan = plan_for(Command("p").stdin(Stdio.pty()), fd_moves=[(7, 0)])
    step = only(plan, "ioctl")
    exc = step.error(1, step.subject, step.detail, action=step.action)
    assert str(exc) == ("make the controlling terminal (TIOCSCTTY) fd 0 (stdin): "
                        "Operation not permitted (os error 1)")


def test_current_dir_gives_chdir():
    """current_dir: chdir(path) before the identity change, error Chdir."""
    plan = plan_for(Command("p").current_dir("/var/empty").uid(5))
    chdir = only(plan, "chdir")
    assert chdir.args == (CStr(b"/var/empty"),)
    assert chdir.subject == b"/var/empty"
    assert index(plan, "chdir") < index(plan, "setresuid")


# -- identity -------------------------------------------------------------------------------

def test_identity_order_and_args():
    """setgroups, setresgid, setresuid in this order, all before the pdeathsig."""
    plan = plan_for(Command("p").uid(1001).gid(1002).groups([5, 6, 7]))
    wanted = ("setgroups", "setresgid", "setresuid", "prctl", "getppid")
    seq = [n for n in names(plan) if n in wanted]
    assert seq == ["setgroups", "setresgid", "setresuid", "prctl", "getppid"]
    assert only(plan, "setgroups").args == (3, U32Array((5, 6, 7)))
    assert only(plan, "setresgid").args == (1002, 1002, 1002)
    assert only(plan, "setresuid").args == (1001, 1001, 1001)
    assert index(plan, "setresuid") + 1 == index(plan, "prctl")


def test_identity_before_pdeathsig_with_custom_signal():
    """The prctl comes after the credential change whatever the signal."""
    plan = plan_for(Command("p").set_parent_death_signal(signal.SIGUSR1).gid(4), euid=0)
    assert index(plan, "setresgid") < index(plan, "prctl")
    assert index(plan, "setgroups") < index(plan, "setresgid")


@pytest.mark.parametrize("setter", ["uid", "gid"])
def test_root_parent_clears_groups(setter):
    """As root, uid() or gid() without groups() adds setgroups(0, [])."""
    plan = plan_for(getattr(Command("p"), setter)(1000), euid=0)
    assert only(plan, "setgroups").args == (0, U32Array(()))
    assert names(plan).index("setgroups") < names(plan).index(f"setres{setter}")


@pytest.mark.parametrize("setter", ["uid", "gid"])
def test_unprivileged_parent_keeps_groups(setter):
    """As euid 1000, uid()/gid() alone adds no setgroups."""
    plan = plan_for(getattr(Command("p"), setter)(1000), euid=1000)
    assert "setgroups" not in names(plan)
    assert f"setres{setter}" in names(plan)


def test_root_parent_without_identity_change_keeps_groups():
    """As root with no uid/gid, nothing about identity is done."""
    plan = plan_for(Command("p"), euid=0)
    assert not {"setgroups", "setresgid", "setresuid"} & set(names(plan))


def test_explicit_groups_win_over_root_default():
    """groups() given: exactly those, for root and non-root alike."""
    for euid in (0, 1000):
        plan = plan_for(Command("p").uid(7).groups([42]), euid=euid)
        assert only(plan, "setgroups").args == (1, U32Array((42,)))
    plan = plan_for(Command("p").groups([]), euid=1000)
    assert only(plan, "setgroups").args == (0, U32Array(()))


def test_uid_zero_and_max_id():
    """uid 0 is a real change, not 'unset'; the largest id passes through."""
    plan = plan_for(Command("p").uid(0).gid(2**32 - 2))
    assert only(plan, "setresuid").args == (0, 0, 0)
    assert only(plan, "setresgid").args == (2**32 - 2,) * 3


# -- environment --------------------------------------------------------------------------------

def test_explicit_envp():
    """An explicit envp becomes a CStrArray; None means the live environ."""
    plan = plan_for(Command("p"), envp=[b"A=1", b"B=2"])
    assert plan.steps[-1].args[2] == CStrArray((b"A=1", b"B=2"))
    assert plan_for(Command("p"), envp=[]).steps[-1].args[2] == CStrArray(())
    assert plan_for(Command("p")).steps[-1].args[2] == Ptr("environ")


# -- error classes ----------------------------------------------------------------------------

def test_error_classes():
    """Each step reports failure with the matching aunshare error."""
    cmd = (Command("p").current_dir("/d").uid(1).gid(2).groups([3]).make_group_leader())
    plan = plan_for(cmd, fd_moves=[(10, 3)])
    expected = {
        "close_range": errors.StdioError, "dup3": errors.StdioError,
        "setpgid": errors.SetPGid, "chdir": errors.Chdir, "setgroups": errors.SetUser,
        "setresgid": errors.SetUser, "setresuid": errors.SetUser,
        "prctl": errors.ParentDeathSignal, "getppid": errors.ParentDeathSignal,
        "rt_sigaction": errors.NixError, "rt_sigprocmask": errors.NixError,
        "execve": errors.Exec,
    }
    assert set(names(plan)) == set(expected)
    for step in plan.steps:
        assert step.error is expected[step.syscall], step


def test_step_errors_build_useful_messages():
    """A step's error built the way the parent builds it names the step and subject."""
    plan = plan_for(Command("p").current_dir("/nope").uid(77), fd_moves=[(10, 1)])
    chdir = only(plan, "chdir")
    err = chdir.error(2, chdir.subject, chdir.detail, action=chdir.action)
    assert isinstance(err, OSError) and err.errno == 2
    assert str(err).startswith("chdir /nope: ")
    dup = only(plan, "dup3")
    assert str(dup.error(9, dup.subject, dup.detail, action=dup.action)).startswith(
        "set up fd 1 (stdout): ")
    uid = only(plan, "setresuid")
    assert str(uid.error(1, uid.subject, uid.detail, action=uid.action)).startswith(
        "setresuid 77: ")


# -- describe --------------------------------------------------------------------------------

def test_describe():
    """describe(): one numbered line per step, showing the syscall and arguments."""
    plan = plan_for(Command("p").current_dir("/tmp").uid(5).groups([1, 2]), fd_moves=[(10, 3)])
    lines = plan.describe().split("\n")
    assert len(lines) == len(plan.steps)
    for i, (line, step) in enumerate(zip(lines, plan.steps)):
        assert line.startswith(f"{i:3d}. {step.syscall}(")
    assert lines[0] == "  0. close_range(3, 2147483647, 4)"
    assert lines[1] == "  1. dup3(10, 3, 0)"
    assert lines[2] == "  2. chdir(b'/tmp')"
    assert lines[3] == "  3. setgroups(2, [1, 2])"
    assert lines[-1] == f"{len(lines) - 1:3d}. execve(b'/bin/true', [b'true'], &environ)"


# -- table encoding ----------------------------------------------------------------------------

def rich_plan() -> Plan:
    """A plan using every kind of argument."""
    cmd = (Command("p").current_dir("/srv").uid(1000).gid(1000).groups([4, 24, 27])
           .make_group_leader().close_fds(range(100, 101)))
    return plan_for(cmd, euid=0, fd_moves=[(30, 1), (31, 5)], envp=[b"A=1", b"PATH=/bin"])


def is_pointer(arg) -> bool:
    """True when the encoder turns ``arg`` into an address."""
    return isinstance(arg, (CStr, CStrArray, U32Array, Ptr))


def test_encode_counts_and_numbers():
    """nsteps and rows match the plan; each row has the syscall number and flags."""
    plan = rich_plan()
    table = encode(plan)
    assert table.nsteps == len(plan.steps) == len(table.rows())
    for step, row in zip(plan.steps, table.rows()):
        assert len(row) == 8
        assert row[0] == SYSCALLS[step.syscall]
        assert row[7] == step.flags
        for arg, val in zip(step.args, row[1:7]):
            if not is_pointer(arg):
                assert val == arg
        assert all(v == 0 for v in row[1 + len(step.args):7])


def test_encode_known_x86_64_numbers():
    """Spot check of the syscall table on x86_64."""
    if SYSCALLS.get("execve") != 59:
        pytest.skip("not x86_64")
    rows = encode(plan_for(Command("p"))).rows()
    assert [r[0] for r in rows[:3]] == [436, 157, 110]
    assert rows[-1][0] == 59
    rows = encode(plan_for(Command("p").stdin(Stdio.pty()), fd_moves=[(7, 0)])).rows()
    assert [r[0] for r in rows[:4]] == [436, 292, 112, 16]  # close_range dup3 setsid ioctl


def test_encode_step_records_in_buffer():
    """The step area holds each row followed by its index (what the native
    executor reads), including rows served from the encoder's cache."""
    plan = rich_plan()
    for _ in range(2):  # the second pass uses cached signal-reset rows
        table = encode(plan)
        off = HEADER_SIZE + CLONE_ARGS_SIZE
        assert table.steps == table.base + off
        for i, row in enumerate(table.rows()):
            record = struct.unpack_from("=9Q", table.buf, off + STEP_SIZE * i)
            assert record == (*row, i)


def test_encode_header():
    """The header starts with a full signal mask and an empty failure record."""
    table = encode(plan_for(Command("p")))
    assert struct.unpack_from("=Q", table.buf, 0)[0] == 2**64 - 1
    assert table.record() == (0, 0)


def test_encode_cstr():
    """A CStr argument points at its NUL-terminated bytes inside the buffer."""
    plan = rich_plan()
    table = encode(plan)
    size = len(table.buf)
    seen = 0
    for step, row in zip(plan.steps, table.rows()):
        for arg, val in zip(step.args, row[1:7]):
            if isinstance(arg, CStr):
                assert table.base <= val < table.base + size
                assert ctypes.string_at(val) == arg.data
                assert ctypes.string_at(val, len(arg.data) + 1) == arg.data + b"\0"
                seen += 1
    assert seen == 2  # chdir path and the program


def read_cstr_array(table, addr: int, limit: int = 64) -> list[bytes | None]:
    """The strings of a NULL-terminated char* array in ``table``'s buffer,
    with the final None. Every pointer must lie inside the buffer."""
    lo, hi = table.base, table.base + len(table.buf)
    ptrs = ctypes.cast(ctypes.c_void_p(addr), ctypes.POINTER(ctypes.c_void_p))
    out: list[bytes | None] = []
    for i in range(limit):
        assert lo <= addr + 8 * i < hi, "array runs past the buffer"
        p = ptrs[i]
        if not p:
            out.append(None)
            return out
        assert lo <= p < hi, f"item {i} points outside the buffer"
        out.append(ctypes.string_at(p))
    raise AssertionError("array not NULL-terminated")


def test_encode_cstr_array():
    """A CStrArray points at an array of C strings ending with NULL."""
    plan = rich_plan()
    table = encode(plan)
    execve = table.rows()[-1]
    assert read_cstr_array(table, execve[2]) == [b"true", None]
    assert read_cstr_array(table, execve[3]) == [b"A=1", b"PATH=/bin", None]


def test_encode_empty_cstr_array():
    """An empty CStrArray is a lone NULL pointer."""
    table = encode(plan_for(Command("p"), envp=[]))
    assert read_cstr_array(table, table.rows()[-1][3]) == [None]


def test_encode_u32_array():
    """A U32Array points at 32-bit ints (the setgroups list)."""
    plan = rich_plan()
    table = encode(plan)
    i = [s.syscall for s in plan.steps].index("setgroups")
    n, addr = table.rows()[i][1:3]
    assert n == 3
    assert list((ctypes.c_uint32 * 3).from_address(addr)) == [4, 24, 27]


def test_encode_named_pointers():
    """Ptr arguments: environ is libc's, saved_sigmask is header+8, and the
    statics hold SIG_DFL and an empty set."""
    table = encode(plan_for(Command("p").keep_sigmask()))
    environ = ctypes.c_void_p.in_dll(libc, "environ").value
    assert table.rows()[-1][3] == environ
    mask_row = table.rows()[-2]
    assert mask_row[2] == table.base + 8
    table.set_saved_mask(0x1234)
    assert ctypes.c_uint64.from_address(mask_row[2]).value == 0x1234

    table = encode(plan_for(Command("p")))
    sigaction = table.rows()[3][2]
    assert ctypes.string_at(sigaction, 32) == bytes(32)
    assert ctypes.string_at(table.rows()[-2][2], 8) == bytes(8)


STATIC_PTRS = (Ptr("environ"), Ptr("sigaction_default"), Ptr("empty_sigset"))


def test_encode_twice_same_rows_apart_from_pointers():
    """Two encodings of one plan differ only in absolute addresses; the data
    sits at the same offsets and holds the same bytes."""
    plan = rich_plan()
    a, b = encode(plan), encode(plan)
    assert a.base != b.base
    assert len(a.rows()) == len(b.rows())
    for step, ra, rb in zip(plan.steps, a.rows(), b.rows()):
        assert ra[0] == rb[0] and ra[7] == rb[7]
        for k, arg in enumerate(step.args, start=1):
            if is_pointer(arg) and arg not in STATIC_PTRS:  # inside the buffer
                assert ra[k] - a.base == rb[k] - b.base
            else:
                assert ra[k] == rb[k]
        assert ra[1 + len(step.args):] == rb[1 + len(step.args):]
        for k, arg in enumerate(step.args, start=1):
            if isinstance(arg, CStr):
                assert ctypes.string_at(ra[k]) == ctypes.string_at(rb[k]) == arg.data
            elif isinstance(arg, CStrArray):
                assert read_cstr_array(a, ra[k]) == read_cstr_array(b, rb[k]) == [*arg.items, None]


def test_set_clone_fills_clone_args():
    """set_clone writes struct clone_args with the pidfd slot in the header."""
    table = encode(plan_for(Command("p")))
    table.set_clone(0x1000, 17)
    fields = struct.unpack_from("=11Q", table.buf, HEADER_SIZE)
    assert fields[0] == 0x1000
    assert fields[1] == table.base + 24
    assert fields[4] == 17


# -- supervision: process group and cgroup -----------------------------------------

def test_group_kill_target_makes_a_group_leader():
    """A kill policy aimed at the group needs the group: setpgid(0, 0) is
    planned, at the same place make_group_leader puts it."""
    from aunshare import KillPolicy

    by_policy = plan_for(Command("p").kill_policy(KillPolicy(target="group")))
    by_builder = plan_for(Command("p").make_group_leader())
    assert names(by_policy) == names(by_builder)
    assert "setpgid" in names(by_policy) and by_policy.leads_group
    assert "setpgid" not in names(plan_for(Command("p").kill_policy(KillPolicy(target="child"))))


def test_new_cgroup_sets_clone_flag_and_feature():
    """new_cgroup adds CLONE_INTO_CGROUP to the clone flags (no step) and the
    'cgroup' feature, so a clone3 failure names the cgroup causes."""
    from aunshare._linux import CLONE_INTO_CGROUP

    plan = plan_for(Command("p").new_cgroup("/sys/fs/cgroup/x"))
    assert plan.clone_flags == CLONE_INTO_CGROUP and not plan.leads_group
    assert names(plan) == names(plan_for(Command("p")))
    causes = errors.fork_causes(16, plan.clone_flags, cgroup=True)  # EBUSY
    assert "cgroup.subtree_control" in causes
    assert "common ancestor" in errors.fork_causes(13, plan.clone_flags, cgroup=True)  # EACCES
    assert errors.fork_causes(16) == ""


def test_cgroup_kill_target_without_cgroup_is_refused():
    from aunshare import KillPolicy

    with pytest.raises(ValueError, match=r"needs a cgroup for the child: call Command.new_cgroup"):
        plan_for(Command("p").kill_policy(KillPolicy(target="cgroup")))


def test_group_kill_target_with_descriptor_moves():
    """The group step does not depend on what else the plan does."""
    from aunshare import KillPolicy

    plan = plan_for(Command("p").kill_policy(KillPolicy(target="group")), fd_moves=[(10, 1)])
    assert names(plan)[:3] == ["close_range", "dup3", "setpgid"]


# -- isolation: namespaces, maps, roots, capabilities ---------------------------



def test_unshare_sets_clone_flags_and_fork_causes():
    plan = plan_for(Command("x").unshare(Namespace.NET | Namespace.PID).map_root_user())
    assert plan.clone_flags == Namespace.NET | Namespace.PID | Namespace.USER
    causes = errors.fork_causes(errno.ENOSPC, plan.clone_flags)
    assert "max_user_namespaces" in causes and "max_net_namespaces" in causes
    assert "pid namespace's init" in causes
    assert "CAP_SYS_ADMIN" not in errors.fork_causes(errno.EPERM, plan.clone_flags)
    alone = plan_for(Command("x").unshare(Namespace.NET))
    assert "CAP_SYS_ADMIN" in errors.fork_causes(errno.EPERM, alone.clone_flags)


def test_full_isolation_order():
    """Every isolation step, in the documented order, before pdeathsig and exec."""
    cmd = (Command("x").unshare(Namespace.PID | Namespace.MOUNT | Namespace.UTS)
           .map_root_user().hostname("h").pivot_root("/new", "old").mount_proc()
           .current_dir("/work").rlimit(7, 10).uid(5).gid(6)
           .keep_caps([Capability.CAP_KILL]).no_new_privs().make_group_leader())
    plan = plan_for(cmd, fd_moves=[(10, 1)], euid=1000, egid=2000, cap_last=40)
    seq = [(s.syscall, s.action) for s in plan.steps if s.syscall != "rt_sigaction"]
    drops = [("prctl", "drop from the bounding set")] * 40
    assert seq == [
        ("close_range", "close descriptors"), ("dup3", "set up"), ("setpgid", "setpgid"),
        ("openat", "open"), ("write", "write"), ("openat", "open"), ("write", "write"),
        ("openat", "open"), ("write", "write"),
        ("sethostname", "sethostname"),
        ("mount", "make every mount private under"),
        ("mount", "bind-mount the new root on itself"), ("chdir", "chdir"),
        ("pivot_root", "pivot_root"), ("chdir", "chdir"), ("mount", "mount proc on"),
        ("umount2", "unmount the old root"),
        ("chdir", "chdir"),
        ("prlimit64", "setrlimit"),
        *drops, ("prctl", "prctl(PR_SET_KEEPCAPS)"),
        ("setresgid", "setresgid"), ("setresuid", "setresuid"),
        ("capset", "capset"), ("prctl", "raise the ambient capability"),
        ("prctl", "prctl(PR_SET_NO_NEW_PRIVS)"),
        ("prctl", "prctl(PR_SET_PDEATHSIG)"), ("getppid", "check parent pid"),
        ("rt_sigprocmask", "set signal mask"), ("execve", "exec"),
    ]
    # the child maps its own ids: setgroups deny, then 0 -> the parent's euid/egid
    writes = [s for s in plan.steps if s.syscall == "write"]
    assert [w.args[1] for w in writes] == [CStr(b"deny"), CStr(b"0 1000 1\n"),
                                           CStr(b"0 2000 1\n")]
    assert all(w.flags == USE_PREVIOUS | EXPECT_ARG5 and w.args[5] == w.args[2]
               for w in writes)
    # in a new pid namespace the parent is outside: getppid() is 0
    getppid = next(s for s in plan.steps if s.syscall == "getppid")
    assert getppid.args[5] == 0
    # no automatic setgroups in a user namespace (setgroups is denied there)
    assert "setgroups" not in names(plan)
    pivot = next(s for s in plan.steps if s.syscall == "pivot_root")
    assert pivot.args == (CStr(b"."), CStr(b"old"))
    umount = next(s for s in plan.steps if s.syscall == "umount2")
    assert umount.args[0] == CStr(b"/old")


def test_capset_data_and_ambient():
    plan = plan_for(Command("x").keep_caps([Capability.CAP_NET_ADMIN, Capability.CAP_BPF]),
                    cap_last=40)
    capset = next(s for s in plan.steps if s.syscall == "capset")
    lo, hi = 1 << 12, 1 << (39 - 32)
    assert capset.args == (Bytes(struct.pack("=Ii", 0x20080522, 0)),
                           Bytes(struct.pack("=6I", lo, lo, lo, hi, hi, hi)))
    ambient = [s.args[2] for s in plan.steps if s.action == "raise the ambient capability"]
    assert ambient == [12, 39]
    dropped = [s.args[1] for s in plan.steps if s.action == "drop from the bounding set"]
    assert dropped == [c for c in range(41) if c not in (12, 39)]
    assert "prctl(PR_SET_KEEPCAPS)" not in [s.action for s in plan.steps]  # no uid change


def test_handshake_steps_follow_the_session():
    plan = plan_for(Command("x").set_id_maps([UidMap(0, 1000)], [GidMap(0, 1000)])
                    .make_group_leader(), wake=(50, 51))
    seq = names(plan)
    assert seq[:5] == ["close_range", "setpgid", "close", "read", "prctl"]
    close, read = plan.steps[2], plan.steps[3]
    assert close.args == (51,) and close.flags == IGNORE_ERROR
    assert read.args == (50, Ptr("scratch"), 1, 0, 0, 1) and read.flags == EXPECT_ARG5
    assert plan.handshake
    assert "openat" not in seq  # the parent writes the maps


def test_setns_in_join_order():
    from aunshare.namespaces import JOIN_ORDER

    assert JOIN_ORDER[0] is Namespace.USER and JOIN_ORDER[-1] is Namespace.MOUNT
    join = [(Namespace.USER, 20), (Namespace.NET, 21), (Namespace.MOUNT, 22)]
    plan = plan_for(Command("x"), join=join)
    setns = [s.args for s in plan.steps if s.syscall == "setns"]
    assert setns == [(20, Namespace.USER), (21, Namespace.NET), (22, Namespace.MOUNT)]
    assert plan.clone_flags == 0


def test_chroot_then_proc_and_cwd_inside():
    plan = plan_for(Command("x").unshare(Namespace.MOUNT).chroot_dir("/srv/root/")
                    .mount_proc())
    seq = [(s.syscall, s.args[:2]) for s in plan.steps
           if s.syscall in ("mount", "chroot", "chdir")]
    assert seq == [
        ("mount", (0, CStr(b"/"))),
        ("mount", (CStr(b"proc"), CStr(b"/srv/root/proc"))),
        ("chroot", (CStr(b"/srv/root/"),)),
        ("chdir", (CStr(b"/"),)),
    ]


def test_rlimit_encoding():
    plan = plan_for(Command("x").rlimit(7, None))
    step = next(s for s in plan.steps if s.syscall == "prlimit64")
    assert step.args == (0, 7, Bytes(struct.pack("=QQ", 2**64 - 1, 2**64 - 1)), 0)
    assert step.subject == "RLIMIT_NOFILE"


def test_encode_bytes_and_scratch():
    from aunshare.executors.table import encode

    plan = Plan((Step("capset", (Bytes(b"\1\2\3"), Ptr("scratch")), errors.CapSet, "c"),))
    table = encode(plan)
    row = table.rows()[0]
    assert row[2] == table.base + 32  # the scratch bytes in the header
    off = row[1] - table.base
    assert bytes(table.buf[off:off + 3]) == b"\1\2\3"


def test_chroot_relative_current_dir_is_inside_the_root():
    plan = plan_for(Command("x").chroot_dir("/srv/root").current_dir("var"))
    seq = [(s.syscall, s.args[0]) for s in plan.steps if s.syscall in ("chroot", "chdir")]
    assert seq == [("chroot", CStr(b"/srv/root")), ("chdir", CStr(b"/")),
                   ("chdir", CStr(b"var"))]
