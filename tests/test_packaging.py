"""The package as a user gets it: build the sdist and the wheel, check what
they contain, install the wheel into a fresh virtualenv and run an example
with it from a directory outside the source tree.

Needs the ``build`` package (in the ``test`` extra) and access to PyPI:
``python -m build`` fetches the build backend into an isolated environment,
and installing the wheel fetches its dependency, anyio.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    os.environ.get("AUNSHARE_EXECUTOR") == "portable",
    reason="packaging does not depend on the executor: tests/run.sh runs the suite once "
           "per executor, and this one (it builds and installs the package, from PyPI) "
           "runs only in the native pass",
)

# Never shipped: local environments, caches, build output, the built site.
STRAY_PARTS = {"__pycache__", ".pytest_cache", ".git", "site", "dist", "build", ".hypothesis"}
STRAY_SUFFIXES = (".pyc", ".pyo", ".so.tmp")


def _run(args: list[str | os.PathLike[str]], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 600) -> str:
    proc = subprocess.run([os.fspath(a) for a in args], cwd=cwd, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout}"
    return proc.stdout


def _stray(names: list[str]) -> list[str]:
    bad = []
    for name in names:
        parts = Path(name).parts
        if (any(p in STRAY_PARTS or p.startswith(".venv") for p in parts)
                or name.endswith(STRAY_SUFFIXES)):
            bad.append(name)
    return bad


def _clean_env() -> dict[str, str]:
    """The environment without anything that would point Python at the source tree."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist and wheel built the way ``python -m build`` does by default:
    the sdist from the tree, then the wheel from the unpacked sdist."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, REPO], cwd=out, env=_clean_env())
    return out


def test_build_produces_pure_wheel_and_sdist(dist: Path) -> None:
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    sdists = sorted(p.name for p in dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and wheels[0].endswith("-py3-none-any.whl"), wheels
    assert wheels[0].startswith("aunshare-")
    assert len(sdists) == 1 and sdists[0].startswith("aunshare-"), sdists


def test_wheel_contents(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert _stray(names) == []
    top = {Path(n).parts[0] for n in names}
    # The package and its metadata, nothing else at the top level.
    assert {t for t in top if not t.endswith(".dist-info")} == {"aunshare"}, top
    for needed in ("aunshare/__init__.py", "aunshare/py.typed", "aunshare/executors/native.py",
                   "aunshare/cli.py", "aunshare/__main__.py"):
        assert needed in names, needed


def test_sdist_contents(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tf:
        names = tf.getnames()
    root = Path(names[0]).parts[0]
    inner = [str(Path(*Path(n).parts[1:])) for n in names if len(Path(n).parts) > 1]
    assert _stray(inner) == []
    for needed in ("pyproject.toml", "README.md", "LICENSE", "aunshare/__init__.py",
                   "examples/quickstart.py", "mkdocs.yml", "docs/build.sh", "docs/cli.md"):
        assert needed in inner, f"{needed} missing from {root}"


def test_installed_wheel_runs_an_example(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    env = _clean_env()
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", wheel], cwd=tmp_path, env=env)

    # Run from a directory that is not the source tree, with a copy of the script.
    work = tmp_path / "elsewhere"
    work.mkdir()
    script = work / "quickstart.py"
    shutil.copy(REPO / "examples" / "quickstart.py", script)

    where = _run([python, "-c", "import aunshare; print(aunshare.__file__)"], cwd=work, env=env)
    installed = Path(where.strip())
    assert venv in installed.parents, f"imported from {installed}, not the virtualenv"
    assert REPO not in installed.parents

    out = _run([python, script, "asyncio"], cwd=work, env=env, timeout=120)
    assert "count  exited with code 0: '1\\n2\\n3' 'done'" in out, out
    assert "tr     SHOUTING THROUGH A PIPE" in out, out
    assert "error  Chdir: chdir /no/such/dir" in out, out

    # The console script the wheel declares.
    out = _run([venv / "bin" / "aunshare", "-r", "--net", "--", "sh", "-c",
                "id -u; cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '"],
               cwd=work, env=env, timeout=60)
    assert out.split() == ["0", "lo"], out
