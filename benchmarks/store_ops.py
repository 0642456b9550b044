"""How fast is the sweep store? The store calls one trial's life makes, timed per cycle.

One cycle is what the controller and a trial process do to the store for one trial: a suggestion
(under the store's write lock: read the sweep's trials, add one), the trial marking itself running,
EPOCHS per-epoch metric writes, its history read back, its end, and a controller heartbeat.
The store starts empty, so later cycles read more trials, as in a real sweep.

    python benchmarks/store_ops.py [--store URL_OR_FILE] [--cycles 200] [--epochs 5] [--repeats 3]

Default store: a fresh SQLite file in a temporary folder. For PostgreSQL pass a URL of an empty
database (each run adds a sweep named bench<N>; use a throwaway database).
Prints the median over repeats of microseconds per cycle and per operation (never hard-coded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def one_run(location, cycles: int, epochs: int) -> dict[str, float]:
    from covid_sweep.sweep.store import Store

    store = Store(location)
    store.create_sweep(f"bench{time.monotonic_ns()}", "bench", "bench.yaml",
                       {"method": "random", "metric": {"name": "val_auc", "goal": "maximize"}, "parameters": {}},
                       None, 0)
    sweep = store.sweeps()[-1]
    spent = {"suggest": 0.0, "mark_running": 0.0, "log_epoch": 0.0, "history": 0.0, "end_trial": 0.0,
             "heartbeat": 0.0}
    start = time.perf_counter()
    for i in range(cycles):
        t0 = time.perf_counter()
        with store.write_lock():
            store.trials(sweep.id)
            trial = store.add_trial(sweep.id, f"{sweep.id}-{i:04d}", {"lr": 1e-3, "i": i}, owner="bench:1")
        t1 = time.perf_counter()
        store.mark_running(trial.id, pid=1)
        t2 = time.perf_counter()
        for epoch in range(1, epochs + 1):
            store.log_epoch(trial.id, {"epoch": epoch, "val_auc": epoch / (epochs + 1)}, "val_auc", "maximize")
        t3 = time.perf_counter()
        store.history(trial.id)
        t4 = time.perf_counter()
        store.end_trial(trial.id, "finished")
        t5 = time.perf_counter()
        store.heartbeat("bench:1")
        t6 = time.perf_counter()
        for key, seconds in zip(spent, (t1 - t0, t2 - t1, (t3 - t2) / epochs, t4 - t3, t5 - t4, t6 - t5)):
            spent[key] += seconds
    total = time.perf_counter() - start
    store.close()
    result = {"cycle": total / cycles * 1e6}
    result.update({key: seconds / cycles * 1e6 for key, seconds in spent.items()})
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="a PostgreSQL URL or SQLite file (default: a fresh temporary file)")
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            location = args.store or Path(tmp) / "sweeps.db"
            runs.append(one_run(location, args.cycles, args.epochs))
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(json.dumps({"store": "sqlite (temporary file)" if args.store is None else "given",
                      "cycles": args.cycles, "epochs": args.epochs, "repeats": args.repeats,
                      "median_us": {k: round(v, 1) for k, v in median.items()}}, indent=1))
    return median


if __name__ == "__main__":
    main()
