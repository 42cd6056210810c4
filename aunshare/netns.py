"""Sockets created inside a child's network namespace, for the parent.

:meth:`Child.open_tcp_stream <aunshare.Child.open_tcp_stream>` needs a
socket that belongs to the child's network namespace: a socket stays in
the namespace it was created in, whoever holds it later. Two ways to make
one, tried in this order:

1. a short-lived thread joins the namespace (``setns(CLONE_NEWNET)``
   affects only the calling thread), creates the socket and ends; the
   thread is never reused, so no other code ever runs in the namespace.
   This needs CAP_SYS_ADMIN in the caller's own user namespace (root);
2. otherwise (EPERM: an unprivileged caller) a helper process joins the
   child's user and network namespaces (a single-threaded process may join
   a user namespace; a threaded one, like ours, may not), creates the
   socket and passes it back over a socketpair (SCM_RIGHTS), then exits.

Nothing here connects: the caller connects on its event loop.
"""

from __future__ import annotations

import errno as _errno
import os
import socket
import sys
import threading

from . import errors
from ._linux import syscall
from .fds import Fd, FdKind, OwnedFd
from .handshake import spawn_blocking
from .launch import Pending
from .namespaces import Namespace
from .spec import DescriptorSpec, IsolationSpec, ProgramSpec, Spec

__all__ = ["NoNamespace", "open_namespace", "socket_by_thread", "start_socket_helper",
           "receive_socket"]

# The helper's program: fd 3 is its end of a socketpair. Each byte read is
# an address family; it answers with a new socket of that family, until EOF.
_HELPER = ("import socket\n"
           "p=socket.socket(fileno=3)\n"
           "while (f:=p.recv(1)):\n"
           " s=socket.socket(f[0],socket.SOCK_STREAM)\n"
           " socket.send_fds(p,[b'S'],[s.fileno()])\n"
           " s.close()\n")


class NoNamespace(Exception):
    """The child shares the caller's network namespace."""


def _gone(pid: int, what: str) -> ProcessLookupError:
    return ProcessLookupError(_errno.ESRCH, f"{what}: child {pid} has exited; its network "
                                            "namespace is gone with it")


def open_namespace(pid: int, kind: str, what: str) -> int:
    """Open ``/proc/PID/ns/<kind>`` of an unreaped child (its pid cannot have
    been reused). Raises NoNamespace when it is the caller's own,
    ProcessLookupError when the child has exited."""
    try:
        fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        raise _gone(pid, what) from None
    try:
        theirs, ours = os.fstat(fd), os.stat(f"/proc/thread-self/ns/{kind}")
    except BaseException:
        os.close(fd)
        raise
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        os.close(fd)
        raise NoNamespace
    return fd


def socket_by_thread(netns_fd: int, family: int) -> socket.socket | None:
    """A socket created by a new thread inside the namespace ``netns_fd``;
    None when this process may not join it (EPERM: not root)."""
    result: list[socket.socket | BaseException] = []

    def run() -> None:
        try:
            syscall("setns", netns_fd, int(Namespace.NET))
        except OSError as exc:
            result.append(exc)
            return  # the thread ends in its own namespace: nothing to undo
        try:
            result.append(socket.socket(family, socket.SOCK_STREAM))
        except BaseException as exc:
            result.append(exc)
        # The thread now ends: it never runs anything else in the namespace.

    thread = threading.Thread(target=run, name="aunshare-netns", daemon=True)
    thread.start()
    thread.join()
    out = result[0]
    if isinstance(out, OSError) and out.errno == _errno.EPERM and not isinstance(
            out, errors.Error):
        return None
    if isinstance(out, BaseException):
        raise out
    return out


def start_socket_helper(pid: int, what: str) -> tuple[Pending, socket.socket]:
    """Start the helper that makes sockets in child ``pid``'s user and
    network namespaces; returns it and our end of the socketpair: send it a
    family byte, and :func:`receive_socket` reads the socket once the end
    is readable. It exits when our end is closed."""
    user_fd = open_namespace(pid, "user", what)
    try:
        net_fd = open_namespace(pid, "net", what)
    except BaseException:
        os.close(user_fd)
        raise
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        ours.setblocking(False)
        spec = Spec(
            ProgramSpec(os.fsencode(sys.executable),
                        (b"-I", b"-S", b"-c", _HELPER.encode())),
            DescriptorSpec(((0, Fd(FdKind.NULL_READ)), (1, Fd(FdKind.NULL_WRITE)),
                            (2, Fd(FdKind.NULL_WRITE)),
                            (3, Fd(FdKind.BORROWED, fd=theirs.fileno())))),
            isolation=IsolationSpec(join=((Namespace.USER, OwnedFd(user_fd)),
                                          (Namespace.NET, OwnedFd(net_fd)))))
        user_fd = net_fd = -1  # owned by the spec now
        pending = spawn_blocking(spec)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        for fd in (user_fd, net_fd):
            if fd >= 0:
                os.close(fd)
    return pending, ours


def receive_socket(ours: socket.socket, pid: int, what: str) -> socket.socket:
    """The socket the helper sent on ``ours`` (readable)."""
    try:
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    except OSError:
        fds = []
    if not fds:
        raise errors.UnknownError(
            f"{what}: the helper process could not create a socket in child {pid}'s network "
            "namespace (did the child exit, or does its user namespace not map the caller?)")
    return socket.socket(fileno=fds[0])
