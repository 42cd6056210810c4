"""Start-up cost: ``import aunshare`` loads no submodule, the public names
still resolve, and the ``aunshare`` command imports only what a run needs.

Each check runs a fresh interpreter, since this one has imported
everything already.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import aunshare
from conftest import REPO


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=60, cwd=REPO)
    return set(out.stdout.split())


def test_import_loads_no_submodule():
    loaded = modules_after("import aunshare")
    assert {m for m in loaded if m.startswith("aunshare.")} <= {"aunshare._version"}
    assert not {"anyio", "asyncio", "typing", "subprocess", "dataclasses"} & loaded


def test_every_public_name_resolves():
    for name in aunshare.__all__:
        value = getattr(aunshare, name)
        assert getattr(value, "__module__", "").startswith("aunshare."), name
    assert set(aunshare.__all__) <= set(dir(aunshare))
    namespace: dict[str, object] = {}
    exec("from aunshare import *", namespace)
    assert set(aunshare.__all__) <= set(namespace)
    with pytest.raises(AttributeError):
        aunshare.NoSuchName  # noqa: B018
    with pytest.raises(ImportError):
        exec("from aunshare import NoSuchName", {})


def test_from_import_in_a_fresh_process():
    loaded = modules_after("from aunshare import Exec, Namespace")
    assert {"aunshare.errors", "aunshare.namespaces"} <= loaded
    assert "aunshare.runner" not in loaded and "aunshare.child" not in loaded


def test_lazy_table_matches_the_type_checking_imports():
    """The names type checkers see are the names the lazy table serves,
    from the same modules."""
    tree = ast.parse((REPO / "aunshare" / "__init__.py").read_text())
    (block,) = [node for node in tree.body if isinstance(node, ast.If)
                and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    seen = {alias.asname or alias.name: node.module
            for node in block.body if isinstance(node, ast.ImportFrom) and node.level == 1
            for alias in node.names}
    assert seen == aunshare._LAZY


def test_command_line_leaves_the_library_it_does_not_use():
    loaded = modules_after(
        "import sys\nfrom aunshare.cli import main\n"
        "code = main(['--', '/bin/true'])\nassert code == 0, code")
    assert not {"aunshare.runner", "aunshare.events"} & loaded
    # typing (~5 ms) is for type checkers; difflib only for a hint on a typo
    assert not {"typing", "difflib"} & loaded
    # json only for --json-status; shutil (and bz2, lzma) came from argparse's
    # formatter, made for every option added
    assert not {"json", "shutil", "lzma", "bz2"} & loaded


@pytest.mark.parametrize("options", [[], ["-r", "--net"],
                                     ["--map-user", "1000", "--map-group", "1000"],
                                     ["--timeout", "5"]],
                         ids=["plain", "self-maps", "handshake", "timeout"])
def test_command_line_runs_without_an_event_loop(options):
    """The command waits with poll(2) on the pidfd: no anyio, no asyncio, on
    the vfork path and through the handshake (parent-written id maps) alike."""
    loaded = modules_after(
        "import sys\nfrom aunshare.cli import main\n"
        f"code = main({[*options, '--', '/bin/true']!r})\nassert code == 0, code")
    assert "aunshare.handshake" in loaded
    assert not {"anyio", "asyncio", "aunshare.child", "aunshare.spawn",
                "aunshare.streams"} & loaded


def test_importtime_of_a_run_names_no_anyio():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "aunshare", "--", "/bin/true"],
                         capture_output=True, text=True, check=True, timeout=60, cwd=REPO)
    assert "aunshare.cli" in out.stderr
    assert "anyio" not in out.stderr.lower() and "asyncio" not in out.stderr
