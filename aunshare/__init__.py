"""aunshare: start Linux child processes in namespaces, await them on any
anyio event loop (asyncio, uvloop, trio).

The pieces, from data to the event loop:

* :mod:`aunshare.command` - :class:`Command`, :class:`Stdio`, :class:`Fd`: pure data.
* :mod:`aunshare.plan` - what the child does between clone and exec, in order.
* :mod:`aunshare.executors` - what clones the child and runs the plan.
* :mod:`aunshare.launch` and :mod:`aunshare.child` - the parent's side, and
  :class:`Child` with its streams.
"""

from .child import Child, Output
from .command import Command, Fd, Stdio
from .errors import (
    AuxCommandExited, AuxCommandKilled, BeforeUnfreeze, CapSet, ChangeRoot, Chdir,
    CreatePipe, Error, Exec, Fork, LineTooLong, NixError, ParentDeathSignal, PipeError,
    SetIdMap, SetNs, SetPGid, SetUser, StdioError, UnknownError, WaitError,
)
from .status import ExitStatus, ResourceUsage
from .streams import PipeReader, PipeWriter

__version__ = "0.1.0"

__all__ = [
    "Command", "Stdio", "Fd", "Child", "Output", "ExitStatus", "ResourceUsage",
    "PipeReader", "PipeWriter",
    "Error", "NixError", "UnknownError", "CreatePipe", "Fork", "Exec", "Chdir",
    "ParentDeathSignal", "PipeError", "WaitError", "StdioError", "SetUser",
    "ChangeRoot", "SetIdMap", "AuxCommandExited", "AuxCommandKilled", "SetPGid",
    "SetNs", "CapSet", "BeforeUnfreeze", "LineTooLong",
]
