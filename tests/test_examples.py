"""Every example runs and passes its own assertions (started through aunshare)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aunshare import Command

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["asyncio"])
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "trio"])
async def test_example_runs(example, loop):
    out = await Command(sys.executable).args([example, loop]).output()
    assert out.status.success(), out.stderr.decode()
    assert out.stdout
