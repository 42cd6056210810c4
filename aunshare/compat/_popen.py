"""The :mod:`subprocess` keywords both front ends accept, turned into a
:class:`~aunshare.Command`.

A keyword aunshare can honour maps to a builder call; one it cannot (it
would need Python code in the child, or Windows) raises TypeError or
ValueError naming it, at the call, before anything is started. A keyword
given its default value is no request and is accepted.
"""

from __future__ import annotations

import grp
import pwd
import subprocess
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..child import Child
from ..command import Command, Fd, Stdio

__all__ = ["PIPE", "STDOUT", "DEVNULL", "build_command", "cached_command", "stdio", "pipe_size",
           "set_pipe_sizes", "shell_argv", "spawn"]

PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL

_NO_PYTHON = ("aunshare runs no Python in the child between clone and exec; configure the "
              "child with the command= keyword (a callable receiving the aunshare Command)")
_DEFAULTS: dict[str, Any] = {
    "preexec_fn": None, "startupinfo": None, "creationflags": 0, "restore_signals": True,
    "executable": None, "cwd": None, "env": None, "pass_fds": (), "close_fds": True,
    "start_new_session": False, "process_group": None, "user": None, "group": None,
    "extra_groups": None, "umask": -1, "pipesize": -1,
}


def stdio(value: object, name: str) -> Stdio:
    """What ``stdin=`` / ``stdout=`` / ``stderr=`` of :mod:`subprocess` means."""
    if value is None:
        return Stdio.inherit()
    if value is PIPE or value == PIPE:
        return Stdio.piped()
    if value == DEVNULL:
        return Stdio.null()
    if value == STDOUT:
        if name != "stderr":
            raise ValueError(f"{name}=STDOUT is valid for stderr only")
        return Stdio.merge_into_stdout()
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name}={value} is neither a descriptor nor PIPE, STDOUT "
                             "or DEVNULL")
        return Stdio.from_fd(value)
    fileno = getattr(value, "fileno", None)
    if fileno is None:
        raise TypeError(f"{name} must be None, PIPE, DEVNULL, a descriptor or an object "
                        f"with fileno(), not {type(value).__name__}")
    return Stdio.from_fd(fileno())


def _uid(user: object) -> int:
    if isinstance(user, int) and not isinstance(user, bool):
        return user
    if isinstance(user, str):
        return pwd.getpwnam(user).pw_uid
    raise TypeError(f"user must be an int or a str, not {type(user).__name__}")


def _gid(group: object, what: str) -> int:
    if isinstance(group, int) and not isinstance(group, bool):
        return group
    if isinstance(group, str):
        return grp.getgrnam(group).gr_gid
    raise TypeError(f"{what} must be an int or a str, not {type(group).__name__}")


def build_command(argv: list[Any], *, stdin: object, stdout: object, stderr: object,
                  command: Callable[[Command], Command | None] | None,
                  options: Mapping[str, Any]) -> Command:
    """A Command for ``argv`` (program first) and the Popen ``options``.

    ``command``, when given, receives the Command last and may change it
    (or return another one)."""
    if not argv:
        raise ValueError("the program to run is missing (empty argument list)")
    if not options and stdin is None and stdout is None and stderr is None:
        # The common call: nothing but the argument list (every builder call
        # saved is a record copy saved, on every spawn).
        cmd = Command(argv[0])
        if len(argv) > 1:
            cmd.args(argv[1:])
        return _hook(cmd, command)
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        name = sorted(unknown)[0]
        raise TypeError(f"unexpected keyword argument {name!r}")
    opt = {**_DEFAULTS, **options}
    if opt["preexec_fn"] is not None:
        raise TypeError(f"preexec_fn is not supported: {_NO_PYTHON}")
    if opt["startupinfo"] is not None:
        raise ValueError("startupinfo is only supported on Windows platforms")
    if opt["creationflags"] != 0:
        raise ValueError("creationflags is only supported on Windows platforms")
    if not opt["restore_signals"]:
        raise ValueError("restore_signals=False cannot be honoured: aunshare resets every "
                         "signal to its default action before exec (the child would "
                         "otherwise inherit Python's ignored SIGPIPE)")
    program = opt["executable"] if opt["executable"] is not None else argv[0]
    cmd = Command(program)
    if opt["executable"] is not None:
        cmd.arg0(argv[0])
    if len(argv) > 1:
        cmd.args(argv[1:])
    if not opt["close_fds"] and not opt["pass_fds"]:
        cmd.reset_fds()  # inheritable descriptors stay open, as subprocess leaves them
    # None is inheriting, the default: no call for it
    if stdin is not None:
        cmd.stdin(stdio(stdin, "stdin"))
    if stdout is not None:
        cmd.stdout(stdio(stdout, "stdout"))
    if stderr is not None:
        cmd.stderr(stdio(stderr, "stderr"))
    for fd in sorted(set(opt["pass_fds"])):
        if fd >= 3:  # 0-2 are the standard streams, set above
            cmd.file_descriptor(fd, Fd.from_fd(fd))
    if opt["cwd"] is not None:
        cmd.current_dir(opt["cwd"])
    env = opt["env"]
    if env is not None:
        cmd.env_clear().envs(env)
    if opt["start_new_session"]:
        cmd.new_session()
    if opt["process_group"] is not None and opt["process_group"] >= 0:
        cmd.process_group(opt["process_group"])
    if opt["user"] is not None:
        cmd.uid(_uid(opt["user"]))
    if opt["group"] is not None:
        cmd.gid(_gid(opt["group"], "group"))
    if opt["extra_groups"] is not None:
        extra: Iterable[object] = opt["extra_groups"]
        cmd.groups([_gid(g, "extra_groups item") for g in extra])
    if opt["umask"] >= 0:
        cmd.umask(opt["umask"])
    return _hook(cmd, command)


# Commands built for the plain calls (an argument list of strings, the
# standard streams None/PIPE/DEVNULL/STDOUT, no other keyword, no command=
# callable): the same call again spawns the same frozen spec without
# building and validating it again. Safe because such a Command depends on
# nothing but these arguments (PATH, the environment and the working
# directory are read at each spawn) and is never handed to the caller.
_CACHE: dict[tuple[Any, ...], Command] = {}
_CACHE_SIZE = 64
_SPECIAL = (None, PIPE, STDOUT, DEVNULL)


def _plain_stream(value: object) -> bool:
    return value is None or (type(value) is int and value in _SPECIAL)


def cached_command(argv: list[Any], *, stdin: object, stdout: object, stderr: object,
                   command: Callable[[Command], Command | None] | None,
                   options: Mapping[str, Any]) -> Command:
    """:func:`build_command`, from a small cache for the plain calls. The
    Command returned is only to be spawned (and its spec read), not changed."""
    if (options or command is not None or not _plain_stream(stdin)
            or not _plain_stream(stdout) or not _plain_stream(stderr)):
        return build_command(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                             command=command, options=options)
    for arg in argv:
        if type(arg) is not str and type(arg) is not bytes:
            return build_command(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                                 command=None, options=options)
    key = (*argv, stdin, stdout, stderr, len(argv))
    cmd = _CACHE.get(key)
    if cmd is None:
        cmd = build_command(argv, stdin=stdin, stdout=stdout, stderr=stderr, command=None,
                            options=options)
        cmd.spec()  # validated now: an invalid call raises here and is not kept
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = cmd
    return cmd


def _hook(cmd: Command, command: Callable[[Command], Command | None] | None) -> Command:
    """The Command after the caller's ``command=`` callable changed it."""
    if command is None:
        return cmd
    changed = command(cmd)
    if changed is None:
        return cmd
    if not isinstance(changed, Command):
        raise TypeError("the command= callable must change the Command it is given "
                        f"or return a Command, not {type(changed).__name__}")
    return changed


def pipe_size(options: Mapping[str, Any]) -> int:
    """The ``pipesize`` asked for, or -1."""
    size = options.get("pipesize", -1)
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"pipesize must be an int, not {type(size).__name__}")
    return size


def set_pipe_sizes(fds: Iterable[int], size: int) -> None:
    """``pipesize``: F_SETPIPE_SZ on the parent's ends (a pipe has one size)."""
    import fcntl

    if size > 0:
        for fd in fds:
            if fd >= 0:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


async def spawn(argv: list[Any], *, stdin: object, stdout: object, stderr: object,
                command: Callable[[Command], Command | None] | None,
                options: dict[str, Any]) -> tuple[Child, Command]:
    """Start ``argv`` as both front ends do: the (cached) Command built from
    the keywords, then ``pipesize`` on the parent's pipe ends."""
    size = pipe_size(options) if options else -1
    cmd = cached_command(argv, stdin=stdin, stdout=stdout, stderr=stderr, command=command,
                         options=options)
    child = await cmd.spawn()
    if size > 0:
        set_pipe_sizes((s.fileno() for s in (child.stdin, child.stdout, child.stderr)
                        if s is not None), size)
    return child, cmd


def shell_argv(cmd: object) -> list[Any]:
    """``/bin/sh -c cmd``, as subprocess runs a shell command."""
    if not isinstance(cmd, (str, bytes)):
        raise ValueError("cmd must be a string")
    return ["/bin/sh", "-c", cmd]

