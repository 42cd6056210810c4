"""seccomp filters as data: :class:`SeccompFilter`, compiled to classic BPF in
pure Python (no libseccomp).

A filter is an ordered list of rules and a default action. For a syscall,
the first rule that names it and whose argument conditions all hold gives
the action; no rule: the default. The compiled program starts with the
architecture check (a call made through another ABI, such as i386's
``int 0x80`` on x86_64, kills the process) and, on x86_64, refuses the x32
range (syscall numbers with bit 30 set: killed too), so a rule about
``open`` cannot be bypassed through another numbering.

``exit`` and ``exit_group`` are always allowed, ahead of every rule: the
child reports a failed ``execve`` and exits through them, and a filter
that stopped a process from exiting would only leave it spinning. A filter
that would refuse ``execve`` itself is refused when it is made, since the
child installs its filter just before exec and could never start.

The filter is immutable and hashable: each rule method returns a new
filter. Raw BPF (``bytes``, an array of ``struct sock_filter``) is accepted
by :meth:`Command.seccomp` too, and :meth:`SeccompFilter.from_oci` loads the
``linux.seccomp`` section of an OCI runtime config, the format of Docker's
and Podman's profile files.
"""

from __future__ import annotations

import enum
import errno as _errno
import os
import struct
from collections.abc import Iterable, Mapping

from ._linux import ARCH
from ._record import field, record, replace
from ._syscalls import TABLES

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from ._record import NamedTuple  # (see there)

__all__ = ["Action", "Cond", "arg", "SeccompFilter", "AUDIT_ARCH", "check_bpf"]

# struct sock_filter opcodes (linux/filter.h, linux/bpf_common.h)
_LD_W_ABS = 0x20
_ALU_AND_K = 0x54
_JMP_JA = 0x05
_JEQ, _JGT, _JGE = 0x15, 0x25, 0x35
_RET_K = 0x06
_INSN = struct.Struct("=HBBI")
BPF_MAXINSNS = 4096

AUDIT_ARCH: dict[str, int] = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
"""seccomp_data.arch for each architecture with a syscall table."""
_X32_BIT = 0x40000000

# seccomp_data offsets: nr, arch, instruction_pointer, args[6]
_OFF_NR, _OFF_ARCH, _OFF_ARGS = 0, 4, 16


class Action(enum.Enum):
    """What the kernel does with a syscall (``SECCOMP_RET_*``)."""

    ALLOW = 0x7FFF0000
    """Run it."""
    ERRNO = 0x00050000
    """Fail it with an errno, without running it."""
    KILL = 0x80000000
    """Kill the whole process with SIGSYS (``SECCOMP_RET_KILL_PROCESS``)."""
    KILL_THREAD = 0x00000000
    """Kill the calling thread with SIGSYS."""
    TRAP = 0x00030000
    """Send SIGSYS to the thread (a handler may emulate the call)."""
    LOG = 0x7FFC0000
    """Run it, and log it to the audit log."""
    TRACE = 0x7FF00000
    """Hand it to a ptrace tracer (ENOSYS without one)."""
    NOTIFY = 0x7FC00000
    """Hand it to a user-space supervisor (see :meth:`Command.supervise_syscalls`)."""


_BLOCKING = (Action.ERRNO, Action.KILL, Action.KILL_THREAD, Action.TRAP, Action.TRACE)


class Cond(NamedTuple):
    """An argument condition: ``args[argnum] OP value`` as unsigned 64-bit
    numbers; for ``"&=="``, ``args[argnum] & mask == value``."""

    argnum: int
    op: str
    value: int
    mask: int = 0


_OPS = ("==", "!=", "<", "<=", ">", ">=", "&==")


class _ArgRef:
    """``arg(i)``: build a :class:`Cond` with a comparison operator."""

    __slots__ = ("argnum",)

    def __init__(self, index: int) -> None:
        self.argnum = index

    def __eq__(self, value: object) -> Cond:  # type: ignore[override]
        return Cond(self.argnum, "==", _u64(value))

    def __ne__(self, value: object) -> Cond:  # type: ignore[override]
        return Cond(self.argnum, "!=", _u64(value))

    def __lt__(self, value: int) -> Cond:
        return Cond(self.argnum, "<", _u64(value))

    def __le__(self, value: int) -> Cond:
        return Cond(self.argnum, "<=", _u64(value))

    def __gt__(self, value: int) -> Cond:
        return Cond(self.argnum, ">", _u64(value))

    def __ge__(self, value: int) -> Cond:
        return Cond(self.argnum, ">=", _u64(value))

    __hash__ = None  # type: ignore[assignment]

    def masked(self, mask: int, value: int) -> Cond:
        """``args[i] & mask == value``."""
        return Cond(self.argnum, "&==", _u64(value), _u64(mask))


def arg(index: int) -> _ArgRef:
    """The syscall's argument ``index`` (0-5), to compare in a ``when=``
    condition: ``arg(0) == socket.AF_UNIX``, ``arg(2).masked(O_ACCMODE, O_RDONLY)``."""
    if not isinstance(index, int) or not 0 <= index <= 5:
        raise ValueError(f"arg({index!r}): a syscall has arguments 0 to 5")
    return _ArgRef(index)


def _u64(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"an argument condition compares with an int, not {value!r}")
    if not -(1 << 63) <= value < (1 << 64):
        raise ValueError(f"{value} does not fit in a 64-bit argument")
    return value & ((1 << 64) - 1)


class Rule(NamedTuple):
    """One rule of a :class:`SeccompFilter`: these syscalls, when every
    condition holds, get this action."""

    action: Action
    names: tuple[str, ...]
    when: tuple[Cond, ...] = ()
    errno: int = 0


@record
class SeccompFilter:
    """A seccomp filter: rules tried in order, then ``default``.

    ``default`` is what a syscall no rule matches gets (``Action.ERRNO``
    fails it with ``default_errno``). ``arch`` is the architecture whose
    syscall table names are checked against and which the compiled program
    accepts (this machine's by default).
    """

    default: Action = Action.ALLOW
    default_errno: int = _errno.EPERM
    arch: str = ARCH
    rules: tuple[Rule, ...] = ()
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.default, Action):
            raise TypeError(f"SeccompFilter(default={self.default!r}): give an Action")
        if self.default is Action.NOTIFY:
            raise ValueError("SeccompFilter(default=Action.NOTIFY): supervise named syscalls "
                             "with Command.supervise_syscalls() instead")
        _check_errno(self.default_errno, "default_errno")
        if self.arch not in TABLES:
            raise ValueError(f"SeccompFilter(arch={self.arch!r}): syscall tables exist for "
                             f"{', '.join(TABLES)}")
        object.__setattr__(self, "_hash", hash((self.default, self.default_errno, self.arch,
                                                 self.rules)))

    def __hash__(self) -> int:
        return self._hash

    # -- rules ----------------------------------------------------------------------------

    def deny(self, names: str | Iterable[str], errno: int = _errno.EPERM,
             when: Cond | Iterable[Cond] = ()) -> SeccompFilter:
        """These syscalls fail with ``errno`` (1-4095) without running."""
        _check_errno(errno, "errno")
        return self._add(Action.ERRNO, names, when, errno)

    def kill(self, names: str | Iterable[str], when: Cond | Iterable[Cond] = ()
             ) -> SeccompFilter:
        """These syscalls kill the process with SIGSYS (``SECCOMP_RET_KILL_PROCESS``)."""
        return self._add(Action.KILL, names, when)

    def allow(self, names: str | Iterable[str], when: Cond | Iterable[Cond] = ()
              ) -> SeccompFilter:
        """These syscalls run (for a filter whose default refuses)."""
        return self._add(Action.ALLOW, names, when)

    def log(self, names: str | Iterable[str], when: Cond | Iterable[Cond] = ()
            ) -> SeccompFilter:
        """These syscalls run and are logged to the audit log."""
        return self._add(Action.LOG, names, when)

    def rule(self, action: Action, names: str | Iterable[str],
             when: Cond | Iterable[Cond] = (), errno: int = _errno.EPERM) -> SeccompFilter:
        """A rule with any :class:`Action` (``errno`` for ``Action.ERRNO``)."""
        if action is Action.ERRNO:
            _check_errno(errno, "errno")
        return self._add(action, names, when, errno if action is Action.ERRNO else 0)

    def _add(self, action: Action, names: str | Iterable[str], when: Cond | Iterable[Cond],
             errno: int = 0) -> SeccompFilter:
        names = (names,) if isinstance(names, str) else tuple(names)
        if not names:
            raise ValueError("a seccomp rule needs at least one syscall name")
        table = TABLES[self.arch]
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"syscall names are str, not {name!r}")
            if name not in table:
                import difflib  # only for this message: the command starts without it

                close = difflib.get_close_matches(name, table, n=4)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(f"unknown syscall {name!r} on {self.arch}{hint}")
            if name in ("exit", "exit_group") and action is not Action.ALLOW:
                raise ValueError(f"a seccomp rule for {name!r}: exit and exit_group are always "
                                 "allowed (the child must be able to exit and report)")
        conds = (when,) if isinstance(when, Cond) else tuple(when)
        for c in conds:
            if not isinstance(c, Cond):
                raise TypeError(f"when= takes conditions made with arg(i), not {c!r}")
            if not 0 <= c.argnum <= 5 or c.op not in _OPS:
                raise ValueError(f"bad argument condition {c!r}")
        return replace(self, rules=(*self.rules, Rule(action, names, conds, errno)))

    def action_for(self, name: str) -> Action:
        """The action a call of ``name`` gets whatever its arguments, if one
        does: the first unconditional rule naming it, else the default. A
        conditional rule naming it before that gives ``Action.ALLOW`` here
        only if it allows (the answer is then "it depends")."""
        for rule in self.rules:
            if name in rule.names:
                if not rule.when:
                    return rule.action
                if rule.action not in _BLOCKING:
                    return rule.action
        return self.default

    # -- compiling --------------------------------------------------------------------------

    def compile(self) -> bytes:
        """The filter as classic BPF: an array of ``struct sock_filter``.

        Raises ValueError for a filter that would refuse ``execve`` (the
        child installs it just before its own exec, and could never start).
        """
        if self.action_for("execve") in _BLOCKING:
            raise ValueError(
                "this seccomp filter would refuse execve: the child installs the filter just "
                "before its own execve and could never start the program; allow execve "
                "(.allow('execve') before any rule that refuses it)")
        table = TABLES[self.arch]
        prog = _Prog()
        kill = Action.KILL.value
        prog.ld(_OFF_ARCH)
        prog.jump(_JEQ, AUDIT_ARCH[self.arch], 1, 0)
        prog.ret(kill)
        prog.ld(_OFF_NR)
        if self.arch == "x86_64":
            # x32 numbers (bit 30) are refused; -1 (no syscall, e.g. from a
            # tracer) goes on to the rules and the default.
            prog.jump(_JGE, _X32_BIT, 0, 2)
            prog.jump(_JEQ, 0xFFFFFFFF, 1, 0)
            prog.ret(kill)
        for name in ("exit", "exit_group"):
            prog.jump(_JEQ, table[name], 0, 1)
            prog.ret(Action.ALLOW.value)
        loaded = True  # the accumulator holds the syscall number
        for rule in self.rules:
            nrs = sorted({table[n] for n in rule.names})
            for start in range(0, len(nrs), 200):  # jump offsets are 8 bits
                if not loaded:  # a failed condition left an argument there
                    prog.ld(_OFF_NR)
                _emit_rule(prog, nrs[start:start + 200], rule)
                loaded = not rule.when
        prog.ret(_ret(self.default, self.default_errno))
        return prog.assemble()

    # -- OCI / Docker profiles --------------------------------------------------------------

    @classmethod
    def from_oci(cls, profile: Mapping[str, Any], arch: str = ARCH,
                 caps: Iterable[str] = ()) -> SeccompFilter:
        """Load the ``linux.seccomp`` section of an OCI runtime config (the
        format of Docker's and Podman's profile JSON files).

        ``defaultAction``, ``defaultErrnoRet``, ``architectures`` and
        ``syscalls`` (``names``, ``action``, ``errnoRet``, ``args`` with
        ``index``, ``value``, ``valueTwo``, ``op``) are read; Docker's
        ``includes``/``excludes`` (``arches``, ``caps``, ``minKernel``) pick
        the entries for ``arch`` and the capabilities in ``caps``. Names this
        architecture does not have are skipped, as runc does (a profile
        serves several architectures and kernels). Calls through other ABIs
        the profile may list (``SCMP_ARCH_X86``, ``SCMP_ARCH_X32``) are
        killed all the same: the compiled filter accepts one ABI.
        """
        if not isinstance(profile, Mapping):
            raise TypeError("from_oci() takes the profile as a mapping (parsed JSON)")
        if "linux" in profile and "seccomp" in profile.get("linux", {}):
            profile = profile["linux"]["seccomp"]  # a whole runtime config
        default, default_errno = _oci_action(profile.get("defaultAction", "SCMP_ACT_ALLOW"),
                                             profile.get("defaultErrnoRet"))
        arches = profile.get("architectures") or ()
        for m in profile.get("archMap") or ():
            arches = [*arches, m.get("architecture", ""), *(m.get("subArchitectures") or ())]
        want = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}[arch]
        if arches and want not in arches:
            raise ValueError(f"this seccomp profile is for {', '.join(arches)}, not {want}")
        table = TABLES[arch]
        flt = cls(default, default_errno, arch)
        have_caps = set(caps)
        kernel = _kernel_version()
        rules: list[Rule] = []
        for entry in profile.get("syscalls") or ():
            if not _oci_selected(entry, arch, have_caps, kernel):
                continue
            names = tuple(n for n in (entry.get("names") or (entry.get("name"),))
                          if isinstance(n, str) and n in table
                          and n not in ("exit", "exit_group"))
            if not names:
                continue
            action, err = _oci_action(entry.get("action", ""), entry.get("errnoRet"))
            conds = tuple(_oci_cond(a) for a in entry.get("args") or ())
            rules.append(Rule(action, names, conds, err if action is Action.ERRNO else 0))
        return replace(flt, rules=tuple(rules))


class _Prog:
    """A tiny assembler for the filter: instructions and forward jumps."""

    def __init__(self) -> None:
        self.insns: list[tuple[int, int, int, int]] = []

    def ld(self, offset: int) -> None:
        self.insns.append((_LD_W_ABS, 0, 0, offset))

    def jump(self, op: int, k: int, jt: int, jf: int) -> None:
        if not (0 <= jt <= 255 and 0 <= jf <= 255):
            raise ValueError("seccomp filter: a jump too far for classic BPF")
        self.insns.append((op, jt, jf, k & 0xFFFFFFFF))

    def ret(self, value: int) -> None:
        self.insns.append((_RET_K, 0, 0, value))

    def assemble(self) -> bytes:
        if len(self.insns) > BPF_MAXINSNS:
            raise ValueError(f"seccomp filter of {len(self.insns)} instructions: the kernel "
                             f"takes at most {BPF_MAXINSNS}")
        return b"".join(_INSN.pack(*i) for i in self.insns)


def _ret(action: Action, errno: int) -> int:
    value: int = action.value
    if action is Action.ERRNO:
        return value | (errno & 0xFFFF)
    return value


def _emit_rule(prog: _Prog, nrs: list[int], rule: Rule) -> None:
    """``if nr in nrs and every condition: return action``, falling
    through to what follows when it does not match. Emitted backwards in
    thought: the body's length decides the jumps over it."""
    body: list[tuple[int, int, int, int]] = []
    fail: list[int] = []  # indexes into body of jumps whose false branch is "no match"
    for c in rule.when:
        _emit_cond(body, fail, c)
    body.append((_RET_K, 0, 0, _ret(rule.action, rule.errno)))
    n = len(nrs)
    # n compares: a match jumps past the rest and one "ja" that skips the body
    for i, nr in enumerate(nrs):
        prog.jump(_JEQ, nr, n - i, 0)
    prog.insns.append((_JMP_JA, 0, 0, len(body)))
    end = len(body)  # index just past the body = the next rule
    for i, (op, jt, jf, k) in enumerate(body):
        if i in fail:
            # encoded as (which branch fails): jt == 256 marks the true branch
            if jt == 256:
                jt = end - i - 1
            if jf == 256:
                jf = end - i - 1
        if op in (_JEQ, _JGT, _JGE):
            prog.jump(op, k, jt, jf)
        else:
            prog.insns.append((op, jt, jf, k))


_F = 256  # placeholder: "the condition fails" target


def _emit_cond(body: list[tuple[int, int, int, int]], fail: list[int], c: Cond) -> None:
    """Compare a 64-bit argument as its two 32-bit halves (classic BPF
    loads 32 bits); on failure jump to the next rule."""
    hi_off = _OFF_ARGS + 8 * c.argnum + 4  # little-endian: the high half second
    lo_off = _OFF_ARGS + 8 * c.argnum
    hi, lo = c.value >> 32, c.value & 0xFFFFFFFF

    def j(op: int, k: int, jt: int, jf: int) -> None:
        if _F in (jt, jf):
            fail.append(len(body))
        body.append((op, jt, jf, k))

    def ld(off: int) -> None:
        body.append((_LD_W_ABS, 0, 0, off))

    if c.op == "==":
        ld(hi_off); j(_JEQ, hi, 0, _F); ld(lo_off); j(_JEQ, lo, 0, _F)  # noqa: E702
    elif c.op == "&==":
        mhi, mlo = c.mask >> 32, c.mask & 0xFFFFFFFF
        ld(hi_off); body.append((_ALU_AND_K, 0, 0, mhi)); j(_JEQ, hi, 0, _F)  # noqa: E702
        ld(lo_off); body.append((_ALU_AND_K, 0, 0, mlo)); j(_JEQ, lo, 0, _F)  # noqa: E702
    elif c.op == "!=":
        ld(hi_off); j(_JEQ, hi, 0, 2); ld(lo_off); j(_JEQ, lo, _F, 0)  # noqa: E702
    elif c.op in (">", ">="):
        ld(hi_off); j(_JGT, hi, 3, 0); j(_JEQ, hi, 0, _F); ld(lo_off)  # noqa: E702
        j(_JGT if c.op == ">" else _JGE, lo, 0, _F)
    else:  # "<", "<=": not (>=), not (>)
        ld(hi_off); j(_JGT, hi, _F, 0); j(_JEQ, hi, 0, 2); ld(lo_off)  # noqa: E702
        j(_JGE if c.op == "<" else _JGT, lo, _F, 0)


def _check_errno(value: object, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4095:
        raise ValueError(f"{name}={value!r}: an errno for seccomp is 1 to 4095")


_OCI_ACTIONS = {
    "SCMP_ACT_ALLOW": Action.ALLOW, "SCMP_ACT_ERRNO": Action.ERRNO,
    "SCMP_ACT_KILL": Action.KILL_THREAD, "SCMP_ACT_KILL_THREAD": Action.KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": Action.KILL, "SCMP_ACT_TRAP": Action.TRAP,
    "SCMP_ACT_LOG": Action.LOG, "SCMP_ACT_TRACE": Action.TRACE,
    "SCMP_ACT_NOTIFY": Action.NOTIFY,
}
_OCI_OPS = {
    "SCMP_CMP_EQ": "==", "SCMP_CMP_NE": "!=", "SCMP_CMP_LT": "<", "SCMP_CMP_LE": "<=",
    "SCMP_CMP_GT": ">", "SCMP_CMP_GE": ">=", "SCMP_CMP_MASKED_EQ": "&==",
}


def _oci_action(name: object, errno_ret: object) -> tuple[Action, int]:
    action = _OCI_ACTIONS.get(name) if isinstance(name, str) else None
    if action is None:
        raise ValueError(f"seccomp profile: unknown action {name!r} (one of "
                         f"{', '.join(_OCI_ACTIONS)})")
    err = _errno.EPERM if errno_ret is None else errno_ret
    _check_errno(err, "errnoRet")
    assert isinstance(err, int)
    return action, err


def _oci_cond(a: Mapping[str, Any]) -> Cond:
    op = _OCI_OPS.get(a.get("op", ""))
    if op is None:
        raise ValueError(f"seccomp profile: unknown argument operator {a.get('op')!r}")
    index, value, two = a.get("index", -1), a.get("value", 0), a.get("valueTwo", 0)
    if not isinstance(index, int) or not 0 <= index <= 5:
        raise ValueError(f"seccomp profile: argument index {index!r} is not 0 to 5")
    if op == "&==":  # libseccomp: (arg & value) == valueTwo
        return Cond(index, op, _u64(two), _u64(value))
    return Cond(index, op, _u64(value))


def _kernel_version() -> tuple[int, ...]:
    release = os.uname().release
    parts = []
    for p in release.split("-")[0].split(".")[:2]:
        parts.append(int(p) if p.isdigit() else 0)
    return tuple(parts)


def _oci_selected(entry: Mapping[str, Any], arch: str, caps: set[str],
                  kernel: tuple[int, ...]) -> bool:
    """Docker's includes/excludes: is this entry for us?"""
    scmp = {"x86_64": "amd64", "aarch64": "arm64"}[arch]
    inc, exc = entry.get("includes") or {}, entry.get("excludes") or {}
    arches = inc.get("arches")
    if arches and scmp not in arches and arch not in arches:
        return False
    need = inc.get("caps")
    if need and not set(need) <= caps:
        return False
    min_kernel = inc.get("minKernel")
    if min_kernel:
        want = tuple(int(p) for p in str(min_kernel).split(".")[:2] if p.isdigit())
        if kernel < want:
            return False
    if (exc.get("arches") and (scmp in exc["arches"] or arch in exc["arches"])):
        return False
    return not (exc.get("caps") and set(exc["caps"]) & caps)


def check_bpf(program: bytes) -> None:
    """Refuse raw BPF that cannot be a program: empty, not whole
    ``struct sock_filter`` records, or too long."""
    if not isinstance(program, bytes):
        raise TypeError("raw seccomp BPF is bytes (an array of struct sock_filter)")
    if not program or len(program) % 8:
        raise ValueError(f"raw seccomp BPF of {len(program)} bytes: it must be a non-empty "
                         "array of 8-byte struct sock_filter")
    if len(program) // 8 > BPF_MAXINSNS:
        raise ValueError(f"raw seccomp BPF of {len(program) // 8} instructions: the kernel "
                         f"takes at most {BPF_MAXINSNS}")
