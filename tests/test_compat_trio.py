"""aunshare.compat.trio on every loop: trio's own suite runs under trio
(tests/peers/run.py); this checks the same API under anyio on asyncio and
uvloop too, and what only the compat layer has."""

from __future__ import annotations

import signal
import subprocess
import sys

import anyio
import pytest

from aunshare import KillPolicy, Namespace
from aunshare.compat import trio as compat

PY = sys.executable
CAT = [PY, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"]


@pytest.mark.anyio
async def test_run_process(anyio_backend, no_leaks):
    data = bytes(range(256)) * 512
    result = await compat.run_process(CAT, stdin=data, capture_stdout=True,
                                      capture_stderr=True)
    assert (result.args, result.returncode, result.stdout, result.stderr) == (CAT, 0, data, b"")
    fail = [PY, "-c", "import sys; sys.stderr.write('bad'); sys.exit(3)"]
    with pytest.raises(subprocess.CalledProcessError) as info:
        await compat.run_process(fail, capture_stderr=True)
    assert (info.value.returncode, info.value.stderr, info.value.cmd) == (3, b"bad", fail)
    assert (await compat.run_process(fail, check=False)).returncode == 3


@pytest.mark.anyio
async def test_started_in_a_task_group(anyio_backend, no_leaks):
    """``tg.start(run_process, ...)`` hands back the Process; cancelling the
    group delivers the cancellation (SIGTERM) and waits for the exit."""
    async with anyio.create_task_group() as tg:
        proc = await tg.start(lambda task_status: compat.run_process(
            CAT, stdin=compat.PIPE, stdout=compat.PIPE, task_status=task_status))
        assert isinstance(proc, compat.Process) and proc.returncode is None
        await proc.stdio.send_all(b"ping")
        await proc.stdio.send_eof()
        assert [chunk async for chunk in proc.stdio] == [b"ping"]
        await proc.stdio.aclose()  # the streams handed out are the caller's to close
        assert await proc.wait() == 0
        sleeper = await tg.start(lambda task_status: compat.run_process(
            ["sleep", "60"], task_status=task_status))
        tg.cancel_scope.cancel()
    assert sleeper.returncode == -signal.SIGTERM


@pytest.mark.anyio
async def test_open_process_and_aclose(anyio_backend, no_leaks):
    proc = await compat.open_process(["sleep", "60"], stdout=compat.PIPE)
    assert "running" in repr(proc) and proc.poll() is None
    with anyio.move_on_after(0.05):
        await proc.aclose()  # closes the pipe, waits; cancelled: kills
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(compat.ClosedResourceError):
        await proc.stdout.receive_some()
    with pytest.raises(anyio.ClosedResourceError):  # an anyio error too
        await proc.stdout.receive_some()


@pytest.mark.anyio
async def test_configure_hook_and_kill_policy(anyio_backend, no_leaks):
    """``configure=`` gets the Command; a kill policy it sets is what a
    cancelled run_process uses (here: SIGINT)."""
    def setup(cmd):
        cmd.unshare(Namespace.UTS).map_root_user().hostname("trio-box")

    result = await compat.run_process(["hostname"], capture_stdout=True, configure=setup)
    assert result.stdout == b"trio-box\n"
    async with anyio.create_task_group() as tg:
        proc = await tg.start(lambda task_status: compat.run_process(
            ["sleep", "60"], task_status=task_status,
            configure=lambda c: c.kill_policy(KillPolicy(signal.SIGINT, grace=2))))
        tg.cancel_scope.cancel()
    assert proc.returncode == -signal.SIGINT


def test_bad_arguments_are_refused():
    async def main() -> None:
        with pytest.raises(TypeError, match="preexec_fn"):
            await compat.open_process(["true"], preexec_fn=print)
        with pytest.raises(TypeError, match="'encoding' option is not supported"):
            await compat.open_process(["true"], encoding="utf-8")
        with pytest.raises(TypeError):
            await compat.open_process("true")  # a string needs shell=True
        with pytest.raises(ValueError, match=r"only valid with nursery\.start"):
            await compat.run_process(["true"], stdout=compat.PIPE)
        with pytest.raises(UnicodeError):
            await compat.run_process(["true"], stdin="text")

    anyio.run(main)
