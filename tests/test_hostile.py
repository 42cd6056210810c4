"""Hostile input: whatever the caller passes, aunshare answers with a
ValueError/TypeError/typed Error that says what was wrong, or runs the child
with exactly the bytes given; never a crash, a hang or a leaked descriptor."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aunshare
from aunshare import Command, Fd, Stdio
from conftest import open_fds, zombie_children

pytestmark = pytest.mark.anyio

# Each example spawns a process: keep the count modest, and let the three
# event loops share the work.
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

text_or_bytes = st.one_of(st.text(max_size=40), st.binary(max_size=40))
# Each argument printed followed by NUL, so the parent can split them.
ECHO_ARGS = ["-c", 'for a in "$@"; do printf "%s\\0" "$a"; done', "sh"]


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else os.fsencode(value)


@SETTINGS
@given(args=st.lists(text_or_bytes, max_size=6))
async def test_arguments_round_trip_or_are_refused(args):
    fds = open_fds()
    raw = [_as_bytes(a) for a in args]
    cmd = Command("/bin/sh").args(ECHO_ARGS)
    if any(b"\0" in a for a in raw):
        with pytest.raises(ValueError, match="NUL byte"):
            cmd.args(args)
        return
    out = await cmd.args(args).output()
    assert out.status.success()
    assert out.stdout.split(b"\0")[:-1] == raw
    assert open_fds() == fds


@SETTINGS
@given(key=text_or_bytes, value=text_or_bytes)
async def test_environment_round_trips_or_is_refused(key, value):
    k, v = _as_bytes(key), _as_bytes(value)
    cmd = Command("/usr/bin/env").env_clear()
    if not k or b"=" in k or b"\0" in k:
        with pytest.raises(ValueError, match="env key"):
            cmd.env(key, value)
        return
    if b"\0" in v:
        with pytest.raises(ValueError, match="env value contains a NUL"):
            cmd.env(key, value)
        return
    out = await cmd.env(key, value).output()
    assert out.status.success()
    assert out.stdout == k + b"=" + v + b"\n"


@SETTINGS
@given(target=st.integers(min_value=-(2**40), max_value=2**40))
async def test_fd_targets_validated(target):
    cmd = Command("/bin/true")
    if target in (0, 1, 2):
        with pytest.raises(ValueError, match="stdin"):
            cmd.file_descriptor(target, Fd.read_null())
    elif not 3 <= target < 2**31 - 1:
        with pytest.raises(ValueError, match="target_fd must be between"):
            cmd.file_descriptor(target, Fd.read_null())
    else:
        cmd.file_descriptor(target, Fd.read_null())
        with pytest.raises(ValueError, match="already mapped"):
            cmd.file_descriptor(target, Fd.write_null())


@SETTINGS
@given(sig=st.integers(min_value=-1000, max_value=1000))
async def test_signal_numbers_validated(sig):
    cmd = Command("/bin/true")
    if 1 <= sig <= 64:
        cmd.set_parent_death_signal(sig)
    else:
        with pytest.raises(ValueError, match="signal number from 1 to 64"):
            cmd.set_parent_death_signal(sig)


@SETTINGS
@given(ident=st.one_of(st.integers(min_value=-(2**40), max_value=2**40), st.booleans(),
                       st.floats(allow_nan=False), st.text(max_size=3)))
async def test_ids_validated(ident):
    cmd = Command("/bin/true")
    ok = isinstance(ident, int) and not isinstance(ident, bool) and 0 <= ident <= 2**32 - 2
    for method in (cmd.uid, cmd.gid):
        if ok:
            method(ident)
        else:
            with pytest.raises((ValueError, TypeError), match=r"uid|gid"):
                method(ident)


id_value = st.one_of(st.integers(min_value=-(2**33), max_value=2**33), st.booleans(),
                     st.text(max_size=2))


@SETTINGS
@given(lines=st.lists(st.tuples(id_value, id_value, id_value), max_size=4))
async def test_id_maps_validated_or_written(lines):
    """Arbitrary map lines: refused at the call with ValueError/TypeError, or
    written by the parent (as root: the kernel takes any non-overlapping
    ranges, or refuses with a typed SetIdMap); nothing leaks either way."""
    try:
        maps = [aunshare.UidMap(*line) for line in lines]
        cmd = Command("/bin/true").set_id_maps(maps, [])
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    fds = open_fds()
    try:
        status = await cmd.status()
        assert status.success() or status.code == 127, status
    except aunshare.SetIdMap as exc:
        assert exc.errno in (errno.EINVAL, errno.EPERM) and "uid_map" in str(exc)
    assert open_fds() == fds and zombie_children() == []


@pytest.mark.parametrize("program", ["", b"", "bad\0name"])
async def test_bad_programs(program):
    with pytest.raises(ValueError, match="program"):
        Command(program)


async def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError, match=r"program must be str, bytes or os\.PathLike"):
        Command(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="arg must be"):
        Command("x").arg(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a Stdio"):
        Command("x").stdout(1)  # type: ignore[arg-type]


async def test_argv_near_and_over_arg_max():
    """Just under the kernel's limit runs; over it is Exec(E2BIG), no leak."""
    fds = open_fds()
    arg_max = os.sysconf("SC_ARG_MAX")
    env_size = sum(len(k) + len(v) + 2 + 8 for k, v in os.environb.items())
    chunk = b"a" * (100 * 1024)  # under MAX_ARG_STRLEN (32 pages)
    room = arg_max - env_size - 64 * 1024
    args = [chunk] * (room // (len(chunk) + 1 + 8))
    out = await Command("/bin/sh").args(["-c", 'echo $#', "sh"]).args(args).output()
    assert out.status.success() and int(out.stdout) == len(args)
    with pytest.raises(aunshare.Exec) as info:
        await Command("/bin/true").args([chunk] * (arg_max // len(chunk) + 2)).stdout(
            Stdio.piped()).spawn()
    assert info.value.errno == errno.E2BIG
    assert open_fds() == fds and zombie_children() == []
