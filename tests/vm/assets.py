"""Build, and cache, what the test VMs boot: a Debian kernel, a tiny
initramfs and (for aarch64) a Debian arm64 userland.

Everything comes from Debian packages (apt-get download) and PyPI (pip).
Each built asset lives in its own directory under the cache, named after a
hash of everything that went into it (the source of the functions that
build it, the guest init script, the package versions, the test
dependencies), so editing the recipe builds a new one instead of silently
reusing a stale one. Downloaded .deb files are kept
in a shared directory by their (versioned) file name.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import inspect
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
INIT = HERE / "init"

# Per guest architecture: the Debian architecture, the QEMU binary and its
# package, and the modules the guest needs. Debian builds virtio-pci, 9p,
# overlayfs and virtio-console as modules; their own dependencies (netfs,
# virtio_ring...) are found from each module's .modinfo.
ARCHES = {
    "x86_64": {
        "deb": "amd64",
        "qemu": "qemu-system-x86_64",
        "qemu_pkg": "qemu-system-x86",
        "modules": ["virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_console"],
    },
    "aarch64": {
        "deb": "arm64",
        "qemu": "qemu-system-aarch64",
        "qemu_pkg": "qemu-system-arm",
        "modules": ["virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_console"],
    },
}

# The arm64 userland: an interpreter, the tools the tests start by name
# (sh, true, cat, env, id, ps, hostname, grep, newuidmap...) and a static
# busybox for the initramfs and for the tests' minimal root. Coreutils, not
# busybox applets, on PATH: busybox's multi-call binaries behave differently
# when a test renames argv[0].
USERLAND_PACKAGES = [
    "python3.11", "coreutils", "dash", "bash", "grep", "sed", "findutils",
    "hostname", "procps", "util-linux", "mount", "uidmap", "busybox-static",
    "libc-bin",
]
# Dependencies never needed to *run* programs (they serve dpkg's maintainer
# scripts, which never run here). Cutting them keeps the closure small.
USERLAND_SKIP = {
    "debconf", "debconf-2.0", "dpkg", "perl-base", "install-info",
    "init-system-helpers", "libpam-modules", "libpam-modules-bin",
    "libpam-runtime", "cdebconf", "sensible-utils", "readline-common",
    "lsb-base", "sysvinit-utils", "login", "passwd", "adduser",
}
GUEST_PYTHON = "3.11"  # bookworm's; the host byte-compiles with the same minor


def log(msg: str) -> None:
    print(f"vm: {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> None:
    raise SystemExit(f"vm: error: {msg}")


def cache_root() -> Path:
    env = os.environ.get("AUNSHARE_VM_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "aunshare-vm"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a host command; on failure, show what failed and stop."""
    try:
        return subprocess.run(cmd, check=True, **kw)
    except subprocess.CalledProcessError as exc:
        out = exc.stderr or exc.stdout or b""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        die(f"{' '.join(map(str, cmd))} exited {exc.returncode}\n{out[-3000:]}")
    except FileNotFoundError:
        die(f"{cmd[0]} not found")


def capture(cmd: list[str]) -> str:
    return run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout


def recipe(*parts) -> str:
    """A key for an asset: the source of the functions and classes that
    build it and the data they use. Editing them changes the key (so the
    asset is rebuilt); editing an unrelated part of this file does not."""
    return digest(*(inspect.getsource(p) if callable(p) else repr(p) for p in parts))


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def locked(path: Path):
    """Serialise preparation between concurrent runs (they share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def built(name: str, key: str, build) -> Path:
    """The directory for asset `name` with recipe hash `key`; build(dir) fills
    a temporary directory that is renamed into place only when complete, so an
    interrupted build is never mistaken for a finished one."""
    final = cache_root() / f"{name}-{key}"
    if final.is_dir():
        return final
    t0 = time.monotonic()
    log(f"building {final.name}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_root()))
    try:
        build(tmp)
        tmp.chmod(0o755)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"built {final.name} in {time.monotonic() - t0:.1f} s")
    return final


# -- host packages ----------------------------------------------------------------

_apt_updated = False


def apt_install(packages: list[str]) -> None:
    """Install missing Debian packages (as root), running apt-get update at
    most once per invocation and only when an install is actually needed."""
    global _apt_updated
    if not packages:
        return
    if os.geteuid() != 0:
        die(f"missing host packages {' '.join(packages)}; install them (as root: "
            f"apt-get install {' '.join(packages)})")
    log(f"installing host packages: {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        run(["apt-get", "update", "-qq"], env=env)
        _apt_updated = True
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env,
        stdout=subprocess.DEVNULL)


def dpkg_installed(pkg: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.endswith(" installed")


def ensure_host_tools(arch: str) -> None:
    need = [ARCHES[arch]["qemu_pkg"]] if not shutil.which(ARCHES[arch]["qemu"]) else []
    if not dpkg_installed("busybox-static") and arch == "x86_64":
        need.append("busybox-static")  # the x86_64 initramfs's only program
    if arch == "aarch64" and not shutil.which(f"python{GUEST_PYTHON}"):
        need.append(f"python{GUEST_PYTHON}")  # byte-compiles the guest's stdlib
    if arch == "aarch64" and subprocess.run(
            [host_python(), "-m", "pip", "--version"], capture_output=True).returncode:
        need.append("python3-pip")
    apt_install(need)
    if arch == "aarch64":
        ensure_foreign_arch("arm64")


def host_python() -> str:
    return shutil.which(f"python{GUEST_PYTHON}") or f"/usr/bin/python{GUEST_PYTHON}"


def ensure_foreign_arch(deb_arch: str) -> None:
    """apt must know the arm64 package lists to download arm64 .debs."""
    global _apt_updated
    if deb_arch in capture(["dpkg", "--print-foreign-architectures"]).split():
        probe = subprocess.run(["apt-cache", "show", f"libc6:{deb_arch}"], capture_output=True)
        if probe.returncode == 0:
            return
    if os.geteuid() != 0:
        die(f"apt does not know {deb_arch} packages; as root: dpkg --add-architecture "
            f"{deb_arch} && apt-get update")
    log(f"adding the {deb_arch} architecture to apt")
    run(["dpkg", "--add-architecture", deb_arch])
    run(["apt-get", "update", "-qq"], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    _apt_updated = True


# -- Debian packages ----------------------------------------------------------------

def candidate(pkg: str) -> str:
    """The version apt would download for `pkg` (name:arch)."""
    out = capture(["apt-cache", "policy", pkg])
    m = re.search(r"Candidate:\s*(\S+)", out)
    if not m or m.group(1) == "(none)":
        die(f"apt knows no candidate for {pkg} (apt-get update?)")
    return m.group(1)


def deb_files(pkgs: list[str]) -> list[str]:
    """The .deb file names (name_version_arch.deb, the epoch's colon escaped
    as %3a) that apt-get download would fetch for the given name:arch
    packages: one quick query for all, nothing downloaded."""
    out = capture(["apt-get", "download", "--print-uris", *pkgs])
    names = re.findall(r"^'[^']+' (\S+\.deb) ", out, re.M)
    if len(names) != len(pkgs):
        die(f"apt-get download --print-uris named {len(names)} files for {len(pkgs)} packages")
    return sorted(names)


def download(pkgs: list[str]) -> list[Path]:
    """apt-get download the given name:arch packages into the shared deb
    directory (skipping files already there), returning their files."""
    debs = cache_root() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    files = [debs / n for n in deb_files(pkgs)]
    missing = []
    for f in files:
        if not f.exists():
            name, ver, arch = f.name[:-4].split("_")
            missing.append(f"{name}:{arch}={ver.replace('%3a', ':')}")
    if missing:
        log(f"downloading {len(missing)} Debian package(s)")
        # As root apt drops to the _apt user, which may not write our cache.
        run(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", *missing],
            cwd=debs, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for f in files:
        if not f.exists():
            die(f"apt-get download did not produce {f.name}")
    return files


def resolve(roots: list[str], deb_arch: str) -> list[str]:
    """The dependency closure of `roots` (Depends and Pre-Depends, first
    alternative, skipping USERLAND_SKIP): name:arch for architecture-specific
    packages, the bare name for arch:all ones (apt wants them so)."""
    seen: dict[str, str] = {}  # name -> what to ask apt for
    frontier = [f"{p}:{deb_arch}" for p in roots]
    while frontier:
        out = capture(["apt-cache", "depends", "--no-recommends", "--no-suggests",
                       "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
                       *frontier])
        for spec in frontier:
            seen[spec.split(":")[0]] = spec
        # apt-cache prints one line per alternative ("|Depends:" means "or
        # the next one"); a virtual name, or an arch:all package asked for
        # as :arm64, shows as <name> followed by indented real providers.
        groups: list[list[list[str]]] = []
        pending: list[list[str]] = []
        last: list[str] | None = None
        for line in out.splitlines():
            m = re.match(r"\s+(\|?)(?:Pre)?Depends:\s+(\S+)", line)
            if m:
                spec = m.group(2)
                last = [] if spec.startswith("<") else [spec]
                pending.append(last)
                if not m.group(1):
                    groups.append(pending)
                    pending = []
            elif line.startswith("    ") and last is not None:
                last.append(line.strip())
            else:
                last = None
        nxt: dict[str, str] = {}
        for group in groups:
            specs = [spec for option in group for spec in option]
            names = [spec.split(":")[0] for spec in specs]
            if not specs or any(n in seen or n in nxt or n in USERLAND_SKIP for n in names):
                continue
            nxt[names[0]] = specs[0]
        frontier = list(nxt.values())
    return list(seen.values())


def extract(deb: Path, dest: Path) -> None:
    run(["dpkg-deb", "-x", str(deb), str(dest)])


# -- kernel -------------------------------------------------------------------------

def kernel_package(deb_arch: str) -> str:
    """The versioned image package the linux-image-<arch> metapackage points
    at, e.g. linux-image-6.1.0-57-amd64 (the host's own kernel is not used)."""
    out = capture(["apt-cache", "depends", f"linux-image-{deb_arch}:{deb_arch}"])
    m = re.search(r"Depends:\s+(linux-image-[0-9][^:\s]*)", out)
    if not m:
        die(f"cannot tell which package linux-image-{deb_arch} depends on:\n{out}")
    return f"{m.group(1)}:{deb_arch}"


def elf_section(data: bytes, wanted: str) -> bytes | None:
    """The contents of section `wanted` of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i):  # (name offset, file offset, size)
        base = shoff + i * shentsize
        return (struct.unpack_from("<I", data, base)[0],
                *struct.unpack_from("<QQ", data, base + 0x18))

    _, stroff, _ = header(shstrndx)
    for i in range(shnum):
        name_off, off, size = header(i)
        end = data.index(b"\0", stroff + name_off)
        if data[stroff + name_off:end].decode() == wanted:
            return data[off:off + size]
    return None


def module_order(moddir: Path, wanted: list[str]) -> list[Path]:
    """The .ko files to insmod, dependencies first. Debian's packages ship
    no modules.dep (depmod runs at install time), so read each module's
    'depends=' from its .modinfo section instead."""
    def norm(n):
        return n.replace("-", "_")

    index = {norm(p.name.split(".ko")[0]): p for p in moddir.rglob("*.ko*")}
    builtin = {norm(Path(line).name.split(".ko")[0])
               for line in (moddir / "modules.builtin").read_text().split()}
    order: list[Path] = []
    done: set[str] = set()

    def visit(name):
        name = norm(name)
        if name in done or name in builtin:
            return
        if name not in index:
            die(f"module {name} is neither in {moddir} nor built in")
        done.add(name)
        path = index[name]
        info = elf_section(read_module(path), ".modinfo") or b""
        for field in info.split(b"\0"):
            if field.startswith(b"depends="):
                for dep in filter(None, field[8:].decode().split(",")):
                    visit(dep)
        order.append(path)

    for w in wanted:
        visit(w)
    return order


def read_module(path: Path) -> bytes:
    """A module's bytes, decompressed if the kernel package compressed it."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    return data


def uncompressed_kernel(image: bytes, arch: str) -> bytes:
    """What QEMU boots fastest under TCG.

    x86_64: the ELF vmlinux inside the bzImage. Debian's kernels have
    CONFIG_PVH, so QEMU can jump straight to the PVH entry of the ELF and
    skip both the firmware's real-mode boot and the in-guest decompression
    (several seconds under TCG). We find the compressed payload by its magic
    number and decompress it here.
    aarch64: the raw Image (QEMU does not decompress it for us when gzipped).
    """
    if arch == "aarch64":
        if image[:2] == b"\x1f\x8b":
            return gzip.decompress(image)
        if image[0x38:0x3C] == b"ARM\x64":
            return image
        die("the arm64 kernel is neither a raw Image nor gzip (EFI zboot?)")
    for magic, unpack in ((b"\xfd7zXZ\x00", lambda d: lzma.LZMADecompressor().decompress(d)),
                          (b"\x1f\x8b\x08", lambda d: gzip.GzipFile(fileobj=_io(d)).read()),
                          (b"\x28\xb5\x2f\xfd", _zstd)):
        at = image.find(magic)
        while at >= 0:
            try:
                out = unpack(image[at:])
            except Exception:
                out = b""
            if out[:4] == b"\x7fELF":
                return out
            at = image.find(magic, at + 1)
    die("no compressed ELF vmlinux found inside the bzImage")


def _io(data: bytes):
    import io

    return io.BytesIO(data)


def _zstd(data: bytes) -> bytes:
    r = subprocess.run(["zstd", "-dc"], input=data, capture_output=True)
    return r.stdout  # trailing garbage makes zstd complain; the prefix is what we need


def prepare_kernel(arch: str) -> Path:
    deb_arch = ARCHES[arch]["deb"]
    pkg = kernel_package(deb_arch)
    ver = candidate(pkg)
    key = recipe(prepare_kernel, uncompressed_kernel, module_order, elf_section, read_module,
                 _zstd, ARCHES[arch], pkg, ver)

    def build(d: Path):
        deb, = download([pkg])
        tree = d / "tree"
        extract(deb, tree)
        release = pkg.split(":")[0].removeprefix("linux-image-")
        vmlinuz = tree / "boot" / f"vmlinuz-{release}"
        (d / "kernel").write_bytes(uncompressed_kernel(vmlinuz.read_bytes(), arch))
        moddir = tree / "lib" / "modules" / release
        mods = d / "modules"
        mods.mkdir()
        names = []
        for path in module_order(moddir, ARCHES[arch]["modules"]):
            name = path.name.split(".ko")[0]
            (mods / f"{name}.ko").write_bytes(read_module(path))
            names.append(name)
        (mods / "order").write_text("\n".join(names) + "\n")
        (d / "release").write_text(release + "\n")
        shutil.rmtree(tree)  # the other ~4,000 modules are not needed

    return built(f"kernel-{arch}", key, build)


# -- initramfs ----------------------------------------------------------------------

class Cpio:
    """A 'newc' cpio archive, the format the kernel unpacks as initramfs.
    Written here rather than with cpio(1) so that the device node
    /dev/console can be included without creating it on the host."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev=(0, 0)):
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0]
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out += name.encode() + b"\0"
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name):
        self._entry(name, 0o040755)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name, major, minor):
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.out)


def busybox_for(arch: str) -> bytes:
    """A static busybox for the guest's architecture, from busybox-static."""
    if arch == "x86_64":
        path = Path("/bin/busybox")
        if not path.exists() or b"ld-linux" in path.read_bytes()[:8192]:
            die("/bin/busybox is missing or not static (install busybox-static)")
        return path.read_bytes()
    deb, = download([f"busybox-static:{ARCHES[arch]['deb']}"])
    with tempfile.TemporaryDirectory() as t:
        extract(deb, Path(t))
        return (Path(t) / "bin" / "busybox").read_bytes()


def prepare_initramfs(arch: str, kernel: Path) -> Path:
    busybox = busybox_for(arch)
    key = recipe(prepare_initramfs, Cpio, INIT.read_bytes(), digest(busybox), kernel.name)

    def build(d: Path):
        c = Cpio()
        for name in ("bin", "dev", "proc", "sys", "lower", "upper", "newroot", "rig",
                     "modules"):
            c.dir(name)
        c.chardev("dev/console", 5, 1)  # the kernel opens it for init's stdio
        c.file("bin/busybox", busybox, 0o755)
        c.file("init", INIT.read_bytes(), 0o755)
        for f in sorted((kernel / "modules").iterdir()):
            c.file(f"modules/{f.name}", f.read_bytes())
        (d / "initramfs.cpio").write_bytes(c.finish())

    return built(f"initramfs-{arch}", key, build)


# -- the aarch64 userland ------------------------------------------------------------

def test_requirements() -> list[str]:
    """The project's runtime dependencies and its 'test' extra, from
    pyproject.toml, so the guest has what the host's venv has."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*meta.get("dependencies", []), *meta["optional-dependencies"]["test"]]


def merge_into(src: Path, dst: Path) -> None:
    """Move the tree src into dst, merging directories both have; src ends up
    gone. A file both have would mean two packages disagree: stop."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir() \
                and not target.is_symlink():
            merge_into(entry, target)
        elif os.path.lexists(target):
            die(f"both {entry} and {target} exist")
        else:
            entry.rename(target)
    src.rmdir()


def prepare_userland(arch: str) -> Path:
    deb_arch = ARCHES[arch]["deb"]
    pkgs = resolve(USERLAND_PACKAGES, deb_arch)
    versions = deb_files(pkgs)
    reqs = test_requirements()
    key = recipe(prepare_userland, merge_into, resolve, GUEST_PYTHON, *versions, *reqs)

    def build(root: Path):
        for deb in download(pkgs):
            extract(deb, root)
        # Merged /usr, as on a Debian system (packages ship /bin, /lib... in
        # either place; the symlinks are created by base-files' postinst).
        for d in ("bin", "sbin", "lib"):
            src = root / d
            if src.is_dir() and not src.is_symlink():
                merge_into(src, root / "usr" / d)
            if not src.exists():
                src.symlink_to(f"usr/{d}")
        # (An absolute symlink in the guest's terms: test it without following.)
        loader = {"arm64": "lib/ld-linux-aarch64.so.1"}[deb_arch]
        if not os.path.lexists(root / loader):
            die("the arm64 userland has no dynamic loader (libc6 missing?)")
        for d in ("proc", "sys", "dev", "run", "tmp", "root", "etc", "var/tmp", "home"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        (root / "var" / "tmp").chmod(0o1777)
        (root / "root").chmod(0o700)
        # What base-passwd/base-files would have written in their postinst.
        (root / "etc" / "passwd").write_text(
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:"
            "/usr/sbin/nologin\n")
        (root / "etc" / "group").write_text("root:x:0:\nusers:x:100:\nnogroup:x:65534:\n")
        (root / "etc" / "hostname").write_text("aunshare-vm\n")
        (root / "etc" / "hosts").write_text("127.0.0.1 localhost aunshare-vm\n::1 localhost\n")
        for name in ("python3", "python"):
            (root / "usr" / "bin" / name).symlink_to(f"python{GUEST_PYTHON}")
        site = root / "usr" / "local" / "lib" / f"python{GUEST_PYTHON}" / "dist-packages"
        site.mkdir(parents=True)
        log(f"installing {len(reqs)} requirement(s) for {arch} from PyPI")
        run([host_python(), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--no-compile", "--target", str(site), "--only-binary=:all:",
             "--implementation", "cp", "--python-version", GUEST_PYTHON,
             *[f"--platform={t}" for t in (f"manylinux_2_{v}_aarch64" for v in range(36, 16, -1))],
             "--platform=manylinux2014_aarch64", "--platform=linux_aarch64", *reqs],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        shutil.rmtree(site / "bin", ignore_errors=True)  # x86-flavoured entry points
        # Compile the stdlib and packages once here: on a read-only 9p root
        # the guest could not cache them, and compiling under TCG on every
        # start would cost seconds. The host's 3.11 writes the same .pyc
        # format (same magic number); paths are rewritten to the guest's.
        # (A few files are deliberately not Python 3, e.g. lib2to3's test
        # data; compileall reports them and goes on, so its status is ignored.)
        for tree in (root / "usr" / "lib" / f"python{GUEST_PYTHON}", site):
            subprocess.run([host_python(), "-m", "compileall", "-q", "-j0", "-s", str(root),
                            "-p", "/", str(tree)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        # Let any uid traverse and read it (tests run things as uid 65534).
        run(["chmod", "-R", "a+rX,go-w", str(root / "usr")])
        (root / "root").chmod(0o700)

    return built(f"userland-{arch}", key, build)


# -- everything ---------------------------------------------------------------------

def prepare(arch: str) -> dict[str, Path]:
    """Make sure every asset for `arch` exists; return their paths.

    Resolving package versions asks apt a few dozen questions (seconds), so
    the outcome is remembered per recipe in prepared-<arch>-<hash>.json and
    reused while the recipe is unchanged; AUNSHARE_VM_REFRESH=1 asks apt
    again (and rebuilds whatever newer packages change)."""
    if arch not in ARCHES:
        die(f"unknown architecture {arch!r} (known: {', '.join(ARCHES)})")
    cache_root().mkdir(parents=True, exist_ok=True)
    recipe = [Path(__file__).read_bytes(), INIT.read_bytes(), arch]
    if arch == "aarch64":
        recipe += test_requirements()
    state = cache_root() / f"prepared-{arch}-{digest(*recipe)}.json"
    with locked(cache_root() / ".lock"):
        if state.exists() and not os.environ.get("AUNSHARE_VM_REFRESH"):
            found = {k: Path(v) for k, v in json.loads(state.read_text()).items()}
            if all(p.is_dir() for p in found.values()) and shutil.which(ARCHES[arch]["qemu"]):
                return found
        ensure_host_tools(arch)
        kernel = prepare_kernel(arch)
        found = {"kernel": kernel, "initramfs": prepare_initramfs(arch, kernel)}
        if arch == "aarch64":
            found["userland"] = prepare_userland(arch)
        state.write_text(json.dumps({k: str(v) for k, v in found.items()}))
    return found
