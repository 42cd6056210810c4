"""Executors: what clones the child and runs its plan.

``native`` (machine code, CLONE_VM|CLONE_VFORK, speed independent of the
parent's size) is used where it exists and executable memory is allowed;
``portable`` (a fork-like clone and the plan run from Python) everywhere
else. ``AUNSHARE_EXECUTOR=native|portable`` forces one; it is read once,
at the first spawn (or the first :func:`get_executor` call without a name).
"""

from __future__ import annotations

import os

from .native import NativeExecutor, NativeUnavailable
from .portable import PortableExecutor
from .table import Table

# (Executor, the protocol both executors follow, exists for type checkers only)
__all__ = ["get_executor"]


TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:  # (typing costs the command's start-up ~5 ms)
    from typing import Protocol

    class Executor(Protocol):
        """Clones a child that runs an encoded plan."""

        name: str
        """"native" or "portable"."""
        can_vfork: bool
        """It can put the spawning thread to sleep until the child has exec'd
        (CLONE_VFORK), reporting a failure in the table: no error pipe needed."""
        shares_memory: bool
        """Its child shares the parent's memory until exec (CLONE_VM): a child
        running alongside the parent must get copies of what the parent may
        change meanwhile (the environment), and the table must stay alive."""

        @property
        def into_cgroup(self) -> bool:
            """The child can be created inside a cgroup (CLONE_INTO_CGROUP); False
            where clone3 is refused, and with it CLONE_CLEAR_SIGHAND."""
            ...

        def start(self, table: Table, clone_flags: int, errfd: int, vfork: bool,
                  cgroup_fd: int = 0) -> int:
            """Start the child; return its pid or -errno from clone3. ``cgroup_fd``
            is the cgroup directory for ``CLONE_INTO_CGROUP`` (when in the flags)."""
            ...


_cache: dict[str | None, Executor] = {}


def get_executor(name: str | None = None) -> Executor:
    """The executor named ``name``, ``$AUNSHARE_EXECUTOR``, or the best available.

    "auto" falls back to the portable executor only where the native one
    cannot exist (no routine for this architecture, executable memory
    refused); any other failure to load it is raised, not papered over.

    Without ``name`` the environment variable is read on the first call
    only: every spawn asks, and reading the environment would cost each
    one more than the rest of this function.
    """
    ex = _cache.get(name)
    if ex is not None:
        return ex
    if name is None:
        ex = _cache[None] = get_executor(os.environ.get("AUNSHARE_EXECUTOR") or "auto")
        return ex
    if name == "native":
        ex = NativeExecutor()
    elif name == "portable":
        ex = PortableExecutor()
    elif name == "auto":
        try:
            ex = get_executor("native")
        except NativeUnavailable:
            ex = get_executor("portable")
    else:
        raise ValueError(f"AUNSHARE_EXECUTOR must be 'native' or 'portable', got {name!r}")
    _cache[name] = ex
    return ex
