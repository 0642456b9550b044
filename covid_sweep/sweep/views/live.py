"""The live view of `covid-sweep sweep` on a terminal: trials done / cap, each running trial's epoch progress
and current metric, the best so far with its selection-corrected estimate, elapsed time and an estimate of the
time left (rich Live).

It reads the store once a second through its own connection, as `status` would, and never reaches into the
controller: what it shows is what the store holds. The controller's event lines print above it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from covid_sweep.core.config import TrialConfig
from covid_sweep.core.goals import rank_key
from covid_sweep.core.states import TrialState
from covid_sweep.sweep.store import Store, Sweep, Trial, finished
from covid_sweep.sweep.views.selection import sweep_estimate
from covid_sweep.sweep.views.status import duration, fmt_duration, fmt_value

DONE = (TrialState.FINISHED, TrialState.STOPPED, TrialState.FAILED)
DEFAULT_EPOCHS = TrialConfig.model_fields["epochs"].default


@dataclass
class Running:
    name: str
    epoch: int
    epochs: int  # the trial's epoch budget (early stopping or hyperband may end it sooner)
    metric: float | None  # the sweep metric of its last logged epoch
    seconds: float


@dataclass
class LiveState:
    done: int  # trials that ended (finished, stopped or failed)
    target: int | None  # trials this run of the sweep will have at most: run_cap, or --count; None: no limit
    running: list[Running] = field(default_factory=list)
    best: tuple[str, float] | None = None  # trial, value
    elapsed: float = 0.0
    left: float | None = None  # estimated seconds to the target; None until it can be guessed
    corrected: str | None = None  # the selection-corrected estimate of the best finished trial, once known
    trials: list[Trial] = field(default_factory=list)  # as read for this state


def trial_budget(trial: Trial) -> int:
    return int(trial.params.get("epochs", DEFAULT_EPOCHS))


def target(sweep: Sweep, done_before: int, count: int | None) -> int | None:
    """The number of ended trials at which this invocation stops: run_cap, or the trials already done plus --count."""
    cap = sweep.run_cap
    by_count = done_before + count if count is not None else None
    limits = [n for n in (cap, by_count) if n is not None]
    return min(limits) if limits else None


def estimate_left(ended: list[Trial], running: list[Running], remaining: int, agents: int) -> float | None:
    """Seconds until `remaining` more trials (running ones included) end, with `agents` at a time.

    A trial is taken to last as long as the ended ones did on average; before any ended, as long as a running
    one's pace per epoch times its epoch budget. Early stops make trials shorter: the estimate errs long."""
    durations = [d for t in ended if (d := duration(t)) is not None]
    if durations:
        per_trial = sum(durations) / len(durations)
    else:
        paced = [r.seconds / r.epoch * r.epochs for r in running if r.epoch > 0]
        if not paced:
            return None
        per_trial = sum(paced) / len(paced)
    in_flight = sum(max(0.0, per_trial - r.seconds) for r in running)
    waiting = max(0, remaining - len(running)) * per_trial
    return (in_flight + waiting) / max(1, agents)


def live_state(store: Store, sweep: Sweep, target_trials: int | None, agents: int, started: float,
               now: float | None = None) -> LiveState:
    """started, now: this box's clock (the view's elapsed time). A running trial's time so far is read against
    the store's clock, which its `started` is measured by (on a shared PostgreSQL store this box's may be off)."""
    now = now or time.time()
    snapshot = store.snapshot(sweep.id, histories=(TrialState.RUNNING,))
    store_now, trials = snapshot.now, snapshot.trials
    ended = [t for t in trials if t.state in DONE]
    running = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        last = (snapshot.history(t.id) or [{}])[-1]
        value = last.get(sweep.metric) if sweep.metric else None
        running.append(Running(t.name, t.epochs, trial_budget(t), value if isinstance(value, (int, float)) else None,
                               duration(t, store_now) or 0.0))
    scored = [t for t in trials if t.best is not None]
    best = min(scored, key=lambda t: rank_key(t.best, sweep.goal)) if scored else None
    remaining = (target_trials - len(ended)) if target_trials is not None else None
    left = estimate_left(ended, running, remaining, agents) if remaining is not None else None
    return LiveState(done=len(ended), target=target_trials, running=running, trials=trials,
                     best=(best.name, best.best) if best else None, elapsed=now - started, left=left)


def render(state: LiveState, metric: str | None) -> Group:
    """What a person sees: one summary line, then a bar per running trial."""
    metric = escape(metric or "metric")  # the line and the table cells are markup: user-given text is escaped
    done = f"{state.done}/{state.target}" if state.target is not None else f"{state.done}"
    best = f"{escape(state.best[0])} {metric}={fmt_value(state.best[1])}" if state.best else "none yet"
    if state.corrected:
        best += f" · {escape(state.corrected)}"
    if state.target is not None and state.done >= state.target:
        left = ""
    elif state.left is not None:
        left = f"  about {fmt_duration(state.left)} left"
    else:
        left = "  time left: not known yet"
    summary = Text.from_markup(f"[bold]{done} trials done[/]  best so far: {best}  elapsed {fmt_duration(state.elapsed)}"
                               + left)
    table = Table.grid(padding=(0, 2))
    for _ in range(5):
        table.add_column(no_wrap=True)
    for run in state.running:
        current = f"{metric}={fmt_value(run.metric)}" if run.metric is not None else f"{metric}: no epoch yet"
        table.add_row(escape(run.name), ProgressBar(total=run.epochs, completed=min(run.epoch, run.epochs), width=24),
                      f"epoch {run.epoch}/{run.epochs}", current, fmt_duration(run.seconds))
    return Group(summary, table) if state.running else Group(summary)


class CorrectedEstimate:
    """The selection-corrected estimate, recomputed in a thread of its own whenever the finished trials change:
    on a large sweep a replay takes seconds, which the view's once-a-second refresh must not wait for."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep
        self.text: str | None = None
        self._seen: tuple | None = None
        self._busy = threading.Lock()

    def update(self, trials: list[Trial]) -> None:
        seen = tuple((t.name, t.best, t.artifact) for t in finished(trials))
        if not seen or seen == self._seen or not self._busy.acquire(blocking=False):
            return
        self._seen = seen
        threading.Thread(target=self._compute, args=(trials,), name="selection-estimate", daemon=True).start()

    def _compute(self, trials: list[Trial]) -> None:
        try:
            result = sweep_estimate(self.sweep, trials)
            self.text = None if isinstance(result, str) else result.single.text()
        except Exception:  # noqa: BLE001 - an unreadable artifact must not end the view; status says why
            self.text = None
        finally:
            self._busy.release()


class LiveView:
    """rich Live over the sweep, refreshed once a second; use `log` as the controller's log callable."""

    def __init__(self, store: Store, sweep: Sweep, console: Console, agents: int = 1, count: int | None = None):
        self.store, self.sweep, self.agents = store, sweep, agents
        self.started = time.time()
        self.target = target(sweep, len(store.trials(sweep.id, DONE)), count)
        self._last = render(LiveState(done=0, target=self.target), sweep.metric)
        self.corrected = CorrectedEstimate(sweep)
        self._read_at = 0.0
        self._lock = threading.Lock()  # the refresh thread and a log line in the main thread both render
        self.live = Live(get_renderable=self._renderable, console=console, refresh_per_second=1, transient=False)

    def _renderable(self):
        with self._lock:
            if time.time() - self._read_at < 0.5:
                return self._last  # a burst of log lines re-renders without re-reading the store each time
            self._read_at = time.time()
            try:
                state = live_state(self.store, self.sweep, self.target, self.agents, self.started)
                self.corrected.update(state.trials)
                state.corrected = self.corrected.text
                self._last = render(state, self.sweep.metric)
            except Exception:  # noqa: BLE001 - a busy or locked store must not kill the view: show the last state
                pass
            return self._last

    def refresh(self) -> None:
        """Read the store now and redraw (the final picture when the sweep ends)."""
        with self._lock:
            self._read_at = 0.0
        self.live.refresh()

    def log(self, message: str) -> None:
        self.live.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> "LiveView":
        self.live.start(refresh=True)
        return self

    def __exit__(self, *exc) -> None:
        self.refresh()
        self.live.stop()
