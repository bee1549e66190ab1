"""Background loops end when their task is cancelled, even when a call inside swallowed it.

On Python 3.11 ``asyncio.wait_for`` returns its inner call's result when that call completes
at the moment the task is cancelled (the hub's group_add with the in-process layer completes
at once), and the CancelledError is lost. A periodic loop would then run forever, and an event
loop closing (daphne's shutdown, the end of an async test) would wait for it forever. Each
such loop calls ``raise_if_cancelled()`` after its calls: the task's cancel request is still
counted by ``Task.cancelling()``.
"""
from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise CancelledError if the current task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
