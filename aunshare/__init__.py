"""aunshare: start Linux child processes in namespaces, await them on any
anyio event loop (asyncio, uvloop, trio).

The pieces, from data to the event loop:

* data: :mod:`aunshare.fds` (:class:`Stdio`, :class:`Fd`), :mod:`aunshare.namespaces`
  (:class:`Namespace`, :class:`UidMap`, :class:`GidMap`, :class:`Capability`),
  :mod:`aunshare.landlock` (:class:`Landlock`),
  :mod:`aunshare.policy` (:class:`KillPolicy`), :mod:`aunshare.errors`,
  :mod:`aunshare.status`, and :mod:`aunshare.spec`, the frozen :class:`Spec`.
* :mod:`aunshare.plan` - what the child does between clone and exec, in order.
* :mod:`aunshare.executors` - what clones the child and runs the plan.
* the parent's side, synchronous: :mod:`aunshare.descriptors`, :mod:`aunshare.cgroup`,
  :mod:`aunshare.idmaps`, :mod:`aunshare.tree`, :mod:`aunshare.rulesets`; then
  :mod:`aunshare.launch`, up to the clone.
* :mod:`aunshare.child` - :class:`Child`: streams, waiting, signals, shutdown.
* :mod:`aunshare.spawn` - a spec to a running Child on the event loop (the
  handshake, the wait for exec).
* :mod:`aunshare.command` - :class:`Command`, the builder, and its async methods.
* :mod:`aunshare.events` - :func:`child_events`, :func:`reap_zombies`: watch many children.
* :mod:`aunshare.runner` - :func:`run` (subprocess-style) and the job runner
  :func:`run_many` / :func:`run_as_completed`.
* :mod:`aunshare.cli` - the ``aunshare`` command.
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing typing costs more than this whole
# module. Type checkers treat any TYPE_CHECKING constant as true.
TYPE_CHECKING = False

from ._version import __version__ as __version__  # noqa: E402 (after the constant above)

# Public name -> the submodule that defines it. ``import aunshare`` loads
# none of them: each is imported on first use of one of its names (PEP 562),
# so a program (or the ``aunshare`` command) pays only for what it uses.
# When a name moves to another module, change it here, and in the
# TYPE_CHECKING block below.
_LAZY: dict[str, str] = {
    "Command": "command", "Spec": "spec", "Stdio": "fds", "Fd": "fds",
    "Child": "child", "Output": "child",
    "ExitStatus": "status", "ResourceUsage": "status", "CgroupUsage": "status",
    "PipeReader": "streams", "PipeWriter": "streams",
    "KillPolicy": "policy", "KillTarget": "policy",
    "Namespace": "namespaces", "UidMap": "namespaces", "GidMap": "namespaces",
    "Capability": "namespaces",
    "SeccompFilter": "seccomp", "Action": "seccomp", "arg": "seccomp",
    "SyscallRequest": "supervision",
    "Landlock": "landlock", "LandlockReport": "landlock",
    "run": "runner", "run_many": "runner", "run_as_completed": "runner",
    "JobResult": "runner", "CompletedRun": "runner", "ReapTimeout": "errors",
    "child_events": "events", "reap_zombies": "events", "ChildEvent": "events",
    "ChildEventKind": "events", "ChildEvents": "events",
    **{name: "errors" for name in (
        "Error", "NixError", "UnknownError", "CreatePipe", "Fork", "Exec", "Chdir",
        "ParentDeathSignal", "PipeError", "WaitError", "StdioError", "SetUser",
        "ChangeRoot", "Mount", "SetIdMap", "AuxCommandExited", "AuxCommandKilled", "SetPGid",
        "SetNs", "SetRlimit", "CapSet", "BeforeUnfreeze", "LineTooLong", "CgroupError",
        "CalledProcessError", "TimeoutExpired", "LandlockError", "NetworkError", "SeccompError",
        "SyscallGone")},
    "TcpForward": "forward",
}

__all__ = list(_LAZY)

if TYPE_CHECKING:  # what type checkers and IDEs see: the plain imports, each
    # re-exported explicitly ("X as X"): __all__ is built at run time, and
    # checkers with implicit re-export off (mypy --strict) would hide the names
    from typing import Any

    from .child import Child as Child, Output as Output
    from .command import Command as Command
    from .fds import Fd as Fd, Stdio as Stdio
    from .forward import TcpForward as TcpForward
    from .errors import (
        AuxCommandExited as AuxCommandExited, AuxCommandKilled as AuxCommandKilled,
        BeforeUnfreeze as BeforeUnfreeze, CalledProcessError as CalledProcessError,
        CapSet as CapSet, CgroupError as CgroupError, ChangeRoot as ChangeRoot, Chdir as Chdir,
        CreatePipe as CreatePipe, Error as Error, Exec as Exec, Fork as Fork,
        LandlockError as LandlockError, LineTooLong as LineTooLong, Mount as Mount,
        NetworkError as NetworkError, NixError as NixError,
        ParentDeathSignal as ParentDeathSignal,
        PipeError as PipeError, SetIdMap as SetIdMap, SetNs as SetNs, SetPGid as SetPGid,
        SeccompError as SeccompError, SyscallGone as SyscallGone, SetRlimit as SetRlimit,
        SetUser as SetUser,
        StdioError as StdioError,
        TimeoutExpired as TimeoutExpired, UnknownError as UnknownError, WaitError as WaitError,
    )
    from .events import (
        ChildEvent as ChildEvent, ChildEventKind as ChildEventKind, ChildEvents as ChildEvents,
        child_events as child_events, reap_zombies as reap_zombies,
    )
    from .landlock import Landlock as Landlock, LandlockReport as LandlockReport
    from .namespaces import (
        Capability as Capability, GidMap as GidMap, Namespace as Namespace, UidMap as UidMap,
    )
    from .policy import KillPolicy as KillPolicy, KillTarget as KillTarget
    from .runner import (
        CompletedRun as CompletedRun, JobResult as JobResult, run as run,
        run_as_completed as run_as_completed, run_many as run_many,
    )
    from .errors import ReapTimeout as ReapTimeout
    from .seccomp import Action as Action, SeccompFilter as SeccompFilter, arg as arg
    from .spec import Spec as Spec
    from .status import CgroupUsage as CgroupUsage, ExitStatus as ExitStatus
    from .status import ResourceUsage as ResourceUsage
    from .supervision import SyscallRequest as SyscallRequest
    from .streams import PipeReader as PipeReader, PipeWriter as PipeWriter


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` and cache the name here."""
    module = _LAZY.get(name)
    if module is None:  # AttributeError also lets "from . import submodule" work
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
