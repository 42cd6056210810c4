"""A task group for helper tasks behind an ``async with`` API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

__all__ = ["background_tasks"]


@asynccontextmanager
async def background_tasks() -> AsyncIterator[TaskGroup]:
    """A task group whose tasks are cancelled when the ``async with`` block
    ends, and which lets an exception from the block out as itself rather
    than wrapped in an ExceptionGroup (the helpers report their own errors
    to the block, not through the group)."""
    body_exc: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            try:
                yield tg
            except BaseException as exc:
                body_exc = exc
                raise
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if body_exc is not None and list(group.exceptions) == [body_exc]:
            raise body_exc from body_exc.__cause__
        raise
