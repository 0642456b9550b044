"""Start trial processes fast: fork them from a server that imported torch & co once.

A fresh `python -m covid_sweep.agent` spends ~4 s importing torchvision, albumentations, sklearn
and wandb before it trains; on a GPU that is longer than a small trial's compute. multiprocessing's
forkserver imports them once; each trial is still its own process (GPU memory freed on exit, a crash
isolated), in its own session, with its own environment and log file. The fork server is made to die
with the controller (forkserver_guard), so an orphaned trial sees its parent change and stops as
"interrupted".
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from covid_sweep.sweep.protocol import ENTERED_AT, LAUNCHED_AT, trial_main

Entry = Callable[[list[str]], int]
GUARD = "covid_sweep.sweep.forkserver_guard"
AGENT_PRELOAD = ("covid_sweep.sweep.agent", "covid_sweep.sweep.child", "wandb")


def _run_entry(entry: Entry, argv: list[str], log: str, env: dict[str, str]) -> None:
    """In the forked child: become a trial process, then run `entry(argv)` and exit with its code."""
    os.setsid()  # its own session: a Ctrl-C in the terminal reaches the controller only
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the fork server ignores it (forkserver_guard); a trial must not
    os.environ.clear()
    os.environ.update(env)
    os.environ[ENTERED_AT] = repr(time.time())
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    threads = env.get("OMP_NUM_THREADS")
    if threads and "torch" in sys.modules:
        # torch read OMP_NUM_THREADS when the server imported it, before this trial's value existed
        sys.modules["torch"].set_num_threads(int(threads))
    sys.exit(entry(argv))


class TrialHandle:
    """The subset of subprocess.Popen the controller uses, over a forked multiprocessing.Process."""

    def __init__(self, process: multiprocessing.process.BaseProcess):
        self._process = process
        self.pid = process.pid

    def poll(self) -> int | None:
        return self._process.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        self._process.join(timeout)
        return self._process.exitcode

    def kill(self) -> None:
        self._process.kill()


class ForkLauncher:
    def __init__(self, entry: Entry = trial_main, preload: tuple[str, ...] = AGENT_PRELOAD):
        # entry is pickled by reference (module + name) to the fork server: a top-level function
        self.entry = entry
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload([GUARD, *preload])

    def start(self, argv: list[str], log: Path, env: dict[str, str]) -> TrialHandle:
        env = {**env, LAUNCHED_AT: repr(time.time())}
        process = self.context.Process(target=_run_entry, args=(self.entry, argv, str(log), env), daemon=False)
        process.start()
        return TrialHandle(process)
