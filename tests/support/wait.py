"""Waiting for a condition: poll until true or a deadline, then say what was awaited."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(pred: Callable[[], T], timeout: float = 20.0, what: str = "condition", interval: float = 0.01,
             describe: Callable[[], str] | None = None) -> T:
    """The first truthy value of ``pred()``, polled every ``interval`` seconds; after
    ``timeout`` an AssertionError naming ``what`` and the last value (or ``describe()``)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            detail = describe() if describe is not None else f"last value: {last!r}"
            raise AssertionError(f"{what} not reached in {timeout:g}s; {detail}")
        time.sleep(interval)
