"""How fast is the sweep store? The store calls one trial's life makes, timed per cycle.

One cycle is what the controller and a trial process do to the store for one trial: a suggestion
(under the store's write lock: read the sweep's trials, add one), the trial marking itself running,
EPOCHS per-epoch metric writes, its history read back, its end, and a controller heartbeat.
The store starts empty, so later cycles read more trials, as in a real sweep.

    python benchmarks/store_ops.py [--store URL_OR_FILE] [--cycles 200] [--epochs 5] [--repeats 3]
    python benchmarks/store_ops.py --compare REV     # SQLite: the store of git revision REV vs this tree

Default store: a fresh SQLite file in a temporary folder per repeat. For PostgreSQL pass a URL of a
throwaway database (each repeat adds a sweep named bench<N>); `python tests/pg_cluster.py --fsync`
starts one. --compare runs REV's store module (covid_sweep/sweep/store/api.py, or sweep/store.py before
the sweep package was split) and this tree's in the same process,
interleaved repeat by repeat, so load on the machine hits both alike.
Prints the median over repeats of microseconds per cycle and per operation (never hard-coded).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(store_class, location, cycles: int, epochs: int) -> dict[str, float]:
    store = store_class(location)
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


OLD_STORE_MODULES = {"covid_sweep.sweep.store_location": "covid_sweep.sweep.store.location",
                     "covid_sweep.sweep.store_sqlite": "covid_sweep.sweep.store.sqlite",
                     "covid_sweep.sweep.store_postgres": "covid_sweep.sweep.store.postgres"}


def store_class_at(rev: str):
    """The Store class of git revision `rev` (its store module, importing this tree's other modules)."""
    root = Path(__file__).resolve().parents[1]
    for where in ("covid_sweep/sweep/store/api.py", "covid_sweep/sweep/store.py"):
        shown = subprocess.run(["git", "show", f"{rev}:{where}"], capture_output=True, text=True, cwd=root)
        if shown.returncode == 0:
            source = shown.stdout
            break
    else:
        raise SystemExit(f"--compare {rev}: no sweep store module in that revision")
    for old, new in OLD_STORE_MODULES.items():  # a revision from before the split names the backends' old homes
        source = source.replace(old, new)
    path = Path(tempfile.mkdtemp()) / "store_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("store_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.Store


def _median(runs: list[dict]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 1) for key in runs[0]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="a PostgreSQL URL or SQLite file (default: a fresh temporary file)")
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare", metavar="REV", default=None,
                        help="also time the SQLite store of git revision REV, interleaved with this tree's")
    args = parser.parse_args(argv)
    from covid_sweep.sweep.store import Store

    classes = {"this tree": Store}
    if args.compare:
        classes = {f"at {args.compare}": store_class_at(args.compare), **classes}
    runs: dict[str, list[dict]] = {label: [] for label in classes}
    for _ in range(args.repeats):
        for label, store_class in classes.items():
            with tempfile.TemporaryDirectory() as tmp:
                location = Path(tmp) / "sweeps.db" if args.compare or not args.store else args.store
                runs[label].append(one_run(store_class, location, args.cycles, args.epochs))
    result = {label: _median(label_runs) for label, label_runs in runs.items()}
    print(json.dumps({"store": "sqlite (temporary file)" if args.compare or not args.store else "given",
                      "cycles": args.cycles, "epochs": args.epochs, "repeats": args.repeats,
                      "median_us": result}, indent=1))
    return result


if __name__ == "__main__":
    main()
