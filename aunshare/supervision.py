"""Syscalls supervised from the event loop: seccomp user notification.

:meth:`Command.supervise_syscalls` makes the child install a filter that
hands the named syscalls to a listener descriptor
(``SECCOMP_FILTER_FLAG_NEW_LISTENER``) just before exec; the parent takes
the descriptor with ``pidfd_getfd`` while the child waits in the handshake
(see :mod:`aunshare.plan`, step 13). ``async for call in child.syscalls()``
then yields one :class:`SyscallRequest` per call, read when the event loop
sees the listener readable (asyncio and uvloop: a reader kept registered;
trio: ``trio.lowlevel.wait_readable``).
The calling thread stays blocked in the kernel until answered.

When supervision ends (the ``async for`` is left, or the task cancelled,
or the Child is closed), the listener is closed: the kernel then fails
every pending and later supervised call of the child with ``ENOSYS``. So
no call hangs, and the child's kill policy stops it as usual. Before the
exec, the spawn answers the child's own ``execve`` itself (the program has
not started; the plan's call is let through).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno as _errno
import fcntl
import os
import select
import socket
import struct
import sys
import time
from typing import Any

import anyio

from . import errors
from ._linux import ARCH, libc
from ._syscalls import TABLES

__all__ = ["SyscallRequest", "SyscallStream", "Listener", "NOTIF_RECV", "recv", "send"]

# ioctls on the listener (linux/seccomp.h; '!' = 0x21, the same on x86_64 and aarch64)
NOTIF_RECV = 0xC0502100      # _IOWR('!', 0, struct seccomp_notif)      80 bytes
NOTIF_SEND = 0xC0182101      # _IOWR('!', 1, struct seccomp_notif_resp) 24 bytes
NOTIF_ID_VALID = 0x40082102  # _IOW('!', 2, __u64)
NOTIF_ADDFD = 0x40182103     # _IOW('!', 3, struct seccomp_notif_addfd) 24 bytes
NOTIF_SET_FLAGS = 0x40082104  # _IOW('!', 4, __u64)
ADDFD_SETFD = 1              # SECCOMP_ADDFD_FLAG_SETFD: at the number given
ADDFD_SEND = 2               # SECCOMP_ADDFD_FLAG_SEND: and answer with it (5.14+)
FLAG_CONTINUE = 1            # SECCOMP_USER_NOTIF_FLAG_CONTINUE
FD_SYNC_WAKE_UP = 1          # SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
_NOTIF = struct.Struct("=QIIiIQ6Q")  # id, pid, flags, nr, arch, ip, args
_RESP = struct.Struct("=QqiI")       # id, val, error, flags
_U64 = struct.Struct("=Q")
_ADDFD = struct.Struct("=QIIII")     # id, flags, srcfd, newfd, newfd_flags
_ZERO_NOTIF = bytes(_NOTIF.size)
_NAMES = {nr: name for name, nr in TABLES.get(ARCH, {}).items()}
_PAGE = 4096
# The longest a stream polls for the next call before waiting through the
# event loop; none with one CPU (the program could not run meanwhile).
SPIN_MAX = 50e-6 if len(os.sched_getaffinity(0)) > 1 else 0.0
_clock = time.perf_counter
_FSENC = sys.getfilesystemencoding()
_FSERR = sys.getfilesystemencodeerrors()


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_size_t), ("iov_len", ctypes.c_size_t)]


_vm_readv = libc.process_vm_readv
_vm_readv.restype = ctypes.c_ssize_t
_vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                      ctypes.c_ulong, ctypes.c_ulong]


class Listener:
    """The parent's listener descriptor for one child (owned here)."""

    __slots__ = ("fd", "busy", "waiting", "early", "reaped", "loop", "future", "poller",
                 "scratch", "_cbuf", "_local", "_remote", "_lref", "_rref")

    def __init__(self, fd: int, early: list[tuple[int, int, int, tuple[int, ...]]]) -> None:
        self.fd = fd
        self.busy = False  # a SyscallStream was made
        self.waiting = False  # a task waits for the descriptor to be readable
        self.reaped = False  # closed because the child was reaped
        self.early = early  # calls received before the exec was confirmed
        # asyncio/uvloop: the loop our reader stays registered with between
        # waits (no epoll_ctl per call), and the future a waiting task awaits
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None
        # poll(0) on the descriptor alone: is a call pending right now?
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)
        # Made once, not per call: one page of scratch memory with its
        # iovecs for process_vm_readv.
        self.scratch = bytearray(_PAGE)
        self._cbuf = (ctypes.c_char * _PAGE).from_buffer(self.scratch)
        self._local = _Iovec(ctypes.addressof(self._cbuf), _PAGE)
        self._remote = _Iovec(0, 0)
        self._lref = ctypes.byref(self._local)
        self._rref = ctypes.byref(self._remote)
        try:
            # Linux 6.6+: the answer switches straight to the waiting thread
            # (a ping-pong between caller and supervisor is the usual case)
            fcntl.ioctl(fd, NOTIF_SET_FLAGS, struct.pack("=Q", FD_SYNC_WAKE_UP))
        except OSError:
            pass

    def readv(self, pid: int, addr: int, size: int) -> int:
        """process_vm_readv of ``size`` (<= one page) bytes at ``addr`` into
        :attr:`scratch`: the count read, or -1 (errno in ctypes.get_errno)."""
        self._local.iov_len = size
        remote = self._remote
        remote.iov_base = addr
        remote.iov_len = size
        return _vm_readv(pid, self._lref, 1, self._rref, 1, 0)  # type: ignore[no-any-return]

    def on_readable(self) -> None:
        """The asyncio reader: wake the waiting task. With no task waiting
        (it awaits something else), unregister instead of being called at
        every turn of the loop; the next wait registers again."""
        fut = self.future
        if fut is None:
            self.unregister()
        elif not fut.done() and self.poller.poll(0):
            # Checked: the loop may run this callback late, for readiness
            # it saw before the task (scheduled earlier in the same turn)
            # took that call, answered it and began a new wait; waking
            # that wait would cost a whole turn of the loop for nothing
            # (measured: two wake-ups per supervised call without it).
            fut.set_result(None)

    def unregister(self) -> None:
        """Drop the asyncio reader, if any."""
        loop, self.loop = self.loop, None
        if loop is not None:
            try:
                loop.remove_reader(self.fd)
            except (RuntimeError, OSError, ValueError):
                pass  # the loop is closed already: nothing is registered

    def close(self, reaped: bool = False) -> None:
        """Close the listener: the kernel fails later supervised calls with ENOSYS."""
        if self.loop is not None:
            self.unregister()
        fut, self.future = self.future, None
        if fut is not None and not fut.done():
            fut.set_result(None)  # the waiting task sees fd < 0: the stream ends
        fd, self.fd = self.fd, -1
        if fd >= 0:
            self.reaped = reaped
        if fd >= 0:
            if self.waiting:
                try:
                    anyio.notify_closing(fd)
                except RuntimeError:
                    pass
            os.close(fd)

    def requests(self) -> SyscallStream:
        """The stream of supervised calls (one per child)."""
        if self.fd < 0:
            raise RuntimeError("the syscall supervision of this child has ended (its "
                               "listener is closed); call syscalls() once, for the "
                               "child's whole life")
        if self.busy:
            raise RuntimeError("syscalls() is already being iterated for this child")
        return SyscallStream(self)


class SyscallStream:
    """``child.syscalls()``: an async iterator of :class:`SyscallRequest`.

    It ends when no process uses the filter any more. Being cancelled while
    it waits, :meth:`aclose`, or dropping it (leaving the ``async for`` and
    its task) ends the supervision: the listener is closed at once, and the
    kernel fails the child's pending and later supervised calls with ENOSYS.
    """

    __slots__ = ("_listener", "_started", "_trio", "_skip", "_backoff", "__weakref__")

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._started = False
        # the trio module once the first wait found no asyncio task (trio,
        # also as a guest of asyncio); None: asyncio, or not known yet
        self._trio: Any = None
        # Brief polling for the next call (see __anext__): after a poll
        # that found nothing, the next _skip waits go straight to the loop;
        # _backoff doubles with each such miss (up to 64), 0 after a hit.
        self._skip = 0
        self._backoff = 0
        listener.busy = True

    def __aiter__(self) -> SyscallStream:
        return self

    async def __anext__(self) -> SyscallRequest:
        listener = self._listener
        if listener.fd < 0:
            if not self._started:
                raise RuntimeError("the syscall supervision of this child has ended (its "
                                   "listener is closed); call syscalls() once, for the "
                                   "child's whole life")
            raise StopAsyncIteration
        self._started = True
        if listener.early:
            return SyscallRequest(listener, *listener.early.pop(0))
        poller = listener.poller
        try:
            while True:
                # The next call is often pending already (the answer woke the
                # caller, which made its next call): take it without a round
                # through the event loop.
                events = poller.poll(0)
                if not events:
                    # A supervised program's next call usually comes within
                    # tens of microseconds of the answer: poll for up to
                    # SPIN_MAX before a wait through the event loop (a round
                    # trip that costs more). A miss backs off exponentially,
                    # so a program whose calls come slower costs at most one
                    # such poll per 64 calls.
                    if self._skip:
                        self._skip -= 1
                    elif SPIN_MAX:
                        until = _clock() + SPIN_MAX
                        while not events and _clock() < until:
                            events = poller.poll(0)
                        if events:
                            self._backoff = 0
                        else:
                            self._backoff = self._skip = min(2 * self._backoff or 1, 64)
                    if not events:
                        await self._wait(listener)
                        if listener.fd < 0:  # closed while waiting
                            raise StopAsyncIteration
                    continue
                if events[0][1] & select.POLLIN:
                    request = _receive(listener)
                    if request is not None:
                        return request
                else:  # POLLHUP: no process uses the filter any more
                    listener.close()
                    raise StopAsyncIteration
        except StopAsyncIteration:
            raise
        except BaseException:  # cancelled (or failed): supervision ends here
            listener.close()
            raise

    async def _wait(self, listener: Listener) -> None:
        trio = self._trio
        task = None if trio is not None else _current_asyncio_task()
        if task is None:  # trio, also as a guest of asyncio
            if trio is None:
                import trio  # running under it: imported already

                self._trio = trio
            listener.waiting = True
            try:
                # trio's own call, not anyio's wrapper: this wait is the
                # hot path of a supervised call (one per call that is not
                # already pending)
                await trio.lowlevel.wait_readable(listener.fd)
            except trio.ClosedResourceError:  # notify_closing: the listener closed
                raise StopAsyncIteration from None
            finally:
                listener.waiting = False
            return
        # asyncio, uvloop: the loop's own reader, left registered between
        # calls (anyio.wait_readable adds and removes it every time)
        loop = task.get_loop()
        if listener.loop is not loop:
            listener.unregister()
            loop.add_reader(listener.fd, listener.on_readable)
            listener.loop = loop
        fut = listener.future = loop.create_future()
        try:
            await fut
        finally:
            listener.future = None

    async def aclose(self) -> None:
        """End the supervision now (see the class doc)."""
        self._listener.close()

    def __del__(self) -> None:
        # Left without aclose (the task was cancelled in the loop's body):
        # no later call may wait for an answer nobody will give.
        self._listener.close()


def _current_asyncio_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no asyncio loop in this thread (trio)
        return None


def recv(fd: int) -> tuple[int, int, int, tuple[int, ...]] | None:
    """One notification: (id, pid, nr, args); None when its caller went
    away between the wake-up and the read."""
    buf = bytearray(_NOTIF.size)
    try:
        fcntl.ioctl(fd, NOTIF_RECV, buf, True)
    except OSError as exc:
        if exc.errno in (_errno.ENOENT, _errno.EINTR):
            return None
        raise
    nid, pid, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buf)
    return nid, pid, nr, tuple(args)


def _receive(listener: Listener) -> SyscallRequest | None:
    """:func:`recv` into the listener's own buffer, made a request."""
    try:
        # the kernel wants a zeroed struct: an immutable one, the answer is a copy
        buf = fcntl.ioctl(listener.fd, NOTIF_RECV, _ZERO_NOTIF)
    except OSError as exc:
        if exc.errno in (_errno.ENOENT, _errno.EINTR):
            return None
        raise
    got = _NOTIF.unpack(buf)
    return SyscallRequest(listener, got[0], got[1], got[3], got[6:])


def send(fd: int, nid: int, value: int, error: int, flags: int) -> None:
    """Answer notification ``nid``; raises :class:`~aunshare.errors.SyscallGone`."""
    try:
        fcntl.ioctl(fd, NOTIF_SEND, _RESP.pack(nid, value, error, flags))
    except OSError as exc:
        if exc.errno == _errno.ENOENT:
            raise errors.SyscallGone(
                _errno.ENOENT, None, "the process making this call is gone (killed) or its "
                "call was interrupted by a signal; nothing is waiting for the answer") from None
        raise


class SyscallRequest:
    """One supervised syscall, blocked in the kernel until answered.

    Answer exactly once: :meth:`allow`, :meth:`deny`, :meth:`respond` or
    :meth:`inject_fd`. Memory helpers read the caller's memory
    (``process_vm_readv``, else ``/proc/PID/mem``) and then check that the
    notification is still valid (``SECCOMP_IOCTL_NOTIF_ID_VALID``), as the
    kernel documentation prescribes: otherwise the pid may already be
    another process.
    """

    __slots__ = ("_listener", "id", "pid", "nr", "args", "_answered")

    def __init__(self, listener: Listener, nid: int, pid: int, nr: int,
                 args: tuple[int, ...]) -> None:
        self._listener = listener
        self.id: int = nid
        """The kernel's cookie for this notification."""
        self.pid: int = pid
        """The calling thread's id (in the parent's pid namespace)."""
        self.nr: int = nr
        """The syscall number."""
        self.args: tuple[int, ...] = args
        """The six arguments as unsigned 64-bit values."""
        self._answered = False

    @property
    def name(self) -> str:
        """The syscall's name (``"nr<N>"`` when unknown)."""
        return _NAMES.get(self.nr, f"nr{self.nr}")

    def __repr__(self) -> str:
        args = ", ".join(hex(a) for a in self.args)
        return f"<SyscallRequest {self.name}({args}) pid={self.pid}>"

    # -- reading the caller's memory -------------------------------------------------------

    def _ended(self) -> Exception:
        if self._listener.reaped:
            return errors.SyscallGone(_errno.ESRCH, None, "the child has exited and been "
                                      "reaped; nothing is waiting for the answer")
        return RuntimeError("the syscall supervision of this child has ended (the stream "
                            "was left or cancelled): the kernel answered the call with ENOSYS")

    def _check_valid(self) -> None:
        fd = self._listener.fd
        if fd < 0:
            raise self._ended()
        try:
            fcntl.ioctl(fd, NOTIF_ID_VALID, _U64.pack(self.id))
        except OSError as exc:
            raise errors.SyscallGone(exc.errno or _errno.ENOENT, None,
                                     "the call is no longer pending (its process died or "
                                     "was interrupted): what was read may be another "
                                     "process's memory", action="read memory of") from None

    def read(self, addr: int, size: int) -> bytes:
        """``size`` bytes of the caller's memory at ``addr`` (fewer where
        the mapping ends)."""
        # process_vm_readv: one syscall, no descriptor to open per call
        buf = bytearray(size)
        local = _Iovec(ctypes.addressof((ctypes.c_char * size).from_buffer(buf)), size)
        remote = _Iovec(addr, size)
        n = _vm_readv(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if n >= 0 or ctypes.get_errno() in (_errno.EFAULT, _errno.EIO):
            self._check_valid()
            return bytes(buf[:max(n, 0)])
        try:
            fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._check_valid()
            raise errors.SyscallGone(exc.errno or _errno.EIO, self.pid,
                                     "cannot open the caller's memory",
                                     action="read memory of") from None
        try:
            out = b""
            while len(out) < size:
                try:
                    chunk = os.pread(fd, size - len(out), addr + len(out))
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            os.close(fd)
        self._check_valid()
        return out

    def _short_string(self, addr: int, limit: int) -> bytearray | None:
        """The string at ``addr`` when it ends before the end of its page
        (most paths): one process_vm_readv, one validity check. None when
        the general path must be taken."""
        listener = self._listener
        if listener.fd < 0:
            return None
        n = min(_PAGE - addr % _PAGE, limit)
        got = listener.readv(self.pid, addr, n)
        if got <= 0:
            return None
        data = listener.scratch
        end = data.find(0, 0, got)
        if end < 0:
            return None
        out = data[:end]  # a copy, made before the check: the buffer is shared
        self._check_valid()
        return out

    def string(self, addr: int, limit: int = 4096) -> bytes:
        """The NUL-terminated string at ``addr`` (at most ``limit`` bytes)."""
        short = self._short_string(addr, limit)
        if short is not None:
            return bytes(short)
        out = b""
        want = 256  # most paths are short: read more only when needed
        while len(out) < limit:
            # up to the end of the page at most: the next one may not be mapped
            n = min(_PAGE - (addr + len(out)) % _PAGE, limit - len(out), want)
            want = _PAGE
            chunk = self.read(addr + len(out), n)
            end = chunk.find(b"\0")
            if end >= 0:
                return out + chunk[:end]
            out += chunk
            if len(chunk) < n:
                break
        return out

    def path(self, index: int) -> str:
        """Argument ``index`` read as a path (a C string in the caller's memory)."""
        short = self._short_string(self.args[index], 4096)
        if short is not None:
            return short.decode(_FSENC, _FSERR)
        return os.fsdecode(self.string(self.args[index]))

    def sockaddr(self, index: int) -> tuple[int, Any]:
        """Argument ``index`` read as a socket address whose length is the
        next argument (``connect``, ``bind``, ``sendto``'s order): ``(family,
        (host, port))`` for AF_INET/AF_INET6, ``(AF_UNIX, path)``, else
        ``(family, raw bytes)``."""
        length = min(self.args[index + 1] if index < 5 else 128, 128)
        raw = self.read(self.args[index], length)
        if len(raw) < 2:
            return (0, raw)
        family = struct.unpack_from("=H", raw)[0]
        if family == socket.AF_INET and len(raw) >= 8:
            port = struct.unpack_from("!H", raw, 2)[0]
            return (family, (socket.inet_ntop(socket.AF_INET, raw[4:8]), port))
        if family == socket.AF_INET6 and len(raw) >= 24:
            port = struct.unpack_from("!H", raw, 2)[0]
            return (family, (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port))
        if family == socket.AF_UNIX:
            path = raw[2:]
            if path[:1] == b"\0":
                return (family, path.rstrip(b"\0"))  # abstract: kept as bytes with the NUL
            return (family, os.fsdecode(path.split(b"\0", 1)[0]))
        return (family, raw[2:])

    # -- answers ----------------------------------------------------------------------------

    def _pending_fd(self, rule: str) -> int:
        """The listener's descriptor, while this call still awaits its answer."""
        if self._answered:
            raise RuntimeError(f"{self!r} was already answered: {rule}")
        fd = self._listener.fd
        if fd < 0:
            raise self._ended()
        return fd

    def _answer(self, value: int, error: int, flags: int) -> None:
        fd = self._pending_fd("a supervised call is answered once")
        send(fd, self.id, value, error, flags)
        self._answered = True

    async def allow(self) -> None:
        """Let the call run as if unsupervised (``SECCOMP_USER_NOTIF_FLAG_CONTINUE``).

        As the kernel documentation warns, a check of pointed-to memory
        made before allowing is racy against another thread of the caller:
        use it for policy on numbers, or where the caller is one thread.
        """
        self._answer(0, 0, FLAG_CONTINUE)

    async def deny(self, errno: int = _errno.EPERM) -> None:
        """Fail the call with ``errno`` (1-4095), without running it."""
        if isinstance(errno, bool) or not isinstance(errno, int) or not 1 <= errno <= 4095:
            raise ValueError(f"deny(errno={errno!r}): an errno is 1 to 4095")
        self._answer(0, -errno, 0)

    async def respond(self, value: int) -> None:
        """Make the call return ``value`` (a success) without running it."""
        self._answer(value, 0, 0)

    async def inject_fd(self, fd: int, *, respond: bool = True, target_fd: int | None = None,
                        cloexec: bool = True) -> int:
        """Put a copy of the parent's descriptor ``fd`` into the caller's
        descriptor table (``SECCOMP_IOCTL_NOTIF_ADDFD``) and return its
        number there.

        With ``respond=True`` (the default) this is also the answer: the
        call returns that number, atomically (Linux 5.14+). It is how a
        supervisor opens a file *for* the program (an ``openat`` answered
        with a descriptor the parent opened after checking the path itself),
        which leaves no window between the check and the use. With
        ``respond=False`` the call stays pending and is answered later.
        ``target_fd`` asks for that number (replacing what it held, as
        ``dup2`` would); ``cloexec`` sets ``O_CLOEXEC`` on the new descriptor.
        """
        if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
            raise ValueError(f"inject_fd(fd={fd!r}): a descriptor of this process, an int >= 0")
        if target_fd is not None and (isinstance(target_fd, bool)
                                      or not isinstance(target_fd, int) or target_fd < 0):
            raise ValueError(f"inject_fd(target_fd={target_fd!r}): a descriptor number >= 0, "
                             "or None for the lowest free one")
        listener_fd = self._pending_fd("a descriptor can be injected only while the call "
                                       "is pending")
        flags = (ADDFD_SEND if respond else 0) | (ADDFD_SETFD if target_fd is not None else 0)
        buf = bytearray(_ADDFD.pack(self.id, flags, fd, target_fd or 0,
                                    os.O_CLOEXEC if cloexec else 0))
        try:
            number: int = fcntl.ioctl(listener_fd, NOTIF_ADDFD, buf, True)
        except OSError as exc:
            if exc.errno == _errno.ENOENT:
                raise errors.SyscallGone(
                    _errno.ENOENT, None, "the process making this call is gone (killed) or "
                    "its call was interrupted by a signal; no descriptor was given") from None
            if exc.errno == _errno.EBADF:
                raise ValueError(f"inject_fd(fd={fd}): not an open descriptor of this "
                                 "process") from None
            if exc.errno == _errno.EINVAL:
                raise OSError(exc.errno, "inject_fd: refused by this kernel (adding a "
                              "descriptor needs Linux 5.9, respond=True 5.14: on 5.9-5.13 "
                              "use respond=False, then respond() with the number)") from None
            if exc.errno == _errno.EMFILE:
                raise OSError(exc.errno, "inject_fd: the caller's descriptor table is full "
                              f"(its RLIMIT_NOFILE), or target_fd={target_fd} is above "
                              "it") from None
            raise
        if respond:
            self._answered = True
        return number

