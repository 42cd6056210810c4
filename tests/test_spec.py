"""The frozen spec: immutable, hashable, validated once, and complete.

The completeness test walks every field of every record of the spec: a
field added to the spec without an alternative value here fails it, and
so does a field whose change reaches neither the plan nor the plan cache
key (a stale plan would then be reused for it).
"""

from __future__ import annotations

import errno
import os
import pickle

import pytest

from aunshare import (Command, Fd, KillPolicy, Landlock, Namespace, SeccompFilter, Spec, Stdio,
                      UidMap, GidMap)
from aunshare._record import FrozenInstanceError, NamedTuple, fields, replace
from aunshare._record import record as make_record
from aunshare.fds import OwnedFd
from aunshare.launch import DefaultStdio, _cache_key
from aunshare.plan import Setup, build_plan
from aunshare.spec import CgroupLimits, MountKind, MountOp, PivotRoot, Rlimit, SelfMap, UserNetwork

pytestmark = pytest.mark.anyio


def _base() -> Command:
    return (Command("/bin/true")
            .unshare(Namespace.USER | Namespace.MOUNT | Namespace.UTS | Namespace.PID)
            .file_descriptor(5, Fd.read_null()))


async def _hook(pid: int) -> None:
    pass


_NS_FD = OwnedFd(os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC))

# record -> field -> the changes that give the field another value (with
# whatever else a valid spec then needs).
ALTERNATIVES: dict[str, dict[str, dict[str, object]]] = {
    "program": {
        "program": {"program": b"/bin/false"},
        "args": {"args": (b"x",)},
        "arg0": {"arg0": b"zero"},
        "env_clear": {"env_clear": True},
        "env": {"env": ((b"K", b"v"),)},
        "env_pid": {"env_pid": (b"MYPID",)},
        "cwd": {"cwd": b"/tmp"},
    },
    "fds": {
        "fds": {"fds": ((5, Fd.write_null()),)},
        "close": {"close": ((3, 9),)},
    },
    "identity": {
        "uid": {"uid": 7},
        "gid": {"gid": 7},
        "groups": {"groups": (7,)},
        "group_leader": {"group_leader": True},
        "new_session": {"new_session": True},
        "process_group": {"process_group": 7},
        "umask": {"umask": 0o77},
    },
    "isolation": {
        "unshare": {"unshare": Namespace.USER | Namespace.MOUNT | Namespace.UTS | Namespace.PID
                    | Namespace.NET},
        "join": {"join": ((Namespace.NET, _NS_FD),)},
        "uid_maps": {"uid_maps": (UidMap(0, 1000),)},
        "gid_maps": {"uid_maps": (), "gid_maps": (GidMap(0, 1000),)},
        "allow_setgroups": {"uid_maps": (), "allow_setgroups": True},
        "id_map_commands": {"uid_maps": (), "id_map_commands": (b"/a", b"/b")},
        "self_map": {"self_map": SelfMap.CURRENT},
        "before_unfreeze": {"before_unfreeze": _hook},
        "chroot": {"chroot": b"/srv"},
        "pivot": {"pivot": PivotRoot(b"/srv", b"old", True)},
        "hostname": {"hostname": b"box"},
        "mount_proc": {"mount_proc": True},
        "mounts": {"mounts": (MountOp(MountKind.TMPFS, b"/tmp"),)},
        "fresh_root": {"fresh_root": True},
        # lo is brought up only in a new network namespace: the base has none
        "loopback": {"loopback": False, "unshare": Namespace.USER | Namespace.MOUNT
                     | Namespace.UTS | Namespace.NET},
        "keep_caps": {"keep_caps": frozenset({12})},
        "no_new_privs": {"no_new_privs": True},
        "rlimits": {"rlimits": (Rlimit(7, 64, 64),)},
        "seccomp": {"seccomp": (SeccompFilter().deny("mount"), b"\x06\0\0\0\0\0\xff\x7f")},
        "supervise": {"supervise": ("openat",)},
        "landlock": {"landlock": Landlock(read_only=["/usr"])},
        "user_network": {"unshare": Namespace.USER | Namespace.NET,
                         "user_network": UserNetwork(b"/usr/bin/pasta")},
    },
    "lifetime": {
        "death_signal": {"death_signal": 15},
        "keep_sigmask": {"keep_sigmask": True},
        "kill_policy": {"kill_policy": KillPolicy(grace=1)},
        "cgroup_parent": {"cgroup_parent": b"/sys/fs/cgroup/x"},
        "cgroup_path": {"cgroup_path": b"/sys/fs/cgroup/y"},
        "init_process": {"init_process": True},
        "limits": {"limits": CgroupLimits(pids_max=20)},
    },
}


def _plan(spec: Spec):
    moves = [(100 + t, t) for t, _ in spec.fds.fds]
    join = [(ns, 300 + i) for i, (ns, _) in enumerate(spec.isolation.join)]
    wake = (200, 201) if spec.needs_handshake else None
    setup = Setup(b"/bin/true", spec.program.argv, None, moves, 1, 1000, 1000, wake, join)
    return build_plan(spec, setup), _cache_key(spec, moves, DefaultStdio.INHERIT, True)


def _records(spec: Spec) -> list[str]:
    return [f.name for f in fields(spec) if not f.name.startswith("_")]


def test_every_field_reaches_the_plan_or_the_cache_key():
    base = _base().spec()
    base_plan, base_key = _plan(base)
    assert set(_records(base)) == set(ALTERNATIVES), "a record of the spec has no entry here"
    for record in _records(base):
        value = getattr(base, record)
        names = {f.name for f in fields(value) if not f.name.startswith("_")}
        missing = names - set(ALTERNATIVES[record])
        assert not missing, f"spec.{record} fields without an alternative here: {missing}"
        for name in sorted(names):
            changed = replace(value, **ALTERNATIVES[record][name])
            assert getattr(changed, name) != getattr(value, name), (record, name)
            spec = replace(base, **{record: changed})
            plan, key = _plan(spec)
            assert plan != base_plan or key != base_key, (
                f"changing spec.{record}.{name} changes neither the plan nor the cache key")
            if key is not None and base_key is not None:
                assert key != base_key, f"spec.{record}.{name} is not in the cache key"
            # Each record hashes its values once: a field left out of its
            # hash would make specs that differ only there collide.
            assert hash(changed) != hash(value), f"spec.{record}.{name} is not hashed"


class _Point(NamedTuple):
    """A point."""

    x: int
    y: int = 0
    """Defaults to 0."""

    def norm1(self) -> int:
        """Manhattan length."""
        return abs(self.x) + abs(self.y)


@make_record
class _Pair:
    a: int
    b: tuple[int, ...] = ()


def test_run_time_named_tuple_behaves_as_typing_s():
    """The named tuples made without typing: fields, defaults, methods,
    docstrings, _replace, ordering of defaults, pickling."""
    p = _Point(3)
    assert p == (3, 0) and p.y == 0 and p.norm1() == 3 and isinstance(p, tuple)
    assert _Point._fields == ("x", "y") and _Point._field_defaults == {"y": 0}
    assert _Point.__doc__ == "A point." and _Point.__qualname__ == "_Point"
    assert p._replace(y=-4).norm1() == 7 and repr(p) == "_Point(x=3, y=0)"
    assert pickle.loads(pickle.dumps(p)) == p
    with pytest.raises(TypeError, match="without a default follows"):
        class _Bad(NamedTuple):
            a: int = 0
            b: int


def test_record_equality_and_hash_compiled_at_first_use():
    """A record's __eq__/__hash__ work from the first call on, either first."""
    assert hash(_Pair(1, (2,))) == hash(_Pair(1, (2,)))
    assert _Pair(1) == _Pair(1) and _Pair(1) != _Pair(2) and _Pair(1) != (1, ())
    assert {_Pair(1, (2,)): "x"}[_Pair(1, (2,))] == "x"


def test_spec_is_frozen_hashable_and_cached():
    cmd = _base()
    spec = cmd.spec()
    assert cmd.spec() is spec  # made once until the Command changes
    with pytest.raises(FrozenInstanceError):
        spec.program = spec.program  # type: ignore[misc]
    assert hash(spec) == hash(_base().spec()) and spec == _base().spec()
    cmd.arg("more")
    assert cmd.spec() is not spec and cmd.spec().program.args == (b"more",)
    assert spec.program.args == ()  # the earlier spec did not change


def test_validation_happens_when_the_spec_is_made():
    cmd = Command("true").pivot_root("/srv", "old")  # fine so far: order is free
    with pytest.raises(ValueError, match="pivot_root\\(\\) needs a new mount namespace"):
        cmd.spec()
    cmd.unshare(Namespace.MOUNT)
    assert cmd.spec().isolation.pivot == PivotRoot(b"/srv", b"old", True)


def test_copy_shares_no_state():
    cmd = _base().env("A", "1")
    dup = cmd.copy().arg("x").env("B", "2").stdin(Stdio.null())
    assert cmd.spec().program.args == () and cmd.spec().fds.get(0) is None
    assert dict(dup.spec().program.env) == {b"A": b"1", b"B": b"2"}


async def test_env_var_with_pid(no_leaks):
    """The child finds its own pid (as it sees it) in the variable."""
    out = await (Command("sh").args(["-c", 'echo "$MYPID $$ $OTHER"'])
                 .env("OTHER", "kept").env_var_with_pid("MYPID").output())
    mine, shell, other = out.stdout.decode().split()
    assert mine == shell and other == "kept"
    # A new pid namespace: the child is pid 1 there.
    out = await (Command("sh").args(["-c", 'echo "$MYPID $$"']).unshare(Namespace.PID)
                 .map_root_user().env_var_with_pid("MYPID").output())
    assert out.stdout.decode().split() == ["1", "1"]
    # env() after env_var_with_pid() for the same key wins, and vice versa.
    cmd = Command("sh").args(["-c", 'echo "$V"']).env_var_with_pid("V").env("V", "x")
    assert (await cmd.output()).stdout == b"x\n"
    assert not cmd.spec().needs_handshake


def test_repr_shows_environment_and_arg0():
    cmd = (Command("ls").arg0("my-ls").env("A", "1").env_remove("B")
           .env_var_with_pid("P"))
    text = repr(cmd)
    assert 'arg0="my-ls"' in text and 'env="A"="1"' in text
    assert 'env_remove="B"' in text and 'env="P"=<pid>' in text


@pytest.mark.parametrize("bad, kind", [(1.9, TypeError), (True, TypeError), ("TERM", TypeError),
                                       (-1, ValueError), (0, ValueError), (65, ValueError)])
async def test_child_signal_validates(no_leaks, bad, kind):
    async with await Command("sleep").arg("10").spawn() as child:
        with pytest.raises(kind, match=r"Child\.signal\(\)"):
            child.signal(bad)
        assert child.try_wait() is None  # nothing was sent
        child.kill()


async def test_descriptor_above_the_limit_names_the_limit(no_leaks):
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = soft + 10
    with pytest.raises(OSError) as info:
        await Command("true").file_descriptor(target, Fd.read_null()).status()
    text = str(info.value)
    assert "RLIMIT_NOFILE" in text and "fd fd" not in text
    assert f"set up fd {target}" in text and info.value.errno in (errno.EINVAL, errno.EMFILE)


async def test_plan_cache_does_not_keep_owned_descriptors(no_leaks, tmp_path):
    """A Command's dup of the caller's file is closed once the Command is
    gone: the plan cache must not keep the spec (and the dup) alive."""
    import gc

    with open(tmp_path / "f", "w") as f:
        cmd = Command("true").stdout(Stdio.dup_file(f))
        owned = cmd.spec().fds.get(1).owned.fd
        await cmd.status()
        await cmd.status()
    del cmd
    gc.collect()
    assert not os.path.exists(f"/proc/self/fd/{owned}") or \
        os.readlink(f"/proc/self/fd/{owned}") != str(tmp_path / "f")
