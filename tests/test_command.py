"""The Command builder as pure data: chaining, accepted types, validation,
repr, and the descriptors owned by Stdio.dup_file / Fd.dup_file.

Nothing here spawns a process.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import tempfile
from pathlib import Path

import pytest

from aunshare import Command, Fd, KillPolicy, KillTarget, Stdio
from aunshare.launch import child_env
from aunshare.plan import CStr, Setup, build_plan

MAX_ID = 2**32 - 2


def plan_of(cmd: Command):
    """The child's plan for ``cmd`` (as an unprivileged parent)."""
    return build_plan(cmd.spec(), Setup(b"/bin/true", cmd.get_argv(), None, [], 1234, 1000, 1000))


def is_open(fd: int) -> bool:
    """True when ``fd`` is an open descriptor of this process."""
    try:
        os.fstat(fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True


# -- chaining -------------------------------------------------------------

BUILDER_CALLS = {
    "arg": lambda c: c.arg("x"),
    "args": lambda c: c.args(["a", "b"]),
    "arg0": lambda c: c.arg0("zero"),
    "env": lambda c: c.env("K", "V"),
    "envs": lambda c: c.envs({"A": "1", "B": "2"}),
    "env_remove": lambda c: c.env_remove("HOME"),
    "env_clear": lambda c: c.env_clear(),
    "current_dir": lambda c: c.current_dir("/tmp"),
    "stdin": lambda c: c.stdin(Stdio.null()),
    "stdout": lambda c: c.stdout(Stdio.piped()),
    "stderr": lambda c: c.stderr(Stdio.inherit()),
    "uid": lambda c: c.uid(1000),
    "gid": lambda c: c.gid(1000),
    "groups": lambda c: c.groups([1, 2]),
    "make_group_leader": lambda c: c.make_group_leader(),
    "new_session": lambda c: c.new_session(),
    "process_group": lambda c: c.process_group(1),
    "umask": lambda c: c.umask(0o22),
    "set_parent_death_signal": lambda c: c.set_parent_death_signal(signal.SIGTERM),
    "allow_daemonize": lambda c: c.allow_daemonize(),
    "keep_sigmask": lambda c: c.keep_sigmask(),
    "file_descriptor": lambda c: c.file_descriptor(3, Fd.piped_write()),
    "close_fds": lambda c: c.close_fds(range(10, 20)),
    "reset_fds": lambda c: c.reset_fds(),
    "kill_policy": lambda c: c.kill_policy(KillPolicy(grace=1)),
    "new_cgroup": lambda c: c.new_cgroup("/sys/fs/cgroup"),
}


@pytest.mark.parametrize("name", sorted(BUILDER_CALLS))
def test_builder_method_returns_same_command(name):
    """Every builder method returns the very Command it was called on."""
    cmd = Command("/bin/true")
    assert BUILDER_CALLS[name](cmd) is cmd


def test_long_chain_accumulates():
    """A chain of calls builds up one Command."""
    cmd = Command("/bin/echo").arg("a").args(["b", "c"]).arg("d").arg0("echo")
    assert cmd.get_argv() == [b"echo", b"a", b"b", b"c", b"d"]


def test_commands_of_one_program_share_their_plain_spec_until_changed():
    """Command("x") twice gives the same frozen spec (nothing made per
    spawn); changing one Command changes neither the other nor the spec."""
    a, b = Command("/bin/echo"), Command(b"/bin/echo")
    assert a.spec() is b.spec()
    shared = b.spec()
    a.arg("hello").env("K", "v")
    assert a.spec() is not shared
    assert a.spec().program.args == (b"hello",)
    assert b.spec() is shared and shared.program.args == () and shared.program.env == ()
    assert Command("/bin/cat").spec() is not shared


# -- accepted types -------------------------------------------------------

@pytest.mark.parametrize("program", ["/bin/echo", b"/bin/echo", Path("/bin/echo")],
                         ids=["str", "bytes", "path"])
def test_program_types(program):
    """The program may be str, bytes or os.PathLike; argv[0] defaults to it."""
    assert Command(program).get_argv() == [b"/bin/echo"]


def test_argument_types():
    """arg, args and arg0 accept str, bytes and os.PathLike, encoded with fsencode."""
    cmd = (Command("prog").arg("s").arg(b"b").arg(Path("p/q"))
           .args(["t", b"c", Path("r")]).arg("caf\u00e9").arg("\udcff"))
    assert cmd.get_argv() == [b"prog", b"s", b"b", b"p/q", b"t", b"c", b"r",
                              "caf\u00e9".encode(), b"\xff"]
    assert cmd.arg0(Path("/x/zero")).get_argv()[0] == b"/x/zero"
    assert Command("p").arg0(b"z").get_argv()[0] == b"z"


def test_args_accepts_any_iterable():
    """args() takes generators and tuples, not only lists."""
    cmd = Command("p").args(str(i) for i in range(3)).args(("x",))
    assert cmd.get_argv() == [b"p", b"0", b"1", b"2", b"x"]


@pytest.mark.parametrize("path", ["/tmp", b"/tmp", Path("/tmp")], ids=["str", "bytes", "path"])
def test_current_dir_types(path):
    """current_dir accepts str, bytes and os.PathLike; the plan chdirs there."""
    plan = plan_of(Command("p").current_dir(path))
    chdirs = [s for s in plan.steps if s.syscall == "chdir"]
    assert [s.args for s in chdirs] == [(CStr(b"/tmp"),)]


def test_env_types_and_environment():
    """env keys and values may be str, bytes or PathLike; env_clear starts empty,
    env_remove drops a key, later env() calls win."""
    cmd = (Command("p").env_clear().env("A", "1").env(b"B", Path("/b"))
           .envs({"C": b"3", "A": "again"}).env("D", "4").env_remove("D"))
    assert sorted(child_env(cmd.spec())) == [b"A=again", b"B=/b", b"C=3"]


def test_env_clear_drops_earlier_settings():
    """env_clear() forgets variables set before it."""
    assert child_env(Command("p").env("A", "1").env_clear().spec()) == []


def test_env_remove_from_parent_environment(monkeypatch):
    """Without env_clear the child gets the parent's environment minus removals."""
    monkeypatch.setenv("AUNSHARE_TEST_VAR", "yes")
    monkeypatch.setenv("AUNSHARE_TEST_KEEP", "kept")
    env = child_env(Command("p").env_remove("AUNSHARE_TEST_VAR").spec())
    assert b"AUNSHARE_TEST_KEEP=kept" in env
    assert not any(e.startswith(b"AUNSHARE_TEST_VAR=") for e in env)


def test_untouched_environment_is_inherited_live():
    """With no env call at all, the child uses the parent's live environ (None)."""
    assert child_env(Command("p").spec()) is None


def test_ids_at_limits_accepted():
    """0 and 2**32-2 are valid ids; (uid_t)-1 is not."""
    Command("p").uid(0).gid(MAX_ID).groups([0, MAX_ID])


# -- validation: the call that gets the bad value raises, naming it --------

@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: Command("/bin/a\0b"), ValueError, r"program contains a NUL byte"),
        (lambda: Command(b"/bin/a\0b"), ValueError, r"program contains a NUL byte"),
        (lambda: Command(""), ValueError, r"program must not be empty"),
        (lambda: Command(b""), ValueError, r"program must not be empty"),
        (lambda: Command(42), TypeError, r"program must be str, bytes or os.PathLike"),
        (lambda: Command("p").arg("a\0b"), ValueError, r"arg contains a NUL byte"),
        (lambda: Command("p").arg(None), TypeError, r"arg must be str, bytes"),
        (lambda: Command("p").args(["ok", b"a\0b"]), ValueError, r"args item contains a NUL"),
        (lambda: Command("p").args([1]), TypeError, r"args item must be str, bytes"),
        (lambda: Command("p").args("string"), TypeError, r"args\(\) takes an iterable"),
        (lambda: Command("p").args(b"bytes"), TypeError, r"args\(\) takes an iterable"),
        (lambda: Command("p").arg0("a\0"), ValueError, r"arg0 contains a NUL byte"),
        (lambda: Command("p").env("K\0", "v"), ValueError, r"env key contains a NUL byte"),
        (lambda: Command("p").env("K", "v\0"), ValueError, r"env value contains a NUL byte"),
        (lambda: Command("p").env("A=B", "v"), ValueError,
         r"env key must be non-empty and contain no '='"),
        (lambda: Command("p").env("", "v"), ValueError, r"env key must be non-empty"),
        (lambda: Command("p").env(1, "v"), TypeError, r"env key must be str"),
        (lambda: Command("p").envs({"A=B": "v"}), ValueError, r"env key must be non-empty"),
        (lambda: Command("p").env_remove("A=B"), ValueError, r"env key must be non-empty"),
        (lambda: Command("p").env_remove(""), ValueError, r"env key must be non-empty"),
        (lambda: Command("p").current_dir("/t\0mp"), ValueError, r"current_dir contains a NUL"),
        (lambda: Command("p").current_dir(""), ValueError, r"current_dir must not be empty"),
        (lambda: Command("p").uid(-1), ValueError, r"uid must be between 0 and 4294967294, got -1"),
        (lambda: Command("p").uid(2**32 - 1), ValueError, r"uid must be between 0 and 4294967294"),
        (lambda: Command("p").uid(2**40), ValueError, r"uid must be between"),
        (lambda: Command("p").uid("0"), TypeError, r"uid must be an int, not str"),
        (lambda: Command("p").uid(1.0), TypeError, r"uid must be an int, not float"),
        (lambda: Command("p").uid(True), TypeError, r"uid must be an int, not bool"),
        (lambda: Command("p").gid(-1), ValueError, r"gid must be between 0 and 4294967294"),
        (lambda: Command("p").gid(2**32 - 1), ValueError, r"gid must be between"),
        (lambda: Command("p").gid(None), TypeError, r"gid must be an int, not NoneType"),
        (lambda: Command("p").gid(False), TypeError, r"gid must be an int, not bool"),
        (lambda: Command("p").groups([1, -5]), ValueError, r"groups item must be between"),
        (lambda: Command("p").groups([2**32 - 1]), ValueError, r"groups item must be between"),
        (lambda: Command("p").groups([1, "2"]), TypeError, r"groups item must be an int"),
        (lambda: Command("p").groups([True]), TypeError, r"groups item must be an int, not bool"),
        (lambda: Command("p").groups("12"), TypeError, r"groups\(\) takes an iterable of gids"),
        (lambda: Command("p").set_parent_death_signal(0), ValueError,
         r"parent death signal must be a signal number from 1 to 64, got 0"),
        (lambda: Command("p").set_parent_death_signal(65), ValueError,
         r"parent death signal must be a signal number from 1 to 64, got 65"),
        (lambda: Command("p").set_parent_death_signal(-9), ValueError, r"parent death signal"),
        (lambda: Command("p").set_parent_death_signal("SIGTERM"), TypeError,
         r"parent death signal must be a signal number, not str"),
        (lambda: Command("p").set_parent_death_signal(True), TypeError,
         r"parent death signal must be a signal number, not bool"),
        (lambda: Command("p").stdin(Fd.piped_read()), TypeError, r"stdin\(\) takes a Stdio"),
        (lambda: Command("p").stdout(1), TypeError, r"stdout\(\) takes a Stdio"),
        (lambda: Command("p").stderr(None), TypeError, r"stderr\(\) takes a Stdio"),
        (lambda: Command("p").file_descriptor(3, Stdio.piped()), TypeError,
         r"file_descriptor\(\) takes an Fd"),
        (lambda: Command("p").file_descriptor(3, 5), TypeError, r"file_descriptor\(\) takes an Fd"),
        (lambda: Command("p").file_descriptor("3", Fd.inherit()), TypeError,
         r"target_fd must be an int"),
        (lambda: Command("p").file_descriptor(True, Fd.inherit()), TypeError,
         r"target_fd must be an int, not bool"),
        (lambda: Command("p").file_descriptor(-1, Fd.inherit()), ValueError,
         r"target_fd must be between 3 and"),
        (lambda: Command("p").file_descriptor(2**31 - 1, Fd.inherit()), ValueError,
         r"target_fd must be between 3 and 2147483646"),
        (lambda: Command("p").close_fds(range(0, 10)), ValueError,
         r"close_fds range .* includes stdio \(0-2\)"),
        (lambda: Command("p").close_fds(range(2, 3)), ValueError, r"close_fds range .* stdio"),
        (lambda: Command("p").close_fds(range(-5, 10)), ValueError, r"close_fds range .* stdio"),
        (lambda: Command("p").close_fds([3, 4]), TypeError, r"close_fds\(\) takes a range"),
        (lambda: Command("p").close_fds((3, 10)), TypeError, r"close_fds\(\) takes a range"),
        (lambda: Command("p").close_fds(range(3, 10, 2)), TypeError, r"range with step 1"),
        (lambda: Fd.from_fd(-1), ValueError, r"fd must be between 0 and"),
        (lambda: Fd.from_fd(2**31), ValueError, r"fd must be between 0 and 2147483647"),
        (lambda: Fd.from_fd("3"), TypeError, r"fd must be an int"),
        (lambda: Stdio.from_fd(True), TypeError, r"fd must be an int, not bool"),
        (lambda: Stdio.from_fd(-3), ValueError, r"fd must be between 0"),
        (lambda: Fd.dup_file(object()), TypeError, r"dup_file needs an object with fileno"),
        (lambda: Stdio.dup_file("name"), TypeError, r"Stdio.dup_file needs an object with fileno"),
        (lambda: Command("p").kill_policy(None), TypeError, r"kill_policy\(\) takes a KillPolicy"),
        (lambda: Command("p").kill_policy("group"), TypeError, r"takes a KillPolicy, not str"),
        (lambda: Command("p").new_cgroup("relative/cg"), ValueError,
         r"new_cgroup parent must be an absolute path"),
        (lambda: Command("p").new_cgroup("/a\0b"), ValueError, r"new_cgroup parent contains a NUL"),
        (lambda: Command("p").new_cgroup(5), TypeError, r"new_cgroup parent must be str"),
        (lambda: Command("p").process_group("1"), TypeError, r"process_group must be an int"),
        (lambda: Command("p").process_group(-1), ValueError, r"process_group must be between"),
        (lambda: Command("p").umask(0o1000), ValueError, r"umask must be between 0 and 0o777"),
        (lambda: Command("p").umask(True), TypeError, r"umask must be an int"),
        (lambda: Command("p").process_group(7).make_group_leader().spec(), ValueError,
         r"process_group\(7\) puts the child in an existing process group, but "
         r"make_group_leader\(\)"),
        (lambda: Command("p").process_group(7).new_session().spec(), ValueError,
         r"new_session\(\) makes it a session leader"),
        (lambda: KillPolicy(signal=0), ValueError, r"signal must be a signal number from 1 to 64"),
        (lambda: KillPolicy(signal=65), ValueError, r"from 1 to 64, got 65"),
        (lambda: KillPolicy(signal="TERM"), TypeError, r"signal must be a signal number, not str"),
        (lambda: KillPolicy(signal=True), TypeError, r"not bool"),
        (lambda: KillPolicy(grace=-1), ValueError,
         r"grace must be a finite number of seconds >= 0"),
        (lambda: KillPolicy(grace=float("inf")), ValueError, r"grace must be a finite number"),
        (lambda: KillPolicy(grace=float("nan")), ValueError, r"grace must be a finite number"),
        (lambda: KillPolicy(grace="5"), TypeError, r"grace must be a number of seconds, not str"),
        (lambda: KillPolicy(target="tree"), ValueError,
         r"target must be a KillTarget or one of 'auto', 'child', 'group', 'cgroup', got 'tree'"),
    ],
)
def test_validation(call, exc, match):
    """The bad value is rejected with the right exception type, naming the argument."""
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("target, name", [(0, "stdin"), (1, "stdout"), (2, "stderr")])
def test_file_descriptor_refuses_stdio_targets(target, name):
    """Targets 0-2 are refused, pointing at stdin()/stdout()/stderr()."""
    with pytest.raises(ValueError,
                       match=r"use stdin\(\)/stdout\(\)/stderr\(\) for descriptors 0-2"):
        Command("p").file_descriptor(target, Fd.piped_write())
    # the stdio method for that descriptor is the accepted way
    getattr(Command("p"), name)(Stdio.null())


def test_file_descriptor_target_twice():
    """Mapping one target twice is refused; reset_fds() allows mapping it again."""
    cmd = Command("p").file_descriptor(5, Fd.piped_write())
    with pytest.raises(ValueError, match=r"target_fd 5 is already mapped to Fd.piped_write\(\)"):
        cmd.file_descriptor(5, Fd.read_null())
    assert "fd5=Fd.piped_write()" in repr(cmd)
    cmd.reset_fds().file_descriptor(5, Fd.read_null())
    assert "fd5=Fd.read_null()" in repr(cmd)


def test_stdio_can_be_replaced():
    """Unlike file_descriptor, stdin/stdout/stderr may be set again (last wins)."""
    cmd = Command("p").stdout(Stdio.piped()).stdout(Stdio.null())
    assert "fd1=Fd.write_null()" in repr(cmd)


def test_dup_file_of_closed_fd():
    """dup_file of a descriptor that is not open fails at once with ValueError."""
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(ValueError, match=rf"dup_file: cannot duplicate fd {r}"):
        Fd.dup_file(r)


def test_close_fds_empty_range_is_noop():
    """An empty range adds nothing, even one that starts below 3."""
    cmd = Command("p")
    before = plan_of(cmd)
    assert plan_of(cmd.close_fds(range(0, 0)).close_fds(range(10, 5))) == before


@pytest.mark.parametrize(
    "bad",
    [
        lambda c: c.arg("a\0"),
        lambda c: c.args(["fine", "a\0"]),
        lambda c: c.arg0(b"\0"),
        lambda c: c.env("K", "v\0"),
        lambda c: c.env("K=", "v"),
        lambda c: c.current_dir("/a\0"),
        lambda c: c.current_dir(""),
        lambda c: c.envs({"GOOD": "1", "BAD=": "2"}),
        lambda c: c.close_fds(range(2**32, 2**32 + 10)),
        lambda c: c.uid(-1),
        lambda c: c.gid("1"),
        lambda c: c.groups([1, 2, -3]),
        lambda c: c.set_parent_death_signal(0),
        lambda c: c.file_descriptor(1, Fd.inherit()),
        lambda c: c.file_descriptor(3, Fd.inherit()),  # already mapped below
        lambda c: c.close_fds(range(0, 5)),
        lambda c: c.stdout("piped"),
        lambda c: c.kill_policy("child"),
        lambda c: c.new_cgroup("not/absolute"),
    ],
)
def test_rejected_call_leaves_command_unchanged(bad):
    """A call that raises does not change the Command (argv, env, repr, plan)."""
    cmd = (Command("/bin/echo").arg("hi").env("K", "v").uid(5).gid(6).groups([7])
           .file_descriptor(3, Fd.piped_write()))
    before = (cmd.get_argv(), child_env(cmd.spec()), repr(cmd), plan_of(cmd))
    with pytest.raises((ValueError, TypeError)):
        bad(cmd)
    assert (cmd.get_argv(), child_env(cmd.spec()), repr(cmd), plan_of(cmd)) == before


# -- repr --------------------------------------------------------------------

def test_repr_program_and_args():
    """repr shows the program and arguments quoted as the crate's Debug does."""
    text = repr(Command("/bin/echo").arg("hello").arg(b"world"))
    assert '"/bin/echo" "hello" "world"' in text
    assert text.startswith("<Command ")


def test_repr_escapes_like_the_crate():
    """Quotes, backslashes and undecodable bytes are escaped inside the quotes."""
    text = repr(Command("/bin/echo").arg("it's").arg('say "hi"').arg(b"\xff").arg("a\\b"))
    assert text == '<Command "/bin/echo" "it\'s" "say \\"hi\\"" "\\xff" "a\\\\b">'


def test_repr_plain_command_has_no_extras():
    """A Command without options shows only its program."""
    assert repr(Command("/bin/true")) == '<Command "/bin/true">'


def test_repr_cwd_uid_gid():
    """cwd, uid and gid appear in repr once set."""
    cmd = Command("/bin/echo").arg("x")
    assert "cwd" not in repr(cmd) and "uid" not in repr(cmd)
    text = repr(cmd.current_dir(Path("/srv/data")).uid(1000).gid(100))
    assert "cwd='/srv/data'" in text
    assert "uid=1000" in text
    assert "gid=100" in text


def test_repr_env_clear_and_fds():
    """env_clear and descriptor mappings appear in repr."""
    text = repr(Command("p").env_clear().stdin(Stdio.null()).file_descriptor(4, Fd.from_fd(7)))
    assert "env_clear" in text
    assert "fd0=Fd.read_null()" in text
    assert "fd4=Fd.from_fd(7)" in text


# -- Stdio/Fd specs ----------------------------------------------------------

def test_stdio_specs_map_to_fd_kinds():
    """Stdio.piped/null become the right direction for stdin versus stdout."""
    cmd = (Command("p").stdin(Stdio.piped()).stdout(Stdio.piped())
           .stderr(Stdio.null()))
    text = repr(cmd)
    assert "fd0=Fd.piped_read()" in text
    assert "fd1=Fd.piped_write()" in text
    assert "fd2=Fd.write_null()" in text
    assert "fd0=Fd.read_null()" in repr(Command("p").stdin(Stdio.null()))


def test_from_fd_does_not_duplicate():
    """from_fd borrows the number: nothing is opened, the number is kept."""
    before = sorted(os.listdir("/proc/self/fd"))
    spec = Stdio.from_fd(1)
    assert repr(spec) == "Stdio.from_fd(1)"
    assert repr(Fd.from_fd(9)) == "Fd.from_fd(9)"
    assert sorted(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("make", [Stdio.dup_file, Fd.dup_file], ids=["Stdio", "Fd"])
@pytest.mark.parametrize("pass_int", [False, True], ids=["file", "int"])
def test_dup_file_owns_a_copy(make, pass_int):
    """dup_file duplicates at once: the copy survives closing the original,
    is not inheritable, and refers to the same open file."""
    with tempfile.TemporaryFile() as f:
        ino = os.fstat(f.fileno()).st_ino
        spec = make(f.fileno() if pass_int else f)
        owned = spec.owned.fd
        assert owned != f.fileno()
    # the original is closed now
    st = os.fstat(owned)
    assert st.st_ino == ino
    assert not os.get_inheritable(owned)
    assert str(owned) in repr(spec)
    del spec
    gc.collect()
    assert not is_open(owned)


def test_dup_file_shares_the_file_offset():
    """The copy is a dup (one open file description), not a re-open."""
    with tempfile.TemporaryFile() as f:
        spec = Fd.dup_file(f)
        os.write(spec.owned.fd, b"abc")
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == 3
    del spec
    gc.collect()


def test_dup_file_copy_lives_as_long_as_the_command():
    """A Command holding a dup_file spec keeps the copy open; dropping the
    Command closes it."""
    r, w = os.pipe()
    try:
        cmd = Command("p").stdout(Stdio.dup_file(w)).file_descriptor(3, Fd.dup_file(r))
        owned = [cmd.spec().fds.get(1).owned.fd, cmd.spec().fds.get(3).owned.fd]
    finally:
        os.close(r)
        os.close(w)
    gc.collect()
    assert all(is_open(fd) for fd in owned)
    os.write(owned[0], b"x")
    assert os.read(owned[1], 1) == b"x"
    del cmd
    gc.collect()
    assert not any(is_open(fd) for fd in owned)


def test_kill_policy_defaults_and_normalisation():
    """KillPolicy() is TERM, 5 s, AUTO; targets may be named by string and
    equal policies compare and hash equal."""
    policy = KillPolicy()
    assert (policy.signal, policy.grace, policy.target) == (signal.SIGTERM, 5.0, KillTarget.AUTO)
    assert not policy.immediate
    assert KillPolicy(grace=0).immediate and KillPolicy(signal=signal.SIGKILL).immediate
    same = KillPolicy(signal=15, grace=5, target="auto")
    assert same == policy and hash(same) == hash(policy)
    assert KillPolicy(target="group").target is KillTarget.GROUP
    assert repr(KillPolicy(grace=0.3, target="cgroup")) == \
        "KillPolicy(signal=SIGTERM, grace=0.3, target='cgroup')"
    with pytest.raises(AttributeError):
        policy.grace = 1  # frozen


def test_copy_is_independent():
    """Command.copy (used by aunshare.run) shares nothing mutable."""
    cmd = Command("p").arg("a").env("K", "v").stdout(Stdio.piped())
    dup = cmd.copy().arg("b").env("K2", "v2").stdin(Stdio.null()).make_group_leader()
    assert cmd.get_argv() == [b"p", b"a"] and dup.get_argv() == [b"p", b"a", b"b"]
    spec = cmd.spec()
    assert all(k != b"K2" for k, _ in spec.program.env) and spec.fds.get(0) is None
    assert not spec.identity.group_leader
