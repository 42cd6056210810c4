"""A sandbox from nothing: a new root built in an empty tmpfs from read-only
binds of the host's /usr (with the /bin, /lib... links this distribution
needs), a private /tmp, a minimal /dev, a /proc of its own and one file
written by the parent, entered in new user, mount, pid, network, IPC and
UTS namespaces (root mapped, so no real privilege is needed). The sandboxed
shell is pid 1, sees only what was named, cannot write /usr, and the host's
mount table is unchanged afterwards. Asserts what it prints.

Run: python examples/sandbox.py [asyncio|uvloop|trio]
"""

from __future__ import annotations

import os
import sys

import anyio

from aunshare import Command, Namespace

SCRIPT = """
ls /; echo ---
tr '\\0' ' ' < /proc/1/cmdline | cut -c1-5; echo ---
id; echo ---
cat /etc/motd; echo ---
touch /usr/probe 2>&1; echo ---
ls /dev; echo ---
test -e /home && echo host-home-visible; echo end
"""


def sandbox(cmd: Command) -> Command:
    """The view: what is named here is all the child sees."""
    cmd.new_root().bind_mount("/usr", read_only=True)
    for name in ("bin", "sbin", "lib", "lib32", "lib64"):
        path = f"/{name}"
        if os.path.islink(path):        # merged /usr: /bin -> usr/bin
            cmd.symlink(os.readlink(path), path)
        elif os.path.isdir(path):
            cmd.bind_mount(path, read_only=True)
    return (cmd.tmpfs("/tmp")
            .mount_dev()
            .mount_proc("/proc")
            .write_file("/etc/motd", b"welcome to the sandbox\n")
            .hostname("sandbox"))


async def main() -> None:
    before = await anyio.Path("/proc/self/mountinfo").read_text()
    cmd = sandbox(Command("sh").args(["-c", SCRIPT])
                  .env_clear().env("PATH", "/usr/bin:/bin")
                  .unshare(Namespace.USER | Namespace.PID | Namespace.NET | Namespace.IPC
                           | Namespace.UTS)
                  .map_root_user())
    out = await cmd.output()
    print(f"sandbox: {out.status}")
    text = out.stdout.decode()
    for line in text.splitlines():
        print(f"  | {line}")
    assert out.status.success(), out.stderr.decode()

    listing, cmdline, ident, motd, usr, dev, end = text.split("---\n")
    names = set(listing.split())
    assert {"dev", "etc", "proc", "tmp", "usr"} <= names <= {
        "bin", "dev", "etc", "lib", "lib32", "lib64", "proc", "sbin", "tmp", "usr"}, listing
    assert cmdline.startswith("sh -c"), cmdline                        # the shell is pid 1
    assert ident.startswith("uid=0(root) gid=0(root)") or ident.startswith("uid=0 "), ident
    assert motd == "welcome to the sandbox\n", motd                     # written by the parent
    assert "Read-only file system" in usr, usr                          # /usr is read-only
    assert set(dev.split()) == {"core", "fd", "full", "null", "ptmx", "pts", "random", "shm",
                                "stderr", "stdin", "stdout", "tty", "urandom", "zero"}, dev
    assert end == "end\n", end                                          # no host /home
    # nothing leaked into the host's mount table
    assert await anyio.Path("/proc/self/mountinfo").read_text() == before
    print("the sandbox saw only what it was given, ran as pid 1, and left the host as it was")


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    anyio.run(main, backend="asyncio" if backend == "uvloop" else backend, backend_options=options)
