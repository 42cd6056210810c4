"""aunshare: start Linux child processes in namespaces, await them on any
anyio event loop (asyncio, uvloop, trio).

The pieces, from data to the event loop:

* data: :mod:`aunshare.fds` (:class:`Stdio`, :class:`Fd`), :mod:`aunshare.namespaces`
  (:class:`Namespace`, :class:`UidMap`, :class:`GidMap`, :class:`Capability`),
  :mod:`aunshare.policy` (:class:`KillPolicy`), :mod:`aunshare.errors`,
  :mod:`aunshare.status`, and :mod:`aunshare.spec`, the frozen :class:`Spec`.
* :mod:`aunshare.plan` - what the child does between clone and exec, in order.
* :mod:`aunshare.executors` - what clones the child and runs the plan.
* the parent's side, synchronous: :mod:`aunshare.descriptors`, :mod:`aunshare.cgroup`,
  :mod:`aunshare.idmaps`, :mod:`aunshare.tree`; then :mod:`aunshare.launch`, up to
  the clone.
* :mod:`aunshare.child` - :class:`Child`: streams, waiting, signals, shutdown.
* :mod:`aunshare.spawn` - a spec to a running Child on the event loop (the
  handshake, the wait for exec).
* :mod:`aunshare.command` - :class:`Command`, the builder, and its async methods.
* :mod:`aunshare.events` - :func:`child_events`, :func:`reap_zombies`: watch many children.
* :mod:`aunshare.runner` - :func:`run` (subprocess-style) and the job runner
  :func:`run_many` / :func:`run_as_completed`.
* :mod:`aunshare.cli` - the ``aunshare`` command.
"""

from .child import Child, Output
from .command import Command
from .fds import Fd, Stdio
from .errors import (
    AuxCommandExited, AuxCommandKilled, BeforeUnfreeze, CalledProcessError, CapSet,
    CgroupError, ChangeRoot, Chdir, CreatePipe, Error, Exec, Fork, LineTooLong, NixError,
    ParentDeathSignal, PipeError, SetIdMap, SetNs, SetPGid, SetRlimit, SetUser, StdioError,
    TimeoutExpired, UnknownError, WaitError,
)
from .namespaces import Capability, GidMap, Namespace, UidMap
from .events import ChildEvent, ChildEventKind, ChildEvents, child_events, reap_zombies
from .policy import KillPolicy, KillTarget
from .runner import JobResult, run, run_as_completed, run_many
from .spec import Spec
from .status import ExitStatus, ResourceUsage
from .streams import PipeReader, PipeWriter

__version__ = "0.1.0"

__all__ = [
    "Command", "Spec", "Stdio", "Fd", "Child", "Output", "ExitStatus", "ResourceUsage",
    "PipeReader", "PipeWriter", "KillPolicy", "KillTarget",
    "Namespace", "UidMap", "GidMap", "Capability",
    "run", "run_many", "run_as_completed", "JobResult",
    "child_events", "reap_zombies", "ChildEvent", "ChildEventKind", "ChildEvents",
    "Error", "NixError", "UnknownError", "CreatePipe", "Fork", "Exec", "Chdir",
    "ParentDeathSignal", "PipeError", "WaitError", "StdioError", "SetUser",
    "ChangeRoot", "SetIdMap", "AuxCommandExited", "AuxCommandKilled", "SetPGid",
    "SetNs", "SetRlimit", "CapSet", "BeforeUnfreeze", "LineTooLong", "CgroupError", "CalledProcessError",
    "TimeoutExpired",
]
