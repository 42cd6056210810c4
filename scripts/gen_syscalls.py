#!/usr/bin/env python3
"""Generate aunshare/_syscalls.py, the syscall name tables, from kernel headers.

x86_64: ``asm/unistd_64.h`` (plain ``#define __NR_name number`` lines).
aarch64: the generic table ``asm-generic/unistd.h`` read with the macros
arm64's ``asm/unistd.h`` defines before including it, with the conditions
evaluated here (no C preprocessor needed).

Usage: ``python scripts/gen_syscalls.py [INCLUDE_DIR] > aunshare/_syscalls.py``
(INCLUDE_DIR defaults to /usr/include, as installed by Debian's linux-libc-dev).
The test suite calls :func:`parse_x86_64` and :func:`parse_generic` to
cross-check the committed tables against the installed headers.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

X86_64_HEADER = "x86_64-linux-gnu/asm/unistd_64.h"
GENERIC_HEADER = "asm-generic/unistd.h"
# What arch/arm64/include/uapi/asm/unistd.h defines before including the
# generic table (64-bit, no compat).
AARCH64_DEFINES = frozenset({
    "__ARCH_WANT_RENAMEAT", "__ARCH_WANT_NEW_STAT", "__ARCH_WANT_SET_GET_RLIMIT",
    "__ARCH_WANT_TIME32_SYSCALLS", "__ARCH_WANT_SYS_CLONE3", "__ARCH_WANT_MEMFD_SECRET",
})

_DEFINE = re.compile(r"#define\s+(__NR3264_\w+|__NR_\w+)\s+(.+?)\s*(?:/\*.*)?$")


def parse_x86_64(text: str) -> dict[str, int]:
    """name -> number from asm/unistd_64.h."""
    out = {}
    for line in text.splitlines():
        m = _DEFINE.match(line.strip())
        if m and m.group(1).startswith("__NR_") and m.group(2).isdigit():
            out[m.group(1)[5:]] = int(m.group(2))
    return out


def _condition(expr: str, defines: frozenset[str], bits: int) -> bool:
    expr = re.sub(r"defined\s*\(\s*(\w+)\s*\)", lambda m: str(m.group(1) in defines), expr)
    expr = expr.replace("__BITS_PER_LONG", str(bits))
    expr = expr.replace("||", " or ").replace("&&", " and ")
    expr = re.sub(r"!(?!=)", " not ", expr)
    if re.search(r"[A-Za-z_]\w*", re.sub(r"\b(True|False|or|and|not)\b", "", expr)):
        raise ValueError(f"cannot evaluate #if {expr}")
    return bool(eval(expr, {"__builtins__": {}}))  # only literals and operators remain


def parse_generic(text: str, defines: frozenset[str] = AARCH64_DEFINES,
                  bits: int = 64) -> dict[str, int]:
    """name -> number from asm-generic/unistd.h as an architecture with
    ``defines`` sees it."""
    text = re.sub(r"\\\n", " ", text)
    stack: list[bool] = []  # is each open conditional's current branch taken
    raw: dict[str, str] = {}
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#ifdef"):
            stack.append(s.split()[1] in defines)
        elif s.startswith("#ifndef"):
            name = s.split()[1]
            stack.append(name not in defines and not name.startswith("_ASM_GENERIC_UNISTD"))
        elif s.startswith("#if"):
            stack.append(_condition(s[3:].strip(), defines, bits))
        elif s.startswith("#else"):
            stack[-1] = not stack[-1]
        elif s.startswith("#endif"):
            stack.pop()
        elif all(stack):
            m = _DEFINE.match(s)
            if m:
                raw[m.group(1)] = m.group(2).strip()
    out: dict[str, int] = {}
    for name, value in raw.items():
        if not name.startswith("__NR_") or name == "__NR_syscalls":
            continue
        while value in raw:
            value = raw[value]
        m = re.fullmatch(r"\(?\s*(\d+)\s*\)?", value)
        if m:
            out[name[5:]] = int(m.group(1))
    out.pop("arch_specific_syscall", None)  # the start of a range, not a syscall
    return out


def tables(include: Path) -> dict[str, dict[str, int]]:
    """Both tables read from the headers under ``include``."""
    return {
        "x86_64": parse_x86_64((include / X86_64_HEADER).read_text()),
        "aarch64": parse_generic((include / GENERIC_HEADER).read_text()),
    }


def render(found: dict[str, dict[str, int]]) -> str:
    """The text of aunshare/_syscalls.py."""
    lines = [
        '"""Syscall numbers by name for x86_64 and aarch64: generated, do not edit.',
        "",
        "Made by scripts/gen_syscalls.py from the kernel's userspace headers",
        "(x86_64: asm/unistd_64.h; aarch64: asm-generic/unistd.h as arm64 includes",
        "it). tests/test_syscalls.py checks them against the installed headers.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        '__all__ = ["TABLES", "X86_64", "AARCH64"]',
        "",
    ]
    for arch, const in (("x86_64", "X86_64"), ("aarch64", "AARCH64")):
        lines.append(f"{const}: dict[str, int] = {{")
        for name, nr in sorted(found[arch].items(), key=lambda kv: (kv[1], kv[0])):
            lines.append(f'    "{name}": {nr},')
        lines.append("}")
        lines.append("")
    lines.append('TABLES: dict[str, dict[str, int]] = {"x86_64": X86_64, "aarch64": AARCH64}')
    lines.append('"""Architecture (``os.uname().machine`` spelling) -> name -> number."""')
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(tables(Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/include"))))
