"""The pytest plugin's aunshare_service fixture: real services in real
sandboxes, started from sync and async tests, under pytest-xdist."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import aunshare
from aunshare.pytest_plugin import ServiceFactory, ServiceFailed
from conftest import REPO, descendants

# A service that listens on its port only once told to: prints "started",
# then (argv[1] == "listen") serves, or stays silent and never listens.
SERVICE = r"""
import signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # pid 1 ignores it otherwise
print("started as", sys.argv[1], flush=True)
if sys.argv[1] == "listen":
    s = socket.socket()
    s.bind(("127.0.0.1", 5432))
    s.listen()
    while True:
        c, _ = s.accept()
        c.sendall(b"hello\n")
        c.close()
elif sys.argv[1] == "crash-later":
    s = socket.socket()
    s.bind(("127.0.0.1", 5432))
    s.listen()
    c, _ = s.accept()  # the readiness probe
    c.close()
    c, _ = s.accept()
    print("crashing now", flush=True)
    sys.exit(3)
time.sleep(60)
"""


def service(mode: str) -> list[str]:
    return [sys.executable, "-I", "-c", SERVICE, mode]


def left_running(pid: int) -> bool:
    return pid in descendants(os.getpid()) or Path(f"/proc/{pid}").exists()


def test_service_sync_start_talk_stop():
    factory = ServiceFactory(is_async=False)
    try:
        svc = factory(service("listen"), port=5432)
        assert isinstance(svc, aunshare.pytest_plugin.Service)
        host, port = svc.address
        assert host == "127.0.0.1" and port != 5432
        with svc.connect() as sock:
            assert sock.recv(100) == b"hello\n"
        # Its port is its own: nothing listens on 5432 out here.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
        # The same host port again: a clear error.
        with pytest.raises(aunshare.NetworkError, match="already listens"):
            factory(service("listen"), port=5432, host_port=port)
        assert "started as listen" in svc.logs
        pid = svc.pid
    finally:
        failures = factory._close()
    assert failures == []
    assert not left_running(pid)


def test_service_that_never_opens_its_port_fails_with_its_output():
    factory = ServiceFactory(is_async=False)
    start = time.monotonic()
    try:
        with pytest.raises(ServiceFailed, match=r"(?s)port 5432 did not accept a connection "
                           r"within 1 s.*started as silent"):
            factory(service("silent"), port=5432, timeout=1)
    finally:
        assert factory._close() == []
    assert time.monotonic() - start < 10
    assert list(descendants(os.getpid())) == []
    with pytest.raises(ServiceFailed, match=r"exited before its port"):
        try:
            factory([sys.executable, "-c", "raise SystemExit(4)"], port=5432)
        finally:
            factory._close()


def test_a_service_that_crashes_fails_the_test():
    factory = ServiceFactory(is_async=False)
    svc = factory(service("crash-later"), port=5432)
    with svc.connect() as sock:
        sock.recv(1)
    time.sleep(0.2)
    failures = factory._close()
    assert len(failures) == 1
    assert "exited during the test: exited with code 3" in failures[0]
    assert "crashing now" in failures[0]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_redis_example_under_xdist():
    """examples/pytest_services: every test starts redis on port 6379, eight
    workers at once."""
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "8", "-p", "no:cacheprovider",
         "-p", "no:hypothesispytest", "examples/pytest_services"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "11 passed" in res.stdout
