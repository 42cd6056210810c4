"""The ``aunshare`` command: run a program in new namespaces, in the spirit
of util-linux ``unshare(1)`` and ``bwrap``, built on :class:`~aunshare.Command`.

``aunshare [options] [--] PROGRAM [ARGS...]``. The program inherits the
standard streams (and every inheritable descriptor, as with ``unshare``).
The exit status is the program's, 128+N when a signal N killed it, 124
after ``--timeout``, 125 when setting the child up failed, 126 when the
program could not be executed and 127 when it was not found.
"""

from __future__ import annotations

import argparse
import errno
import grp
import math
import os
import pwd
import resource
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence

from ._version import __version__
from .command import Command
from ._linux import WEXITED, pidfd_send_signal, waitid_pidfd
from ._record import fields
from .cgroup import clear_blocking
from .cgroup import usage as cgroup_usage
from .errors import Error, Exec, WaitError
from .landlock import Landlock, LandlockReport
from .namespaces import Capability, GidMap, Namespace, UidMap
from .policy import DEFAULT_KILL_POLICY, KillPolicy, KillTarget, resolve_policy
from .status import from_init, from_waitid, read_wait_status
from .tree import signal_tree

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from typing import Any

    from .launch import Pending
    from .status import ExitStatus

__all__ = ["build_command", "build_parser", "main"]

EXIT_TIMEOUT = 124
EXIT_SETUP = 125
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127

# Names accepted by --setns, as under /proc/PID/ns/.
NS_TYPES = {
    "user": Namespace.USER, "mnt": Namespace.MOUNT, "uts": Namespace.UTS,
    "ipc": Namespace.IPC, "net": Namespace.NET, "pid": Namespace.PID,
    "cgroup": Namespace.CGROUP, "time": Namespace.TIME,
}
NS_TYPES_BY_NAME = {ns.name: kind for kind, ns in NS_TYPES.items()}

RLIMITS = {name[len("RLIMIT_"):].lower(): getattr(resource, name)
           for name in dir(resource) if name.startswith("RLIMIT_")}

# Signals passed on to the child. SIGINT and SIGQUIT typed at the terminal
# already reach the child (it is in the same foreground process group), so
# those two are passed on only when aunshare is not in the foreground.
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
             signal.SIGUSR1, signal.SIGUSR2)
KEYBOARD = (signal.SIGINT, signal.SIGQUIT)
STOPPING = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)

# The flag that creates each namespace, by Namespace member name.
NS_FLAGS = {"USER": "--user", "NET": "--net", "PID": "--pid", "MOUNT": "--mount",
            "UTS": "--uts", "IPC": "--ipc", "CGROUP": "--cgroup", "TIME": "--time"}


def _ns_flags(names: str) -> str:
    """``"USER|NET"`` -> ``"--user --net"``."""
    return " ".join(NS_FLAGS.get(n, n) for n in names.split("|"))


def _ns_types(names: str) -> str:
    """``"USER|NET"`` -> ``"user, net"``: the TYPE names of --setns."""
    return ", ".join(NS_TYPES_BY_NAME.get(n, n.lower()) for n in names.split("|"))


# The library's messages and likely causes name its Python API
# ("unshare(Namespace.USER) with map_root_user()"); a user of the command
# needs the flags instead. Whole phrases first, then single names; a call
# is matched with its "()" so that prose and syscall names such as
# pivot_root(2) stay as they are.
_NS = r"[A-Z]+(?:\|[A-Z]+)*"
API_TO_CLI: list[tuple[str, Any]] = [
    (r"unshare\(Namespace\.USER\) with map_root_user\(\)", "-r/--map-root-user"),
    (rf"({_NS}) namespace is both created \(unshare\) and joined \(set_namespace\)",
     lambda m: f"the {_ns_types(m[1])} namespace{'s are' if '|' in m[1] else ' is'} both "
               f"created ({_ns_flags(m[1])}) and joined (--setns)"),
    (rf"set_namespace\(USER\) with unshare\(({_NS})\)",
     lambda m: f"--setns user:PATH with {_ns_flags(m[1])}"),
    (rf"unshare\(Namespace\.({_NS})\)", lambda m: _ns_flags(m[1])),
    (rf"unshare\(({_NS})\)", lambda m: _ns_flags(m[1])),
    (r"\(and Namespace\.PID\b", "(and --pid"),
    (r"Namespace\.([A-Z]+)", lambda m: _ns_flags(m[1])),
    (r"\(set_namespace\)", "(--setns)"),
    (r"^set_namespace: ", ""),
    (r"is a ([A-Z]+) namespace, not ([A-Z]+)",
     lambda m: f"is a {_ns_types(m[1])} namespace, not {_ns_types(m[2])}"),
    (r"root or set_id_map_commands\(\) with newuidmap/newgidmap and /etc/subuid, "
     r"/etc/subgid entries", "root"),
    (r"\(root, or a new user namespace\)", "(root, or a new user namespace: -r/--map-root-user)"),
    (r"map_root_user\(\)", "-r/--map-root-user"),
    (r"map_current_user\(\)", "--map-current-user"),
    (r"set_id_maps\(\)", "--map-user/--map-group"),
    (r"hostname\(\)", "--hostname"),
    (r"mount_proc\(\)", "--mount-proc"),
    (r"pivot_root\(\)", "--pivot-root"),
    (r"chroot_dir\(\)", "--chroot"),
    # the builder's argument checks, which the command's options share
    (r"^pivot_root new_root", "--pivot-root NEWROOT"),
    (r"^pivot_root put_old must name a directory under new_root",
     "--pivot-root PUT_OLD must name a directory under NEWROOT"),
    (r"^chroot_dir must", "--chroot DIR must"),
    (r"^hostname must", "--hostname must"),
    (r"^rlimit soft limit", "--rlimit: the soft limit"),
    (r"current_dir\(\)", "--chdir"),
    (r"keep_caps\(\)", "--keep-caps"),
    (r"no_new_privs\(\)", "--no-new-privs"),
    (r"rlimit\(\)", "--rlimit"),
    (r"with Landlock\(best_effort=True\)", "without --landlock-strict"),
    (r"\(execute=, e\.g\. /usr\)", "(--landlock-exec, e.g. /usr)"),
    (r"Landlock\((read_only|read_write|execute)=\.\.\.\)",
     lambda m: {"read_only": "--landlock-ro", "read_write": "--landlock-rw",
                "execute": "--landlock-exec"}[m[1]]),
    (r"\buid\(\)", "--uid"),
    (r"\bgid\(\)", "--gid"),
    (r"\bgroups\(\)", "--groups"),
]


def cli_text(message: str) -> str:
    """``message`` (an error's text) with the Python API it names replaced by
    this command's flags."""
    import re  # only on the error path

    for pattern, replacement in API_TO_CLI:
        message = re.sub(pattern, replacement, message)
    return message

EPILOG = """\
examples:
  aunshare -r --net -- sh -c 'id -u; cat /proc/net/dev'
      root in a new user namespace, with a network namespace of its own
      (only a loopback device, up)
  aunshare --unshare-all --ro-bind /usr /usr --symlink usr/bin /bin \
           --symlink usr/lib /lib --symlink usr/lib64 /lib64 --tmpfs /tmp \
           --dev /dev --proc /proc -- sh
      a sandbox in bubblewrap's words: a new root holding only what is named
  aunshare -r --pid --mount-proc -- ps -e
      pid 1 of a new pid namespace, with a /proc that shows only it
  aunshare -r --hostname box -- hostname
      a UTS namespace named "box" (--hostname implies --uts)
  aunshare --setns net:/proc/1234/ns/net -- ip addr
      join the network namespace of process 1234
  aunshare -r --pid --pivot-root /srv/rootfs --mount-proc -- /bin/sh
      a root file system of its own (/srv/rootfs/oldroot must exist;
      the old root is detached from it before PROGRAM starts)
  aunshare --rlimit nofile=64 --timeout 10 --json-status st.json -- make
      limits, a deadline (exit 124) and a JSON report of how it ended

exit status:
  the program's exit code; 128+N when it was killed by signal N;
  124 when --timeout expired; 125 when setting up the child failed;
  126 when the program could not be executed; 127 when it was not found;
  2 for a usage error.

signals:
  SIGHUP, SIGTERM, SIGUSR1 and SIGUSR2 sent to aunshare are passed on to
  the program; SIGINT and SIGQUIT too, unless aunshare runs in the
  terminal's foreground, where the program got them from the terminal
  already. A second SIGHUP, SIGINT, SIGQUIT or SIGTERM kills the program
  with SIGKILL (pid 1 of a new pid namespace ignores signals it has no
  handler for; with --init, pid 1 is an init that passes them on).
"""


# -- argument types --------------------------------------------------------------

def _id(text: str, what: str, lookup: Callable[[str], int]) -> int:
    """A numeric id, or a name looked up on this host."""
    if text.isdigit():
        value = int(text)
        if value > 2**32 - 2:
            raise argparse.ArgumentTypeError(f"{what} {text} is too large")
        return value
    try:
        return lookup(text)
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown {what} {text!r}") from None


def user_id(text: str) -> int:
    return _id(text, "user", lambda name: pwd.getpwnam(name).pw_uid)


def group_id(text: str) -> int:
    return _id(text, "group", lambda name: grp.getgrnam(name).gr_gid)


def group_list(text: str) -> list[int]:
    return [group_id(g) for g in text.split(",") if g]


def setns_spec(text: str) -> tuple[Namespace, str]:
    kind, sep, path = text.partition(":")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected TYPE:PATH, got {text!r}")
    if kind not in NS_TYPES:
        raise argparse.ArgumentTypeError(
            f"unknown namespace type {kind!r} (one of {', '.join(NS_TYPES)})")
    return NS_TYPES[kind], path


def port_spec(text: str) -> int | tuple[int, int]:
    host, sep, inside = text.partition(":")
    try:
        ports = (int(host), int(inside) if sep else int(host))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port or PORT:INSIDE: {text!r}") from None
    if not all(0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"ports are 1..65535: {text!r}")
    return ports if sep else ports[0]


def pivot_spec(text: str) -> tuple[str, str]:
    """NEWROOT[:PUT_OLD] -> (NEWROOT, PUT_OLD or "oldroot"); the builder
    checks both (its ValueError is a usage error, in this command's words)."""
    root, sep, old = text.partition(":")
    return root, old if sep else "oldroot"


def env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def capabilities(text: str) -> list[Capability]:
    caps = []
    for name in text.split(","):
        name = name.strip()
        if not name:
            continue
        key = name.upper()
        if not key.startswith("CAP_"):
            key = "CAP_" + key
        try:
            caps.append(Capability[key])
        except KeyError:
            raise argparse.ArgumentTypeError(f"unknown capability {name!r}") from None
    return caps


def _limit(text: str, what: str) -> int | None:
    if text in ("unlimited", "infinity"):
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"{what} limit must be a number or 'unlimited', got {text!r}")
    return int(text)


def rlimit_spec(text: str) -> tuple[int, int | None, int | None]:
    """RES=SOFT[:HARD] -> (resource, soft, hard); SOFT alone sets both,
    SOFT: keeps the current hard limit."""
    name, sep, values = text.partition("=")
    key = name.lower().removeprefix("rlimit_")
    if not sep or not values:
        raise argparse.ArgumentTypeError(f"expected RES=SOFT[:HARD], got {text!r}")
    if key not in RLIMITS:
        raise argparse.ArgumentTypeError(
            f"unknown resource {name!r} (one of {', '.join(sorted(RLIMITS))})")
    res = RLIMITS[key]
    soft_text, colon, hard_text = values.partition(":")
    soft = _limit(soft_text, "soft")
    if not colon:
        hard = soft
    elif not hard_text:
        current = resource.getrlimit(res)[1]
        hard = None if current == resource.RLIM_INFINITY else current
    else:
        hard = _limit(hard_text, "hard")
    return res, soft, hard


def tcp_port(text: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


LANDLOCK_SCOPES = ("signals", "abstract-unix")


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or math.isinf(value) or math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def grace_seconds(text: str) -> float:
    if text in ("0", "0.0"):
        return 0.0
    return seconds(text)


# -- bubblewrap's options -----------------------------------------------------------------

# (option, nargs, metavar, help); each is kept, in order, in args.view.
_VIEW_OPTIONS: list[tuple[str, int, str | tuple[str, ...], str]] = [
    ("--bind", 2, ("SRC", "DEST"), "bind SRC on DEST"),
    ("--bind-try", 2, ("SRC", "DEST"), "as --bind, skipped when SRC is missing"),
    ("--ro-bind", 2, ("SRC", "DEST"), "bind SRC read-only on DEST"),
    ("--ro-bind-try", 2, ("SRC", "DEST"), "as --ro-bind, skipped when SRC is missing"),
    ("--dev-bind", 2, ("SRC", "DEST"), "bind SRC on DEST, device files usable"),
    ("--dev-bind-try", 2, ("SRC", "DEST"), "as --dev-bind, skipped when SRC is missing"),
    ("--remount-ro", 1, "DEST", "make the mount at DEST (and those below) read-only"),
    ("--tmpfs", 1, "DEST", "mount a tmpfs on DEST (see --size, --perms)"),
    ("--dir", 1, "DEST", "create the directory DEST (see --perms)"),
    ("--symlink", 2, ("SRC", "DEST"), "create a symlink at DEST pointing to SRC"),
    ("--file-data", 2, ("DEST", "DATA"), "a read-only file DEST holding DATA (see --perms)"),
    ("--file", 2, ("FD", "DEST"), "a file DEST holding what descriptor FD holds (read "
                                  "by aunshare before the start)"),
    ("--bind-data", 2, ("FD", "DEST"), "as --file"),
    ("--ro-bind-data", 2, ("FD", "DEST"), "as --file, read-only"),
    ("--dev", 1, "DEST", "a minimal /dev on DEST (null, zero, full, random, urandom, tty, "
                         "shm, pts, ptmx, fd, stdin, stdout, stderr, core)"),
    ("--proc", 1, "DEST", "a fresh proc on DEST (needs --unshare-pid unless root)"),
    ("--overlay-src", 1, "SRC", "a lower directory for the next overlay (repeatable)"),
    ("--tmp-overlay", 1, "DEST", "an overlay of the --overlay-src directories on DEST "
                                 "with a writable layer that vanishes with PROGRAM"),
    ("--overlay", 3, ("RWSRC", "WORKDIR", "DEST"), "an overlay of the --overlay-src "
                                                   "directories on DEST, writes to RWSRC"),
    ("--size", 1, "BYTES", "the size of the next --tmpfs"),
    ("--perms", 1, "OCTAL", "the mode of the next --tmpfs, --dir or file"),
]


class _ViewAction(argparse.Action):
    """Keeps each sandbox option, in order, with its values."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        view = list(getattr(namespace, self.dest) or [])
        view.append((option_string, list(values or [])))
        setattr(namespace, self.dest, view)


def _host_path(path: str) -> str:
    """A source on the host, absolute (bwrap takes it relative to the
    working directory)."""
    return os.path.abspath(path)


def _read_fd(text: str, option: str) -> bytes:
    if not text.isdigit():
        raise ValueError(f"{option} FD: expected a descriptor number, got {text!r}")
    fd = int(text)
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        os.close(fd)  # bwrap closes it too
    except OSError as exc:
        raise SetupFailed(f"{option} {fd}: {exc.strerror}") from None
    return b"".join(chunks)


def apply_view(cmd: Command, view: Sequence[tuple[str, list[str]]]) -> None:
    """Carry out bubblewrap's sandbox options (``args.view``) on ``cmd``."""
    size: int | None = None
    perms: int | None = None
    lower: list[str] = []
    for option, values in view:
        if option == "--size":
            if not values[0].isdigit():
                raise ValueError(f"--size: expected a number of bytes, got {values[0]!r}")
            size = int(values[0])
            continue
        if option == "--perms":
            try:
                perms = int(values[0], 8)
            except ValueError:
                raise ValueError(f"--perms: expected an octal mode, got {values[0]!r}") from None
            continue
        if option == "--overlay-src":
            lower.append(_host_path(values[0]))
            continue
        kind = option.removesuffix("-try")
        if kind in ("--bind", "--ro-bind", "--dev-bind"):
            cmd.bind_mount(_host_path(values[0]), values[1], read_only=kind == "--ro-bind",
                           allow_devices=kind == "--dev-bind", optional=option.endswith("-try"))
        elif option == "--remount-ro":
            cmd.remount_read_only(values[0])
        elif option == "--tmpfs":
            cmd.tmpfs(values[0], size=size, mode=0o755 if perms is None else perms)
        elif option == "--dir":
            cmd.mkdir(values[0], 0o755 if perms is None else perms)
        elif option == "--symlink":
            cmd.symlink(values[0], values[1])
        elif option == "--file-data":
            cmd.write_file(values[0], os.fsencode(values[1]),
                           mode=0o644 if perms is None else perms)
        elif option in ("--file", "--bind-data", "--ro-bind-data"):
            cmd.write_file(values[1], _read_fd(values[0], option),
                           mode=0o666 if perms is None else perms,
                           read_only=option == "--ro-bind-data")
        elif option == "--dev":
            cmd.mount_dev(values[0])
        elif option == "--proc":
            cmd.mount_proc(values[0])
        elif option in ("--tmp-overlay", "--overlay"):
            if not lower:
                raise ValueError(f"{option} needs --overlay-src directories before it")
            if option == "--overlay":
                cmd.overlay(values[2], lower, upper=_host_path(values[0]),
                            work=_host_path(values[1]))
            else:
                cmd.overlay(values[0], lower)
            lower = []
        if option not in ("--size", "--perms"):
            size = perms = None  # they apply to the next operation only
    if size is not None or perms is not None:
        raise ValueError("--size/--perms must come before the --tmpfs, --dir or file they "
                         "apply to")
    if lower:
        raise ValueError("--overlay-src must be followed by --overlay or --tmp-overlay")


# -- the parser --------------------------------------------------------------------

def _terminal_columns() -> int:
    """The terminal's width as shutil.get_terminal_size() finds it ($COLUMNS,
    then stdout's terminal, else 80)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, given the width so that it does not import
    shutil (and with it bz2, lzma...) each time an option is added, which
    a run without --help does many times; the same width as argparse's."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aunshare",
        usage="%(prog)s [options] [--] PROGRAM [ARGS...]",
        description="Run PROGRAM in new (or joined) Linux namespaces, with id maps,\n"
                    "a changed root, trimmed capabilities and limits, and wait for it.",
        epilog=EPILOG,
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    ns = p.add_argument_group("namespaces")
    ns.add_argument("-U", "--user", action="store_true", help="new user namespace")
    ns.add_argument("-n", "--net", "--unshare-net", action="store_true",
                    help="new network namespace (lo up unless --no-loopback)")
    ns.add_argument("-p", "--pid", "--unshare-pid", action="store_true",
                    help="new pid namespace: PROGRAM is its pid 1 (see --init)")
    pid1 = ns.add_mutually_exclusive_group()
    pid1.add_argument("--init", action="store_true", default=None,
                      help="pid 1 of the new pid namespace is a tiny init that runs PROGRAM "
                           "as pid 2, passes every signal on to it and reaps orphans "
                           "(implies --pid)")
    pid1.add_argument("--as-pid-1", dest="init", action="store_false",
                      help="no init: PROGRAM itself is pid 1 of the new pid namespace "
                           "(the default with --pid)")
    ns.add_argument("-m", "--mount", action="store_true",
                    help="new mount namespace (every mount made private first)")
    ns.add_argument("-u", "--uts", "--unshare-uts", action="store_true",
                    help="new UTS namespace")
    ns.add_argument("-i", "--ipc", "--unshare-ipc", action="store_true",
                    help="new IPC namespace")
    ns.add_argument("-C", "--cgroup", "--unshare-cgroup", action="store_true",
                    help="new cgroup namespace")
    ns.add_argument("--unshare-user", action="store_true",
                    help="new user namespace with your uid and gid mapped (to --uid/--gid "
                         "if given), as bwrap does")
    ns.add_argument("--unshare-all", action="store_true",
                    help="new user, mount, pid, network, IPC, UTS and cgroup namespaces, "
                         "as --unshare-user, with --init unless --as-pid-1 (bwrap's "
                         "--unshare-all)")
    ns.add_argument("--share-net", action="store_true",
                    help="with --unshare-all: keep the caller's network namespace")
    ns.add_argument("--no-loopback", action="store_true",
                    help="leave lo down in a new network namespace")
    ns.add_argument("-T", "--time", action="store_true", help="new time namespace")
    ns.add_argument("--setns", metavar="TYPE:PATH", type=setns_spec, action="append",
                    default=[],
                    help="join an existing namespace, e.g. net:/proc/PID/ns/net; TYPE is "
                         "one of user, mnt, uts, ipc, net, pid, cgroup, time (repeatable)")
    ns.add_argument("--mount-proc", action="store_true",
                    help="mount a fresh /proc (implies --mount; useful with --pid)")
    ns.add_argument("--hostname", metavar="NAME",
                    help="set the host name (implies --uts unless a UTS namespace is joined)")
    ns.add_argument("--user-network", action="store_true",
                    help="outbound network through pasta (package passt), unprivileged too "
                         "(implies --net); the host's loopback is at the default gateway")
    ns.add_argument("--tcp-port", metavar="PORT[:INSIDE]", type=port_spec, action="append",
                    default=[], help="with --user-network: forward host port PORT to port "
                                     "INSIDE (default PORT) in the sandbox (repeatable)")

    ids = p.add_argument_group("user and group ids")
    ids.add_argument("-r", "--map-root-user", action="store_true",
                     help="be root in a new user namespace (your uid and gid mapped to 0)")
    ids.add_argument("--map-current-user", action="store_true",
                     help="keep your uid and gid in a new user namespace")
    ids.add_argument("--map-user", metavar="UID", type=user_id,
                     help="map your effective uid to UID in a new user namespace")
    ids.add_argument("--map-group", metavar="GID", type=group_id,
                     help="map your effective gid to GID in a new user namespace")
    ids.add_argument("--uid", metavar="UID", type=user_id,
                     help="run PROGRAM as UID (an id inside the user namespace, if any)")
    ids.add_argument("--gid", metavar="GID", type=group_id, help="run PROGRAM with group GID")
    ids.add_argument("--groups", metavar="G1,G2", type=group_list,
                     help="supplementary groups (an empty string for none)")

    fs = p.add_argument_group("file system")
    fs.add_argument("--chroot", metavar="DIR", help="chroot to DIR")
    fs.add_argument("--pivot-root", metavar="NEWROOT[:PUT_OLD]", type=pivot_spec,
                    help="make NEWROOT the root with pivot_root(2) (implies --mount); the "
                         "old root is put on PUT_OLD, a directory under NEWROOT (default: "
                         "oldroot), then detached")
    fs.add_argument("--chdir", metavar="DIR", help="working directory of PROGRAM")

    box = p.add_argument_group(
        "sandbox (bubblewrap's options, carried out in the order given; any of them "
        "builds a new root from an empty tmpfs)")
    for flag, nargs, meta, text in _VIEW_OPTIONS:
        box.add_argument(flag, nargs=nargs, metavar=meta, action=_ViewAction, dest="view",
                         default=[], help=text)
    box.add_argument("--new-session", action="store_true",
                     help="start PROGRAM in a new session (setsid: no controlling terminal)")
    box.add_argument("--setenv", nargs=2, metavar=("VAR", "VALUE"), action="append",
                     default=[], help="set a variable (repeatable)")

    env = p.add_argument_group("environment")
    env.add_argument("--env", metavar="KEY=VALUE", type=env_pair, action="append",
                     default=[], help="set a variable (repeatable)")
    env.add_argument("--unsetenv", metavar="KEY", action="append", default=[],
                     help="remove a variable (repeatable)")
    env.add_argument("--clearenv", action="store_true",
                     help="start from an empty environment (then --env)")

    sec = p.add_argument_group("privileges and limits")
    sec.add_argument("--keep-caps", metavar="CAP,...", type=capabilities,
                     help="keep exactly these capabilities (net_admin or CAP_NET_ADMIN), "
                          "also across --uid; an empty string drops all")
    sec.add_argument("--no-new-privs", action="store_true",
                     help="exec may not grant privileges (setuid bits, file capabilities)")
    sec.add_argument("--rlimit", metavar="RES=SOFT[:HARD]", type=rlimit_spec,
                     action="append", default=[],
                     help="set a resource limit, e.g. nofile=64 or nproc=100:200; SOFT "
                          "alone sets both, SOFT: keeps the hard limit, 'unlimited' is "
                          "allowed (repeatable)")
    sec.add_argument("--seccomp", metavar="FD", type=int, action="append", default=[],
                     help="install the seccomp BPF program read from descriptor FD (an "
                          "array of struct sock_filter, as bwrap reads it; repeatable)")
    sec.add_argument("--seccomp-profile", metavar="FILE.json", action="append", default=[],
                     help="install a seccomp profile in OCI/Docker JSON format (repeatable)")
    sec.add_argument("--deny-syscalls", metavar="NAME,...", action="append", default=[],
                     help="fail these syscalls with EPERM (repeatable)")

    ll = p.add_argument_group(
        "Landlock (the program, its interpreter and libraries must be allowed: "
        "e.g. --landlock-exec /usr)")
    ll.add_argument("--landlock-ro", metavar="PATH", action="append", default=[],
                    help="PROGRAM may read files and list directories under PATH (repeatable)")
    ll.add_argument("--landlock-rw", metavar="PATH", action="append", default=[],
                    help="PROGRAM may read, write, create and remove under PATH (repeatable)")
    ll.add_argument("--landlock-exec", metavar="PATH", action="append", default=[],
                    help="PROGRAM may execute (and read) files under PATH (repeatable)")
    ll.add_argument("--landlock-tcp-bind", metavar="PORT", type=tcp_port, action="append",
                    default=[], help="the only TCP ports PROGRAM may bind (repeatable)")
    ll.add_argument("--landlock-tcp-connect", metavar="PORT", type=tcp_port, action="append",
                    default=[], help="the only TCP ports PROGRAM may connect to (repeatable)")
    ll.add_argument("--landlock-scope", metavar="SCOPE", choices=LANDLOCK_SCOPES,
                    action="append", default=[],
                    help="signals: PROGRAM may signal only processes it started; "
                         "abstract-unix: it may connect only to their abstract unix sockets "
                         "(repeatable)")
    ll.add_argument("--landlock-strict", action="store_true",
                    help="fail (exit 125) rather than skip a missing PATH or a rule this "
                         "kernel cannot enforce")
    lim = p.add_argument_group(
        "resource limits (in a cgroup of PROGRAM's own: cgroup v2, or the v1 hierarchies)")
    lim.add_argument("--memory", metavar="SIZE",
                     help="memory limit of PROGRAM and all it starts, e.g. 512M or 1.5G "
                          "(K, M, G, T: powers of 1024); beyond it they are killed, "
                          "and --json-status says oom_killed")
    lim.add_argument("--pids", metavar="N", type=int,
                     help="at most N processes and threads at once")
    lim.add_argument("--cpus", metavar="CPUS", type=float,
                     help="CPU time, in CPUs (0.5: half of one CPU)")

    life = p.add_argument_group("lifetime and reporting")
    life.add_argument("--die-with-parent", action="store_true",
                      help="SIGKILL PROGRAM when aunshare dies (by default it may outlive "
                           "aunshare, as with unshare)")
    life.add_argument("--timeout", metavar="SECONDS", type=seconds,
                      help="stop PROGRAM after SECONDS (SIGTERM, then SIGKILL after "
                           "--kill-after) and exit with 124; only PROGRAM is signalled, "
                           "so add --pid to end what it started too")
    life.add_argument("--kill-after", metavar="SECONDS", type=grace_seconds, default=5.0,
                      help="grace between SIGTERM and SIGKILL for --timeout (default: 5)")
    life.add_argument("--json-status", metavar="FILE",
                      help="write how PROGRAM ended to FILE as JSON")
    life.add_argument("-v", "--verbose", action="store_true",
                      help="print the command and the child's pid to stderr")
    life.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    p.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("the following arguments are required: PROGRAM")
    maps = [name for name, on in (("--map-root-user", args.map_root_user),
                                  ("--map-current-user", args.map_current_user),
                                  ("--map-user/--map-group", args.map_user is not None
                                   or args.map_group is not None)) if on]
    if len(maps) > 1:
        parser.error(f"choose one way of mapping ids: {' or '.join(maps)}")
    joined = [kind for kind, _ in args.setns]
    if len(set(joined)) != len(joined):
        parser.error("--setns: each namespace type can be joined once")
    return args


def build_command(args: argparse.Namespace) -> Command:
    """The :class:`Command` the parsed options describe (ValueError for a
    namespace file that cannot be joined)."""
    program, *rest = args.command
    cmd = Command(program).args(rest)
    cmd.reset_fds()  # pass every inheritable descriptor on, as unshare does

    bwrap_user = args.unshare_all or args.unshare_user
    if args.unshare_all:
        args.pid = args.mount = args.uts = args.ipc = args.cgroup = True
        args.net = args.net or not args.share_net
        if args.init is None:  # as bwrap, an init at pid 1 unless --as-pid-1
            args.init = True
    flags = Namespace(0)
    if bwrap_user:
        flags |= Namespace.USER
    for on, ns in ((args.user, Namespace.USER), (args.net, Namespace.NET),
                   (args.pid, Namespace.PID), (args.mount, Namespace.MOUNT),
                   (args.uts, Namespace.UTS), (args.ipc, Namespace.IPC),
                   (args.cgroup, Namespace.CGROUP), (args.time, Namespace.TIME)):
        if on:
            flags |= ns
    joined = {kind for kind, _ in args.setns}
    if args.mount_proc or args.pivot_root:
        flags |= Namespace.MOUNT
    if args.user_network:
        flags |= Namespace.NET
    elif args.tcp_port:
        raise ValueError("--tcp-port forwards a port through pasta: add --user-network")
    if args.init:
        flags |= Namespace.PID
    if args.hostname is not None and Namespace.UTS not in joined:
        flags |= Namespace.UTS
    if flags:
        cmd.unshare(flags)
    for kind, path in args.setns:
        try:
            cmd.set_namespace(path, kind)
        except (ValueError, Error) as exc:  # a missing or wrong file: a setup failure
            raise SetupFailed(f"--setns {kind.proc_name}:{path}: {cli_text(str(exc))}") from None

    if args.map_root_user:
        cmd.map_root_user()
    elif args.map_current_user:
        cmd.map_current_user()
    elif args.map_user is not None or args.map_group is not None:
        uid = os.geteuid() if args.map_user is None else args.map_user
        gid = os.getegid() if args.map_group is None else args.map_group
        cmd.set_id_maps([UidMap(uid, os.geteuid())], [GidMap(gid, os.getegid())])
    elif bwrap_user:
        # bwrap's mapping: the caller's ids, as themselves or as --uid/--gid
        if args.uid is None and args.gid is None:
            cmd.map_current_user()
        else:
            uid = os.geteuid() if args.uid is None else args.uid
            gid = os.getegid() if args.gid is None else args.gid
            cmd.set_id_maps([UidMap(uid, os.geteuid())], [GidMap(gid, os.getegid())])
            args.uid = args.gid = None  # the process already is uid and gid inside
    if args.no_loopback:
        cmd.loopback(False)
    if args.view:
        cmd.new_root()
        apply_view(cmd, args.view)
    if args.new_session:
        cmd.new_session()

    if args.hostname is not None:
        cmd.hostname(args.hostname)
    if args.user_network:
        try:
            cmd.user_network(tcp_ports=args.tcp_port)
        except ValueError as exc:  # pasta is not installed
            raise SetupFailed(f"--user-network: {exc}") from None
    if args.mount_proc:
        cmd.mount_proc()
    if args.init:
        cmd.init_process()
    if args.chroot:
        cmd.chroot_dir(args.chroot)
    if args.pivot_root:
        cmd.pivot_root(*args.pivot_root)
    if args.chdir:
        cmd.current_dir(args.chdir)
    if args.gid is not None:
        cmd.gid(args.gid)
    if args.uid is not None:
        cmd.uid(args.uid)
    if args.groups is not None:
        cmd.groups(args.groups)

    if args.clearenv:
        cmd.env_clear()
    for key in args.unsetenv:
        cmd.env_remove(key)
    for key, value in args.env:
        cmd.env(key, value)
    for key, value in args.setenv:
        cmd.env(key, value)

    if args.keep_caps is not None:
        cmd.keep_caps(args.keep_caps)
    if args.no_new_privs:
        cmd.no_new_privs()
    for res, soft, hard in args.rlimit:
        cmd.rlimit(res, soft, hard)
    _add_seccomp(cmd, args)
    landlock = landlock_rules(args)
    if landlock is not None:
        cmd.landlock(landlock)

    if args.memory is not None:
        cmd.limit_memory(args.memory)
    if args.pids is not None:
        cmd.limit_pids(args.pids)
    if args.cpus is not None:
        cmd.limit_cpu(args.cpus)

    if args.die_with_parent:
        cmd.set_parent_death_signal(signal.SIGKILL)
    else:
        cmd.allow_daemonize()
    cmd.kill_policy(KillPolicy(grace=args.kill_after))
    return cmd


def _add_seccomp(cmd: Command, args: argparse.Namespace) -> None:
    """--seccomp FD, --seccomp-profile FILE, --deny-syscalls: filters in
    that order (the kernel runs them all; the strictest answer wins)."""
    from .seccomp import SeccompFilter

    for fd in args.seccomp:
        data = b""
        try:
            while chunk := os.read(fd, 65536):
                data += chunk
            os.close(fd)
        except OSError as exc:
            raise SetupFailed(f"--seccomp {fd}: cannot read the BPF program: "
                              f"{exc.strerror}") from None
        try:
            cmd.seccomp(data)
        except ValueError as exc:
            raise ValueError(f"--seccomp {fd}: {exc}") from None
    for path in args.seccomp_profile:
        import json

        try:
            with open(path, "rb") as f:
                profile = json.load(f)
        except OSError as exc:
            raise SetupFailed(f"--seccomp-profile {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ValueError(f"--seccomp-profile {path}: not JSON: {exc}") from None
        try:
            cmd.seccomp(SeccompFilter.from_oci(profile))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"--seccomp-profile {path}: {exc}") from None
    names = [n.strip() for text in args.deny_syscalls for n in text.split(",") if n.strip()]
    if names:
        try:
            cmd.seccomp(SeccompFilter().deny(names))
        except ValueError as exc:
            raise ValueError(f"--deny-syscalls: {exc}") from None
def landlock_rules(args: argparse.Namespace) -> Landlock | None:
    """The Landlock rules the --landlock-* options give, or None."""
    given = (args.landlock_ro, args.landlock_rw, args.landlock_exec, args.landlock_tcp_bind,
             args.landlock_tcp_connect, args.landlock_scope)
    if not any(given):
        if args.landlock_strict:
            raise ValueError("--landlock-strict needs Landlock rules (--landlock-ro, ...)")
        return None
    return Landlock(read_only=args.landlock_ro, read_write=args.landlock_rw,
                    execute=args.landlock_exec, tcp_bind=args.landlock_tcp_bind,
                    tcp_connect=args.landlock_tcp_connect,
                    scope_signals="signals" in args.landlock_scope,
                    scope_abstract_unix="abstract-unix" in args.landlock_scope,
                    best_effort=not args.landlock_strict)


def landlock_summary(report: LandlockReport) -> str:
    """One line saying what the Landlock rules became (for --verbose)."""
    if not report.enforced:
        return f"landlock: nothing enforced ({report.reason})"
    parts = [f"landlock: ABI {report.abi}, enforced"]
    if report.dropped_rights:
        parts.append("not restricted: " + ", ".join(report.dropped_rights))
    if report.dropped_ports:
        parts.append("port rules dropped: " + ", ".join(f"{k} {p}"
                                                        for k, p in report.dropped_ports))
    if report.dropped_scopes:
        parts.append("scopes dropped: " + ", ".join(report.dropped_scopes))
    if report.skipped_paths:
        parts.append("missing paths skipped: " + ", ".join(report.skipped_paths))
    return "; ".join(parts)


class SetupFailed(Exception):
    """Setting up the child failed before it was created (exit 125)."""


# -- running -----------------------------------------------------------------------

def exit_code(status: ExitStatus) -> int:
    """The shell's convention: the code, or 128+N for a signal N."""
    if status.code is not None:
        return status.code
    return 128 + (status.signal or 0)


def error_exit_code(exc: BaseException) -> int:
    if isinstance(exc, Exec):
        return EXIT_NOT_FOUND if exc.errno in (errno.ENOENT, errno.ENOTDIR) else EXIT_CANNOT_EXEC
    return EXIT_SETUP


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def say(message: str) -> None:
    print(f"aunshare: {one_line(message)}", file=sys.stderr, flush=True)


def _in_foreground() -> bool:
    """True when this process group is the foreground group of the terminal
    on stdin: keyboard signals then reach the child directly."""
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


class Report:
    """The ``--json-status`` file, opened before anything runs so that an
    unwritable path fails at once rather than after the program ran.

    Opening creates the file if needed but keeps what it holds: an earlier
    report is replaced only when the new one is written. A file created
    here is removed again by :meth:`discard` (a usage error found later).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY
        try:
            self.fd = os.open(path, flags | os.O_EXCL, 0o666)
            self.created = True
        except FileExistsError:
            self.fd = os.open(path, flags)
            self.created = False

    def write(self, report: dict[str, Any]) -> None:
        """Replace the file's content with ``report`` and close it."""
        with open(self.fd, "w", encoding="utf-8") as f:
            self.fd = -1
            try:
                f.truncate(0)
            except OSError:  # a pipe or a terminal: nothing to truncate
                pass
            import json  # only here: a run without --json-status does not pay for it

            json.dump(report, f, indent=2)
            f.write("\n")

    def discard(self) -> None:
        """Close without writing; remove the file if it was created here."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.created:
            try:
                os.unlink(self.path)
            except OSError:
                pass


class _Run:
    def __init__(self) -> None:
        self.pid: int | None = None
        self.status: ExitStatus | None = None
        self.timed_out = False
        self.started = 0.0
        self.elapsed = 0.0


class _CaughtSignals:
    """The forwarded signals, caught while the program runs: each one's
    number lands in a pipe (:func:`signal.set_wakeup_fd`) that poll(2)
    watches beside the child's pidfd. The handlers before are restored
    on :meth:`close`."""

    def __init__(self, signals: Sequence[int]) -> None:
        self.fd, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        self._old = {sig: signal.signal(sig, _caught) for sig in signals}

    def take(self) -> bytes:
        """The numbers of the signals caught since the last call, in order."""
        try:
            return os.read(self.fd, 4096)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self.fd)
        os.close(self._w)


def _caught(signum: int, frame: object) -> None:
    """The Python-level handler: nothing to do, the number is in the pipe."""


class _Supervisor:
    """Waits for the started program on its pidfd with poll(2), passing on
    the signals aunshare receives meanwhile, and stops it by its kill
    policy on --timeout: the ``aunshare`` command's own loop, so that a run
    imports no event loop."""

    def __init__(self, pending: Pending, signals: _CaughtSignals, policy: KillPolicy) -> None:
        self.pid, self.pidfd = pending.pid, pending.pidfd
        self.init = pending.spec.lifetime.init_process
        self.status_fd = pending.status_fd  # the init's status pipe; pending closes it
        self.cgroup = pending.cgroup  # its own (resource limits), or None
        self.signals = signals
        self.policy = policy
        self.stops = 0
        self.exited = False  # the pidfd was seen readable: exited, not yet reaped
        self._poll = select.poll()
        self._poll.register(self.pidfd, select.POLLIN)
        self._poll.register(signals.fd, select.POLLIN)

    def until_exited(self, timeout: float | None = None) -> bool:
        """Pass signals on until the child has exited (True) or ``timeout``
        seconds have passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.exited:
            wait_ms = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait_ms = math.ceil(left * 1000)
            for fd, _ in self._poll.poll(wait_ms):
                if fd == self.pidfd:
                    self.exited = True
                else:
                    for signum in self.signals.take():
                        self._forward(signal.Signals(signum))
        return True

    def _forward(self, sig: signal.Signals) -> None:
        if sig in STOPPING:
            self.stops += 1
        try:
            if self.stops > 1:
                pidfd_send_signal(self.pidfd, signal.SIGKILL)
            elif not (sig in KEYBOARD and _in_foreground()):
                pidfd_send_signal(self.pidfd, sig)
        except OSError:  # it has exited meanwhile
            pass

    def stop(self) -> None:
        """Carry out the kill policy, as :meth:`Child.shutdown` does for a
        child without a cgroup: the signal (and SIGCONT), the grace, then
        SIGKILL to the target while the child is still unreaped."""
        policy = self.policy
        target = policy.target
        if not policy.immediate:
            self._signal(target, policy.signal)
            if policy.signal != signal.SIGCONT:
                self._signal(target, signal.SIGCONT)  # a stopped process must run to exit
            self.until_exited(policy.grace)
        if target is not KillTarget.CHILD or not self.exited:
            self._signal(target, signal.SIGKILL)
        self.until_exited()

    def _signal(self, target: KillTarget, sig: int) -> None:
        signal_tree(self.pid, self.pidfd, target, self.cgroup, sig)

    def reap(self) -> ExitStatus:
        try:
            info = waitid_pidfd(self.pidfd, WEXITED)
        except OSError as exc:
            raise WaitError(exc.errno or errno.ECHILD, f"pid {self.pid}") from None
        # Its cgroup's figures: after the exit, before the cgroup is removed.
        status = from_waitid(info, None if self.cgroup is None else cgroup_usage(self.cgroup))
        if not self.init:
            return status
        return from_init(status, read_wait_status(self.status_fd)
                         if self.status_fd >= 0 else None)


def _supervise(cmd: Command, args: argparse.Namespace, run: _Run) -> None:
    """Start the program, wait for it (stopping it on --timeout) and reap
    it; with no event loop: poll(2) on its pidfd and a signal pipe."""
    from .handshake import spawn_blocking  # not needed for --help or a usage error

    signals = _CaughtSignals(FORWARDED)
    try:
        run.started = time.monotonic()
        spec = cmd.spec()
        # resolved before the start (Child resolves it after): a refusal then starts nothing
        policy = resolve_policy(spec.lifetime.kill_policy or DEFAULT_KILL_POLICY,
                                group_leader=spec.leads_group, cgroup=spec.own_cgroup)
        pending = spawn_blocking(spec)
        try:
            run.pid = pending.pid
            if args.verbose:
                say(f"pid {pending.pid}")
                if pending.landlock_report is not None:
                    say(landlock_summary(pending.landlock_report))
            sup = _Supervisor(pending, signals, policy)
            try:
                if not sup.until_exited(args.timeout):
                    run.timed_out = True
                    if args.verbose:
                        say(f"timed out after {args.timeout} s: stopping pid {pending.pid}")
                    sup.stop()
            except BaseException:  # as "async with child" does: stop it, reap it
                sup.stop()
                run.status = sup.reap()
                raise
            run.status = sup.reap()
        finally:
            if pending.cgroup is not None:  # kill what PROGRAM left in it, then remove it
                clear_blocking(pending.cgroup)
            pending.close()
        run.elapsed = time.monotonic() - run.started
    finally:
        signals.close()


def report_of(run: _Run, code: int, error: str | None) -> dict[str, Any]:
    st = run.status
    usage = st.rusage if st is not None else None
    sig = st.signal if st is not None else None
    return {
        "pid": run.pid,
        "exit_code": st.code if st is not None else None,
        "signal": sig,
        "signal_name": signal.Signals(sig).name if sig else None,
        "core_dumped": st.core_dumped if st is not None else False,
        "timed_out": run.timed_out,
        "user_seconds": usage.user_time if usage else None,
        "system_seconds": usage.system_time if usage else None,
        "max_rss_kib": usage.max_rss_kib if usage else None,
        "cgroup_usage": (None if st is None or st.cgroup_usage is None
                         else {f.name: getattr(st.cgroup_usage, f.name)
                               for f in fields(st.cgroup_usage)}),
        "oom_killed": st.oom_killed if st is not None else False,
        "elapsed_seconds": round(run.elapsed, 6) if run.status is not None else None,
        "aunshare_exit": code,
        "error": error,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns
    the exit status."""
    parser = build_parser()
    args = parse_args(parser, argv)
    report: Report | None = None
    if args.json_status:
        try:
            report = Report(args.json_status)
        except OSError as exc:
            say(f"--json-status {args.json_status}: {exc.strerror or exc}; nothing was run")
            return EXIT_SETUP
    run = _Run()
    error: str | None = None
    try:
        cmd = build_command(args)
        if args.verbose:
            say(repr(cmd))
        _supervise(cmd, args, run)
    except KeyboardInterrupt:  # before the child was started or after it was reaped
        if report is not None:
            report.discard()
        return 128 + signal.SIGINT
    except SetupFailed as exc:
        error = one_line(exc)
        code = EXIT_SETUP
    except ValueError as exc:
        if run.pid is not None or isinstance(exc, Error):
            raise
        # an option combination the library refuses before any process exists
        if report is not None:
            report.discard()
        parser.error(one_line(cli_text(str(exc))))
    except (Error, OSError) as exc:
        error = one_line(cli_text(str(exc)))
        code = error_exit_code(exc)
    else:
        assert run.status is not None
        code = EXIT_TIMEOUT if run.timed_out else exit_code(run.status)
    if error is not None:
        say(error)
    if report is not None:
        try:
            report.write(report_of(run, code, error))
        except OSError as exc:  # e.g. the file system filled up meanwhile
            say(f"--json-status {args.json_status}: {exc.strerror}")
            if code == 0:
                code = EXIT_SETUP
    return code
