"""Run the real embedded Controller in its own process, launching fake trials (for kill -9 / concurrency tests)."""

import sys
from pathlib import Path

import fake_trial

from covid_sweep.sweep.control.controller import Controller
from covid_sweep.sweep.control.launcher import ForkLauncher
from covid_sweep.sweep.store import Store

if __name__ == "__main__":
    store_path, sweep_id, home, agents = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    stale_s = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0  # seconds of heartbeat silence = a dead controller
    store = Store(store_path)
    launcher = ForkLauncher(fake_trial.main, preload=("covid_sweep.sweep.control.child",))
    outcome = Controller(store, store.sweep(sweep_id), Path(home), agents=agents, launcher=launcher, poll_s=0.05,
                         stale_s=stale_s).run()
    print("launched", " ".join(outcome.launched), "|", outcome.reason, flush=True)
