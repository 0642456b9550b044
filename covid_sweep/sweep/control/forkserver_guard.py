"""Imported (as a forkserver preload) inside the fork server: make it die with the controller.

The fork server otherwise outlives a kill -9 of the controller, holding torch's memory, and its
children would never see their parent change. Linux only; elsewhere a no-op.

It also ignores SIGTERM: `timeout`, systemd and friends send it to the controller's whole process
group, and a fork server killed first makes every running trial look like it exited with 255 (a
failure) before the controller could interrupt it. It still dies with the controller (above).
"""

import ctypes
import ctypes.util
import signal
import sys

PR_SET_PDEATHSIG = 1

if sys.platform.startswith("linux"):
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

signal.signal(signal.SIGTERM, signal.SIG_IGN)
