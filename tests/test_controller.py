"""The embedded controller with cheap fake trials: real subprocesses, real store, real W&B engine.

Every test that takes the `store` fixture runs against both backends: an SQLite file and a fresh
database on a throwaway PostgreSQL cluster (conftest.pg_cluster).
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.fakes import METRIC, fake_controller
from helpers.polling import wait_for

from covid_sweep.cli import main
from covid_sweep.sweep.control.controller import new_sweep
from covid_sweep.sweep.control.outcome import StopReason
from covid_sweep.sweep.store import Store, Trial

HERE = Path(__file__).parent


def run_controller(store, sweep, tmp_path, **kwargs):
    return fake_controller(store, sweep, tmp_path / "home", **kwargs).run()


def by_state(store, sweep_id):
    states = {}
    for trial in store.trials(sweep_id):
        states.setdefault(trial.state, []).append(trial)
    return states


def test_the_store_s_clock_is_the_one_trials_are_timed_by(store):
    sweep = new_sweep(store, {"method": "grid", "parameters": {"x": {"value": 1}}}, "t.yaml", None, seed=0)
    trial = store.add_trial(sweep.id, "t-1", {"x": 1}, "test:1")
    before = store.now()
    store.mark_running(trial.id, os.getpid())
    assert before <= store.trial(trial.id).started <= store.now()


def test_bayes_sweep_runs_to_run_cap_and_keeps_every_epoch(store, tmp_path):
    config = {"method": "bayes", "metric": METRIC, "run_cap": 5,
              "parameters": {"quality": {"min": 0.1, "max": 0.9}, "epochs": {"value": 3}, "epoch_s": {"value": 0.05}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=3)
    outcome = run_controller(store, sweep, tmp_path)
    assert outcome.reason == "run_cap 5 reached" and len(outcome.launched) == 5
    assert outcome.stop.reason is StopReason.RUN_CAP and outcome.stop.reason.retryable and not outcome.failed
    trials = store.trials(sweep.id)
    assert [t.state for t in trials] == ["finished"] * 5
    for trial in trials:
        history = store.history(trial.id)
        assert [h["epoch"] for h in history] == [1, 2, 3]
        assert trial.best == pytest.approx(max(h["val_auc"] for h in history))
    assert len({t.params["quality"] for t in trials}) == 5


def test_hyperband_stops_the_trial_that_lags(store, tmp_path):
    config = {"method": "grid", "metric": METRIC,
              "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2},
              "parameters": {"quality": {"values": [0.9, 0.85, 0.8, 0.1]}, "epochs": {"value": 8},
                             "epoch_s": {"value": 0.4}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    run_controller(store, sweep, tmp_path, agents=4)
    trials = {t.params["quality"]: t for t in store.trials(sweep.id)}
    laggard, leader = trials[0.1], trials[0.9]
    assert laggard.state == "stopped" and laggard.stop_requested and laggard.epochs < 8
    assert leader.state == "finished" and leader.epochs == 8
    # what it logged before the stop is kept
    assert len(store.history(laggard.id)) == laggard.epochs >= 2


def test_crashing_trial_fails_alone_and_the_sweep_goes_on(store, tmp_path):
    config = {"method": "grid", "metric": METRIC,
              "parameters": {"quality": {"values": [0.5, 0.7]}, "crash_at": {"values": [0, 2]},
                             "epochs": {"value": 3}, "epoch_s": {"value": 0.05}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    outcome = run_controller(store, sweep, tmp_path, agents=2)
    assert outcome.reason == "search space exhausted" and len(outcome.launched) == 4
    states = by_state(store, sweep.id)
    assert len(states["finished"]) == 2 and len(states["failed"]) == 2
    for trial in states["failed"]:
        assert trial.params["crash_at"] == 2 and "exited with 3" in trial.error
        assert len(store.history(trial.id)) == 1  # epoch 1 was logged before the crash


def test_metric_target_ends_the_sweep(store, tmp_path):
    config = {"method": "random", "metric": {**METRIC, "target": 0.3},
              "parameters": {"quality": {"values": [0.8]}, "epochs": {"value": 2}, "epoch_s": {"value": 0.05}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    outcome = run_controller(store, sweep, tmp_path, count=10)
    assert outcome.reason == "metric.target 0.3 reached" and len(outcome.launched) == 1


def _start_controller(store, sweep, tmp_path, agents=1):
    return subprocess.Popen([sys.executable, str(HERE / "run_fake_controller.py"), str(store.path), sweep.id,
                             str(tmp_path / "home"), str(agents)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_two_concurrent_agents_never_get_the_same_params(store, tmp_path):
    config = {"method": "grid", "metric": METRIC,
              "parameters": {"quality": {"values": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]},
                             "epochs": {"value": 2}, "epoch_s": {"value": 0.1}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    agents = [_start_controller(store, sweep, tmp_path, agents=2) for _ in range(2)]
    outputs = [a.communicate(timeout=120)[0] for a in agents]
    assert all(a.returncode == 0 for a in agents), outputs
    trials = store.trials(sweep.id)
    qualities = [t.params["quality"] for t in trials]
    assert sorted(qualities) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]  # each once, none twice
    assert {t.owner for t in trials} == {f"{socket.gethostname()}:{a.pid}" for a in agents}  # both did work
    assert all(t.state == "finished" for t in trials)


def test_kill_9_then_resume_loses_nothing_and_reruns_nothing(store, tmp_path):
    config = {"method": "random", "metric": METRIC, "run_cap": 3,
              "parameters": {"quality": {"min": 0.1, "max": 0.9}, "epochs": {"value": 6}, "epoch_s": {"value": 0.4}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=5)
    controller = _start_controller(store, sweep, tmp_path)
    caught: dict[str, Trial] = {}

    def one_finished_and_the_next_early_in_its_run() -> bool:
        # early (epochs 1 to 3 of 6): it is still running when the controller dies, however slow this box is
        trials = store.trials(sweep.id)
        finished = [t for t in trials if t.state == "finished"]
        midway = [t for t in trials if t.state == "running" and 1 <= t.epochs <= 3]
        if finished and midway:
            caught.update(first=finished[0], second=midway[0])
        return bool(caught)

    assert wait_for(one_finished_and_the_next_early_in_its_run)
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    first, second = caught["first"], caught["second"]
    epochs_logged = len(store.history(second.id))
    # the orphaned trial notices its controller is gone and marks itself interrupted
    assert wait_for(lambda: store.trial(second.id).state == "interrupted", timeout=10)
    assert len(store.history(second.id)) >= epochs_logged >= 1  # nothing already logged is lost

    outcome = run_controller(store, sweep, tmp_path)
    trials = store.trials(sweep.id)
    assert outcome.reason == "run_cap 3 reached"
    assert store.trial(first.id).state == "finished"
    assert not any(t.retry_of == first.id for t in trials)  # a finished trial is never run again
    retries = [t for t in trials if t.retry_of == second.id]
    assert len(retries) == 1 and retries[0].params == second.params and retries[0].state == "finished"
    assert len([t for t in trials if t.retry_of is None]) == 3


def test_resume_reaps_trials_of_a_dead_controller(store, tmp_path):
    config = {"method": "random", "metric": METRIC, "run_cap": 1,
              "parameters": {"quality": {"values": [0.4]}, "epochs": {"value": 1}, "epoch_s": {"value": 0.05}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    dead = store.add_trial(sweep.id, f"{sweep.id}-001", {"quality": 0.4, "epochs": 1, "epoch_s": 0.05},
                           owner=f"{socket.gethostname()}:{2**22 + 12345}")
    store.mark_running(dead.id, pid=2**22 + 12346)
    run_controller(store, sweep, tmp_path)
    assert store.trial(dead.id).state == "interrupted" and "died" in store.trial(dead.id).error
    retry = [t for t in store.trials(sweep.id) if t.retry_of == dead.id]
    assert len(retry) == 1 and retry[0].state == "finished"


def test_status_cli_sorts_by_metric(store, tmp_path):
    config = {"method": "grid", "metric": METRIC,
              "parameters": {"quality": {"values": [0.3, 0.9, 0.6]}, "epochs": {"value": 1}, "epoch_s": {"value": 0.05}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=0)
    run_controller(store, sweep, tmp_path)
    where = ["--home", str(tmp_path / "home"), "--store", str(store.path)]
    result = CliRunner().invoke(main, ["status", sweep.id, *where])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if f"{sweep.id}-0" in line and "│" in line]
    assert [r.split("│")[-2].strip() for r in rows] == ["0.9", "0.6", "0.3"]
    assert "3 trials; 3 finished" in result.output
    best = max(store.trials(sweep.id), key=lambda t: t.best)
    store.set_alias(sweep.id, "best", best.id)
    marked = CliRunner().invoke(main, ["status", sweep.id, *where])
    assert f"{best.name} [best]" in marked.output
    missing = CliRunner().invoke(main, ["status", "nope", *where])
    assert missing.exit_code == 1 and "no sweep 'nope'" in missing.output


def test_seeded_sweep_suggestions_are_reproducible_across_processes(tmp_path):
    """The same seed gives the same first suggestions in a fresh process as in this one."""
    import json

    import covid_sweep.agent  # noqa: F401 - this process has torch, sklearn, wandb... imported; the fresh one not
    from covid_sweep.sweep.control import engine

    config = {"method": "bayes", "metric": {"name": "val_auc", "goal": "maximize"},
              "parameters": {"backbone": {"values": ["a", "b", "c", "d", "e", "f"]},
                                                 "lr": {"min": 0.0, "max": 1.0}}}
    code = ("import json, sys; from covid_sweep.sweep.store import Store; from covid_sweep.sweep.control import engine; "
            "s = Store(sys.argv[1]); w = s.sweep('sw'); print(json.dumps(engine.suggest(w, [])))")
    store = Store(tmp_path / "s.db")
    store.create_sweep("sw", "n", "t.yaml", config, None, seed=11)
    fresh = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.db")], capture_output=True, text=True,
                           timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout) == engine.suggest(store.sweep("sw"), [])


def test_the_trial_argv_the_controller_builds_is_what_the_agent_parses(tmp_path):
    from covid_sweep.sweep.control import protocol

    argv = protocol.embedded_argv(tmp_path / "sweeps.db", 12, tmp_path / "home")
    invocation = protocol.parse(argv)
    assert invocation.embedded == protocol.EmbeddedTrial(tmp_path / "sweeps.db", 12)
    assert invocation.home == tmp_path / "home" and invocation.rest == []
    # under `wandb agent` the sweep parameters pass through untouched
    agent = protocol.parse(["--lr=0.1", "--hflip=False"])
    assert agent.embedded is None and agent.rest == ["--lr=0.1", "--hflip=False"]


def test_trial_processes_start_their_own_wandb_service_offline_by_default():
    from covid_sweep.tracking.tracker import trial_process_env

    env = trial_process_env({"WANDB_SERVICE": "2-123-tcp-localhost-4567", "PATH": "/bin"})
    assert env == {"PATH": "/bin", "WANDB_MODE": "offline"}
    assert trial_process_env({"WANDB_MODE": "disabled"})["WANDB_MODE"] == "disabled"


def test_mark_running_never_revives_an_ended_trial(store):
    sweep = new_sweep(store, {"method": "random", "parameters": {}}, "t.yaml", None, seed=0)
    trial = store.add_trial(sweep.id, "t-001", {}, owner="host:1")
    store.end_trial(trial.id, "interrupted", error="controller died")
    store.mark_running(trial.id, pid=123)
    assert store.trial(trial.id).state == "interrupted" and store.trial(trial.id).pid is None


def test_phases_merge_and_survive_a_store_made_before_the_column(store, tmp_path):
    sweep = new_sweep(store, {"method": "random", "parameters": {}}, "t.yaml", None, seed=0)
    trial = store.add_trial(sweep.id, "t-001", {}, owner="host:1")
    assert store.trial(trial.id).phases == {}
    store.add_phases(trial.id, {"imports": 1.5, "fit": 2.0})
    store.add_phases(trial.id, {"fit": 3.25, "artifact": 0.5})
    assert store.trial(trial.id).phases == {"imports": 1.5, "fit": 3.25, "artifact": 0.5}

    import sqlite3
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.executescript("CREATE TABLE trials (id INTEGER PRIMARY KEY, sweep_id TEXT, name TEXT, params TEXT, state TEXT, "
                       "owner TEXT, pid INTEGER, retry_of INTEGER, created REAL, started REAL, ended REAL, "
                       "heartbeat REAL, best REAL, best_epoch INTEGER, epochs INTEGER NOT NULL DEFAULT 0, "
                       "artifact TEXT, error TEXT, stop_requested INTEGER NOT NULL DEFAULT 0);"
                       "INSERT INTO trials (sweep_id, name, params, state, created) VALUES ('s', 't', '{}', 'finished', 0);")
    conn.commit()
    conn.close()
    assert Store(old).trial(1).phases == {}


def test_a_budget_ends_the_sweep_with_its_running_trials_finished(store, tmp_path):
    config = {"method": "random", "metric": METRIC, "run_cap": 10,
              "parameters": {"quality": {"min": 0.1, "max": 0.9}, "epochs": {"value": 200}, "epoch_s": {"value": 0.05}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=1)
    outcome = run_controller(store, sweep, tmp_path, agents=2, budget_s=2.0)
    assert outcome.reason == "budget 2s reached" and outcome.stop.reason is StopReason.BUDGET
    assert len(outcome.launched) == 2  # each would run 10 s: none ended before the budget, none started after it
    trials = store.trials(sweep.id)
    assert [t.state for t in trials] == ["finished", "finished"]  # not failed, not stopped: their best epoch counts
    assert all(0 < t.epochs < 200 for t in trials)


def test_a_trial_the_budget_ends_before_its_first_epoch_is_stopped(store, tmp_path):
    config = {"method": "random", "metric": METRIC, "run_cap": 3,
              "parameters": {"quality": {"value": 0.5}, "epochs": {"value": 2}, "epoch_s": {"value": 30}}}
    sweep = new_sweep(store, config, "t.yaml", None, seed=1)
    outcome = run_controller(store, sweep, tmp_path, budget_s=0.5)
    assert outcome.reason == "budget 0.5s reached"
    (trial,) = store.trials(sweep.id)
    assert trial.state == "stopped" and trial.epochs == 0  # nothing kept, nothing promoted


def test_budget_durations_parse_as_people_write_them():
    from covid_sweep.cli.options import Duration

    assert [Duration().convert(v, None, None) for v in ("90s", "10m", "1h30m", "2h", "5", "1.5m")] == \
        [90, 600, 5400, 7200, 300, 90]
    done = CliRunner().invoke(main, ["sweep", "x.yaml", "--budget", "ten minutes"])
    assert done.exit_code == 2 and "not a duration" in done.output
