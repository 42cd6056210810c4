"""How a child is stopped when its supervision ends early: :class:`KillPolicy`.

Pure data, like :class:`~aunshare.command.Command`. The async layer
(:mod:`aunshare.supervise`) carries a policy out when a ``with`` block around
a child fails or is cancelled, when :func:`aunshare.run` times out, or when
:meth:`Child.shutdown() <aunshare.Child.shutdown>` is called:

1. send ``signal`` (default SIGTERM, followed by SIGCONT so that a stopped
   process can act on it) to the target;
2. wait up to ``grace`` seconds for the target to exit;
3. send SIGKILL to the target, then reap the child (waiting at most
   ``reap_timeout`` seconds, when set, for it to die).

The tree targets are killed *before* the child is reaped: while the child is
an unreaped zombie its pid, and so its process group id, cannot be reused.
"""

from __future__ import annotations

import enum
import functools
import math
import signal as _signal

from ._names import check_signal, signal_name
from ._record import record, replace

__all__ = ["KillPolicy", "KillTarget", "DEFAULT_KILL_POLICY", "resolve_policy"]


class KillTarget(enum.Enum):
    """What a :class:`KillPolicy` signals."""

    AUTO = "auto"
    """The largest unit the child owns: its cgroup when it was started in one
    (:meth:`Command.new_cgroup <aunshare.Command.new_cgroup>`), else its
    process group when it leads one (:meth:`Command.make_group_leader
    <aunshare.Command.make_group_leader>`), else the child alone."""
    CHILD = "child"
    """The child process only; anything it started is left alone."""
    GROUP = "group"
    """The child's process group. Asking for it makes the child a group leader
    at spawn (``setpgid(0, 0)``), so the group is the child's own. Catches
    children and grandchildren that stay in the group, including ones that
    double-fork into the background; not ones that call ``setsid`` or
    ``setpgid`` themselves. The grace period ends when the child itself
    exits: whatever is left of the group is then killed."""
    CGROUP = "cgroup"
    """Every process in the child's own cgroup v2 (``cgroup.kill``), which
    nothing in it can leave without privilege. Needs :meth:`Command.new_cgroup
    <aunshare.Command.new_cgroup>`. The grace period ends when the cgroup is
    empty; the cgroup is removed once it is."""


@record
class KillPolicy:
    """How to stop a child (and what it started) when supervision ends early.

    ``KillPolicy()`` is SIGTERM, 5 seconds of grace, then SIGKILL, aimed at
    :attr:`KillTarget.AUTO`. ``KillPolicy(grace=0)`` kills at once. Set one on
    a command with :meth:`Command.kill_policy <aunshare.Command.kill_policy>`,
    change it on a running child through :attr:`Child.kill_policy
    <aunshare.Child.kill_policy>`, or pass one to :meth:`Child.shutdown
    <aunshare.Child.shutdown>`. ``target`` also accepts the strings
    ``"auto"``, ``"child"``, ``"group"`` and ``"cgroup"``.
    """

    signal: int = _signal.SIGTERM
    """The first signal (1-64). SIGKILL here means: no grace, kill at once."""
    grace: float = 5.0
    """Seconds to wait after the first signal before SIGKILL; 0 skips the first
    signal entirely."""
    target: KillTarget = KillTarget.AUTO
    """Who gets the signals: see :class:`KillTarget`."""
    reap_timeout: float | None = None
    """Seconds to wait for the child to die after SIGKILL; None (the
    default) waits as long as it takes. A process in uninterruptible sleep
    (state D: a hung NFS server, a frozen cgroup, a stuck device) does not
    die from SIGKILL until the kernel lets it go; with a timeout, the
    shutdown then raises :class:`~aunshare.ReapTimeout` (naming the pid, its
    state and the kernel function it waits in) instead of hanging, and the
    child is reaped later, once it dies: by :meth:`Child.wait()
    <aunshare.Child.wait>`, or else by the next spawn."""

    def __post_init__(self) -> None:
        sig = check_signal(self.signal, "KillPolicy signal")
        grace = self.grace
        if isinstance(grace, bool) or not isinstance(grace, (int, float)):
            raise TypeError(f"KillPolicy grace must be a number of seconds, "
                            f"not {type(grace).__name__}")
        if not math.isfinite(grace) or grace < 0:
            raise ValueError(f"KillPolicy grace must be a finite number of seconds >= 0, "
                             f"got {grace}")
        target = self.target
        if not isinstance(target, KillTarget):
            try:
                target = KillTarget(target)
            except ValueError:
                choices = ", ".join(repr(t.value) for t in KillTarget)
                raise ValueError(f"KillPolicy target must be a KillTarget or one of "
                                 f"{choices}, got {target!r}") from None
        reap = self.reap_timeout
        if reap is not None:
            if isinstance(reap, bool) or not isinstance(reap, (int, float)):
                raise TypeError(f"KillPolicy reap_timeout must be a number of seconds or "
                                f"None, not {type(reap).__name__}")
            if not math.isfinite(reap) or reap < 0:
                raise ValueError(f"KillPolicy reap_timeout must be a finite number of "
                                 f"seconds >= 0 or None, got {reap}")
            object.__setattr__(self, "reap_timeout", float(reap))
        # Normalised so that equal policies compare (and hash) equal.
        object.__setattr__(self, "signal", int(sig))
        object.__setattr__(self, "grace", float(grace))
        object.__setattr__(self, "target", target)

    @property
    def immediate(self) -> bool:
        """True when the policy kills at once (no grace or a SIGKILL first)."""
        return self.grace == 0 or self.signal == _signal.SIGKILL

    def __repr__(self) -> str:
        name = signal_name(self.signal).replace("signal ", "")
        reap = "" if self.reap_timeout is None else f", reap_timeout={self.reap_timeout:g}"
        return (f"KillPolicy(signal={name}, grace={self.grace:g}, "
                f"target={self.target.value!r}{reap})")


DEFAULT_KILL_POLICY = KillPolicy()
"""SIGTERM, 5 s, SIGKILL, target AUTO: what a child gets unless told otherwise."""


@functools.lru_cache(maxsize=256)  # on every spawn
def resolve_policy(policy: KillPolicy, *, group_leader: bool, cgroup: bool) -> KillPolicy:
    """``policy`` with its target made concrete for a child that leads its
    own process group (``group_leader``) and/or has its own cgroup.

    AUTO becomes CGROUP, GROUP or CHILD, in that order of preference. Raises
    ValueError for a target the child cannot have.
    """
    target = policy.target
    if target is KillTarget.AUTO:
        target = (KillTarget.CGROUP if cgroup else
                  KillTarget.GROUP if group_leader else KillTarget.CHILD)
        return replace(policy, target=target)
    if target is KillTarget.GROUP and not group_leader:
        raise ValueError("kill target 'group' needs a child that leads its own process "
                         "group (Command.make_group_leader(), or this target on the Command)")
    if target is KillTarget.CGROUP and not cgroup:
        raise ValueError("kill target 'cgroup' needs a child started in its own cgroup "
                         "(Command.new_cgroup(parent))")
    return policy
