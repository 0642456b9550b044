"""Faults injected into real calls: a disk that fills up on the Nth write, or when a given file is written."""

from __future__ import annotations

import errno
from typing import Callable


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def failing_on_call(real: Callable, n: int, error: Callable[[], BaseException] = disk_full) -> Callable:
    """`real`, except that its n-th call raises error() instead. Its `calls` attribute holds each call's
    positional arguments, the failed one included, for a test that checks what was asked before the failure."""
    calls: list[tuple] = []

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise error()
        return real(*args, **kwargs)

    call.calls = calls
    return call


def failing_when(real: Callable, when: Callable[..., bool], error: Callable[[], BaseException] = disk_full) -> Callable:
    """`real`, except that a call whose arguments satisfy when(...) raises error() instead."""

    def call(*args, **kwargs):
        if when(*args, **kwargs):
            raise error()
        return real(*args, **kwargs)

    return call
