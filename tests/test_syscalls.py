"""The generated syscall tables against the installed kernel headers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from aunshare import _linux, _syscalls

REPO = Path(__file__).resolve().parent.parent
INCLUDE = Path("/usr/include")


def _generator():
    spec = importlib.util.spec_from_file_location("gen_syscalls", REPO / "scripts" /
                                                  "gen_syscalls.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _headers(gen) -> None:
    for rel in (gen.X86_64_HEADER, gen.GENERIC_HEADER):
        if not (INCLUDE / rel).is_file():
            pytest.skip(f"{INCLUDE / rel} is absent: install linux-libc-dev to cross-check")


def test_tables_match_installed_headers():
    gen = _generator()
    _headers(gen)
    found = gen.tables(INCLUDE)
    assert found["x86_64"] == _syscalls.X86_64, "regenerate: python scripts/gen_syscalls.py"
    assert found["aarch64"] == _syscalls.AARCH64, "regenerate: python scripts/gen_syscalls.py"
    # The committed module is exactly what the script renders.
    assert gen.render(found) == (REPO / "aunshare" / "_syscalls.py").read_text()


def test_known_numbers_from_independent_sources():
    # Numbers every ABI document states (and the design notes measured).
    x, a = _syscalls.X86_64, _syscalls.AARCH64
    assert (x["read"], x["execve"], x["seccomp"], x["clone3"], x["openat"]) == (0, 59, 317, 435,
                                                                                 257)
    assert (a["read"], a["execve"], a["seccomp"], a["clone3"], a["openat"]) == (63, 221, 277,
                                                                                 435, 56)
    # aarch64 has no legacy calls the generic table leaves out
    assert "open" not in a and "fork" not in a and "open" in x
    assert len(set(x.values())) == len(x) and len(set(a.values())) == len(a)


def test_aarch64_generic_conditions_are_evaluated():
    gen = _generator()
    _headers(gen)
    text = (INCLUDE / gen.GENERIC_HEADER).read_text()
    plain = gen.parse_generic(text, frozenset(), 64)
    # Without arm64's wants: no renameat, no fstat/newfstatat, no clone3.
    assert "renameat" not in plain and "clone3" not in plain and "fstat" not in plain
    assert {"renameat", "clone3", "fstat", "newfstatat"} <= set(_syscalls.AARCH64)
    # 32-bit names come out as the 64-bit ones only with __BITS_PER_LONG 64
    assert "fcntl" in plain and "fcntl64" not in plain


def test_linux_uses_the_generated_table():
    if _linux.ARCH in _syscalls.TABLES:
        assert _linux.SYSCALLS is _syscalls.TABLES[_linux.ARCH]
