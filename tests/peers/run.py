"""Run the peers' own subprocess test suites against aunshare's compat layer.

    python tests/peers/run.py asyncio   # CPython's test.test_asyncio.test_subprocess
    python tests/peers/run.py trio      # trio._tests.test_subprocess
    python tests/peers/run.py           # both, one pytest process each

The suites are imported from where they are installed (CPython's ``test``
package, trio's wheel), never copied: this runner only points their
``create_subprocess_*`` / ``run_process`` / ``open_process`` / ``Process``
names at :mod:`aunshare.compat.asyncio` / :mod:`aunshare.compat.trio`,
deselects the tests of :data:`EXCLUDED` and runs the rest with pytest. It
prints one line per suite, ``peers <suite>: N passed, M excluded, ...``,
and exits non-zero if a test failed or the suite is missing.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

# Every test not run, with the reason. A key matches a test whose pytest
# node id contains it ("Class::test", "test_name", or "Class::").
_ASYNCIO_TRANSPORT = ("drives loop.subprocess_exec and its transport/protocol API, which "
                      "the compat front end does not replace")
_TRIO_NO_PIDFD = "patches trio._subprocess.can_try_pidfd_open, a trio internal"
_TRIO_POPEN = "calls Process._proc, trio's internal subprocess.Popen"
EXCLUDED: dict[str, dict[str, str]] = {
    "asyncio": {
        "SubprocessTransportTests::": "tests asyncio's BaseSubprocessTransport internals",
        "SubprocessSafeWatcherTests::": "the same tests under another asyncio child watcher, "
                                       "which aunshare does not use (run once, threaded)",
        "SubprocessFastWatcherTests::": "as above: asyncio child watcher variant",
        "SubprocessPidfdWatcherTests::": "as above: asyncio child watcher variant",
        "SubprocessMultiLoopWatcherTests::": "as above: asyncio child watcher variant",
        "MultiLoopChildWatcherTests::": "tests an asyncio child watcher class, no subprocess",
        "test_create_subprocess_fails_with_inactive_watcher":
            "mocks asyncio's child watcher, which aunshare does not use",
        "test_pause_reading": "patches loop.connect_read_pipe and reads proc._transport",
        "test_popen_error": "patches subprocess.Popen, which aunshare does not use",
        "test_cancel_post_init": _ASYNCIO_TRANSPORT,
        "test_close_kill_running": _ASYNCIO_TRANSPORT,
        "test_close_dont_kill_finished": _ASYNCIO_TRANSPORT,
        "test_subprocess_protocol_events": _ASYNCIO_TRANSPORT,
    },
    "trio": {
        "test_basic_no_pidfd": _TRIO_NO_PIDFD,
        "test_multi_wait_no_pidfd": _TRIO_NO_PIDFD,
        "test_wait_reapable_fails_no_pidfd": _TRIO_NO_PIDFD,
        "test_auto_update_returncode": _TRIO_POPEN,
        "test_subprocess_pidfd_unnotified": _TRIO_POPEN,
        "test_waitid_eintr": "tests trio's private waitid helper on a subprocess.Popen",
        "test_run_process_internal_error": "patches trio._subprocess._open_process",
    },
}


class _Proxy(types.ModuleType):
    """A module that answers from ``overrides`` first, then from ``real``."""

    def __init__(self, real: types.ModuleType, overrides: dict[str, Any]) -> None:
        super().__init__(real.__name__, real.__doc__)
        self.__dict__.update(overrides)
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


_started = [0]  # children the suite started through the compat layer


def _count_spawns() -> None:
    """Count the Commands the front ends build (both spawn through
    ``aunshare.compat._popen``): proof the suite used them."""
    from aunshare.compat import _popen

    build = _popen.cached_command

    def counted(*args: Any, **kwargs: Any) -> Any:
        _started[0] += 1
        return build(*args, **kwargs)

    _popen.cached_command = counted


def _patch_asyncio() -> str:
    import asyncio
    import asyncio.subprocess

    from aunshare.compat import asyncio as compat

    _count_spawns()
    mod = __import__("test.test_asyncio.test_subprocess", fromlist=["x"])
    names = {"create_subprocess_exec": compat.create_subprocess_exec,
             "create_subprocess_shell": compat.create_subprocess_shell}
    sub = _Proxy(asyncio.subprocess, {**names, "Process": compat.Process})
    mod.asyncio = _Proxy(asyncio, {**names, "subprocess": sub})
    mod.subprocess = sub
    return "test.test_asyncio.test_subprocess"


def _patch_trio() -> str:
    from aunshare.compat import trio as compat

    _count_spawns()
    mod = __import__("trio._tests.test_subprocess", fromlist=["x"])
    mod.run_process = compat.run_process
    mod.open_process = compat.open_process
    mod.Process = compat.Process
    return "trio._tests.test_subprocess"


class _Counter:
    """Deselects the exclusions and counts the outcomes."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.excluded = 0
        self.outcomes: dict[str, int] = {}
        self.unused = set(EXCLUDED[suite])

    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        keep, drop = [], []
        for item in items:
            hits = [key for key in EXCLUDED[self.suite] if key in item.nodeid]
            self.unused -= set(hits)
            (drop if hits else keep).append(item)
        items[:] = keep
        self.excluded = len(drop)
        config.hook.pytest_deselected(items=drop)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            what = report.outcome if report.when != "teardown" else "errors in teardown"
            self.outcomes[what] = self.outcomes.get(what, 0) + 1


def run_suite(suite: str, extra: list[str]) -> int:
    """Run one peer suite in this process; print its counts."""
    target = {"asyncio": _patch_asyncio, "trio": _patch_trio}[suite]()
    args = ["-p", "no:cacheprovider", "-q", "--pyargs", target, *extra]
    if suite == "trio":
        args[:0] = ["-p", "trio._tests.pytest_plugin"]
    counter = _Counter(suite)
    code = pytest.main(args, plugins=[counter])
    got = ", ".join(f"{n} {what}" for what, n in sorted(counter.outcomes.items()))
    py = "{}.{}".format(*sys.version_info[:2])
    print(f"peers {suite} (CPython {py}): {got or 'nothing run'}, {counter.excluded} excluded; "
          f"{_started[0]} children started through aunshare.compat.{suite}")
    if not _started[0]:
        return 1  # the patch missed: the suite tested the peer itself
    if counter.unused:
        # (the suites differ between versions: not an error)
        print(f"peers {suite}: exclusions matching no test here: {sorted(counter.unused)}")
    return int(code)


def main(argv: list[str]) -> int:
    suites = [a for a in argv if not a.startswith("-")] or ["asyncio", "trio"]
    extra = [a for a in argv if a.startswith("-")]
    if len(suites) == 1:
        return run_suite(suites[0], extra)
    status = 0
    for suite in suites:  # one interpreter each: the patches stay apart
        status |= subprocess.call([sys.executable, str(Path(__file__)), suite, *extra])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
