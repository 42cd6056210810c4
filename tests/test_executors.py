"""The executors themselves: the native routine matches its source, the
selection honours AUNSHARE_EXECUTOR, and both run the same plans."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aunshare._linux import ARCH
from aunshare.executors import get_executor
from aunshare.executors.init import INIT
from aunshare.executors.native import CODE

HERE = os.path.join(os.path.dirname(__file__), "..", "aunshare", "executors")


def _assemble(tmp_path, source: str, tools: tuple[str, str], *as_flags: str) -> bytes:
    """Assemble ``source`` (in this package) and return its .text bytes."""
    gas, objcopy = tools
    if shutil.which(gas) is None or shutil.which(objcopy) is None:
        pytest.skip(f"GNU binutils ({gas}, {objcopy}) are not installed")
    obj, binary = tmp_path / "spawn.o", tmp_path / "spawn.bin"
    subprocess.run([gas, *as_flags, "-o", obj, os.path.join(HERE, source)], check=True)
    subprocess.run([objcopy, "-O", "binary", "-j", ".text", obj, binary], check=True)
    return binary.read_bytes()


def _tools(arch: str) -> tuple[str, str]:
    """The host's own binutils for its architecture, else the cross ones."""
    if arch == ARCH:
        return ("as", "objcopy")
    return (f"{arch}-linux-gnu-as", f"{arch}-linux-gnu-objcopy")


def test_native_bytes_match_assembly_source(tmp_path):
    """Re-assemble spawn_x86_64.S with GNU as and compare with the shipped bytes."""
    code = _assemble(tmp_path, "spawn_x86_64.S", _tools("x86_64"), "--64")
    assert code == CODE["x86_64"]


def test_aarch64_bytes_match_assembly_source(tmp_path):
    """Re-assemble spawn_aarch64.S (natively or with the cross assembler)."""
    code = _assemble(tmp_path, "spawn_aarch64.S", _tools("aarch64"))
    assert code == CODE["aarch64"]


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_init_bytes_match_assembly_source(tmp_path, arch):
    """Re-assemble init_<arch>.S (a whole ELF, header included) and compare."""
    flags = ("--64",) if arch == "x86_64" else ()
    code = _assemble(tmp_path, f"init_{arch}.S", _tools(arch), *flags)
    assert code == INIT[arch]
    machine = {"x86_64": 62, "aarch64": 183}[arch]
    assert code[:4] == b"\x7fELF" and int.from_bytes(code[18:20], "little") == machine


def test_routines_fit_one_page():
    """load() maps one page (4 KiB at least) for a routine."""
    assert all(len(code) <= 4096 for code in CODE.values())


def test_selected_executor_matches_environment():
    wanted = os.environ.get("AUNSHARE_EXECUTOR")
    ex = get_executor()
    if wanted:
        assert ex.name == wanted
    else:
        assert ex.name == ("native" if ARCH in CODE else "portable")


def test_unknown_executor_name():
    with pytest.raises(ValueError, match="AUNSHARE_EXECUTOR must be"):
        get_executor("bogus")


def test_environment_variable_is_read_at_the_first_spawn_only():
    """AUNSHARE_EXECUTOR chooses the executor at the first spawn; changing
    it later in the same process changes nothing (a fresh interpreter)."""
    script = (
        "import os, anyio, aunshare\n"
        "from aunshare.executors import get_executor\n"
        "async def main():\n"
        "    child = await aunshare.Command('/bin/true').spawn()\n"
        "    await child.wait()\n"
        "    print(child.executor)\n"
        "    os.environ['AUNSHARE_EXECUTOR'] = 'native'\n"
        "    child = await aunshare.Command('/bin/true').spawn()\n"
        "    await child.wait()\n"
        "    print(child.executor, get_executor().name)\n"
        "anyio.run(main)\n")
    env = dict(os.environ, AUNSHARE_EXECUTOR="portable",
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["portable", "portable", "portable"]
