"""The executors themselves: the native routine matches its source, the
selection honours AUNSHARE_EXECUTOR, and both run the same plans."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from aunshare._linux import ARCH
from aunshare.executors import get_executor
from aunshare.executors.native import CODE

HERE = os.path.join(os.path.dirname(__file__), "..", "aunshare", "executors")


@pytest.mark.skipif(ARCH != "x86_64", reason=f"the native routine is x86_64; this is {ARCH}")
def test_native_bytes_match_assembly_source(tmp_path):
    """Re-assemble spawn_x86_64.S with GNU as and compare with the shipped bytes."""
    if shutil.which("as") is None or shutil.which("objcopy") is None:
        pytest.skip("GNU binutils (as, objcopy) are not installed")
    obj, binary = tmp_path / "spawn.o", tmp_path / "spawn.bin"
    subprocess.run(["as", "--64", "-o", obj, os.path.join(HERE, "spawn_x86_64.S")], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", obj, binary], check=True)
    assert binary.read_bytes() == CODE["x86_64"]


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
