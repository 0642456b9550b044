"""The embedded, air-gapped sweep controller: W&B's engine + the sweep store + one process per trial.

Several controllers (or one with --agents K), on one box or on many sharing a PostgreSQL store, can
run one sweep: suggestions are made under the store's write lock, so no two agents ever receive the
same one. A controller whose heartbeat (database clock) is older than stale_s is dead: the first
controller to notice marks its trials interrupted, and a claim under the lock retries each once.
A controller with nothing left to launch waits for the other controllers' trials before it exits,
so a box that dies during the last trials still has them retried.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from covid_sweep.core.states import ACTIVE, TrialState
from covid_sweep.sweep.control import engine, protocol
from covid_sweep.sweep.control.data_versions import DataVersions, recorded_fingerprint
from covid_sweep.sweep.control.launcher import ForkLauncher, TrialHandle, WarmHandle, WarmLauncher, agent_preload
from covid_sweep.sweep.control.outcome import Outcome, Stop, StopReason
from covid_sweep.sweep.store import Store, Sweep, Trial, machine_id, process_start
from covid_sweep.tracking.tracker import trial_process_env

MAX_ATTEMPTS = 2  # an interrupted trial is retried once; interrupted again, it counts as failed
MAX_EARLY_FAILURES = 5  # as `wandb agent`: this many trials in a row failing before any epoch end the sweep
STALE_CONTROLLER_S = 60.0  # a heartbeat is written every poll (0.5 s); this much silence means the box is gone


def new_sweep(store: Store, config: dict, source: str, data_dir: str | None, seed: int | None = None) -> Sweep:
    sweep_id = secrets.token_hex(4)
    name = config.get("name") or Path(source).stem
    return store.create_sweep(sweep_id, name, source, config, data_dir, secrets.randbelow(2**31) if seed is None else seed)


@dataclass
class Slot:
    trial: Trial
    process: TrialHandle | WarmHandle
    log: Path
    stop_sent: bool = False


def _owner_alive(store: Store, owner: str | None, stale_s: float) -> bool:
    """Alive: a heartbeat younger than stale_s (database clock) and, where its pid means something here
    (the same machine), that pid still running."""
    if not owner:
        return False
    seen = store.controller_seen(owner)
    if seen is None or seen.age_s >= stale_s:
        return False
    if not _same_machine(seen.machine, owner):
        return True
    try:
        os.kill(int(owner.rpartition(":")[2]), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        pass
    return True


def _same_machine(machine: str | None, owner: str) -> bool:
    """Whether `owner`'s pid can be checked here; a heartbeat from before machines were recorded has only its host."""
    return machine == machine_id() if machine else owner.rpartition(":")[0] == socket.gethostname()


class Controller:
    def __init__(self, store: Store, sweep: Sweep, home: Path, agents: int = 1, count: int | None = None,
                 gpus: list[str] | None = None, launcher: ForkLauncher | WarmLauncher | None = None,
                 poll_s: float = 0.5, log=print, max_early_failures: int = MAX_EARLY_FAILURES,
                 stale_s: float = STALE_CONTROLLER_S, artifacts: Path | None = None, warm_workers: bool = False,
                 budget_s: float | None = None):
        self.store, self.sweep, self.home = store, sweep, Path(home)
        self.stale_s, self.artifacts = stale_s, artifacts
        self.agents, self.count, self.gpus = agents, count, gpus or []
        self.launcher = launcher or (WarmLauncher if warm_workers else ForkLauncher)(preload=agent_preload(store.location.kind))
        self.poll_s, self.log = poll_s, log
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.slots: dict[int, Slot] = {}
        self._shutdown = False
        self.max_early_failures = max_early_failures
        self.early_failures = 0  # consecutive trials that failed before logging an epoch
        self.budget_s = budget_s
        self.deadline: float | None = None  # wall clock (time.time()) at which the budget ends; set by run()
        self.data_versions = DataVersions()

    # --- suggestions -------------------------------------------------------------------------
    def claim(self) -> tuple[Trial | None, Stop | None]:
        """Next trial for this agent (a retry first, else the engine's suggestion), or (None, why not)."""
        return self.store.retrying(self._claim)  # a server restart rolls the claim back whole: claim again

    def _claim(self) -> tuple[Trial | None, Stop | None]:
        with self.store.write_lock():
            trials = self.store.trials(self.sweep.id)
            if engine.target_reached(self.sweep, trials):
                return None, Stop(StopReason.TARGET, f"metric.target {self.sweep.target} reached")
            retry = self._retry_candidate(trials)
            if retry is not None:
                return retry, None
            originals = [t for t in trials if t.retry_of is None]
            cap = self.sweep.run_cap
            if cap is not None and len(originals) >= cap:
                return None, Stop(StopReason.RUN_CAP, f"run_cap {cap} reached")
            params = engine.suggest(self.sweep, engine.sweep_runs(self.store, self.sweep))
            if params is None:
                return None, Stop(StopReason.EXHAUSTED, "search space exhausted")
            name = f"{self.sweep.id}-{len(originals) + 1:03d}"
            return self.store.add_trial(self.sweep.id, name, params, self.owner), None

    def _retry_candidate(self, trials: list[Trial]) -> Trial | None:
        retried = {t.retry_of for t in trials if t.retry_of is not None}
        for trial in trials:
            if trial.state != TrialState.INTERRUPTED or trial.id in retried:
                continue
            root = trial.retry_of or trial.id
            attempts = 1 + sum(1 for t in trials if t.retry_of == root)
            if trial.retry_of is not None and attempts >= MAX_ATTEMPTS:
                self.store.end_trial(trial.id, TrialState.FAILED, error="interrupted twice; imputed as failed",
                                     only_if=(TrialState.INTERRUPTED,))
                continue
            # attempt number `attempts + 1`: the first retry of NAME is NAME-r2
            return self.store.add_trial(self.sweep.id, f"{self.store.trial(root).name}-r{attempts + 1}",
                                        trial.params, self.owner, retry_of=root)
        return None

    # --- processes -------------------------------------------------------------------------------
    def launch(self, trial: Trial) -> Slot:
        log = self.home / "logs" / self.sweep.id / f"{trial.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = trial_process_env(os.environ)
        env.update(self.store.location.secret_env)  # the password stays out of argv (ps shows argv)
        env["PYTHONUNBUFFERED"] = "1"
        if self.agents > 1 and "OMP_NUM_THREADS" not in os.environ:
            # K trials sharing the CPU cores: oversubscribed intra-op threads slow every one of them
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.agents))
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[len(self.slots) % len(self.gpus)]
        if self.deadline is not None:
            env[protocol.DEADLINE] = repr(self.deadline)
        # the trial process itself marks the trial running (TrialProcess.start): one writer
        argv = protocol.embedded_argv(self.store.path, trial.id, self.home, self.artifacts)
        process = self.launcher.start(argv, log, env)
        self.log(f"trial {trial.name} started (pid {process.pid}): {trial.params}")
        return Slot(trial, process, log)

    def _collect(self, unmarked: TrialState = TrialState.FAILED) -> None:
        """Record the trials whose process ended. One that did not record its own end is `unmarked`:
        failed (it crashed), or interrupted when the controller itself is shutting down."""
        for trial_id, slot in list(self.slots.items()):
            if self._shutdown and unmarked == TrialState.FAILED:
                return  # a signal arrived meanwhile: _stop_all judges what it ended
            code = slot.process.poll()
            if code is None:
                continue
            del self.slots[trial_id]
            if self.store.end_trial(trial_id, unmarked, error=f"trial process exited with {code}: {_tail(slot.log)}"):
                self.log(f"trial {slot.trial.name} {unmarked} (exit {code}); log: {slot.log}")
            else:
                trial = self.store.trial(trial_id)
                self.log(f"trial {trial.name} {trial.state}: best {self.sweep.metric}={trial.best} after {trial.epochs} epochs")
                self._note_data_version(trial)
            self._count_early_failure(self.store.trial(trial_id))

    def _note_data_version(self, trial: Trial) -> None:
        """Warn when a finished trial was trained on train images no earlier trial of the sweep saw."""
        if trial.state != TrialState.FINISHED or not trial.artifact:
            return
        warning = self.data_versions.add(trial.name, recorded_fingerprint(trial.artifact))
        if warning:
            self.log(warning)

    def _count_early_failure(self, trial: Trial) -> None:
        if trial.state == TrialState.FAILED and trial.epochs == 0:
            self.early_failures += 1
        elif trial.epochs > 0 or trial.state in (TrialState.FINISHED, TrialState.STOPPED):
            self.early_failures = 0

    def _too_many_early_failures(self) -> Stop | None:
        if self.early_failures < self.max_early_failures:
            return None
        return Stop(StopReason.EARLY_FAILURES,
                    f"{self.early_failures} trials in a row failed before their first epoch (a data or setup "
                    f"problem, not a recipe: see {self.home / 'logs' / self.sweep.id}); fix it, then --resume")

    def _hyperband(self) -> None:
        if not self.slots:
            return
        to_stop = engine.runs_to_stop(self.sweep, engine.sweep_runs(self.store, self.sweep))
        for slot in self.slots.values():
            if slot.trial.name in to_stop and not slot.stop_sent:
                slot.stop_sent = True
                if not slot.process.send_signal(signal.SIGTERM):
                    continue  # it ended on its own meanwhile: the next collect records how
                self.store.request_stop(slot.trial.id)
                self.log(f"trial {slot.trial.name}: hyperband stop")

    def reap_orphans(self) -> list[str]:
        """Active trials whose controller is gone (kill -9, power loss): mark interrupted so they are retried."""
        reaped = []
        for trial in self.store.trials(self.sweep.id, ACTIVE):
            if trial.owner == self.owner or _owner_alive(self.store, trial.owner, self.stale_s):
                continue
            seen = self.store.controller_seen(trial.owner) if trial.owner else None
            if trial.pid and trial.owner and _same_machine(seen.machine if seen else None, trial.owner) \
                    and trial.pid_start is not None and process_start(trial.pid) == trial.pid_start:
                # the pid may have been recycled since (reboot, OOM killer): never signal a stranger
                _signal_quietly(trial.pid, signal.SIGINT)
            if self.store.end_trial(trial.id, TrialState.INTERRUPTED, error=f"controller {trial.owner} died"):
                reaped.append(trial.name)
        return reaped

    # --- the loop --------------------------------------------------------------------------------
    def _request_shutdown(self, *_):
        self._shutdown = True

    def _reap(self) -> bool:
        reaped = self.reap_orphans()
        if reaped:
            self.log(f"interrupted by a dead controller, will be retried: {', '.join(reaped)}")
        return bool(reaped)

    def _others_active(self) -> int:
        return sum(t.owner != self.owner for t in self.store.trials(self.sweep.id, ACTIVE))

    def _budget_spent(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def run(self) -> Outcome:
        outcome = Outcome(self.sweep.id)
        old = {s: signal.signal(s, self._request_shutdown) for s in (signal.SIGINT, signal.SIGTERM)}
        reap_every = max(self.poll_s, self.stale_s / 4)
        if self.budget_s is not None:
            self.deadline = time.time() + self.budget_s
        try:
            self.store.heartbeat(self.owner)
            self._reap()
            for trial in self.store.trials(self.sweep.id):  # a resumed sweep: the versions its trials used so far
                self._note_data_version(trial)
            last_reap, exhausted, waiting = time.monotonic(), False, False
            while True:
                self.store.heartbeat(self.owner)
                if time.monotonic() - last_reap >= reap_every:
                    last_reap = time.monotonic()
                    if self._reap():
                        exhausted = False  # their retries are ours to claim
                if self._shutdown:  # before collecting: trials that the same signal ended are judged by _stop_all
                    outcome.stop = outcome.stop or Stop(StopReason.SIGNAL, "interrupted by signal")
                    self._stop_all(signal.SIGINT)
                    break
                self._collect()
                if not exhausted and self._budget_spent():
                    # no new trial; the running ones end themselves at the deadline (protocol.DEADLINE)
                    exhausted = True
                    outcome.stop = Stop(StopReason.BUDGET, f"budget {fmt_budget(self.budget_s)} reached")
                while (not exhausted and len(self.slots) < self.agents
                       and (self.count is None or len(outcome.launched) < self.count)):
                    why = self._too_many_early_failures()
                    trial, why = (None, why) if why else self.claim()
                    if trial is None:
                        exhausted, outcome.stop = True, why
                        break
                    self.slots[trial.id] = self.launch(trial)
                    outcome.launched.append(trial.name)
                if not self.slots:
                    can_launch = self.count is None or len(outcome.launched) < self.count
                    retryable = outcome.stop is not None and outcome.stop.reason.retryable
                    others = self._others_active() if can_launch and retryable else 0
                    if not others and waiting:  # what we waited for ended: an interrupted one is ours to retry
                        waiting, exhausted = False, False
                        continue
                    if not others:
                        outcome.stop = outcome.stop or Stop(StopReason.COUNT, f"count {self.count} reached")
                        break
                    if not waiting:
                        self.log(f"nothing left to launch; waiting for {others} trials of other controllers "
                                 "(retried here if their controller dies)")
                    waiting = True
                self._hyperband()
                time.sleep(self.poll_s)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            self.launcher.close()
        return outcome

    def _stop_all(self, sig: int, grace_s: float = 30.0) -> None:
        stopping = dict(self.slots)
        for slot in self.slots.values():
            slot.process.send_signal(sig)
        deadline = time.time() + grace_s
        for slot in self.slots.values():
            if slot.process.wait(max(0.1, deadline - time.time())) is None:
                slot.process.kill()
                slot.process.wait(5.0)
        self._collect(unmarked=TrialState.INTERRUPTED)  # we stopped them: retried on resume, never imputed as failures
        for trial_id, slot in stopping.items():
            if not slot.stop_sent:
                # "stopped" without a hyperband stop: the signal that is stopping us reached it too (systemd
                # sends SIGTERM to every process of the service), so it was interrupted, not judged
                self.store.end_trial(trial_id, TrialState.INTERRUPTED, only_if=(TrialState.STOPPED,))


def fmt_budget(seconds: float) -> str:
    """90 -> 1m30s, 600 -> 10m, 3600 -> 1h; under a minute, as given (0.5 -> 0.5s)."""
    if seconds < 60:
        return f"{seconds:g}s"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "0s"


def _signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""

