"""Every error class this core can provoke, raised from the await that started
the work, with a message naming the step, the subject and the errno, and
nothing left behind."""

from __future__ import annotations

from aunshare import Namespace

import errno
import os

import pytest

import aunshare
from aunshare import Command, Stdio
from conftest import run_unprivileged

pytestmark = pytest.mark.anyio


async def test_exec_not_found(no_leaks):
    with pytest.raises(aunshare.Exec) as info:
        await Command("/no/such/program").arg("x").stdout(Stdio.piped()).spawn()
    exc = info.value
    assert isinstance(exc, OSError) and isinstance(exc, aunshare.Error)
    assert exc.errno == errno.ENOENT and exc.raw_os_error() == errno.ENOENT
    assert exc.filename == b"/no/such/program"
    assert str(exc) == "exec /no/such/program: No such file or directory (os error 2)"


async def test_exec_path_search_names_directories(no_leaks, tmp_path):
    with pytest.raises(aunshare.Exec) as info:
        await Command("no-such-tool").env("PATH", f"{tmp_path}:/nonexistent").status()
    assert info.value.errno == errno.ENOENT
    assert f"searched {tmp_path}, /nonexistent" in str(info.value)


async def test_exec_permission_and_format(no_leaks, tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("not a program")
    with pytest.raises(aunshare.Exec) as info:
        await Command(plain).status()
    assert info.value.errno == errno.EACCES and str(plain) in str(info.value)
    plain.chmod(0o755)
    plain.write_bytes(b"\x7fELF garbage")
    with pytest.raises(aunshare.Exec) as info:
        await Command(plain).status()
    assert info.value.errno == errno.ENOEXEC


async def test_chdir(no_leaks):
    with pytest.raises(aunshare.Chdir) as info:
        await Command("/bin/true").current_dir("/no/such/dir").output()
    assert info.value.errno == errno.ENOENT
    assert str(info.value) == "chdir /no/such/dir: No such file or directory (os error 2)"


async def test_stdio_error_for_closed_fd(no_leaks):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(aunshare.StdioError) as info:
        await Command("/bin/true").stdout(Stdio.from_fd(w)).status()
    assert info.value.errno == errno.EBADF
    assert "fd 1 (stdout)" in str(info.value)


async def test_wait_error_when_reaped_elsewhere(no_leaks):
    child = await Command("/bin/true").spawn()
    os.waitid(os.P_PID, child.pid, os.WEXITED)  # someone else reaps it
    with pytest.raises(aunshare.WaitError) as info:
        await child.wait()
    assert info.value.errno == errno.ECHILD
    assert "reaped by someone else" in str(info.value)


async def test_set_user_unprivileged():
    out = await run_unprivileged("""
        import anyio, aunshare
        async def main():
            try:
                await aunshare.Command("/bin/true").uid(0).status()
            except aunshare.SetUser as exc:
                print(type(exc).__name__, exc.errno, exc)
        anyio.run(main)
    """)
    assert out.stdout.startswith(b"SetUser 1 setresuid 0: Operation not permitted"), out


async def test_set_user_groups_unprivileged():
    out = await run_unprivileged("""
        import anyio, aunshare
        async def main():
            try:
                await aunshare.Command("/bin/true").groups([0]).status()
            except aunshare.SetUser as exc:
                print(exc)
        anyio.run(main)
    """)
    assert out.stdout.startswith(b"setgroups (0,): Operation not permitted"), out


async def test_fork_error_from_rlimit_nproc_unprivileged():
    """clone3 fails with EAGAIN once the user's process limit is reached."""
    out = await run_unprivileged("""
        import os, resource, anyio, aunshare
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        async def main():
            before = len(os.listdir("/proc/self/fd"))
            try:
                await aunshare.Command("/bin/true").stdout(aunshare.Stdio.piped()).spawn()
            except aunshare.Fork as exc:
                print(type(exc).__name__, exc.errno)
                print(exc)
            print("fds", before, len(os.listdir("/proc/self/fd")))
        anyio.run(main)
    """)
    lines = out.stdout.decode().splitlines()
    assert lines[0] == "Fork 11", out
    assert "clone3: Resource temporarily unavailable (os error 11)" in lines[1]
    assert "RLIMIT_NPROC" in lines[1]
    _, before, after = lines[2].split()
    assert before == after


async def test_error_pickles_and_keeps_fields():
    import pickle

    exc = aunshare.Exec(errno.ENOENT, b"/x", "detail here")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and back.errno == errno.ENOENT
    assert isinstance(back, aunshare.Exec) and isinstance(back, FileNotFoundError)
    assert str(back) == str(exc) == "exec /x: No such file or directory (os error 2); detail here"


def test_aux_errors_carry_code_and_signal():
    exc = aunshare.AuxCommandExited(1, "newuidmap", b"newuidmap: bad map\n")
    assert exc.code == 1 and exc.raw_os_error() is None
    assert str(exc) == "newuidmap exited with code 1: newuidmap: bad map"
    exc2 = aunshare.AuxCommandKilled(9, "newgidmap")
    assert exc2.signal == 9 and str(exc2) == "newgidmap was killed by SIGKILL"


def test_every_crate_variant_is_exported():
    names = ["NixError", "UnknownError", "CreatePipe", "Fork", "Exec", "Chdir",
             "ParentDeathSignal", "PipeError", "WaitError", "StdioError", "SetUser",
             "ChangeRoot", "SetIdMap", "AuxCommandExited", "AuxCommandKilled", "SetPGid",
             "SetNs", "CapSet", "BeforeUnfreeze"]
    for name in names:
        cls = getattr(aunshare, name)
        assert issubclass(cls, aunshare.Error), name
        assert cls.__doc__, name


def test_fork_causes_follow_requested_flags():
    from aunshare.errors import fork_causes

    assert "CAP_SYS_ADMIN" in fork_causes(errno.EPERM, int(Namespace.NET))
    assert "CAP_SYS_ADMIN" not in fork_causes(errno.EPERM)
    assert "CAP_SYS_ADMIN" not in fork_causes(errno.EPERM, int(Namespace.NET | Namespace.USER))
    assert "max_net_namespaces" in fork_causes(errno.ENOSPC, int(Namespace.NET))
    assert fork_causes(errno.ENOSPC) == ""


# -- errno -> OSError subclass, as OSError(errno, ...) would be ---------------------

OSERROR_CLASSES = [
    aunshare.NixError, aunshare.CreatePipe, aunshare.Fork, aunshare.Exec, aunshare.Chdir,
    aunshare.ParentDeathSignal, aunshare.PipeError, aunshare.WaitError, aunshare.StdioError,
    aunshare.SetUser, aunshare.ChangeRoot, aunshare.SetIdMap, aunshare.SetPGid,
    aunshare.SetNs, aunshare.CgroupError, aunshare.SetRlimit, aunshare.CapSet,
    aunshare.LandlockError, aunshare.Mount, aunshare.SeccompError, aunshare.SyscallGone,
    aunshare.NetworkError,
]

ERRNO_CLASSES = [
    (errno.ENOENT, FileNotFoundError), (errno.EACCES, PermissionError),
    (errno.EPERM, PermissionError), (errno.EEXIST, FileExistsError),
    (errno.ENOTDIR, NotADirectoryError), (errno.EISDIR, IsADirectoryError),
    (errno.EINTR, InterruptedError), (errno.ECHILD, ChildProcessError),
    (errno.EPIPE, BrokenPipeError), (errno.ESHUTDOWN, BrokenPipeError),
    (errno.ECONNREFUSED, ConnectionRefusedError), (errno.ECONNRESET, ConnectionResetError),
    (errno.ECONNABORTED, ConnectionAbortedError), (errno.ESRCH, ProcessLookupError),
    (errno.EAGAIN, BlockingIOError), (errno.EWOULDBLOCK, BlockingIOError),
    (errno.EINPROGRESS, BlockingIOError), (errno.ETIMEDOUT, TimeoutError),
]


def test_every_errno_class_is_listed():
    from aunshare import errors

    found = {cls for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors._OSError)
             and cls is not errors._OSError}
    assert found == set(OSERROR_CLASSES)


@pytest.mark.parametrize("cls", OSERROR_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("err,base", ERRNO_CLASSES,
                         ids=[errno.errorcode[e] for e, _ in ERRNO_CLASSES])
def test_errno_gives_the_oserror_subclass(cls, err, base):
    import pickle

    assert type(OSError(err, "")) is base  # what the expectation rests on
    exc = cls(err, "/some/path", "some detail", action="act")
    assert isinstance(exc, base) and isinstance(exc, cls)
    assert isinstance(exc, aunshare.Error) and isinstance(exc, OSError)
    assert type(exc).__name__ == cls.__name__
    assert type(exc).__module__ == cls.__module__ and type(exc).__qualname__ == cls.__qualname__
    assert repr(exc) == f"{cls.__name__}({err}, {os.strerror(err)!r})"
    assert str(exc) == f"act /some/path: {os.strerror(err)} (os error {err}); some detail"
    assert (exc.errno, exc.strerror, exc.filename) == (err, os.strerror(err), "/some/path")
    assert type(cls(err)) is type(exc)  # one subclass per pair, made once
    with pytest.raises(base):
        raise exc
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and str(back) == str(exc) and back.action == "act"


@pytest.mark.parametrize("cls", OSERROR_CLASSES, ids=lambda c: c.__name__)
def test_errno_without_a_subclass_stays_plain(cls):
    exc = cls(errno.ENOEXEC, "x")
    assert type(exc) is cls
    assert not isinstance(exc, (FileNotFoundError, PermissionError, BlockingIOError))


def test_same_oserror_subclass_shares_one_class():
    assert type(aunshare.Exec(errno.EPIPE)) is type(aunshare.Exec(errno.ESHUTDOWN))
    # built again from an errno-specific instance's type: the new errno decides
    first = aunshare.Exec(errno.ENOENT)
    again = type(first)(errno.EACCES)
    assert isinstance(again, PermissionError) and not isinstance(again, FileNotFoundError)


async def test_exec_not_found_is_file_not_found(no_leaks):
    with pytest.raises(FileNotFoundError) as info:
        await Command("/nonexistent").status()
    assert isinstance(info.value, aunshare.Exec)
    assert info.value.errno == errno.ENOENT and info.value.filename == b"/nonexistent"


async def test_exec_not_executable_is_permission_error(no_leaks, tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("not a program")
    with pytest.raises(PermissionError) as info:
        await Command(plain).status()
    assert isinstance(info.value, aunshare.Exec)


# -- clone3 out of descriptors ------------------------------------------------------

def test_fork_causes_for_descriptor_limits():
    from aunshare.errors import fork_causes

    assert "RLIMIT_NOFILE" in fork_causes(errno.EMFILE) and "pidfd" in fork_causes(errno.EMFILE)
    assert "file-max" in fork_causes(errno.ENFILE)


def test_fork_error_from_rlimit_nofile():
    """With RLIMIT_NOFILE lowered step by step, the spawn fails first for
    lack of a pipe or a pidfd; where clone3 is what fails, the Fork error
    explains the pidfd. Run in a process of its own: the limit is per
    process."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import os, resource, anyio, aunshare
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        async def main():
            # one spawn first, so that every module it needs is imported
            # while the limit still allows opening files
            await aunshare.Command("/bin/true").status()
            for n in range(3, len(os.listdir("/proc/self/fd")) + 20):
                resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
                try:
                    await aunshare.Command("/bin/true").status()
                except aunshare.Fork as exc:
                    print(exc.errno, exc)
                    return
                except aunshare.CreatePipe:
                    continue
                finally:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                print("no Fork error before the spawn succeeded at", n)
                return
        anyio.run(main)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    err, _, message = out.stdout.strip().partition(" ")
    assert err == str(errno.EMFILE), out.stdout
    assert message.startswith("clone3: Too many open files (os error 24); likely causes:")
    assert "RLIMIT_NOFILE" in message and "pidfd" in message
