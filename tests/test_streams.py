"""Streaming stdio: lines, zero-copy reads, communicate, merged and file
stdio, extra pipes, a grandchild holding the pipes."""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import random
import signal
import struct
import termios

import anyio
import pytest

import aunshare
from aunshare import Command, Fd, LineTooLong, Stdio
from aunshare.streams import DEFAULT_MAX_LINE, PipeReader
from conftest import open_fds, process_gone

pytestmark = pytest.mark.anyio


@contextlib.contextmanager
def _unwrapped():
    """Re-raise a task group's single exception as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        exc: BaseException = group
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        raise exc from None


def _unread(fd: int) -> int:
    """Bytes sitting in the pipe of ``fd`` (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


async def _pieces_lines(pieces: list[bytes], **kw) -> list[bytes]:
    """Write ``pieces`` into a pipe one at a time, each only once the reader
    has taken the previous one, so every piece boundary is a read boundary;
    return what ``lines(**kw)`` yields."""
    r, w = os.pipe()
    reader = PipeReader(r)
    got: list[bytes] = []

    async def write() -> None:
        try:
            for piece in pieces:
                os.write(w, piece)
                while _unread(w):
                    await anyio.sleep(0)
        finally:
            os.close(w)

    try:
        with _unwrapped():
            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                async for line in reader.lines(**kw):
                    got.append(line)
    finally:
        await reader.aclose()
    return got


def _reference_lines(data: bytes, keepends: bool) -> list[bytes]:
    """What lines() promises: split after each \\n; strip \\n or \\r\\n."""
    out = [piece + b"\n" for piece in data.split(b"\n")]
    out[-1] = out[-1][:-1]
    if not out[-1]:
        out.pop()
    if not keepends:
        out = [ln[:-2] if ln.endswith(b"\r\n") else ln[:-1] if ln.endswith(b"\n") else ln
               for ln in out]
    return out


SAMPLE = b"one\r\ntwo\n\n\r\nthree\r\r\nfour\rfive\n\x00\xff\xfe\nno newline at the end"


async def test_lines_across_every_chunk_boundary():
    """Every split of the sample into two reads, and byte-by-byte reads,
    give the same lines: endings, CRLF across reads, the last line."""
    for keepends in (False, True):
        want = _reference_lines(SAMPLE, keepends)
        assert await _pieces_lines([SAMPLE], keepends=keepends) == want
        assert await _pieces_lines([bytes([b]) for b in SAMPLE], keepends=keepends) == want
        for cut in range(1, len(SAMPLE)):
            pieces = [SAMPLE[:cut], SAMPLE[cut:]]
            assert await _pieces_lines(pieces, keepends=keepends) == want, cut
    assert want[-1] == b"no newline at the end" and b"three\r\r\n" in want


async def test_lines_from_a_child_crlf_and_no_final_newline():
    child = await Command("printf").arg(r"a\r\nb\n\nc\r\nlast").stdout(Stdio.piped()).spawn()
    async with child:
        assert [ln async for ln in child.stdout.lines()] == [b"a", b"b", b"", b"c", b"last"]
    child = await Command("printf").arg(r"x\r\ny\n").stdout(Stdio.piped()).spawn()
    async with child:
        assert [ln async for ln in child.stdout.lines(keepends=True)] == [b"x\r\n", b"y\n"]


async def test_lines_binary_data_through_cat():
    """1 MiB of random bytes (every byte value, \\r and \\n included) comes
    back as the lines a reference split gives, and joins back to the input."""
    data = random.Random(4).randbytes(1 << 20)
    child = await Command("cat").stdin(Stdio.piped()).stdout(Stdio.piped()).spawn()
    got: list[bytes] = []
    async with child, anyio.create_task_group() as tg:
        async def feed():
            await child.stdin.send(data)
            await child.stdin.aclose()

        tg.start_soon(feed)
        async for line in child.stdout.lines(keepends=True):
            got.append(line)
    assert b"".join(got) == data
    assert got == _reference_lines(data, True)


async def test_max_line_exact_limits():
    assert await _pieces_lines([b"12345\n", b"12345\r\n", b"12345"], max_line=5) == [
        b"12345", b"12345", b"12345"]
    # the \r of a \r\n split from its \n does not count against the limit
    assert await _pieces_lines([b"12345\r", b"\n"], max_line=5) == [b"12345"]
    for pieces in ([b"123456\n"], [b"123", b"456\n"], [b"123456"], [b"12345\r", b"x\n"]):
        with pytest.raises(LineTooLong) as info:
            await _pieces_lines(pieces, max_line=5)
        assert info.value.limit == 5 and info.value.length >= 6
    r, w = os.pipe()
    reader = PipeReader(r)
    os.close(w)
    with pytest.raises(ValueError, match="at least 1"):
        reader.lines(max_line=0)
    with pytest.raises(TypeError, match="int"):
        reader.lines(max_line=1.5)
    await reader.aclose()


async def test_very_long_line_and_the_limit(no_leaks):
    """A 17 MiB line passes a raised limit and trips the 16 MiB default with
    an error that names the limit and how to raise it."""
    n = 17 << 20
    script = f"head -c {n} /dev/zero; echo; echo tail"
    async with await Command("sh").args(["-c", script]).stdout(Stdio.piped()).spawn() as child:
        lines = [ln async for ln in child.stdout.lines(max_line=32 << 20)]
    assert [len(ln) for ln in lines] == [n, 4] and lines[1] == b"tail"

    with pytest.raises(LineTooLong) as info:
        async with await Command("sh").args(["-c", script]).stdout(Stdio.piped()).spawn() as child:
            async for _ in child.stdout.lines():
                pass
    exc = info.value
    assert isinstance(exc, aunshare.Error) and isinstance(exc, ValueError)
    assert exc.limit == DEFAULT_MAX_LINE == 16 << 20 and exc.length > exc.limit
    assert "max_line=16777216" in str(exc) and "lines(max_line=...)" in str(exc)
    assert child.returncode == -signal.SIGTERM  # the default kill policy stopped it


async def test_text_lines_multibyte_split_across_reads():
    text = "héllo wörld €\r\n日本語\n𝄞 clef"
    data = text.encode()
    r, w = os.pipe()
    reader = PipeReader(r)

    async def write() -> None:
        for i in range(len(data)):  # one byte per read: every character split
            os.write(w, data[i:i + 1])
            while _unread(w):
                await anyio.sleep(0)
        os.close(w)

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        got = [ln async for ln in reader.text_lines()]
    await reader.aclose()
    assert got == ["héllo wörld €", "日本語", "𝄞 clef"]


async def test_text_lines_encodings_and_errors():
    async def run(data: bytes, **kw) -> list[str]:
        child = await Command("cat").stdin(Stdio.piped()).stdout(Stdio.piped()).spawn()
        with _unwrapped():
            async with child, anyio.create_task_group() as tg:
                async def feed():
                    await child.stdin.send(data)
                    await child.stdin.aclose()

                tg.start_soon(feed)
                return [ln async for ln in child.stdout.text_lines(**kw)]

    assert await run("a€\r\nb\n".encode("utf-16-le"), encoding="utf-16-le") == ["a€", "b"]
    assert await run(b"ok\n\xff\xfe bad\n", errors="replace") == ["ok", "\ufffd\ufffd bad"]
    with pytest.raises(UnicodeDecodeError):
        await run(b"ok\n\xff bad\n")
    with pytest.raises(UnicodeDecodeError):  # a truncated character at EOF
        await run("€".encode()[:2])
    with pytest.raises(LineTooLong, match=r"characters.*text_lines"):
        await run("ääää\n".encode(), max_line=3)
    assert await run("ääää\r\n".encode(), max_line=4, keepends=True) == ["ääää\r\n"]
    child = await Command("true").stdout(Stdio.piped()).spawn()
    async with child:
        with pytest.raises(LookupError):
            child.stdout.text_lines("no-such-codec")
        with pytest.raises(LookupError):
            child.stdout.text_lines(errors="no-such-handler")


async def test_receive_into_buffers(no_leaks):
    script = "printf 0123456789"
    async with await Command("sh").args(["-c", script]).stdout(Stdio.piped()).spawn() as child:
        buf = bytearray(4)
        got = b""
        while n := await child.stdout.receive_into(buf):
            got += buf[:n]
        assert got == b"0123456789"
        assert await child.stdout.receive_into(buf) == 0  # EOF stays EOF
        with pytest.raises(ValueError, match="non-empty"):
            await child.stdout.receive_into(bytearray())
        with pytest.raises(TypeError, match="writable"):
            await child.stdout.receive_into(b"read-only")

    async with await Command("printf").arg("abcdefgh").stdout(Stdio.piped()).spawn() as child:
        arr = array.array("i", [0, 0, 0])  # 12 bytes, items of 4
        big = bytearray(16)
        n = 0
        while n < 8:
            got_n = await child.stdout.receive_into(memoryview(big)[n:])
            assert got_n
            n += got_n
        assert bytes(big[:8]) == b"abcdefgh"
        assert await child.stdout.receive_into(arr) == 0


async def test_read_all_large_and_async_iteration(no_leaks):
    n = 5 * (1 << 20) + 3  # crosses several read_all chunks
    out = await Command("head").args(["-c", str(n), "/dev/urandom"]).output()
    assert len(out.stdout) == n
    cmd = Command("head").args(["-c", str(n), "/dev/zero"]).stdout(Stdio.piped())
    async with await cmd.spawn() as child:
        total = 0
        async for chunk in child.stdout:
            assert isinstance(chunk, bytes) and not chunk.strip(b"\0")
            total += len(chunk)
        assert total == n


async def test_reads_are_checkpoints():
    """A reader that always finds data still lets other tasks run and
    honours cancellation (no starvation by a fast producer)."""
    child = await Command("cat").arg("/dev/zero").stdout(Stdio.piped()).spawn()
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0)

    async with child:
        with anyio.move_on_after(0.3) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                buf = bytearray(1 << 16)
                while True:
                    await child.stdout.receive_into(buf)
        assert scope.cancelled_caught and ticks > 10
        child.kill()


async def test_communicate_256_mib_both_ways(no_leaks):
    """256 MiB into cat's stdin and out of its stdout at once: the pipes
    fill both ways, which deadlocks unless feeding and draining overlap."""
    data = bytes(range(256)) * (1 << 20)
    child = await Command("cat").stdin(Stdio.piped()).stdout(Stdio.piped()).spawn()
    with anyio.fail_after(60):
        out, err = await child.communicate(data)
    assert err is None and child.returncode == 0
    assert len(out) == len(data) and out == data


async def test_communicate_cases(no_leaks):
    child = await Command("sh").args(["-c", "cat; echo err >&2; exit 3"]).stdin(
        Stdio.piped()).stdout(Stdio.piped()).stderr(Stdio.piped()).spawn()
    assert await child.communicate(b"in") == (b"in", b"err\n")
    assert child.returncode == 3
    # not piped -> None; no input -> stdin just closed
    child = await Command("cat").stdin(Stdio.piped()).spawn()
    assert await child.communicate() == (None, None) and child.returncode == 0
    # a child that never reads a large input is not an error
    child = await Command("true").stdin(Stdio.piped()).stdout(Stdio.piped()).spawn()
    assert await child.communicate(b"x" * (4 << 20)) == (b"", None)
    # input without a stdin pipe is refused before anything happens
    child = await Command("true").spawn()
    with pytest.raises(ValueError, match=r"stdin\(Stdio.piped\(\)\)"):
        await child.communicate(b"x")
    await child.wait()
    # wait_with_output feeds input too and returns an Output
    child = await Command("tr").args(["a-z", "A-Z"]).stdin(Stdio.piped()).stdout(
        Stdio.piped()).spawn()
    res = await child.wait_with_output(b"shout\n")
    assert res.stdout == b"SHOUT\n" and res.stderr == b"" and res.status.success()


async def test_wait_returns_while_a_grandchild_holds_stdout(no_leaks):
    """The asyncio hang (cpython #119710): the child exits, a grandchild
    keeps the pipe open. wait() returns at once; reading ends when the
    grandchild, the last writer, exits."""
    child = await (Command("sh").args(["-c", "sleep 30 & echo $!"])
                   .stdout(Stdio.piped()).stderr(Stdio.piped()).spawn())
    with anyio.fail_after(5):
        status = await child.wait()
    assert status.success()
    line = b""
    while not line.endswith(b"\n"):
        line += await child.stdout.receive()
    grandchild = int(line)
    assert not process_gone(grandchild)
    os.kill(grandchild, signal.SIGKILL)
    with anyio.fail_after(5):
        assert await child.stdout.read_all() == b""
        assert await child.stderr.read_all() == b""
    await child.aclose_streams()


async def test_merge_into_stdout_keeps_order(no_leaks, tmp_path):
    script = "echo 1; echo 2 >&2; echo 3 >&2; echo 4; echo 5 >&2"
    child = await (Command("sh").args(["-c", script]).stdout(Stdio.piped())
                   .stderr(Stdio.merge_into_stdout()).spawn())
    assert child.stderr is None
    assert await child.communicate() == (b"1\n2\n3\n4\n5\n", None)
    out = await Command("sh").args(["-c", script]).stderr(Stdio.merge_into_stdout()).output()
    assert out.stdout == b"1\n2\n3\n4\n5\n" and out.stderr == b""
    # into a file: one open file, one offset, nothing overwritten
    path = tmp_path / "log"
    st = await (Command("sh").args(["-c", script]).stdout(Stdio.to_file(path))
                .stderr(Stdio.merge_into_stdout()).status())
    assert st.success() and path.read_bytes() == b"1\n2\n3\n4\n5\n"
    with pytest.raises(ValueError, match=r"stderr\(\) only.*stdout\(\)"):
        Command("true").stdout(Stdio.merge_into_stdout())
    with pytest.raises(ValueError, match=r"stdin\(\) cannot"):
        Command("true").stdin(Stdio.merge_into_stdout())


async def test_merge_into_stdout_inherited(no_leaks):
    """With stdout inherited, stderr goes wherever the parent's fd 1 goes."""
    r, w = os.pipe()
    saved = os.dup(1)
    os.dup2(w, 1)
    os.close(w)
    try:
        st = await (Command("sh").args(["-c", "echo out; echo err >&2"])
                    .stderr(Stdio.merge_into_stdout()).status())
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert st.success()
    assert os.read(r, 100) == b"out\nerr\n"
    os.close(r)


async def test_to_file_truncate_append_and_stdin(no_leaks, tmp_path):
    path = tmp_path / "out.txt"
    path.write_bytes(b"old content that is longer\n")
    assert (await Command("echo").arg("first").stdout(Stdio.to_file(path)).status()).success()
    assert path.read_bytes() == b"first\n"
    cmd = Command("echo").arg("more").stdout(Stdio.to_file(str(path), append=True))
    await cmd.status()
    await cmd.status()  # opened again at every spawn
    assert path.read_bytes() == b"first\nmore\nmore\n"
    err = tmp_path / "err.txt"
    await Command("sh").args(["-c", "echo e >&2"]).stderr(Stdio.to_file(err)).status()
    assert err.read_bytes() == b"e\n"
    out = await Command("cat").stdin(Stdio.to_file(path)).output()
    assert out.stdout == b"first\nmore\nmore\n"
    new = tmp_path / "new.txt"
    await Command("true").stdout(Stdio.to_file(os.fsencode(new))).status()
    assert new.exists() and new.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(ValueError, match="append is for stdout"):
        Command("cat").stdin(Stdio.to_file(path, append=True))
    with pytest.raises(ValueError, match="NUL"):
        Stdio.to_file("a\0b")
    assert repr(Stdio.to_file("x", append=True)) == "Stdio.to_file('x', append=True)"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def test_to_file_errors_name_the_path(no_leaks, tmp_path):
    missing = tmp_path / "no" / "such" / "dir.txt"
    with pytest.raises(aunshare.StdioError) as info:
        await Command("true").stdout(Stdio.piped()).stderr(Stdio.to_file(missing)).spawn()
    exc = info.value
    assert exc.errno == 2 and str(missing) in str(exc) and "fd 2 (stderr)" in str(exc)
    with pytest.raises(aunshare.StdioError, match="Is a directory"):
        await Command("true").stdout(Stdio.to_file(tmp_path)).spawn()
    with pytest.raises(aunshare.StdioError, match="No such file"):
        await Command("cat").stdin(Stdio.to_file(missing)).spawn()


async def test_take_pipe_reader_and_writer(no_leaks):
    cmd = (Command("sh").args(["-c", "echo to-five >&5; tr a-z A-Z <&6 >&7"])
           .file_descriptor(5, Fd.piped_write())
           .file_descriptor(6, Fd.piped_read())
           .file_descriptor(7, Fd.piped_write()))
    async with await cmd.spawn() as child:
        five = child.take_pipe_reader(5)
        six = child.take_pipe_writer(6)
        seven = child.take_pipe_reader(7)
        await six.send(b"upper me\n")
        await six.aclose()
        assert await five.read_all() == b"to-five\n"
        assert [ln async for ln in seven.lines()] == [b"UPPER ME"]
        with pytest.raises(ValueError, match="already taken"):
            child.take_pipe_reader(5)
    assert child.returncode == 0
    assert five.fileno() == seven.fileno() == -1  # the Child closed them too


async def test_take_pipe_errors(no_leaks):
    cmd = (Command("true").file_descriptor(5, Fd.piped_write())
           .file_descriptor(6, Fd.piped_read()).stdout(Stdio.piped()))
    async with await cmd.spawn() as child:
        with pytest.raises(ValueError, match=r"reads from fd 6.*take_pipe_writer\(6\)"):
            child.take_pipe_reader(6)
        with pytest.raises(ValueError, match=r"writes to fd 5.*take_pipe_reader\(5\)"):
            child.take_pipe_writer(5)
        with pytest.raises(ValueError, match=r"fd 9 was not given a pipe.*not yet taken: 5, 6"):
            child.take_pipe_reader(9)
        with pytest.raises(ValueError, match=r"fd 1 is stdout; use child.stdout"):
            child.take_pipe_reader(1)
        with pytest.raises(TypeError):
            child.take_pipe_reader("5")
        child.take_pipe_writer(6)
        with pytest.raises(ValueError, match="already taken"):
            child.take_pipe_writer(6)


async def test_pipes_are_enlarged(no_leaks):
    """The stdio pipes get the larger capacity (F_SETPIPE_SZ) where allowed."""
    from aunshare.descriptors import PIPE_SIZE

    child = await Command("true").stdin(Stdio.piped()).stdout(Stdio.piped()).spawn()
    async with child:
        for stream in (child.stdin, child.stdout):
            assert fcntl.fcntl(stream.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_SIZE


async def test_dropped_child_streams_do_not_leak():
    """Streams of a Child dropped without aclose_streams() close themselves."""
    import gc

    before = open_fds()
    child = await (Command("true").stdout(Stdio.piped()).file_descriptor(5, Fd.piped_write())
                   .spawn())
    await child.wait()
    del child
    gc.collect()
    assert open_fds() == before
