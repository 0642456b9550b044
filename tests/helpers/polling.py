"""Waiting for something another process does, without sleeping a fixed time."""

from __future__ import annotations

import time


def wait_for(condition, timeout: float = 30.0) -> bool:
    """Poll condition every 50 ms until it holds (True) or timeout seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
