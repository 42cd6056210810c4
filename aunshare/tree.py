"""Signalling what a kill policy aims at: the child alone, its process
group, or every process in its cgroup. Knows nothing of
:class:`~aunshare.Child`: it is given the child's pid, its pidfd and its
cgroup directory.
"""

from __future__ import annotations

import os
import signal as _signal

from . import cgroup as _cgroup
from ._linux import pidfd_send_signal
from .policy import KillTarget

__all__ = ["signal_tree"]


def signal_tree(pid: int, pidfd: int, target: KillTarget, cgroup: bytes | None,
                sig: int) -> None:
    """Send ``sig`` to ``target`` of the unreaped child ``pid``; the child
    itself is always signalled, and exactly once (a trap would run twice).

    The caller guarantees the child is not reaped yet: until then its pid,
    and so its process group id, cannot be reused.
    """
    if target is KillTarget.GROUP:
        try:
            os.killpg(pid, sig)
            if os.getpgid(pid) == pid and sig != _signal.SIGKILL:
                return
        except (ProcessLookupError, PermissionError):
            pass
    elif target is KillTarget.CGROUP and cgroup is not None and sig == _signal.SIGKILL:
        _cgroup.kill(cgroup)
    try:
        pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass
    if target is KillTarget.CGROUP and cgroup is not None and sig != _signal.SIGKILL:
        # The child first: were a process it waits for to die first, it could
        # exit on its own before its signal arrived.
        for path, _, _ in os.walk(cgroup):
            _cgroup.signal_all(path, sig, exclude=pid)
