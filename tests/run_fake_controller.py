"""Run the real embedded Controller in its own process, launching fake trials (for kill -9 / concurrency tests)."""

import sys
from pathlib import Path

import fake_trial

from covid_sweep.sweep.controller import Controller
from covid_sweep.sweep.launcher import ForkLauncher
from covid_sweep.sweep.store import Store

if __name__ == "__main__":
    store_path, sweep_id, home, agents = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = Store(Path(store_path))
    launcher = ForkLauncher(fake_trial.main, preload=("covid_sweep.sweep.child",))
    outcome = Controller(store, store.sweep(sweep_id), Path(home), agents=agents, launcher=launcher, poll_s=0.05).run()
    print("launched", " ".join(outcome.launched), "|", outcome.reason, flush=True)
