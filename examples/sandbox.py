"""A sandbox from scratch: a root file system of one static busybox in a
temporary directory, entered with pivot_root in new user, mount and pid
namespaces (root mapped, so no real privilege is needed), with a /proc of
its own. The sandboxed shell sees only that root, is pid 1, and cannot
reach the old root. Asserts what it prints.

Needs a statically linked busybox on PATH (Debian: busybox-static); without
one it says so and exits 0.

Run: python examples/sandbox.py [asyncio|uvloop|trio]
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import tempfile

import anyio

from aunshare import Command, Namespace

APPLETS = ["sh", "ls", "cat", "id", "echo", "test"]
SCRIPT = "ls /; echo ---; tr '\\0' ' ' < /proc/1/cmdline; echo; echo ---; id; " \
         "echo ---; ls -A /oldroot; echo ---; test -e /usr && echo host-usr-visible; echo end"


def is_static(path: str) -> bool:
    """True for an ELF executable with no program interpreter (PT_INTERP)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit ELF only
            return False
        end = "<" if head[5] == 1 else ">"
        phoff, = struct.unpack_from(end + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return not any(struct.unpack_from(end + "I", table, i * phentsize)[0] == 3
                   for i in range(phnum))


def build_root(root: str, busybox: str) -> None:
    """/bin with busybox and its applets, an empty /proc, and /oldroot for
    pivot_root to put the old root on (it is detached before exec)."""
    for d in ("bin", "proc", "oldroot"):
        os.mkdir(os.path.join(root, d))
    shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
    for applet in [*APPLETS, "tr"]:
        os.symlink("busybox", os.path.join(root, "bin", applet))
    os.chmod(root, 0o755)


async def main() -> None:
    busybox = shutil.which("busybox")
    if busybox is None or not is_static(os.path.realpath(busybox)):
        why = "no busybox on PATH" if busybox is None else f"{busybox} is not statically linked"
        print(f"skipped: {why} (install a static one, e.g. Debian's busybox-static)")
        return

    with tempfile.TemporaryDirectory(prefix="aunshare-sandbox-") as root:
        build_root(root, busybox)
        out = await (Command("/bin/sh").args(["-c", SCRIPT])
                     .env_clear().env("PATH", "/bin")
                     .unshare(Namespace.USER | Namespace.MOUNT | Namespace.PID)
                     .map_root_user()
                     .pivot_root(root, "oldroot")
                     .mount_proc()
                     .output())
        print(f"sandbox in {root}: {out.status}")
        text = out.stdout.decode()
        for line in text.splitlines():
            print(f"  | {line}")
        assert out.status.success(), out.stderr.decode()

        listing, cmdline, ident, old, end = text.split("---\n")
        assert listing.split() == ["bin", "oldroot", "proc"], listing  # the minimal root only
        assert cmdline.startswith("/bin/sh -c ls /;"), cmdline          # the shell is pid 1
        assert ident.startswith("uid=0 gid=0"), ident                  # root, mapped
        assert old == "", old                                          # old root detached
        assert end == "end\n", end                                     # no host /usr
        # nothing leaked into the host's mount table
        assert root not in await anyio.Path("/proc/self/mountinfo").read_text()
    print("the sandbox saw only its own root, ran as pid 1, and the host's root was gone")


if __name__ == "__main__":
    backend = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    anyio.run(main, backend="asyncio" if backend == "uvloop" else backend, backend_options=options)
