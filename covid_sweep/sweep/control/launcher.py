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
import multiprocessing.forkserver
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from covid_sweep.sweep.control.protocol import ENTERED_AT, LAUNCHED_AT

Entry = Callable[[list[str]], int]
GUARD = "covid_sweep.sweep.control.forkserver_guard"
# training.trial named on its own: the trial entry imports it only when a trial starts (a bad `wandb agent`
# suggestion fails before torch loads), so preloading the entry alone would leave torch to every trial
AGENT_PRELOAD = ("covid_sweep.sweep.control.trial_entry", "covid_sweep.sweep.control.child",
                 "covid_sweep.training.trial", "wandb")


def trial_main(argv: list[str]) -> int:
    """What the launcher runs in each forked trial process: the trial entry, imported here rather than at the
    top, so the controller that hands this function to the launcher never loads what a trial needs."""
    from covid_sweep.sweep.control.trial_entry import main

    return main(argv)


def agent_preload(store_kind: str) -> tuple[str, ...]:
    """What the fork server imports for trials on a store of this kind: on PostgreSQL, SQLAlchemy and psycopg
    too (once, in the server, not per trial)."""
    return AGENT_PRELOAD + (("covid_sweep.sweep.store.postgres",) if store_kind == "postgresql" else ())


def start_fork_server(preload: tuple[str, ...]) -> None:
    """Start the fork server now: it imports `preload` (seconds: torch, OpenCV) while the caller goes on with
    its own imports and set-up, which the first trial's launch would otherwise follow. A launcher made later
    with the same preload finds it running."""
    multiprocessing.get_context("forkserver").set_forkserver_preload([GUARD, *preload])
    multiprocessing.forkserver.ensure_running()


def _run_entry(entry: Entry, argv: list[str], log: str, env: dict[str, str]) -> None:
    """In the forked child: become a trial process, then run `entry(argv)` and exit with its code."""
    os.setsid()  # its own session: a Ctrl-C in the terminal reaches the controller only
    _become_trial(log, env)
    sys.exit(entry(argv))


def _become_trial(log: str, env: dict[str, str]) -> None:
    """This process's signals, environment, output and threads as the trial about to run expects them."""
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
    if threads:
        limit_threads(int(threads))


def limit_threads(threads: int) -> None:
    """This trial's share of the cores (the controller's OMP_NUM_THREADS) for every thread pool that the fork
    server's imports sized to all of them before the trial's value existed: torch's, numpy's BLAS (OpenBLAS
    reads the variable once, at load) and OpenCV's. Without it, each of N agents on a many-core box runs its
    pools with every core, and the agents slow one another down (docs/measurements.md, Speed)."""
    import threadpoolctl

    torch, cv2 = sys.modules.get("torch"), sys.modules.get("cv2")
    if torch is not None:
        torch.set_num_threads(threads)
    if cv2 is not None:
        cv2.setNumThreads(threads)
    threadpoolctl.threadpool_limits(limits=threads)  # BLAS and OpenMP runtimes, for the rest of the process


def _pidfd(pid: int) -> int | None:
    """A handle on the process itself (Linux >= 5.3), not on its number: the fork server reaps a trial the moment
    it exits, and its pid may then be reused by any process on the box. None where pidfds do not exist."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


class TrialHandle:
    """The subset of subprocess.Popen the controller uses, over a forked multiprocessing.Process."""

    def __init__(self, process: multiprocessing.process.BaseProcess):
        self._process = process
        self.pid = process.pid
        self._fd = _pidfd(process.pid)

    def poll(self) -> int | None:
        code = self._process.exitcode
        if code is not None:
            self._release()
        return code

    def send_signal(self, sig: int) -> bool:
        """Deliver sig to this trial's process if it still runs: True if delivered, False if it had already
        ended (a normal outcome: it ended on its own meanwhile). Never reaches a process that reused its pid."""
        if self.poll() is not None:
            return False
        try:
            if self._fd is not None:
                signal.pidfd_send_signal(self._fd, sig)
            else:  # no pidfd: a bare pid, the best this platform offers
                os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def wait(self, timeout: float | None = None) -> int | None:
        self._process.join(timeout)
        return self.poll()

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

    def close(self) -> None:
        """Nothing to end: each trial process ends with its trial."""


# --------------------------------------------------------------------------------------------------
# warm trial workers: one process per agent slot that runs successive trials


def gpu_memory_released() -> bool:
    """After a trial, in its worker: does the process still hold GPU memory the trial allocated?
    (No CUDA initialised: nothing to hold.)"""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return True
    import gc

    gc.collect()
    # cuBLAS keeps a workspace per handle in the caching allocator: not the trial's, but counted until cleared
    clear_cublas = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear_cublas is not None:
        clear_cublas()
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated() == 0


def _serve(entry: Entry, conn, released: Callable[[], bool]) -> None:
    """A warm worker: run the trials the controller sends, one at a time, in this one process.

    Each trial gets what a fresh trial process gets (environment, log, signals, threads); after it the
    worker reports (exit code, memory released). A failed trial (crash, OOM, NaN...) or one that left GPU
    memory behind ends the worker: the launcher starts a fresh one for the next trial."""
    os.setsid()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return  # the controller is gone (its end of the pipe closed) or shut down
        argv, log, env = job
        _become_trial(log, env)
        try:
            code = entry(argv)
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
        except BaseException:  # noqa: BLE001 - what would have ended a one-trial process ends this worker
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        clean = code == 0 and released()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a stop meant for the trial just ended may still arrive
        signal.signal(signal.SIGINT, signal.default_int_handler)
        conn.send((code, clean))
        if not clean:
            return


class _Worker:
    """The controller's side of one warm worker: its process, its pipe, whether a trial is on it."""

    def __init__(self, context, entry: Entry, released: Callable[[], bool], gpu: str | None):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(entry, child, released), daemon=False)
        self.process.start()
        child.close()
        self.gpu = gpu  # CUDA_VISIBLE_DEVICES counts only before CUDA starts: a worker serves one GPU
        self.busy = False
        self.retired = False

    def usable(self, gpu: str | None) -> bool:
        return not self.busy and not self.retired and self.gpu == gpu and self.process.is_alive()

    def run(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.busy = True
        self.conn.send((argv, str(log), env))

    def result(self) -> int | None:
        """The trial's exit code once it ended (the worker's own exit code if it died), else None."""
        if self.conn.poll():
            try:
                code, clean = self.conn.recv()
            except (EOFError, OSError):
                return self._died()
            self.busy = False
            self.retired = not clean
            return code
        if not self.process.is_alive():
            return self._died()
        return None

    def _died(self) -> int:
        self.process.join()
        self.busy, self.retired = False, True
        return self.process.exitcode if self.process.exitcode is not None else 1


class WarmHandle:
    """TrialHandle over a trial running in a warm worker: the same poll/send_signal/wait/kill."""

    def __init__(self, worker: _Worker):
        self._worker = worker
        self.pid = worker.process.pid
        self._code: int | None = None

    def poll(self) -> int | None:
        if self._code is None:
            self._code = self._worker.result()
        return self._code

    def send_signal(self, sig: int) -> bool:
        """As TrialHandle.send_signal; the worker's pid stays its own while the worker lives."""
        if self.poll() is not None:  # never a signal for an ended trial to the worker's next one
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.02)
        return self._code

    def kill(self) -> None:
        self._worker.retired = True
        self._worker.process.kill()


class WarmLauncher:
    """Like ForkLauncher, but each agent slot keeps its process between trials: the imports, CUDA's
    initialisation and cudnn's tuning are paid once per worker instead of once per trial. A trial that
    fails, or leaves GPU memory held, retires its worker; the next trial gets a fresh one."""

    def __init__(self, entry: Entry = trial_main, preload: tuple[str, ...] = AGENT_PRELOAD,
                 released: Callable[[], bool] = gpu_memory_released):
        self.entry, self.released = entry, released
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload([GUARD, *preload])
        self.workers: list[_Worker] = []

    def start(self, argv: list[str], log: Path, env: dict[str, str]) -> WarmHandle:
        gpu = env.get("CUDA_VISIBLE_DEVICES")
        self.workers = [w for w in self.workers if not w.retired]
        worker = next((w for w in self.workers if w.usable(gpu)), None)
        if worker is None:
            worker = _Worker(self.context, self.entry, self.released, gpu)
            self.workers.append(worker)
        worker.run(argv, log, {**env, LAUNCHED_AT: repr(time.time())})
        return WarmHandle(worker)

    def close(self) -> None:
        """End the idle workers (their pipe closes: they return) and wait for them; the controller calls this
        when its loop ends, since multiprocessing joins every worker at exit."""
        for worker in self.workers:
            worker.conn.close()
        for worker in self.workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        self.workers = []
