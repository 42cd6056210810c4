"""Stdio.pty(): a controlling terminal for the child, a stream on the master."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import anyio
import pytest

from aunshare import Command, Stdio
from conftest import open_fds, zombie_children

pytestmark = pytest.mark.anyio


def _own_tty_nr() -> int:
    """This process's controlling terminal (field 7 of /proc/self/stat)."""
    return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[4])


@pytest.fixture
async def no_leaks():
    """No descriptor or zombie left behind, and the parent never acquires
    the child's terminal as its own."""
    before = open_fds()
    tty = _own_tty_nr()
    yield
    assert open_fds() == before
    assert zombie_children() == []
    assert _own_tty_nr() == tty


async def test_tty_prints_a_pts_device(no_leaks):
    child = await Command("tty").stdin(Stdio.pty()).stdout(Stdio.pty()).spawn()
    async with child:
        assert child.stdin.is_tty and child.stdout.is_tty and child.stderr is None
        out = await child.stdout.read_all()
    assert re.fullmatch(rb"/dev/pts/\d+\r\n", out), out
    assert child.returncode == 0


async def test_stty_size_shows_the_set_size(no_leaks):
    out = await Command("stty").arg("size").stdin(Stdio.pty(rows=33, cols=101)).output()
    assert out.stdout == b"33 101\n" and out.status.success()
    out = await Command("stty").arg("size").stdin(Stdio.pty()).output()
    assert out.stdout == b"24 80\n"
    # rows from one stream, cols from another: one terminal, one size
    out = await (Command("stty").arg("size").stdin(Stdio.pty(rows=40))
                 .stdout(Stdio.pty(cols=120)).output())
    assert out.stdout == b"40 120\r\n"


async def test_set_pty_size_while_running(no_leaks):
    child = await (Command("sh").args(["-c", "read x; stty size"])
                   .stdin(Stdio.pty()).stdout(Stdio.pty()).spawn())
    async with child:
        child.set_pty_size(50, 132)
        await child.stdin.send(b"go\n")
        lines = [ln async for ln in child.stdout.lines()]
    assert lines == [b"go", b"50 132"]  # the terminal echoes the input
    with pytest.raises(anyio.ClosedResourceError):
        child.set_pty_size(10, 10)


async def test_programs_see_a_controlling_terminal(no_leaks):
    """isatty, a session of its own, the terminal's foreground group, /dev/tty."""
    code = ("import os, sys; print(sys.stdout.isatty(), sys.stdin.isatty(), "
            "os.getsid(0) == os.getpid(), os.tcgetpgrp(1) == os.getpgrp(), "
            "open('/dev/tty', 'rb').isatty())")
    out = await (Command(sys.executable).args(["-c", code]).stdin(Stdio.null())
                 .stdout(Stdio.pty()).output())
    assert out.stdout == b"True False True True True\r\n", out
    out = await Command(sys.executable).args(
        ["-c", "import sys; print(sys.stdout.isatty())"]).output()
    assert out.stdout == b"False\n"  # a pipe, for contrast


async def test_input_echo_and_end_of_input(no_leaks):
    """A pty has no EOF from closing: the EOF character ends cat's input."""
    child = await Command("cat").stdin(Stdio.pty()).stdout(Stdio.pty()).spawn()
    out, err = await child.communicate(b"hello\n\x04")
    assert out == b"hello\r\nhello\r\n" and err is None
    assert child.returncode == 0


async def test_large_output_then_eof(no_leaks):
    """All output arrives before the terminal's EOF (EIO on the master)."""
    script = "head -c 300000 /dev/zero | tr '\\0' x; echo; echo done"
    out = await Command("sh").args(["-c", script]).stdout(Stdio.pty()).output()
    assert out.stdout == b"x" * 300000 + b"\r\ndone\r\n"


async def test_only_stderr_on_the_pty(no_leaks):
    child = await (Command("sh").args(["-c", "echo out; echo err >&2; [ -t 2 ] && echo tty"])
                   .stdout(Stdio.piped()).stderr(Stdio.pty()).spawn())
    assert child.stdin is None and child.stderr.is_tty and not child.stdout.is_tty
    assert await child.communicate() == (b"out\ntty\n", b"err\r\n")


async def test_pty_and_merge_into_stdout(no_leaks):
    child = await (Command("sh").args(["-c", "echo out; echo err >&2"])
                   .stdout(Stdio.pty()).stderr(Stdio.merge_into_stdout()).spawn())
    assert await child.communicate() == (b"out\r\nerr\r\n", None)


async def test_pty_as_another_user(no_leaks):
    """The slave is opened by the parent, so a child that drops to another
    uid keeps its terminal."""
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root to change uid")
    out = await (Command("sh").args(["-c", "id -u; tty"]).uid(65534).gid(65534)
                 .stdin(Stdio.pty()).stdout(Stdio.pty()).output())
    assert re.fullmatch(rb"65534\r\n/dev/pts/\d+\r\n", out.stdout), out


def test_contradictions_are_refused():
    """Combinations are refused when the Command is frozen (spec(), which
    every spawn does), whatever order the calls came in."""
    with pytest.raises(ValueError, match=r"make_group_leader\(\) conflicts with "
                                         r"stdout\(Stdio.pty\(\)\)"):
        Command("sh").make_group_leader().stdout(Stdio.pty()).spec()
    with pytest.raises(ValueError, match=r"make_group_leader\(\) conflicts with "
                                         r"stdin\(Stdio.pty\(\)\)"):
        Command("sh").stdin(Stdio.pty()).make_group_leader().spec()
    Command("sh").stdin(Stdio.pty()).make_group_leader(False).spec()  # not asked: fine
    with pytest.raises(ValueError, match=r"Stdio.pty\(rows=...\) is given different values "
                                         r"\(24, 30\)"):
        Command("sh").stdin(Stdio.pty(rows=24)).stdout(Stdio.pty(rows=30)).spec()
    Command("sh").stdin(Stdio.pty(rows=24)).stdout(Stdio.pty(rows=24, cols=100)).spec()
    with pytest.raises(ValueError, match="between 0 and 65535"):
        Stdio.pty(rows=70000)
    with pytest.raises(TypeError, match="cols must be an int"):
        Stdio.pty(cols="80")
    assert repr(Stdio.pty(rows=3)) == "Stdio.pty(rows=3)"


async def test_set_pty_size_errors(no_leaks):
    async with await Command("true").stdout(Stdio.piped()).spawn() as child:
        with pytest.raises(ValueError, match="no pty"):
            child.set_pty_size(24, 80)
        with pytest.raises(ValueError, match="between 0 and 65535"):
            child.set_pty_size(-1, 80)


async def test_reused_command_switching_to_and_from_a_pty(no_leaks):
    """The same Command spawned with a pty, then a pipe, then a pty again:
    each spawn gets the plan for what it asks now (with or without setsid
    and TIOCSCTTY), even when the descriptors land on the same numbers."""
    cmd = Command("sh").args(["-c", "[ -t 1 ] && echo tty || echo pipe"])
    for stdio, want in ((Stdio.pty(), b"tty\r\n"), (Stdio.piped(), b"pipe\n"),
                        (Stdio.pty(), b"tty\r\n")):
        out = await cmd.stdout(stdio).output()
        assert out.stdout == want and out.status.success()
