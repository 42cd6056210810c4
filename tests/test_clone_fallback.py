"""Where clone3 is refused, both executors fall back to clone(2).

A seccomp filter (classic BPF, written out below) makes clone3 fail with
ENOSYS or EPERM in a separate interpreter, which then spawns for real:
output, a failing exec, pipes, concurrent spawns (the native executor's
non-vfork path), a new user namespace. The script reports what it saw and
which syscall the executor used; where strace exists, the trace confirms
that clone3 was refused and clone(2) made the children.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from aunshare._linux import ARCH
from aunshare.executors.native import CODE

REPO = os.path.join(os.path.dirname(__file__), "..")

SCRIPT = textwrap.dedent(r"""
    import ctypes, json, os, struct, sys

    AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
    CLONE_NR = {"x86_64": 56, "aarch64": 220}
    clone3_err, clone_err = int(sys.argv[1]), int(sys.argv[2])
    arch = os.uname().machine

    def insn(code, jt, jf, k):
        return struct.pack("=HBBI", code, jt, jf, k)

    LD_ABS, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
    ALLOW, ERRNO = 0x7FFF0000, 0x00050000
    prog = b"".join([
        insn(LD_ABS, 0, 0, 4),                        # 0: seccomp_data.arch
        insn(JEQ, 0, 7, AUDIT_ARCH[arch]),            # 1: another ABI: allow
        insn(LD_ABS, 0, 0, 0),                        # 2: seccomp_data.nr
        insn(JEQ, 3, 0, 435),                         # 3: clone3 -> 7
        insn(JEQ, 0, 4, CLONE_NR[arch] if clone_err else 0xFFFFFFFF),  # 4
        insn(LD_ABS, 0, 0, 16),                       # 5: args[0], low word
        insn(JSET, 1, 2, 0x1000),                     # 6: CLONE_PIDFD -> 8
        insn(RET, 0, 0, ERRNO | clone3_err),          # 7
        insn(RET, 0, 0, ERRNO | clone_err),           # 8
        insn(RET, 0, 0, ALLOW),                       # 9
    ])
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = struct.pack("=HxxxxxxQ", len(prog) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(38, 1, None, 0, 0) or libc.prctl(22, 2, fprog, 0, 0):  # NO_NEW_PRIVS, SECCOMP
        sys.exit(f"seccomp: {os.strerror(ctypes.get_errno())}")

    import anyio
    from aunshare import Command, Namespace, Stdio, errors
    from aunshare.executors import get_executor

    async def main():
        out = {}
        if clone_err:
            try:
                await Command("/bin/true").status()
            except errors.Fork as exc:
                out["both_refused"] = [type(exc).__name__, exc.errno, str(exc)]
            ex = get_executor()
            out["executor"] = [ex.name, ex.clone_syscall, ex.into_cgroup]
            return out
        out["echo"] = (await Command("/bin/echo").arg("hi").output()).stdout.decode()
        try:
            await Command("/nonexistent/program").status()
        except errors.Exec as exc:
            out["missing"] = exc.errno
        child = await (Command("/bin/cat").stdin(Stdio.piped()).stdout(Stdio.piped())
                       .stderr(Stdio.null()).spawn())
        piped, _ = await child.communicate(b"through a pipe")
        out["pipe"] = [piped.decode(), (await child.wait()).code]
        # Two at once: the second spawn cannot take the vfork path.
        results = []
        async def run(word):
            results.append((await Command("/bin/echo").arg(word).output()).stdout.decode())
        sleeper = await Command("/bin/sleep").arg("0.2").spawn()
        async with anyio.create_task_group() as tg:
            for word in ("one", "two", "three"):
                tg.start_soon(run, word)
        try:
            await Command("/nonexistent/other").status()
        except errors.Exec as exc:
            out["missing_concurrent"] = exc.errno
        out["concurrent"] = sorted(results)
        out["sleeper"] = (await sleeper.wait()).code
        ns = await (Command("/bin/cat").arg("/proc/self/uid_map").unshare(Namespace.USER)
                    .map_root_user().output())
        out["userns"] = ns.stdout.decode().split()
        parent = os.environ.get("TEST_CGROUP_PARENT")
        if parent:  # no CLONE_INTO_CGROUP: the handshake moves it in first
            child = await (Command("/bin/cat").arg("/proc/self/cgroup").new_cgroup(parent)
                           .stdout(Stdio.piped()).spawn())
            async with child:
                out["cgroup"] = [(await child.stdout.read_all()).decode(), child.cgroup,
                                 child.handshake]
            out["cgroup_left"] = child.cgroup
        ex = get_executor()
        out["executor"] = [ex.name, ex.clone_syscall, ex.into_cgroup]
        return out

    print(json.dumps(anyio.run(main)))
""")


def _run(executor: str, clone3_err: int, clone_err: int = 0,
         strace: str | None = None, cgroup_parent: str | None = None) -> dict:
    argv = [sys.executable, "-c", SCRIPT, str(clone3_err), str(clone_err)]
    if strace:
        argv = ["strace", "-f", "-qq", "-e", "trace=clone,clone3", "-o", strace, *argv]
    env = dict(os.environ, AUNSHARE_EXECUTOR=executor,
               PYTHONPATH=os.pathsep.join([REPO, *sys.path]))
    if cgroup_parent:
        env["TEST_CGROUP_PARENT"] = cgroup_parent
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout.decode().splitlines()[-1])


EXECUTORS = ["native", "portable"] if ARCH in CODE else ["portable"]
needs_filter = pytest.mark.skipif(ARCH not in ("x86_64", "aarch64"),
                                  reason=f"the test's seccomp filter knows no {ARCH}")


@needs_filter
@pytest.mark.parametrize("refusal", [errno.ENOSYS, errno.EPERM],
                         ids=["ENOSYS", "EPERM"])
@pytest.mark.parametrize("executor", EXECUTORS)
def test_spawns_through_clone_when_clone3_is_refused(executor, refusal, tmp_path,
                                                     cgroup_parent):
    trace = str(tmp_path / "trace") if shutil.which("strace") else None
    out = _run(executor, refusal, strace=trace, cgroup_parent=cgroup_parent)
    # Its own cgroup, joined through cgroup.procs while it waited, then removed.
    text, path, handshake = out["cgroup"]
    assert handshake and path.startswith(cgroup_parent + "/aunshare-")
    assert path.endswith(text.strip().rpartition("/")[2]) and out["cgroup_left"] is None
    assert out["echo"] == "hi\n"
    assert out["missing"] == errno.ENOENT
    assert out["missing_concurrent"] == errno.ENOENT
    assert out["pipe"] == ["through a pipe", 0]
    assert out["concurrent"] == ["one\n", "three\n", "two\n"]
    assert out["sleeper"] == 0
    assert out["userns"][:2] == ["0", str(os.geteuid())]
    assert out["executor"] == [executor, "clone", False]
    if trace:
        with open(trace) as f:
            lines = f.read().splitlines()
        name = errno.errorcode[refusal]
        clone3 = [line for line in lines if " clone3(" in line]
        spawns = [line for line in lines if " clone(" in line and "CLONE_PIDFD" in line]
        assert clone3 and all(f"= -1 {name}" in line for line in clone3), clone3
        # echo, the missing program, cat, sleep, three echoes, another
        # missing program, the user namespace: at least these nine.
        assert len(spawns) >= 9, spawns
        assert not any("CLONE_CLEAR_SIGHAND" in line for line in spawns)
        if executor == "native":
            assert any("CLONE_VFORK" in line for line in spawns)
            assert any("CLONE_VM" in line and "CLONE_VFORK" not in line for line in spawns)


@needs_filter
@pytest.mark.parametrize("executor", EXECUTORS)
def test_both_refused_names_each_attempt(executor):
    out = _run(executor, errno.ENOSYS, errno.EPERM)
    kind, err, message = out["both_refused"]
    assert kind == "Fork" and err == errno.EPERM
    assert "clone3: ENOSYS; clone: EPERM" in message, message
    assert out["executor"] == [executor, "clone", False]


def test_flags_clone_cannot_take(monkeypatch):
    """What clone(2) cannot do is refused by name, before any clone."""
    from aunshare import errors
    from aunshare._linux import (CLONE_CLEAR_SIGHAND, CLONE_INTO_CGROUP, CLONE_PARENT_SETTID,
                                 CLONE_PIDFD, CLONE_VFORK, CLONE_VM)
    from aunshare.executors import clone

    fresh = clone.State()
    fresh.refused(errno.ENOSYS)
    monkeypatch.setattr(clone, "state", fresh)
    asked = CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_CLEAR_SIGHAND | CLONE_PARENT_SETTID
    assert clone.legacy_flags(asked) == CLONE_VM | CLONE_VFORK | CLONE_PIDFD
    with pytest.raises(clone.IntoCgroupUnavailable, match=r"cgroup\.procs") as info:
        clone.legacy_flags(CLONE_PIDFD | CLONE_INTO_CGROUP)
    assert isinstance(info.value, errors.Fork) and "clone3: ENOSYS" in str(info.value)
    with pytest.raises(errors.Fork, match="time namespace"):
        clone.legacy_flags(0x80)
    # What an emulator rejects goes in this order, and is remembered.
    assert clone.degrade(CLONE_VM | CLONE_VFORK | CLONE_PIDFD) == CLONE_VM | CLONE_VFORK
    assert clone.degrade(CLONE_VM | CLONE_VFORK) == 0
    assert clone.degrade(0) is None
    clone.learn(CLONE_VM | CLONE_PIDFD, 0)
    assert clone.legacy_flags(asked) == 0
