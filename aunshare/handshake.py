"""The parent's side between the clone and the exec, with no event loop:
the handshake's steps that need none, and reading the error pipe.

One implementation for two callers: :mod:`aunshare.spawn` awaits what
only the event loop can do (newuidmap/newgidmap, the ``before_unfreeze``
hook, waiting for the error pipe), and :func:`spawn_blocking` (the
``aunshare`` command) blocks the thread instead, so that running a
program does not need to import anyio and asyncio.
"""

from __future__ import annotations

import errno as _errno
import os
import select
import time
from collections.abc import Generator, Iterator

from . import cgroup as _cgroup
from . import errors
from ._linux import WEXITED, WNOHANG, syscall, waitid_pidfd
from .fds import Fd, FdKind
from .idmaps import write_maps
from .launch import DefaultStdio, Pending, start
from .namespaces import Namespace, self_maps
from .plan import PID_SLOT_SIZE
from .spec import DescriptorSpec, ProgramSpec, SelfMap, Spec
from .status import from_waitid

__all__ = ["map_ids", "spawn_blocking", "start_network", "wake", "watch_exec",
           "listener_ready", "take_listener", "PASTA_TIMEOUT"]

PASTA_TIMEOUT = 10.0
"""Seconds pasta may take to configure the child's network namespace."""


def map_ids(pending: Pending) -> bool:
    """The handshake's first part: move the child into the cgroup it joins
    (where clone3 is refused), then write the id maps the parent writes
    itself. False when newuidmap/newgidmap are to write them: the caller
    runs those."""
    iso, pid = pending.spec.isolation, pending.pid
    if pending.join_cgroup is not None:  # clone3 refused: no CLONE_INTO_CGROUP
        _cgroup.move(pending.join_cgroup, pid)
    if iso.self_map is not None:  # the child's one-line maps, written for it
        uid_map, gid_map = self_maps(iso.self_map is SelfMap.ROOT, os.geteuid(), os.getegid())
        write_maps(pid, (uid_map,), (gid_map,), False)
    elif iso.uid_maps is not None:
        if iso.id_map_commands is not None:
            return False
        write_maps(pid, iso.uid_maps, iso.gid_maps or (), iso.allow_setgroups)
    return True


class _Pasta:
    """pasta being started for a child that waits in the handshake.

    pasta runs in the foreground (our own child: it dies with us by the
    parent-death signal, and is reaped by us), attached to the child's
    user and network namespaces (inherited descriptors). It writes its pid file once the
    namespace is configured: the pid file is a FIFO we read, so that
    write is the "ready" signal. Its stderr goes to an unlinked file, read
    only when it fails.
    """

    def __init__(self, pending: Pending) -> None:
        import tempfile  # here: the aunshare command imports this module on every run

        net = pending.spec.isolation.user_network
        assert net is not None
        self.dir = tempfile.mkdtemp(prefix="aunshare-pasta-")
        self.ready_fd = self.hold_fd = self.log_fd = -1
        self.ns_fds: list[int] = []
        self.pasta: Pending | None = None
        try:
            fifo = os.path.join(self.dir, "ready")
            os.mkfifo(fifo, 0o600)
            # Non-blocking: opening the read end must not wait for a writer.
            self.ready_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            # A writer of our own: with none, reading an empty FIFO says EOF
            # (before pasta opens it, and after); with one, EAGAIN until the pid comes.
            self.hold_fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self.log_fd = os.open(self.dir, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
            # Short options: this pasta version mis-parses --foreground and --quiet.
            args = [b"-f", b"-q", b"--config-net", b"-P", os.fsencode(fifo),
                    b"-T", b"none", b"-U", b"none"]
            for flag, ports in ((b"-t", net.tcp_ports), (b"-u", net.udp_ports)):
                if not ports:
                    args += [flag, b"none"]
                for host, inside in ports:
                    args += [flag, f"{host}:{inside}".encode()]
            if os.geteuid() == 0:
                # Else pasta drops to "nobody", who cannot open root's namespaces.
                args += [b"--runas", b"0"]
            # The namespaces are opened here and inherited: pasta opening
            # /proc/PID/ns/* itself would need ptrace access to the child,
            # which a non-dumpable parent (whose memory the child may still
            # share) does not give to a pasta that dropped CAP_SYS_PTRACE.
            # We stop pasta ourselves: no watching for the namespace to go.
            for name in ("user", "net"):
                try:
                    fd = os.open(f"/proc/{pending.pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    raise errors.NetworkError(exc.errno or _errno.EIO,
                                              f"/proc/{pending.pid}/ns/{name}",
                                              "the child's namespace, for pasta",
                                              action="open") from None
                self.ns_fds.append(fd)
            args += [b"--userns", b"/proc/self/fd/3", b"--netns", b"/proc/self/fd/4",
                     b"--no-netns-quit"]
            spec = Spec(ProgramSpec(net.pasta, tuple(args)),
                        DescriptorSpec(((0, Fd(FdKind.NULL_READ)), (1, Fd(FdKind.NULL_WRITE)),
                                        (2, Fd(FdKind.BORROWED, fd=self.log_fd)),
                                        (3, Fd(FdKind.BORROWED, fd=self.ns_fds[0])),
                                        (4, Fd(FdKind.BORROWED, fd=self.ns_fds[1])))))
            try:
                self.pasta = spawn_blocking(spec)
            except errors._OSError as exc:
                raise errors.NetworkError(exc.errno or _errno.EIO, net.pasta,
                                          f"cannot run pasta for user_network(): {exc}",
                                          action="run") from None
        except BaseException:
            self.cleanup()
            raise

    def fds(self) -> tuple[int, ...]:
        """What to wait for: the pid file's FIFO, pasta's exit."""
        assert self.pasta is not None
        return (self.ready_fd, self.pasta.pidfd)

    def ready(self) -> bool:
        """True once pasta has configured the namespace; raises when it
        exited instead."""
        assert self.pasta is not None
        try:
            if os.read(self.ready_fd, 64):
                return True
        except BlockingIOError:
            pass
        info = waitid_pidfd(self.pasta.pidfd, WEXITED | WNOHANG)
        if info.si_pid == 0:
            return False
        status = from_waitid(info)
        self.pasta.close()  # reaped
        self.pasta = None
        stderr = self.stderr()
        if status.signal is not None:
            raise errors.AuxCommandKilled(status.signal, "pasta", stderr)
        raise errors.AuxCommandExited(status.code or 0, "pasta", stderr)

    def stderr(self) -> bytes:
        """What pasta wrote, without its complaints that there is no syslog."""
        text = os.pread(self.log_fd, 8192, 0)
        return b"\n".join(line for line in text.splitlines()
                          if not (line.startswith(b"Failed to send ") and b"syslog" in line))

    def timed_out(self) -> errors.NetworkError:
        stderr = self.stderr().decode(errors="replace").strip()
        return errors.NetworkError(
            _errno.ETIMEDOUT, "pasta", f"it did not configure the child's network within "
            f"{PASTA_TIMEOUT:g} s" + (f": {stderr}" if stderr else ""), action="start")

    def finish(self, pending: Pending) -> None:
        """pasta is ready: it now lives as long as the child."""
        pasta, self.pasta = self.pasta, None
        assert pasta is not None
        pending.aux.append((pasta.pid, pasta.pidfd))
        pasta.pidfd = -1
        pasta.close()
        self.cleanup()

    def cleanup(self) -> None:
        """Stop pasta unless it was handed over; remove the FIFO and its directory."""
        pasta, self.pasta = self.pasta, None
        if pasta is not None:
            if pasta.pidfd >= 0:  # made non-blocking by a loop that polled it (uvloop)
                os.set_blocking(pasta.pidfd, True)
            pasta.kill()
            pasta.close()
        for fd in self.ns_fds:
            os.close(fd)
        self.ns_fds.clear()
        for name in ("ready_fd", "hold_fd", "log_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)
        path, self.dir = self.dir, ""
        if path:
            try:
                os.unlink(os.path.join(path, "ready"))
            except FileNotFoundError:
                pass
            os.rmdir(path)


def start_network(pending: Pending
                  ) -> Generator[tuple[tuple[int, ...], float], None, None]:
    """Start pasta for a child with :meth:`Command.user_network` and return
    once it has configured the child's network namespace (pasta then is in
    ``pending.aux``). Yields ``(fds, seconds)`` while waiting: the caller
    waits until one of ``fds`` is readable or ``seconds`` have passed, then
    goes on with the iteration. Closing the iteration early stops pasta."""
    pasta = _Pasta(pending)
    try:
        deadline = time.monotonic() + PASTA_TIMEOUT
        while not pasta.ready():
            left = deadline - time.monotonic()
            if left <= 0:
                raise pasta.timed_out()
            yield pasta.fds(), left
        pasta.finish(pending)
    finally:
        pasta.cleanup()


def wake(pending: Pending) -> None:
    """The handshake's last part: let the waiting child go on (and tell it
    its pid, for the variables that carry it)."""
    spec, pid = pending.spec, pending.pid
    message = b"\1"
    if spec.program.env_pid:
        # The pid as the child sees it: 1 as the first of a new pid namespace,
        # 2 for the program an init starts there (the namespace's next pid).
        if spec.isolation.unshare & Namespace.PID:
            inside = 2 if spec.lifetime.init_process else 1
        else:
            inside = pid
        message += str(inside).encode().ljust(PID_SLOT_SIZE, b"\0") * len(spec.program.env_pid)
    again = pending.ready_fd >= 0  # it waits once more, for its seccomp listener taken
    fd = pending.wake_fd
    if not again:
        pending.wake_fd = -1
    try:
        os.write(fd, message)
    except OSError as exc:
        raise errors.PipeError(exc.errno or _errno.EPIPE, "the wake-up pipe",
                               "the child was gone before it could go on",
                               action="write") from None
    finally:
        if not again:
            os.close(fd)


def listener_ready(pending: Pending) -> bool | None:
    """Syscall supervision: has the child moved its seccomp listener to the
    reserved descriptor (EOF on the ready pipe)? None: not yet, the pipe is empty."""
    try:
        os.read(pending.ready_fd, 1)
    except BlockingIOError:
        return None
    fd, pending.ready_fd = pending.ready_fd, -1
    os.close(fd)
    return True


def take_listener(pending: Pending) -> None:
    """Take the child's seccomp listener (``pidfd_getfd``), then let the
    child go on to its exec. A child that failed before (it exited) keeps
    its report on the error pipe: nothing is taken, the caller reads it."""
    try:
        pending.listener_fd = syscall("pidfd_getfd", pending.pidfd, pending.listener_target, 0)
    except OSError as exc:
        if exc.errno != _errno.ESRCH:
            raise errors.SeccompError(exc.errno or _errno.EPERM, None,
                                      "pidfd_getfd needs ptrace access to the child",
                                      action="take the seccomp listener of the child") from None
    fd, pending.wake_fd = pending.wake_fd, -1
    try:
        os.write(fd, b"\1")
    except OSError:
        pass  # it is gone: its report (or exit) tells why
    finally:
        os.close(fd)


def watch_exec(pending: Pending) -> Iterator[int]:
    """Read the error pipe until EOF (the exec is done: then
    :meth:`Pending.exec_confirmed`) or a failure record (raised typed, the
    child reaped). Yields the pipe each time it is empty: the caller waits
    until it is readable, then goes on with the iteration."""
    fd = pending.report_fd
    data = b""
    while True:
        try:
            chunk = os.read(fd, 8 - len(data))
        except BlockingIOError:
            yield fd
            continue
        except OSError as exc:
            raise errors.PipeError(exc.errno or _errno.EIO, "the error pipe") from None
        if not chunk:
            break
        data += chunk
        if len(data) == 8:
            break
    if not data and pending.executor.shares_memory and pending.table is not None:
        # A seccomp filter may refuse the child's write of its report; a
        # child sharing our memory stored the same record in the table.
        idx, err = pending.table.record()
        if err:
            raise pending.fail(idx, err)
    if data:
        if len(data) < 8:
            raise errors.UnknownError(f"the child sent a truncated error record {data!r}")
        raise pending.fail(int.from_bytes(data[:4], "little"),
                           int.from_bytes(data[4:], "little"))
    pending.exec_confirmed()


def spawn_blocking(spec: Spec, default_stdio: DefaultStdio = DefaultStdio.INHERIT) -> Pending:
    """Start the child ``spec`` describes and return once it has exec'd,
    blocking the calling thread throughout (the vfork path where it can be
    taken; else the handshake and the error pipe, waited for with poll).

    The caller owns the result: the child's ``pid`` and ``pidfd``, and
    :meth:`Pending.close` once it has reaped the child. Errors before the
    exec are raised typed, with nothing left behind. A spec that needs the
    event loop (a ``before_unfreeze`` hook, newuidmap/newgidmap) raises
    ValueError before anything is started: use :func:`aunshare.spawn.spawn`.
    A cgroup of its own (resource limits) is the caller's to empty and
    remove once the child is reaped (:func:`aunshare.cgroup.clear_blocking`).
    """
    iso = spec.isolation
    if (iso.before_unfreeze is not None or iso.supervise
            or (iso.uid_maps is not None and iso.id_map_commands is not None)):
        raise ValueError("spawn_blocking(): this spec needs the event loop (before_unfreeze, "
                         "set_id_map_commands or supervise_syscalls); use spawn()")
    pending = start(spec, default_stdio, allow_vfork=True)
    try:
        if pending.wake_fd >= 0:
            map_ids(pending)
            if spec.isolation.user_network is not None:
                for fds, seconds in start_network(pending):
                    select.select(fds, (), (), seconds)
            wake(pending)

        if pending.report_fd >= 0:
            poller = select.poll()
            poller.register(pending.report_fd, select.POLLIN)
            for _ in watch_exec(pending):
                poller.poll()
    except BaseException:
        pending.kill()
        if pending.cgroup is not None:  # what it started may still be dying
            _cgroup.clear_blocking(pending.cgroup)
        pending.close()
        raise
    return pending
