"""The architecture as a test: every module of the package imports only
modules below it, inside functions too.

Bottom to top: pure data, the plan, the executors, the parent's
preparation, the launch, the Child, the async spawn, the builder, the
runners, the command line. ``docs/architecture.md`` draws the same order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aunshare"

LAYERS: list[list[str]] = [
    # pure data
    ["_version", "_names", "_record", "_syscalls", "_linux", "namespaces", "status", "errors",
     "landlock", "policy", "fds", "seccomp", "spec"],
    # what the child does
    ["plan"],
    # what runs it
    ["executors.table", "executors.clone", "executors.native", "executors.portable",
     "executors.init",
     "executors"],
    # the parent's side, synchronous
    ["descriptors", "cgroup", "idmaps", "tree", "rulesets"],
    ["launch", "handshake"],
    # on the event loop
    ["streams", "_tasks", "supervision", "netns", "forward", "child"],
    ["spawn"],
    ["command"],
    ["runner", "events"],
    # front ends with other projects' APIs
    ["compat._popen"],
    ["compat.asyncio", "compat.trio", "compat"],
    ["cli", "__main__", ""],  # "" is the package itself
    ["pytest_plugin"],  # loaded by pytest, uses the whole library
]
ORDER = [name for layer in LAYERS for name in layer]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
POSITION = {name: i for i, name in enumerate(ORDER)}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Every aunshare module ``path`` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "aunshare" or node.module.startswith("aunshare.")):
                target = node.module.removeprefix("aunshare").lstrip(".")
            else:
                continue
            # "from . import cgroup" names a module, not an attribute
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                out.add(sub if sub in POSITION else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "aunshare" or alias.name.startswith("aunshare."):
                    out.add(alias.name.removeprefix("aunshare").lstrip("."))
    out.discard(module)
    return out


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_place():
    assert set(MODULES) == set(ORDER), (
        f"not placed in LAYERS: {sorted(set(MODULES) - set(ORDER))}; "
        f"placed but missing: {sorted(set(ORDER) - set(MODULES))}")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    """A module may import only modules earlier in ORDER (within a layer,
    the order given; across layers, only lower layers)."""
    wrong = sorted(t for t in _imports(MODULES[module], module)
                   if t not in POSITION or POSITION[t] >= POSITION[module])
    assert not wrong, f"aunshare.{module or '__init__'} imports {wrong}, which sit above it"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The test above would catch the old builder's import of the spawn
    machinery inside its methods."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from .child import spawn\n    from . import cgroup\n")
    assert _imports(src, "plan") == {"child", "cgroup"}
